"""Notification's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from services.notification.egress import AllowEntry, EgressPolicy, WebhookRefused
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
    # A delivery marker stops a redelivered event being put on a stream twice; hours suffice.
    delivery_marker_ttl_s: int = Field(default=6 * 3600, ge=60, le=7 * 24 * 3600)
    stream_poll_s: float = Field(
        default=5.0, gt=0, description="A live client re-reads its stream at least this often."
    )
    stream_ping_s: float = Field(default=15.0, gt=0)
    redis_epoch_interval_s: float = Field(
        default=1.0, gt=0, description="How often notification checks Redis still has its streams."
    )
    stream_rebuild_window_s: int = Field(
        default=600,
        ge=60,
        description="When Redis comes back empty, the stream deliveries of this many last"
        " seconds go back on their streams (well past an offer's answer window).",
    )

    webhook_signing_secret: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="HMAC key for webhook signatures; webhooks are off without it.",
    )
    dispatcher_webhook_url: str | None = Field(
        default=None,
        description="A dispatch-room system that gets every dispatcher webhook; the same "
        "address rules as registered webhooks apply (see WEBHOOK_ALLOWED_HOSTS).",
    )
    webhook_allowed_hosts: list[str] = Field(
        default=[],
        description="Internal hosts dispatcher webhooks may reach: host names, addresses or "
        "CIDRs. Prefix an entry with http:// to allow plain http to it; https otherwise.",
    )
    webhook_reporter_allowed_hosts: list[str] = Field(
        default=[],
        description="The same for reporters' webhooks; empty (public https only) in production.",
    )
    webhook_timeout_s: float = Field(
        default=5.0, gt=0, description="Total time for one webhook call, DNS to last byte."
    )
    webhook_connect_timeout_s: float = Field(default=3.0, gt=0)
    webhook_max_response_bytes: int = Field(
        default=64 * 1024, ge=0, description="Read at most this much of a receiver's answer."
    )
    webhook_max_per_report: int = Field(default=3, ge=1, le=100)
    webhook_registrations_per_window: int = Field(
        default=10, ge=1, description="Registrations per caller and per report, per window."
    )
    webhook_registration_window_s: int = Field(default=600, ge=1)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_backoff_initial_s: float = Field(default=0.5, gt=0)
    webhook_backoff_max_s: float = Field(default=30.0, gt=0)
    webhook_backoff_jitter_s: float = Field(default=0.5, ge=0)

    live_workers: int = Field(default=2, ge=1)
    remote_workers: int = Field(default=8, ge=1)
    queue_size: int = Field(default=1000, ge=1)
    lease_s: float = Field(default=300.0, gt=0, description="How long one worker owns a delivery.")
    live_lease_s: float = Field(
        default=10.0,
        gt=0,
        description="How long one worker owns a live (stream) delivery; well under the offer"
        " timeout, so a delivery whose instance died is taken over in time.",
    )
    resume_interval_s: float = Field(default=5.0, gt=0)

    @field_validator("webhook_allowed_hosts", "webhook_reporter_allowed_hosts")
    @classmethod
    def _entries_parse(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            AllowEntry.parse(entry)
        return entries

    @model_validator(mode="after")
    def _configured_webhook_allowed(self) -> NotificationSettings:
        """Refuse to start with a dispatcher webhook the address rules would refuse."""
        if self.dispatcher_webhook_url:
            try:
                self.dispatcher_policy.check_static(self.dispatcher_webhook_url)
            except WebhookRefused as exc:
                raise ValueError(f"DISPATCHER_WEBHOOK_URL: {exc}") from exc
        return self

    @property
    def dispatcher_policy(self) -> EgressPolicy:
        """Where dispatcher webhooks may go."""
        return EgressPolicy.from_entries(self.webhook_allowed_hosts)

    @property
    def reporter_policy(self) -> EgressPolicy:
        """Where reporters' webhooks may go."""
        return EgressPolicy.from_entries(self.webhook_reporter_allowed_hosts)

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
