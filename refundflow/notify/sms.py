"""SMS behind one small interface, and an adapter for Twilio's Programmable Messaging API.

Twilio: ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`` with form fields
``To``, ``From``, ``Body`` and HTTP Basic auth (Account SID, Auth Token). 201 answers the new
Message resource (``sid`` "SM...", ``status`` "queued"); an error answers
``{"code", "message", "more_info", "status"}``. Delivery itself is asynchronous on Twilio's
side (status callbacks); "accepted by Twilio" is what counts as sent here.
"""

from __future__ import annotations

import re
from typing import Protocol

import httpx

from refundflow.notify.errors import DeliveryError


class SmsProvider(Protocol):
    async def send(self, to: str, text: str) -> str:
        """Send ``text`` to ``to`` (E.164); returns the provider's message id.

        Raises :class:`DeliveryError` (``retryable`` when nothing final happened)."""
        ...

    async def aclose(self) -> None: ...


def to_e164(phone: str) -> str:
    """``+86 138-0013-8000`` -> ``+8613800138000``: the customer's number without the
    separators people write; the provider judges whether it is a valid number."""
    return re.sub(r"[\s().-]", "", phone)


class TwilioSms:
    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        base_url: str = "https://api.twilio.com",
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.from_number = from_number
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def send(self, to: str, text: str) -> str:
        form = {"To": to_e164(to), "From": self.from_number, "Body": text}
        try:
            resp = await self._client.post(self.url, data=form, auth=self._auth)
        except httpx.HTTPError as exc:
            # A timeout after sending may mean Twilio queued it; a rare duplicate SMS is
            # better than a lost refund notice.
            raise DeliveryError(
                f"Twilio unreachable: {type(exc).__name__}: {exc}", retryable=True, code="network"
            ) from exc
        if resp.status_code in (200, 201):
            return str(resp.json()["sid"])
        raise _error(resp)


def _error(resp: httpx.Response) -> DeliveryError:
    try:
        body = resp.json()
    except ValueError:  # a proxy's HTML page, say
        body = None
    if not isinstance(body, dict):
        body = {}
    status = resp.status_code
    code = str(body.get("code") or status)
    message = body.get("message") or resp.reason_phrase
    # 429 and 5xx: Twilio did nothing, try later. 401/403: our credentials, not the
    # customer's number, so the operator can still fix them before we give up. Any other
    # 4xx (21211 invalid 'To', 21610 unsubscribed...) is final for this message.
    retryable = status in (401, 403, 429) or status >= 500
    return DeliveryError(f"Twilio HTTP {status}: {message}", retryable=retryable, code=code)
