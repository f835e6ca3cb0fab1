"""The console's session: a cookie sealed with the encryption keys (AES-GCM, so nobody can read
or forge it and no table is needed), holding the signed-in API key's id, a CSRF token and an
expiry. Every form carries the token; a POST without it, or from another site, is refused."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass, replace

from fastapi import Request, Response
from sqlalchemy import Engine

from refundflow.api.deps import Principal
from refundflow.crypto import Keyring, KeyringError
from refundflow.db.engine import new_session
from refundflow.db.models import ApiKeyRow
from refundflow.settings import Settings

COOKIE = "rf_console"
PURPOSE = "console-session"
CSRF_FIELD = "csrf"
ANONYMOUS_SECONDS = 3600
"""A signed-out session (it only holds the sign-in form's CSRF token) lasts an hour."""


class ConsoleUnavailable(Exception):
    """No encryption keys: the console cannot seal a session, so it signs nobody in."""


class CsrfRefused(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class ConsoleSession:
    csrf: str
    expires: int
    key_id: str | None = None

    @classmethod
    def anonymous(cls, now: float) -> ConsoleSession:
        return cls(csrf=secrets.token_urlsafe(24), expires=int(now) + ANONYMOUS_SECONDS)

    def signed_in(self, key_id: str, *, hours: float, now: float) -> ConsoleSession:
        # A new token at sign-in: one planted in the sign-in form before is worth nothing after.
        return replace(
            self,
            key_id=key_id,
            csrf=secrets.token_urlsafe(24),
            expires=int(now + hours * 3600),
        )

    def seal(self, keyring: Keyring) -> str:
        payload = {"c": self.csrf, "e": self.expires, "k": self.key_id}
        return keyring.seal(json.dumps(payload, separators=(",", ":")), purpose=PURPOSE)

    @classmethod
    def open(cls, keyring: Keyring, sealed: str, *, now: float) -> ConsoleSession | None:
        """The session the cookie holds; ``None`` when it does not open or has expired."""
        try:
            payload = json.loads(keyring.open(sealed, purpose=PURPOSE))
            found = cls(csrf=str(payload["c"]), expires=int(payload["e"]), key_id=payload["k"])
        except (KeyringError, ValueError, KeyError, TypeError):
            return None
        return found if found.expires > now else None


def keyring_of(request: Request) -> Keyring:
    """The app's keys (the same ones that reveal customer data), read once;
    :class:`ConsoleUnavailable` when there are none."""
    state = request.app.state
    keyring: Keyring | None = getattr(state, "keyring", None)
    if keyring is None:
        settings: Settings = state.settings
        try:
            keyring = settings.keyring()
        except KeyringError as exc:
            raise ConsoleUnavailable(exc.message) from exc
        state.keyring = keyring
    return keyring


def current(request: Request) -> ConsoleSession | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    return ConsoleSession.open(keyring_of(request), raw, now=time.time())


def store(request: Request, response: Response, session: ConsoleSession) -> None:
    response.set_cookie(
        COOKIE,
        session.seal(keyring_of(request)),
        max_age=max(0, session.expires - int(time.time())),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def principal_for(engine: Engine, session: ConsoleSession) -> Principal | None:
    """The key behind the session, as long as it is not revoked: a revoked key's session ends
    at its next request."""
    if session.key_id is None:
        return None
    with new_session(engine, readonly=True) as db:
        row = db.get(ApiKeyRow, session.key_id)
    if row is None or row.revoked_at is not None:
        return None
    return Principal(
        key_id=row.key_id, merchant_id=row.merchant_id, role=row.role, name=row.name or row.key_id
    )


def check_post(request: Request, session: ConsoleSession | None, token: str | None) -> None:
    """A state-changing request must come from our own pages: same origin (when the browser
    says where it comes from) and the session's CSRF token in the form."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _own_origin(request):
        raise CsrfRefused("cross_site")
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        raise CsrfRefused("cross_site")
    if session is None:
        raise CsrfRefused("no_session")
    if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise CsrfRefused("csrf_token")


def _own_origin(request: Request) -> str:
    url = request.url
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = f":{url.port}" if url.port and url.port != default else ""
    return f"{url.scheme}://{url.hostname}{port}"
