"""Setting up and checking the parts refundflow runs on: the Temporal namespace, its search
attributes, the database, providers and notification channels (``refundflow setup`` and
``refundflow check``). Each step answers a :class:`Finding`; nothing here prints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from google.protobuf.duration_pb2 import Duration
from sqlalchemy import text
from sqlmodel import col, select
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from refundflow.crypto import KeyringError
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import alembic_config, current
from refundflow.db.models import PolicyRow
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from refundflow.gateways.registry import missing_providers, provider_config_problems
from refundflow.notify.config import NotifyConfig
from refundflow.settings import Settings
from refundflow.workflows import search_attributes as sa
from refundflow.workflows.outbox import SCHEDULE_ID
from refundflow.workflows.retention import SCHEDULE_ID as RETENTION_SCHEDULE_ID


class Outcome(StrEnum):
    OK = "ok"
    CHANGED = "changed"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Finding:
    what: str
    outcome: Outcome
    detail: str

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.PROBLEM


# ------------------------------------------------------------------------------ Temporal


async def create_namespace(client: Client, *, retention: timedelta) -> Finding:
    """Register the client's namespace with ``retention`` unless it exists (then left as is)."""
    duration = Duration()
    duration.FromTimedelta(retention)
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=client.namespace, workflow_execution_retention_period=duration
            )
        )
    except RPCError as exc:
        if exc.status is RPCStatusCode.ALREADY_EXISTS:
            return Finding("namespace", Outcome.OK, f"{client.namespace} exists")
        raise
    return Finding(
        "namespace", Outcome.CHANGED, f"created {client.namespace}, retention {_days(retention)}"
    )


async def namespace_finding(client: Client, settings: Settings) -> Finding:
    """The namespace exists and keeps closed runs long enough to audit a refund afterwards."""
    try:
        described = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace)
        )
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return Finding(
                "namespace",
                Outcome.PROBLEM,
                f"{client.namespace} does not exist: create it, e.g. `temporal operator namespace "
                f"create --namespace {client.namespace} --retention 30d`",
            )
        raise
    retention = described.config.workflow_execution_retention_ttl.ToTimedelta()
    needed = retention_needed(settings)
    customer_data = timedelta(days=settings.pii_retention_days)
    if retention > customer_data:
        # Closed runs keep their (encrypted) inputs for the namespace's retention: longer than
        # the customer data rule, and the histories outlive what the database erased.
        return Finding(
            "namespace",
            Outcome.WARNING,
            f"{client.namespace} keeps closed runs {_days(retention)}, longer than"
            f" REFUNDFLOW_PII_RETENTION_DAYS ({_days(customer_data)}): their encrypted customer"
            " data outlives the rule; lower the namespace retention or raise the setting",
        )
    if retention < needed:
        return Finding(
            "namespace",
            Outcome.WARNING,
            f"{client.namespace} keeps closed runs {_days(retention)}; the policies' follow-up "
            f"windows need at least {_days(needed)} to audit a refund in the Temporal UI",
        )
    return Finding("namespace", Outcome.OK, f"{client.namespace}, retention {_days(retention)}")


def retention_needed(settings: Settings) -> timedelta:
    """The longest final follow-up window of any stored policy version (or the default)."""
    policies = [DEFAULT_POLICY, *_stored_policies(settings)]
    return timedelta(days=max(p.follow_up.final_escalation_days for p in policies))


def _stored_policies(settings: Settings) -> Iterable[Policy]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(engine, readonly=True) as session:
            rows = session.exec(select(PolicyRow).order_by(col(PolicyRow.version))).all()
            return [Policy.model_validate(row.document) for row in rows]
    except Exception:  # no database yet: the default policy decides
        return []
    finally:
        engine.dispose()


