"""Configuration from the environment (``REFUNDFLOW_*``); no secrets live in code."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFUNDFLOW_", extra="ignore")

    database_url: str | None = None
    """SQLAlchemy URL; unset means the embedded SQLite file under ``data_dir``."""
    data_dir: Path = Path("data")
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "refunds"
    query_timeout_seconds: float = 5.0
    """How long the API waits for a running refund's view; past it, the stored row answers."""
    update_timeout_seconds: float = 30.0
    """How long a message to a running refund (a decision, a receipt, a cancel, ...) waits for
    the run's answer; past it the API answers 504 ``update_timeout``."""
    signal_timeout_seconds: float = 10.0
    """How long handing a provider's webhook event to its run may take; past it the webhook
    answers 503 and the provider retries."""
    providers: dict[str, dict[str, Any]] = {}
    """Real provider adapters by name (``alipay``, ``wechat``, ``stripe``, ``paypal``,
    ``bank_transfer``), each with its adapter's config, e.g. ``REFUNDFLOW_PROVIDERS='{"stripe":
    {"base_url": "https://api.stripe.com", "api_key": "sk_live_..."}}'``. A route whose provider
    is not configured pays through the sandbox simulator."""
    notify: dict[str, Any] = {}
    """Notification channels (``refundflow.notify.config.NotifyConfig``), e.g.
    ``REFUNDFLOW_NOTIFY='{"smtp_host": "mail.example.com", "smtp_port": 587, "smtp_starttls":
    true, "mail_from": "refunds@example.com"}'``. Email and SMS are off until configured."""

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'refundflow.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
