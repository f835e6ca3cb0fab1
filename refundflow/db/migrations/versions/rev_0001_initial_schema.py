"""Initial schema: every table and the guards the database enforces itself.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Types are spelled out here rather than imported from the models, so this revision keeps
creating the same schema however the models change later. Every name is final (``op.f``):
the guards are recognised by these names.

Guards (on SQLite and PostgreSQL alike):
- tender_balances: CHECK reserved + refunded <= captured (the over-refund guard);
- payouts: UNIQUE payout_key, UNIQUE (refund_id, seq, generation);
- approvals: CHECK approver_id <> requested_by, requested_by pinned to the refund's requester
  by a composite foreign key, UNIQUE (refund_id, approver_id, quote_fingerprint);
- ledger: a posting is refused unless its entries (written first) are >= 2 and sum to zero;
  entries of an existing posting cannot be added, changed or deleted;
- audit_events: no UPDATE, DELETE (or TRUNCATE on PostgreSQL).
Trigger messages start with a token (``audit_immutable:`` ...) that refundflow.db.guards reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("CURRENT_TIMESTAMP")


def _str(name: str, length: int = ID, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=False)


def _money(name: str, *, zero_default: bool = False) -> sa.Column[int]:
    default = "0" if zero_default else None
    return sa.Column(name, sa.BigInteger(), server_default=default, nullable=False)


def _int(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), autoincrement=False, nullable=False)


def _json(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, _JSON, nullable=nullable)


def _ts(name: str, *, nullable: bool = False, now: bool = True) -> sa.Column[object]:
    default = _NOW if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def _bigid() -> sa.Column[int]:
    return sa.Column("id", _BIGID, nullable=False)


def _pk(table: str, *cols: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*cols, name=op.f(f"pk_{table}"))


def _ck(table: str, name: str, sql: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(sql, name=op.f(f"ck_{table}_{name}"))


def _fk(
    table: str, cols: list[str], target: str, target_cols: list[str]
) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        cols, [f"{target}.{c}" for c in target_cols], name=op.f(f"fk_{table}_{cols[0]}_{target}")
    )


def _uq(table: str, *cols: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*cols, name=op.f(f"uq_{table}_{'_'.join(cols)}"))


def _index(table: str, *cols: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(cols)}"), table, list(cols), unique=False)


_MERCHANT_FK = (["merchant_id"], "merchants", ["merchant_id"])
_ORDER_KEY = ["merchant_id", "order_id"]
_TENDER_KEY = ["merchant_id", "order_id", "payment_id"]


def _create_merchant_tables() -> None:
    op.create_table(
        "merchants",
        _str("merchant_id"),
        _str("name", 200),
        _ts("created_at"),
        _pk("merchants", "merchant_id"),
    )
    op.create_table(
        "api_keys",
        _str("key_id", 32),
        _str("merchant_id"),
        _str("name", 200),
        _str("role", 16),
        _str("key_hash", 64),
        _ts("created_at"),
        _ts("revoked_at", nullable=True, now=False),
        _pk("api_keys", "key_id"),
        _ck("api_keys", "role", "role IN ('client', 'approver', 'warehouse', 'ops', 'admin')"),
        _fk("api_keys", *_MERCHANT_FK),
        _uq("api_keys", "key_hash"),
    )
    _index("api_keys", "merchant_id")
    op.create_table(
        "policies",
        _str("merchant_id"),
        _int("version"),
        _json("document"),
        _ts("created_at"),
        _pk("policies", "merchant_id", "version"),
        _ck("policies", "version", "version >= 1"),
        _fk("policies", *_MERCHANT_FK),
    )
    op.create_table(
        "customer_balances",
        _str("merchant_id"),
        _str("customer_id"),
        _str("currency", 3),
        _money("balance", zero_default=True),
        _ts("updated_at"),
        _pk("customer_balances", "merchant_id", "customer_id", "currency"),
        _ck("customer_balances", "non_negative", "balance >= 0"),
        _fk("customer_balances", *_MERCHANT_FK),
    )


def _create_order_tables() -> None:
    op.create_table(
        "orders",
        _str("merchant_id"),
        _str("order_id"),
        _str("customer_id"),
        _str("channel"),
        _str("country", 2),
        _str("currency", 3),
        _str("status", 32),
        _ts("placed_at", now=False),
        _ts("delivered_at", nullable=True, now=False),
        _json("snapshot"),
        _ts("created_at"),
        _ts("updated_at"),
        _pk("orders", "merchant_id", "order_id"),
        _fk("orders", *_MERCHANT_FK),
    )
    _index("orders", "merchant_id", "customer_id")
    op.create_table(
        "order_lines",
        _str("merchant_id"),
        _str("order_id"),
        _str("line_id"),
        _str("sku"),
        sa.Column("quantity", sa.Integer(), nullable=False),
        _money("unit_price"),
        _money("line_discount", zero_default=True),
        _pk("order_lines", "merchant_id", "order_id", "line_id"),
        _ck("order_lines", "amounts", "quantity > 0 AND unit_price >= 0 AND line_discount >= 0"),
        _fk("order_lines", _ORDER_KEY, "orders", _ORDER_KEY),
    )
    op.create_table(
        "order_discounts",
        _str("merchant_id"),
        _str("order_id"),
        _int("position"),
        _str("code"),
        _str("kind", 16),
        _money("amount"),
        _json("line_ids", nullable=True),
        _pk("order_discounts", "merchant_id", "order_id", "position"),
        _ck("order_discounts", "amount", "amount >= 0"),
        _fk("order_discounts", _ORDER_KEY, "orders", _ORDER_KEY),
    )
    op.create_table(
        "order_payments",
        _str("merchant_id"),
        _str("order_id"),
        _str("payment_id"),
        _str("method", 32),
        _str("provider_txn_id"),
        _money("captured"),
        _str("currency", 3),
        _ts("paid_at", now=False),
        _str("payer_account_ref", 256, nullable=True),
        _pk("order_payments", *_TENDER_KEY),
        _ck("order_payments", "captured", "captured >= 0"),
        _fk("order_payments", _ORDER_KEY, "orders", _ORDER_KEY),
    )
    op.create_table(
        "tender_balances",
        _str("merchant_id"),
        _str("order_id"),
        _str("payment_id"),
        _str("currency", 3),
        _money("captured"),
        _money("reserved", zero_default=True),
        _money("refunded", zero_default=True),
        _ts("updated_at"),
        _pk("tender_balances", *_TENDER_KEY),
        _ck(
            "tender_balances",
            "within_captured",
            "reserved >= 0 AND refunded >= 0 AND reserved + refunded <= captured",
        ),
        _fk("tender_balances", _TENDER_KEY, "order_payments", _TENDER_KEY),
    )


def _create_refund_tables() -> None:
    op.create_table(
        "refunds",
        _str("refund_id"),
        _str("merchant_id"),
        _str("order_id"),
        _str("customer_id"),
        _str("status", 32),
        _str("reason", 32),
        _str("currency", 3),
        _money("total"),
        _str("requested_by"),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        _json("quote"),
        _str("quote_fingerprint", 64),
        _json("request"),
        _text("request_fingerprint"),
        _ts("created_at"),
        _ts("updated_at"),
        _pk("refunds", "refund_id"),
        _ck("refunds", "total", "total >= 0"),
        _fk("refunds", _ORDER_KEY, "orders", _ORDER_KEY),
        _uq("refunds", "refund_id", "requested_by"),
    )
    _index("refunds", "merchant_id", "customer_id", "created_at")
    _index("refunds", "merchant_id", "order_id")
    op.create_table(
        "refund_lines",
        _str("refund_id"),
        _str("line_id"),
        _str("merchant_id"),
        _str("order_id"),
        sa.Column("quantity", sa.Integer(), nullable=False),
        _money("amount"),
        _pk("refund_lines", "refund_id", "line_id"),
        _ck("refund_lines", "amounts", "quantity > 0 AND amount >= 0"),
        _fk("refund_lines", [*_ORDER_KEY, "line_id"], "order_lines", [*_ORDER_KEY, "line_id"]),
        _fk("refund_lines", ["refund_id"], "refunds", ["refund_id"]),
    )
    op.create_table(
        "reservations",
        _str("refund_id"),
        _str("payment_id"),
        _str("merchant_id"),
        _str("order_id"),
        _money("amount"),
        _money("consumed", zero_default=True),
        _str("state", 16),
        _ts("created_at"),
        _ts("updated_at"),
        _pk("reservations", "refund_id", "payment_id"),
        _ck("reservations", "state", "state IN ('active', 'released', 'consumed')"),
        _ck("reservations", "amounts", "amount >= 0 AND consumed >= 0 AND consumed <= amount"),
        _fk("reservations", _TENDER_KEY, "tender_balances", _TENDER_KEY),
        _fk("reservations", ["refund_id"], "refunds", ["refund_id"]),
    )
    _index("reservations", *_TENDER_KEY)
    op.create_table(
        "payouts",
        _bigid(),
        _str("payout_key", 256),
        _str("refund_id"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        _str("route", 32),
        _money("amount"),
        _str("currency", 3),
        _str("status", 32),
        _str("provider_ref", 256),
        _ts("created_at"),
        _ts("updated_at"),
        _pk("payouts", "id"),
        _ck("payouts", "amounts", "amount > 0 AND seq >= 1 AND generation >= 1"),
        _fk("payouts", ["refund_id"], "refunds", ["refund_id"]),
        _uq("payouts", "payout_key"),
        _uq("payouts", "refund_id", "seq", "generation"),
    )
    op.create_table(
        "approvals",
        _bigid(),
        _str("refund_id"),
        _str("approver_id"),
        _str("requested_by"),
        _str("decision", 8),
        _str("quote_fingerprint", 64),
        _text("comment"),
        _ts("created_at"),
        _pk("approvals", "id"),
        _ck("approvals", "decision", "decision IN ('APPROVE', 'REJECT')"),
        _ck("approvals", "not_self", "approver_id <> requested_by"),
        _fk("approvals", ["refund_id", "requested_by"], "refunds", ["refund_id", "requested_by"]),
        _uq("approvals", "refund_id", "approver_id", "quote_fingerprint"),
    )


def _create_record_tables() -> None:
    op.create_table(
        "ledger_postings",
        _str("posting_id", 256),
        _str("refund_id", nullable=True),
        _str("currency", 3),
        _text("memo"),
        _ts("created_at"),
        _pk("ledger_postings", "posting_id"),
        _fk("ledger_postings", ["refund_id"], "refunds", ["refund_id"]),
    )
    _index("ledger_postings", "refund_id")
    op.create_table(
        "ledger_entries",
        _bigid(),
        _str("posting_id", 256),
        _str("account", 256),
        _money("amount"),
        _pk("ledger_entries", "id"),
        _ck("ledger_entries", "non_zero", "amount <> 0"),
    )
    _index("ledger_entries", "account")
    _index("ledger_entries", "posting_id")
    op.create_table(
        "audit_events",
        _bigid(),
        _str("refund_id", nullable=True),
        _str("kind", 64),
        _str("actor"),
        _json("data"),
        _ts("created_at"),
        _pk("audit_events", "id"),
    )
    _index("audit_events", "refund_id")
    op.create_table(
        "outbox",
        _bigid(),
        _str("refund_id", nullable=True),
        _str("channel", 32),
        _str("template", 128),
        _str("locale", 16),
        _json("payload"),
        _str("status", 16),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _text("last_error"),
        _ts("created_at"),
        _ts("updated_at"),
        _pk("outbox", "id"),
        _ck("outbox", "status", "status IN ('pending', 'sent', 'failed')"),
        _ck("outbox", "attempts", "attempts >= 0"),
    )
    _index("outbox", "refund_id")
    _index("outbox", "status", "id")
    op.create_table(
        "idempotency_keys",
        _str("merchant_id"),
        _str("key", 256),
        _str("request_hash", 128),
        _str("refund_id", nullable=True),
        _str("state", 16),
        _json("response", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _pk("idempotency_keys", "merchant_id", "key"),
        _ck("idempotency_keys", "state", "state IN ('in_flight', 'done')"),
        _fk("idempotency_keys", *_MERCHANT_FK),
    )
    op.create_table(
        "webhook_events",
        _bigid(),
        _str("provider", 32),
        _str("event_id", 256),
        _json("payload"),
        _ts("received_at"),
        _pk("webhook_events", "id"),
        _uq("webhook_events", "provider", "event_id"),
    )


# --------------------------------------------------------------------------- guards
AUDIT = "audit_immutable: audit events are append-only"
LEDGER = "ledger_immutable: ledger postings and their entries are append-only"
UNBALANCED = "unbalanced_posting: a posting needs two or more entries that sum to zero"
CLOSED = "ledger_immutable: entries cannot be added to a posting that already exists"


def _sqlite_refuse(name: str, when: str, table: str, message: str, cond: str = "") -> str:
    # RAISE(ABORT) undoes the statement and reports SQLITE_CONSTRAINT, i.e. an IntegrityError.
    where = f" WHEN {cond}" if cond else ""
    return (
        f"CREATE TRIGGER {name} BEFORE {when} ON {table}{where} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )


def _sqlite_guards() -> list[str]:
    entries = "SELECT {agg} FROM ledger_entries WHERE posting_id = NEW.posting_id"
    unbalanced = (
        f"({entries.format(agg='COUNT(*)')}) < 2 "
        f"OR ({entries.format(agg='COALESCE(SUM(amount), 0)')}) <> 0"
    )
    closed = "EXISTS (SELECT 1 FROM ledger_postings WHERE posting_id = NEW.posting_id)"
    return [
        _sqlite_refuse("trg_audit_events_no_update", "UPDATE", "audit_events", AUDIT),
        _sqlite_refuse("trg_audit_events_no_delete", "DELETE", "audit_events", AUDIT),
        _sqlite_refuse(
            "trg_ledger_postings_balanced", "INSERT", "ledger_postings", UNBALANCED, unbalanced
        ),
        _sqlite_refuse("trg_ledger_postings_no_update", "UPDATE", "ledger_postings", LEDGER),
        _sqlite_refuse("trg_ledger_postings_no_delete", "DELETE", "ledger_postings", LEDGER),
        _sqlite_refuse("trg_ledger_entries_open", "INSERT", "ledger_entries", CLOSED, closed),
        _sqlite_refuse("trg_ledger_entries_no_update", "UPDATE", "ledger_entries", LEDGER),
        _sqlite_refuse("trg_ledger_entries_no_delete", "DELETE", "ledger_entries", LEDGER),
    ]


# Functions capture the search_path they were created with, so a session with another
# search_path cannot point them at other tables. ERRCODE 23xxx makes drivers report an
# integrity error, like the CHECK constraints.
_PG_FUNCTIONS = [
    """
    CREATE FUNCTION rf_refuse() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    # Entries and their posting are written by one transaction; the advisory lock (per
    # posting id, held to commit) stops another transaction from adding entries between the
    # balance check and the commit, which READ COMMITTED alone would not see.
    """
    CREATE FUNCTION rf_ledger_posting_balanced() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
        n bigint;
        total numeric;
    BEGIN
        PERFORM pg_advisory_xact_lock(7231, hashtext(NEW.posting_id));
        SELECT count(*), coalesce(sum(amount), 0) INTO n, total
          FROM ledger_entries WHERE posting_id = NEW.posting_id;
        IF n < 2 OR total <> 0 THEN
            RAISE EXCEPTION 'unbalanced_posting: posting % has % entries summing to %',
                NEW.posting_id, n, total USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE FUNCTION rf_ledger_entry_open() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(7231, hashtext(NEW.posting_id));
        IF EXISTS (SELECT 1 FROM ledger_postings WHERE posting_id = NEW.posting_id) THEN
            RAISE EXCEPTION 'ledger_immutable: posting % already exists, its entries are closed',
                NEW.posting_id USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
]


def _pg_refuse(name: str, when: str, table: str, message: str) -> str:
    level = "STATEMENT" if when == "TRUNCATE" else "ROW"
    return (
        f"CREATE TRIGGER {name} BEFORE {when} ON {table} "
        f"FOR EACH {level} EXECUTE FUNCTION rf_refuse('{message}')"
    )


def _postgres_guards() -> list[str]:
    return [
        *_PG_FUNCTIONS,
        _pg_refuse("trg_audit_events_no_change", "UPDATE OR DELETE", "audit_events", AUDIT),
        _pg_refuse("trg_audit_events_no_truncate", "TRUNCATE", "audit_events", AUDIT),
        "CREATE TRIGGER trg_ledger_postings_balanced BEFORE INSERT ON ledger_postings "
        "FOR EACH ROW EXECUTE FUNCTION rf_ledger_posting_balanced()",
        _pg_refuse("trg_ledger_postings_no_change", "UPDATE OR DELETE", "ledger_postings", LEDGER),
        _pg_refuse("trg_ledger_postings_no_truncate", "TRUNCATE", "ledger_postings", LEDGER),
        "CREATE TRIGGER trg_ledger_entries_open BEFORE INSERT ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION rf_ledger_entry_open()",
        _pg_refuse("trg_ledger_entries_no_change", "UPDATE OR DELETE", "ledger_entries", LEDGER),
        _pg_refuse("trg_ledger_entries_no_truncate", "TRUNCATE", "ledger_entries", LEDGER),
    ]


def _guards(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return _sqlite_guards()
    if dialect == "postgresql":
        return _postgres_guards()
    raise RuntimeError(f"refundflow supports SQLite and PostgreSQL, not {dialect}")


def upgrade() -> None:
    _create_merchant_tables()
    _create_order_tables()
    _create_refund_tables()
    _create_record_tables()
    for statement in _guards(op.get_bind().dialect.name):
        op.execute(statement)


_TABLES = [
    "webhook_events",
    "idempotency_keys",
    "outbox",
    "audit_events",
    "ledger_entries",
    "ledger_postings",
    "approvals",
    "payouts",
    "reservations",
    "refund_lines",
    "refunds",
    "tender_balances",
    "order_payments",
    "order_discounts",
    "order_lines",
    "orders",
    "customer_balances",
    "policies",
    "api_keys",
    "merchants",
]


def downgrade() -> None:
    # Dropping a table drops its triggers (and indexes) with it.
    for table in _TABLES:
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        for function in ("rf_refuse", "rf_ledger_posting_balanced", "rf_ledger_entry_open"):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
