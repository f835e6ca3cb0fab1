"""Configuration from the environment (``REFUNDFLOW_*``); no secrets live in code."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from refundflow.crypto import Keyring, MissingKey, read_keyring_file
from refundflow.domain.orders import PaymentMethod

KEYRING_FILE = "encryption.keys"
PAYLOAD_KEYRING_FILE = "payload.keys"


class DevOnlySetting(Exception):
    """A setting meant for ``refundflow dev`` reached another process."""

    code = "dev_only_setting"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFUNDFLOW_", extra="ignore")

    database_url: str | None = None
    """SQLAlchemy URL; unset means the embedded SQLite file under ``data_dir``."""
    data_dir: Path = Path("data")
    temporal_address: str | None = None
    """Overrides the address of Temporal's own client configuration (``TEMPORAL_ADDRESS``, the
    profile file); with neither, ``localhost:7233``. See :mod:`refundflow.connection`."""
    temporal_namespace: str | None = None
    """Overrides ``TEMPORAL_NAMESPACE`` / the profile's; with neither, ``default``."""
    temporal_profile: str | None = None
    """The profile to read from Temporal's client configuration file (``TEMPORAL_PROFILE``)."""
    temporal_config_file: Path | None = None
    """Temporal's client configuration file (TOML), when not at its default location."""
    task_queue: str = "refunds"
    worker_max_concurrent_activities: int = Field(default=50, ge=1)
    """Provider calls and notice deliveries a worker runs at once."""
    worker_max_concurrent_local_activities: int = Field(default=50, ge=1)
    """Database steps a worker runs at once (its thread pool has as many threads)."""
    worker_workflow_task_pollers: int = Field(default=5, ge=1)
    """Concurrent long polls for workflow tasks."""
    worker_max_cached_workflows: int = Field(default=300, ge=1)
    """Runs a worker keeps in memory between their tasks, each with its own copy of the workflow
    modules (measured ~0.2 MB a run: the SDK's default of 1000 would be ~200 MB). A run pushed out
    replays its history on its next task: tens of milliseconds of CPU, once. Runs mostly wait
    (approvals, returns, arrival windows), so only the runs busy at once need to stay."""
    worker_graceful_shutdown_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM, how long running activities get to finish before they are cancelled (a
    container's stop grace period must be longer)."""
    metrics_port: int | None = None
    """Serve Prometheus metrics of the worker (SDK and business metrics) on this port."""
    tracing: bool = False
    """OpenTelemetry traces from the API and the worker (needs ``refundflow[otel]``; the
    collector is configured by the standard ``OTEL_*`` variables)."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    query_timeout_seconds: float = 5.0
    """How long the API waits for a running refund's view; past it, the stored row answers."""
    update_timeout_seconds: float = 30.0
    """How long a message to a running refund (a decision, a receipt, a cancel, ...) waits for
    the run's answer; past it the API answers 504 ``update_timeout``."""
    signal_timeout_seconds: float = 10.0
    """How long handing a provider's webhook event to its run may take; past it the webhook
    answers 503 and the provider retries."""
    max_request_body_bytes: int = 256 * 1024
    """The largest request body the API reads; a larger one is refused (413 ``body_too_large``)
    before it is parsed. Everything a refund carries ends up in its workflow's payloads, which
    must stay small."""
    strict_problem_codes: bool = False
    """Answer 500 when a route answers a problem code its OpenAPI document does not list (the
    test suite turns this on, so an undocumented code fails a test instead of a client)."""
    providers: dict[str, dict[str, Any]] = {}
    """Real provider adapters by name (``alipay``, ``wechat``, ``stripe``, ``paypal``,
    ``bank_transfer``), each with its adapter's config, e.g. ``REFUNDFLOW_PROVIDERS='{"stripe":
    {"base_url": "https://api.stripe.com", "api_key": "sk_live_..."}}'``. A route whose provider
    is not configured stops the worker and the API at start (see ``disabled_routes``)."""
    disabled_routes: list[PaymentMethod] = []
    """Payment routes refused on purpose (e.g. ``["paypal"]``): their payouts fail for good at
    once and the policy's fallback applies."""
    sandbox: bool = False
    """Pay every route without a configured provider through the sandbox simulator. For tests
    and ``refundflow dev`` only; never in production."""
    notify: dict[str, Any] = {}
    """Notification channels (``refundflow.notify.config.NotifyConfig``), e.g.
    ``REFUNDFLOW_NOTIFY='{"smtp_host": "mail.example.com", "smtp_port": 587, "smtp_starttls":
    true, "mail_from": "refunds@example.com"}'``. Email and SMS are off until configured."""

    encryption_keys: SecretStr | None = None
    """The keys that seal secrets at rest (merchants' webhook secrets):
    ``<key id>:<base64 of 32 bytes>`` entries, comma-separated, the current key first."""
    encryption_keys_file: Path | None = None
    """The same keys in a file only its owner can read, one per line; by default
    ``<data_dir>/encryption.keys`` (which ``refundflow dev`` writes)."""

    payload_keys: SecretStr | None = None
    """The keys that encrypt every payload sent to Temporal (workflow inputs, results, memos,
    summaries, failure messages): same format as ``encryption_keys``, but their own keys, never
    those (docs/privacy.md). Every process that talks to Temporal needs them."""
    payload_keys_file: Path | None = None
    """The payload keys in a file only its owner can read; by default
    ``<data_dir>/payload.keys`` (which ``refundflow dev`` writes)."""
    pii_retention_days: int = Field(default=90, ge=1)
    """Days after a refund finishes (completed, rejected, cancelled) before its customer's
    contact details and bank account are erased from the refunds database; amounts and the
    audit trail stay. The retention schedule runs daily (docs/privacy.md)."""
    codec_ui_origin: str = "http://localhost:8233"
    """The Temporal UI origin allowed to call ``refundflow codec-server`` from a browser (CORS);
    no other origin is answered with CORS headers."""
    temporal_ui_url: str | None = None
    """The Temporal UI's base URL (e.g. ``https://temporal.example.com``): the console links every
    refund to its run there. Unset, the console shows the workflow id without a link."""
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 7)
    """How long a console sign-in lasts (the session cookie is sealed with the encryption
    keys, so the console needs them: without, it refuses every sign-in)."""

    dev_business_day_seconds: int | None = Field(default=None, ge=1)
    """``refundflow dev`` only: a business day of arrival windows lasts this many seconds, so a
    delayed refund's notice comes within minutes. Every other process refuses it."""

    build_id: str | None = None
    """This worker's build (e.g. the git commit or image tag). Set, it turns Worker Versioning on:
    the worker polls as version ``<deployment_name>.<build_id>`` and gets work only once that
    version is current (``refundflow deploy promote``). Unset, the worker is unversioned."""
    deployment_name: str = "refundflow"
    """The Worker Deployment the build belongs to; only meaningful with ``build_id``."""

    @model_validator(mode="after")
    def _versioning_is_all_or_nothing(self) -> Settings:
        # A deploy script that meant to version its workers but lost the build id (an empty
        # variable, a typo) must not quietly run an unversioned worker, nor poll as a version
        # nobody can promote.
        if self.build_id is not None and not self.build_id.strip():
            raise ValueError("REFUNDFLOW_BUILD_ID is empty: set a build id or unset it")
        if self.build_id is None and "deployment_name" in self.model_fields_set:
            raise ValueError(
                "REFUNDFLOW_DEPLOYMENT_NAME is set but REFUNDFLOW_BUILD_ID is not: "
                "a versioned worker needs both"
            )
        # Temporal spells a version "<deployment>.<build id>", so the name cannot hold a dot.
        name = self.deployment_name
        if not name.strip() or "." in name:
            raise ValueError(
                f"REFUNDFLOW_DEPLOYMENT_NAME {name!r} must be non-empty and contain no '.'"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'refundflow.db'}"

    def refuse_dev_only(self) -> None:
        """:class:`DevOnlySetting` when a dev-stack setting is set (workers call this)."""
        if self.dev_business_day_seconds is not None:
            raise DevOnlySetting(
                "REFUNDFLOW_DEV_BUSINESS_DAY_SECONDS is for `refundflow dev` only (it shortens"
                " every refund's arrival window); unset it"
            )

    def keyring(self) -> Keyring:
        """The encryption keys, or :class:`MissingKey` saying where they were looked for."""
        if self.encryption_keys is not None:
            return Keyring.parse(
                self.encryption_keys.get_secret_value(), source="REFUNDFLOW_ENCRYPTION_KEYS"
            )
        path = self.encryption_keys_file or self.data_dir / KEYRING_FILE
        try:
            return read_keyring_file(path)
        except MissingKey:
            raise MissingKey(
                f"no encryption keys: set REFUNDFLOW_ENCRYPTION_KEYS or"
                f" REFUNDFLOW_ENCRYPTION_KEYS_FILE (nothing at {path});"
                " `refundflow secrets new-key` makes a key"
            ) from None

    def payload_keyring(self) -> Keyring:
        """The payload keys, or :class:`MissingKey` saying where they were looked for. The
        secrets' keys (``REFUNDFLOW_ENCRYPTION_KEYS``) are never used instead: a process that
        may read histories need not be able to open the database's sealed values."""
        if self.payload_keys is not None:
            return Keyring.parse(
                self.payload_keys.get_secret_value(), source="REFUNDFLOW_PAYLOAD_KEYS"
            )
        path = self.payload_keys_file or self.data_dir / PAYLOAD_KEYRING_FILE
        try:
            return read_keyring_file(path)
        except MissingKey:
            raise MissingKey(
                f"no payload keys: set REFUNDFLOW_PAYLOAD_KEYS or REFUNDFLOW_PAYLOAD_KEYS_FILE"
                f" (nothing at {path}); `refundflow secrets new-key` makes a key"
            ) from None


SECRETS_DIR = Path("/run/secrets")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The environment's settings. Secrets may also come as files named after their variable
    in lower case (``/run/secrets/refundflow_database_url``: docker-compose and Kubernetes
    secrets), from ``REFUNDFLOW_SECRETS_DIR`` or ``/run/secrets``; a variable wins over a file."""
    folder = Path(os.environ.get("REFUNDFLOW_SECRETS_DIR", SECRETS_DIR))
    return Settings(_secrets_dir=folder) if folder.is_dir() else Settings()


def describe_invalid(exc: ValidationError) -> str:
    """What is wrong with the environment, in one line for an operator."""
    return "; ".join(
        str(error["msg"]).removeprefix("Value error, ")
        + (f" (REFUNDFLOW_{str(error['loc'][0]).upper()})" if error["loc"] else "")
        for error in exc.errors()
    )
