"""Customer notices by email over SMTP (``aiosmtplib``): plain text with an HTML alternative."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

import aiosmtplib

from refundflow.db.types import utcnow
from refundflow.domain.notices import Notice
from refundflow.notify.errors import DeliveryError


class EmailSender:
    """Sends one message per connection: notices are few and far between, and a fresh
    connection needs no keep-alive or reconnect logic."""

    def __init__(
        self,
        *,
        host: str,
        port: int = 25,
        from_address: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        timeout_s: float = 10.0,
        validate_certs: bool = True,
    ) -> None:
        if starttls and ssl:
            raise ValueError("choose STARTTLS (submission, port 587) or SSL (port 465), not both")
        self.host = host
        self.port = port
        self.from_address = from_address
        self.username = username
        self.password = password
        self.starttls = starttls
        self.ssl = ssl
        self.timeout_s = timeout_s
        self.validate_certs = validate_certs

    def build(self, to: str, notice: Notice, *, key: str = "", locale: str = "") -> EmailMessage:
        msg = EmailMessage()
        # The default policy writes non-ASCII headers as RFC 2047 encoded words.
        msg["Subject"] = notice.subject
        msg["From"] = self.from_address
        msg["To"] = to
        msg["Date"] = format_datetime(utcnow())
        domain = parseaddr(self.from_address)[1].rpartition("@")[2] or "refundflow.invalid"
        msg["Message-ID"] = f"<{key}@{domain}>" if key else make_msgid(domain=domain)
        # RFC 3834: tells autoresponders not to answer, so no vacation-reply loops.
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(notice.text, charset="utf-8", cte=_cte(notice.text))
        if notice.html:
            msg.add_alternative(notice.html, subtype="html", charset="utf-8", cte=_cte(notice.html))
        if locale:  # after the bodies: setting content drops Content-* headers
            msg["Content-Language"] = locale
        return msg

    async def send(self, to: str, notice: Notice, *, key: str = "", locale: str = "") -> str:
        """Send ``notice`` to ``to``; returns the Message-ID. A stable ``key`` per notice makes
        a stable Message-ID, so mail clients fold a rare duplicate (a retry after a lost
        answer)."""
        msg = self.build(to, notice, key=key, locale=locale)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.ssl,
                start_tls=self.starttls,
                validate_certs=self.validate_certs,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            permanent = bool(codes) and all(code >= 500 for code in codes)
            raise DeliveryError(
                f"recipient refused: {detail}", retryable=not permanent, code="smtp"
            ) from exc
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
            # 5xx to RCPT or DATA is about this message or mailbox: sending again won't help.
            raise DeliveryError(
                f"{exc.code} {exc.message}", retryable=exc.code < 500, code="smtp"
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Connection, TLS, authentication or sender trouble is the operator's to fix,
            # and says nothing about this customer: keep retrying.
            raise DeliveryError(
                f"{type(exc).__name__}: {exc}", retryable=True, code="smtp"
            ) from exc
        return str(msg["Message-ID"])


def _cte(text: str) -> str:
    # Neither needs 8BITMIME from the server; base64 keeps CJK text compact, quoted-printable
    # keeps English readable in the raw message and wraps long lines.
    return "quoted-printable" if text.isascii() else "base64"