async def search_attribute_findings(client: Client, *, register: bool) -> list[Finding]:
    """Every ``Refund*`` attribute with its type; with ``register``, missing ones are added. An
    attribute of the same name and another type is a clash nobody can resolve but an operator."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    present = dict(listed.custom_attributes)
    findings: list[Finding] = []
    missing: dict[str, IndexedValueType.ValueType] = {}
    for key in sa.ALL:
        wanted = IndexedValueType.ValueType(key.indexed_value_type)
        have = present.get(key.name)
        if have is None:
            missing[key.name] = wanted
        elif have != wanted:
            findings.append(
                Finding(
                    key.name,
                    Outcome.PROBLEM,
                    f"exists as {IndexedValueType.Name(have)}, refundflow needs "
                    f"{IndexedValueType.Name(wanted)}: remove it or use another namespace",
                )
            )
        else:
            findings.append(Finding(key.name, Outcome.OK, IndexedValueType.Name(wanted)))
    if missing and register:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    for name, kind in missing.items():
        findings.append(
            Finding(name, Outcome.CHANGED, f"added ({IndexedValueType.Name(kind)})")
            if register
            else Finding(name, Outcome.PROBLEM, "missing: run `refundflow setup`")
        )
    return findings


async def retention_schedule_finding(client: Client, settings: Settings) -> Finding:
    try:
        described = await client.get_schedule_handle(RETENTION_SCHEDULE_ID).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return Finding(
                "data retention",
                Outcome.PROBLEM,
                f"schedule {RETENTION_SCHEDULE_ID} missing: run setup",
            )
        raise
    paused = described.schedule.state.paused
    return Finding(
        "data retention",
        Outcome.WARNING if paused else Outcome.OK,
        f"schedule {RETENTION_SCHEDULE_ID}"
        + (" is paused: customer data is not erased" if paused else "")
        + f"; erases {settings.pii_retention_days} days after a refund finishes",
    )


async def schedule_finding(client: Client) -> Finding:
    try:
        described = await client.get_schedule_handle(SCHEDULE_ID).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return Finding(
                "outbox sweep", Outcome.PROBLEM, f"schedule {SCHEDULE_ID} missing: run setup"
            )
        raise
    paused = described.schedule.state.paused
    return Finding(
        "outbox sweep",
        Outcome.WARNING if paused else Outcome.OK,
        f"schedule {SCHEDULE_ID}" + (" is paused" if paused else ""),
    )


# ------------------------------------------------------------------------------ the rest


def database_findings(settings: Settings) -> list[Finding]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return [Finding("database", Outcome.PROBLEM, f"unreachable: {exc}")]
    finally:
        engine.dispose()
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    at = current(settings.resolved_database_url)
    migrations = (
        Finding("migrations", Outcome.OK, f"at head {head}")
        if at == head
        else Finding(
            "migrations", Outcome.PROBLEM, f"at {at or 'nothing'}, head is {head}: run setup"
        )
    )
    return [Finding("database", Outcome.OK, "reachable"), migrations]


def provider_finding(settings: Settings) -> Finding:
    missing = missing_providers(settings)
    if missing:
        routes = ", ".join(route.value for route in missing)
        return Finding(
            "providers",
            Outcome.PROBLEM,
            f"no provider for {routes}: set REFUNDFLOW_PROVIDERS or REFUNDFLOW_DISABLED_ROUTES",
        )
    invalid = provider_config_problems(settings)
    if invalid:
        return Finding("providers", Outcome.PROBLEM, "; ".join(invalid))
    if settings.sandbox:
        return Finding(
            "providers", Outcome.WARNING, "REFUNDFLOW_SANDBOX=true: unconfigured routes pay nothing"
        )
    disabled = ", ".join(route.value for route in settings.disabled_routes) or "none"
    configured = ", ".join(sorted(settings.providers)) or "none"
    return Finding("providers", Outcome.OK, f"{configured}; disabled: {disabled}")


def encryption_finding(settings: Settings) -> Finding:
    """The keys that seal secrets at rest: a worker does not start without them."""
    try:
        keyring = settings.keyring()
    except KeyringError as exc:
        return Finding("encryption keys", Outcome.PROBLEM, exc.message)
    return Finding(
        "encryption keys", Outcome.OK, f"{len(keyring.keys)} key(s), sealing with {keyring.current}"
    )


def payload_key_finding(settings: Settings) -> Finding:
    """The keys that encrypt payloads sent to Temporal: nothing connects without them."""
    try:
        keyring = settings.payload_keyring()
    except KeyringError as exc:
        return Finding("payload keys", Outcome.PROBLEM, exc.message)
    return Finding(
        "payload keys", Outcome.OK, f"{len(keyring.keys)} key(s), encrypting with {keyring.current}"
    )


def notification_finding(settings: Settings) -> Finding:
    config = NotifyConfig(**settings.notify)
    channels = [
        name
        for name, configured in (("email", config.smtp_host), ("sms", config.sms_account_sid))
        if configured
    ]
    if not channels:
        return Finding(
            "notifications",
            Outcome.PROBLEM,
            "no customer channel: set smtp_host and/or sms_account_sid in REFUNDFLOW_NOTIFY",
        )
    return Finding("notifications", Outcome.OK, ", ".join(channels))


def _days(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g} day" + ("" if days == 1 else "s")
