"""Notification settings and the dispatcher they make.

Each channel is on once it is configured: email with ``smtp_host``, SMS with the Twilio
account, number and token. Merchant webhooks need no setting here (each merchant's URL and
secret live in the merchants table), only a timeout.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import Engine

from refundflow.crypto import Keyring
from refundflow.notify.dispatcher import NotificationDispatcher
from refundflow.notify.email import EmailSender
from refundflow.notify.merchant_webhook import MerchantWebhookSender
from refundflow.notify.sms import TwilioSms


class NotifyConfig(BaseModel):
    smtp_host: str = ""
    """Empty: no email."""
    smtp_port: int = Field(default=25, gt=0, lt=65536)
    smtp_starttls: bool = False
    """Upgrade with STARTTLS (submission port 587)."""
    smtp_ssl: bool = False
    """TLS from the first byte (port 465)."""
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    mail_from: str = "refunds@localhost"
    sms_base_url: str = "https://api.twilio.com"
    sms_account_sid: str = ""
    """Empty: no SMS."""
    sms_auth_token: SecretStr = SecretStr("")
    sms_from: str = ""
    sms_timeout_s: float = Field(default=10.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    """Delivery attempts of one outbox row before it is marked failed for good."""


def build_dispatcher(
    engine: Engine, config: NotifyConfig, *, keyring: Keyring | None = None
) -> NotificationDispatcher:
    """``keyring`` opens merchants' webhook secrets; without it no merchant webhook goes out."""
    email = None
    if config.smtp_host:
        email = EmailSender(
            host=config.smtp_host,
            port=config.smtp_port,
            from_address=config.mail_from,
            username=config.smtp_username,
            password=config.smtp_password.get_secret_value() if config.smtp_password else None,
            starttls=config.smtp_starttls,
            ssl=config.smtp_ssl,
            timeout_s=config.smtp_timeout_s,
        )
    sms = None
    if config.sms_account_sid and config.sms_from:
        sms = TwilioSms(
            account_sid=config.sms_account_sid,
            auth_token=config.sms_auth_token.get_secret_value(),
            from_number=config.sms_from,
            base_url=config.sms_base_url,
            timeout_s=config.sms_timeout_s,
        )
    return NotificationDispatcher(
        engine,
        email=email,
        sms=sms,
        webhooks=MerchantWebhookSender(timeout_s=config.webhook_timeout_s),
        keyring=keyring,
        max_attempts=config.max_attempts,
    )
