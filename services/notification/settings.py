"""Notification's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr

from shared.settings import ServiceSettings

ResponderChannel = Literal["stream", "sms", "push"]


class NotificationSettings(ServiceSettings):
    """Environment variables for notification."""

    service_name: str = "notification"
    port: int = 8004
    database_url: str = "sqlite+aiosqlite:///./.run/notification.db"

    # Offers carry links to dispatch's accept and decline endpoints (docs/internal-api.md).
    dispatch_public_url: str = Field(
        default="http://127.0.0.1:8002",
        validation_alias=AliasChoices("dispatch_public_url", "DISPATCH_PUBLIC_URL", "DISPATCH_URL"),
    )
    responder_channels: list[ResponderChannel] = ["stream"]
    sms_sender: str = Field(
        default="services.notification.channels:LoggingSmsSender",
        description="`module:Class` of the SMS provider; built with no arguments.",
    )

    stream_maxlen: int = Field(default=1000, ge=10, description="Replay log kept per stream.")
    stream_poll_s: float = Field(
        default=5.0, gt=0, description="A live client re-reads its stream at least this often."
    )
    stream_ping_s: float = Field(default=15.0, gt=0)

    webhook_signing_secret: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="HMAC key for webhook signatures; webhooks are off without it.",
    )
    dispatcher_webhook_url: str | None = None
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_backoff_initial_s: float = Field(default=0.5, gt=0)
    webhook_backoff_max_s: float = Field(default=30.0, gt=0)
    webhook_backoff_jitter_s: float = Field(default=0.5, ge=0)

    live_workers: int = Field(default=2, ge=1)
    remote_workers: int = Field(default=8, ge=1)
    queue_size: int = Field(default=1000, ge=1)
    lease_s: float = Field(default=300.0, gt=0, description="How long one worker owns a delivery.")
    resume_interval_s: float = Field(default=5.0, gt=0)

    # Web Push (``push`` in RESPONDER_CHANNELS): VAPID keys from VAPID_PRIVATE_KEY (PEM or
    # base64url DER), else from VAPID_KEY_FILE, created on first start for the embedded stack.
    vapid_private_key: SecretStr | None = None
    vapid_key_file: Path | None = Path(".run/vapid_private.pem")
    vapid_subject: str = "mailto:dispatch@localhost"
    push_ttl_s: int = Field(default=60, ge=0, le=24 * 3600)
    push_endpoint_hosts: list[str] = Field(
        default_factory=lambda: [
            "fcm.googleapis.com",
            "updates.push.services.mozilla.com",
            "*.push.apple.com",
            "*.notify.windows.com",
        ],
        description="Push services a subscription may point at; `*.` matches subdomains.",
    )
    push_allow_http: bool = Field(
        default=False, description="Accept http:// push endpoints (tests with a local endpoint)."
    )
