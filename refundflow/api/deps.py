"""Dependencies: database session, the caller's API key, the Temporal client and refund runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client

from refundflow.api.errors import ApiError
from refundflow.api.runs import RefundRuns
from refundflow.db.engine import new_session
from refundflow.db.repository import verify_api_key
from refundflow.settings import Settings

# Dependencies that only read what the app holds are coroutines: FastAPI runs a plain function
# in its thread pool, a hop (and a wait for a free thread under load) for nothing. Those that
# touch the database stay plain functions, off the event loop.


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with new_session(engine) as session:
        yield session


async def get_temporal(request: Request) -> Client:
    client: Client | None = request.app.state.temporal
    if client is None:
        raise ApiError(503, "temporal_unavailable", "the workflow service is not connected yet")
    return client


def get_read_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    # On SQLite a writing session holds the database's write lock from its first statement;
    # routes that only read, and then wait on a workflow that writes, must not hold it.
    with new_session(engine, readonly=True) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
EngineDep = Annotated[Engine, Depends(get_engine)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_runs(temporal: TemporalDep, settings: SettingsDep, engine: EngineDep) -> RefundRuns:
    return RefundRuns(
        temporal,
        engine=engine,
        query_timeout=timedelta(seconds=settings.query_timeout_seconds),
        update_timeout=timedelta(seconds=settings.update_timeout_seconds),
        signal_timeout=timedelta(seconds=settings.signal_timeout_seconds),
    )


RunsDep = Annotated[RefundRuns, Depends(get_runs)]


class Principal(BaseModel):
    """Who is calling: one API key, one merchant, one role. ``name`` is the person or system
    the key belongs to; approvals and requests are attributed to it, never to a body field."""

    key_id: str
    merchant_id: str
    role: str
    name: str


bearer = HTTPBearer(
    auto_error=False,  # a missing key is our own 401 problem, not FastAPI's
    scheme_name="ApiKey",
    description="An API key: `refundflow keys create --merchant M --role R --name N`.",
)


def get_principal(
    engine: Annotated[Engine, Depends(get_engine)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials.strip():
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <api key>'")
    with new_session(engine, readonly=True) as session:
        row = verify_api_key(session, token=credentials.credentials.strip())
    if row is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    # A key stored before names were required is a person of its own.
    name = row.name or row.key_id
    return Principal(key_id=row.key_id, merchant_id=row.merchant_id, role=row.role, name=name)


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys with one of ``roles`` (admin is always admitted)."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role != "admin" and principal.role not in roles:
            allowed = ", ".join(roles)
            raise ApiError(403, "forbidden", f"role {principal.role} may not do this ({allowed})")
        return principal

    return check
