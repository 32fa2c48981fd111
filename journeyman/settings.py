"""The one settings object, read from the environment and `.env`.

Names follow ../shared/product/interfaces.md. Nothing is read at import time:
call `get_settings()` (cached) from entry points, and pass what a component needs
into it, so tests can build their own `Settings(...)`.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from journeyman.customers import phones
from journeyman.dsl.durations import parse_percent

STATE_DIR = Path(".journeyman")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # Temporal: the SDK's own environment names. No address means "embedded dev server".
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False
    temporal_tls_client_cert_path: Path | None = None
    temporal_tls_client_key_path: Path | None = None
    temporal_tls_server_ca_cert_path: Path | None = None
    # The same PEM contents given in the environment instead of files (containers).
    temporal_tls_client_cert_data: SecretStr | None = None
    temporal_tls_client_key_data: SecretStr | None = None
    temporal_tls_server_ca_cert_data: str | None = None
    temporal_tls_server_name: str | None = None
    task_queue: str = Field("journeyman", validation_alias="JOURNEYMAN_TASK_QUEUE")

    database_url: str = f"sqlite:///{STATE_DIR}/journeyman.db"
    journeys_dir: Path = Path("journeys")
    templates_dir: Path = Path("templates")
    # Schemas of catalogs (`<name>.yaml`), checked by validate when there are any.
    catalogs_dir: Path = Path("catalogs")

    # Client keys: they ship in web and mobile apps (public), so what they may change is
    # limited (docs/api.md); server keys are secret and may do what Segment's API allows.
    write_keys: str = Field("", validation_alias="JOURNEYMAN_WRITE_KEYS")
    server_keys: SecretStr | None = Field(None, validation_alias="JOURNEYMAN_SERVER_KEYS")
    # Identity verification for client keys: `context.userHash` (intake) and the inbox
    # API's `userHash` must be the hex HMAC-SHA256 of the userId with this secret.
    identity_secret: SecretStr | None = Field(None, validation_alias="JOURNEYMAN_IDENTITY_SECRET")
    # Hosts that links built from client-sent event properties may point at (comma-
    # separated); default: the hosts of PUBLIC_BASE_URL and EMAIL_FROM.
    link_domains: str | None = Field(None, validation_alias="JOURNEYMAN_LINK_DOMAINS")
    # trust | confirm: whether a contact point set by a client key gets marketing
    # messages at once, or only once the customer confirms it (double opt-in).
    client_contacts: Literal["trust", "confirm"] = Field(
        "trust", validation_alias="JOURNEYMAN_CLIENT_CONTACTS"
    )
    webhook_secret: SecretStr | None = Field(None, validation_alias="JOURNEYMAN_WEBHOOK_SECRET")
    admin_token: SecretStr | None = Field(None, validation_alias="JOURNEYMAN_ADMIN_TOKEN")
    public_base_url: str = "http://localhost:8000"
    # Signs unsubscribe links; `dev` keeps one under .journeyman/. Without it the admin
    # token's derivation is used, so that links survive restarts either way.
    secret_key: SecretStr | None = Field(None, validation_alias="JOURNEYMAN_SECRET_KEY")

    email_from: str = "Journeyman <noreply@localhost>"
    sendgrid_api_key: SecretStr | None = None
    sendgrid_base_url: str | None = None
    sendgrid_webhook_public_key: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str | None = None
    # A WhatsApp-enabled sender (`whatsapp:+…`) of the same Twilio account: turns on the
    # whatsapp channel; without it whatsapp goes to the outbox.
    twilio_whatsapp_from: str | None = None
    fcm_project_id: str | None = None
    google_application_credentials: Path | None = None
    fcm_base_url: str | None = None
    # Each provider's pace, shared by every worker: `10`, `10/s`, `600/m`, `36000/h`
    # (journeyman/messaging/ratelimit.py). Unset: no limit. Checked where providers are built.
    sendgrid_rate_limit: str | None = None
    twilio_rate_limit: str | None = None
    fcm_rate_limit: str | None = None
    # The answer to an SMS "HELP" (carriers require one).
    sms_help_text: str = Field(
        "Reply STOP to unsubscribe, START to subscribe again. Msg&data rates may apply.",
        validation_alias="JOURNEYMAN_SMS_HELP_TEXT",
    )
    # How old a signed webhook may be (SendGrid, Standard Webhooks), in seconds.
    webhook_tolerance_seconds: int = Field(300, validation_alias="JOURNEYMAN_WEBHOOK_TOLERANCE")
    # Encrypts Temporal payloads (AES-256-GCM); base64 of 32 bytes. `dev` keeps one.
    payload_key: SecretStr | None = Field(None, validation_alias="JOURNEYMAN_PAYLOAD_KEY")
    # `api` and `worker` refuse to start without a payload key unless this says plaintext
    # is wanted (journeyman/platform/codec.py, require_payload_key).
    payload_plaintext: bool = Field(False, validation_alias="JOURNEYMAN_PAYLOAD_PLAINTEXT")
    # Compresses Temporal payloads of 512 bytes and more (zlib, before encryption); off,
    # nothing new is compressed and what was still reads (journeyman/platform/codec.py).
    payload_compression: bool = Field(True, validation_alias="JOURNEYMAN_PAYLOAD_COMPRESSION")

    # Service-wide journey defaults; a journey's `settings:` overrides them.
    default_quiet_hours: str | None = Field(None, validation_alias="JOURNEYMAN_QUIET_HOURS")
    default_frequency_cap: str | None = Field(None, validation_alias="JOURNEYMAN_FREQUENCY_CAP")
    default_timezone: str = Field("UTC", validation_alias="JOURNEYMAN_TIMEZONE")
    sms_segment_warning: int = Field(2, validation_alias="JOURNEYMAN_SMS_SEGMENT_WARNING")
    # The global control group (journeyman/optimization/holdout.py): a share like `5%` of customers
    # gets no marketing; sends of these topics are not marketing (comma-separated).
    global_holdout: str | None = Field(None, validation_alias="JOURNEYMAN_GLOBAL_HOLDOUT")
    transactional_topics: str = Field("", validation_alias="JOURNEYMAN_TRANSACTIONAL_TOPICS")
    # The country of phone numbers sent without a country code (ISO 3166: US, FR).
    phone_region: str | None = Field(None, validation_alias="JOURNEYMAN_PHONE_REGION")

    # Days an unsubscribe link works after it was made (0: always). Links made before
    # links carried a date keep working (journeyman/privacy/tokens.py).
    unsubscribe_link_days: int = Field(
        730, ge=0, validation_alias="JOURNEYMAN_UNSUBSCRIBE_LINK_DAYS"
    )

    # Intake limits (the body limit applies to every route: journeyman/api/bodylimit.py).
    max_body_bytes: int = Field(512 * 1024, validation_alias="JOURNEYMAN_MAX_BODY_BYTES")
    # A catalog upsert's body (PUT/POST /v1/catalogs/{catalog}/items): 10,000 items.
    max_catalog_body_bytes: int = Field(
        32 * 1024 * 1024, validation_alias="JOURNEYMAN_MAX_CATALOG_BODY_BYTES"
    )
    # Customers whose events the API's dispatcher hands to Temporal at once (each
    # customer's own events still go one at a time, in order); the default is
    # `journeyman.events.dispatcher.DEFAULT_CONCURRENCY`, not imported here (settings stay light).
    dispatch_concurrency: int = Field(16, ge=1, validation_alias="JOURNEYMAN_DISPATCH_CONCURRENCY")

    # Operations (docs/deploy.md). Metrics ports unset: not served.
    log_format: Literal["text", "json"] = Field("text", validation_alias="JOURNEYMAN_LOG_FORMAT")
    worker_metrics_port: int | None = Field(None, validation_alias="JOURNEYMAN_WORKER_METRICS_PORT")
    temporal_metrics_port: int | None = Field(
        None, validation_alias="JOURNEYMAN_TEMPORAL_METRICS_PORT"
    )
    metrics_host: str = Field("0.0.0.0", validation_alias="JOURNEYMAN_METRICS_HOST")
    # Seconds a stopping worker gives running activities to finish.
    shutdown_grace: float = Field(30.0, validation_alias="JOURNEYMAN_SHUTDOWN_GRACE")
    activity_threads: int = Field(32, validation_alias="JOURNEYMAN_ACTIVITY_THREADS")
    max_cached_workflows: int = Field(1000, validation_alias="JOURNEYMAN_MAX_CACHED_WORKFLOWS")

    def signing_key(self) -> bytes:
        """The key of unsubscribe tokens (JOURNEYMAN_SECRET_KEY, else derived from the
        admin token). Raises ValueError when neither is set."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        if self.admin_token is not None:
            token = self.admin_token.get_secret_value().encode()
            return hmac.new(token, b"journeyman signing key", hashlib.sha256).digest()
        raise ValueError(
            "set JOURNEYMAN_SECRET_KEY (or JOURNEYMAN_ADMIN_TOKEN): it signs unsubscribe links"
        )

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not phones.known_region(value):
            raise ValueError(f"{value!r} is not a country code phone numbers know (US, FR, GB...)")
        return value.upper()

    @field_validator("global_holdout")
    @classmethod
    def _holdout(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if parse_percent(value) > 0.5:
            raise ValueError(f"{value} would keep most customers from all marketing: at most 50%")
        return value.strip()

    @property
    def global_holdout_share(self) -> float:
        """JOURNEYMAN_GLOBAL_HOLDOUT as a fraction; 0 when unset."""
        return parse_percent(self.global_holdout) if self.global_holdout else 0.0

    @property
    def transactional_topic_list(self) -> list[str]:
        return [t.strip() for t in self.transactional_topics.split(",") if t.strip()]

    @property
    def write_key_list(self) -> list[str]:
        return [k.strip() for k in self.write_keys.split(",") if k.strip()]

    @property
    def server_key_list(self) -> list[str]:
        if self.server_keys is None:
            return []
        return [k.strip() for k in self.server_keys.get_secret_value().split(",") if k.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
