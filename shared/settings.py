"""The settings base every service's settings class extends."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Configuration every service needs, read from environment variables.

    Each service subclasses this once in its own ``settings.py``.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 8000

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=0, le=500)
    # For consumers whose events are not on a report's way to an offer: an empty fetch
    # the broker holds longer costs fewer polls (the embedded broker's fetch never wakes
    # early, so an idle consumer asks 1000 / wait times a second).
    kafka_background_fetch_max_wait_ms: int = Field(default=50, ge=0, le=500)
    kafka_consumer_group: str | None = None
    # The embedded broker holds a new member's first join for half the session timeout,
    # so the embedded stack and the tests run with a shorter one than production.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    kafka_topic_partitions: int = Field(default=3, ge=1)
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "sqlite+aiosqlite:///./.run/service.db"
    database_schema: str | None = Field(
        default=None,
        description="PostgreSQL schema this service owns; defaults to the service name.",
    )

    auth_secret: SecretStr = Field(min_length=32)
    token_ttl_s: int = Field(default=12 * 3600, ge=60)
    cors_origins: list[str] = []
    # Live streams open at once per caller (role and subject), counted per instance.
    max_streams_per_caller: int = Field(default=4, ge=1, le=1000)
    stream_retry_after_s: int = Field(default=10, ge=1)
    # How often an instance re-reads the responder revocations other instances consumed.
    revocation_poll_s: float = Field(default=0.25, gt=0, le=5)

    log_level: str = "INFO"
    max_body_bytes: int = Field(default=16 * 1024, ge=1024)
    outbox_poll_interval_s: float = Field(default=1.0, gt=0)
    # How long a consumer remembers an event id it handled (redeliveries come within minutes).
    dedupe_ttl_s: int = Field(default=6 * 3600, ge=60, le=7 * 24 * 3600)
    # Published outbox rows are kept this long, and republished if the broker loses its
    # topics (the embedded broker is memory only); consumers dedupe on event_id.
    outbox_retention_s: float = Field(default=900.0, gt=0)
    # How often the relay looks for its marker topic on the broker; 0 turns that off.
    broker_epoch_check_s: float = Field(default=2.0, ge=0)

    @property
    def consumer_group(self) -> str:
        """The Kafka consumer group of this service (shared by all its instances)."""
        return self.kafka_consumer_group or self.service_name

    @property
    def schema_name(self) -> str:
        """The database schema this service owns on PostgreSQL."""
        return self.database_schema or self.service_name.replace("-", "_")
