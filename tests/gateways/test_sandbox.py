"""The sandbox provider against real SQLite files: idempotency, scripts, settlement, webhooks."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from refundflow.devstack.sandbox import SIGNATURE_HEADER, SandboxGateway
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutEvent, PayoutStatus
from refundflow.gateways.base import GatewayError, GatewayTimeout, PayoutInstruction

ACCEPTED, SETTLED = PayoutStatus.ACCEPTED, PayoutStatus.SETTLED
FAILED, NOT_FOUND = PayoutStatus.FAILED_PERMANENT, PayoutStatus.NOT_FOUND


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ins(key: str = "r-1:1:1", amount: int = 4000, currency: str = "CNY") -> PayoutInstruction:
    return PayoutInstruction(
        payout_key=key,
        refund_id=key.split(":")[0],
        merchant_id="shop-1",
        customer_id="cust-1",
        route=PaymentMethod.CARD,
        amount=amount,
        currency=currency,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sandbox.db"


@pytest.fixture
def gw(db: Path) -> SandboxGateway:
    return SandboxGateway(path=db, settle_after_queries=2)


# ---------------------------------------------------------------------------- idempotency
async def test_same_key_twice_is_one_refund_with_a_stable_reference(gw: SandboxGateway) -> None:
    first = await gw.refund(ins())
    second = await gw.refund(ins())
    assert first.status is second.status is ACCEPTED
    assert first.provider_ref == second.provider_ref
    assert first.provider_ref.startswith("sbx_") and first.trace_ref
    assert gw.count("r-1:") == 1
    [record] = gw.refunds()
    assert (record.payout_key, record.amount, record.currency, record.route) == (
        "r-1:1:1",
        4000,
        "CNY",
        "card",
    )
    other = await gw.refund(ins("r-1:2:1"))
    assert other.provider_ref != first.provider_ref


async def test_key_reused_for_another_amount_is_refused_and_changes_nothing(
    gw: SandboxGateway,
) -> None:
    original = await gw.refund(ins(amount=4000))
    reused = await gw.refund(ins(amount=4001))
    assert (reused.status, reused.code, reused.provider_ref) == (FAILED, "KEY_REUSED", "")
    other_currency = await gw.refund(ins(amount=4000, currency="USD"))
    assert other_currency.code == "KEY_REUSED"
    [record] = gw.refunds()
    assert (record.amount, record.status) == (4000, ACCEPTED)
    assert (await gw.query("r-1:1:1")).provider_ref == original.provider_ref


# ---------------------------------------------------------------------------- scripts
async def test_transient_commits_nothing_and_scripts_are_consumed_in_order(
    gw: SandboxGateway,
) -> None:
    gw.script("r-1:", ["transient", "transient", "ok"])
    for _ in range(2):
        with pytest.raises(GatewayError):
            await gw.refund(ins())
        assert gw.count() == 0
        assert (await gw.query("r-1:1:1")).status is NOT_FOUND
    assert (await gw.refund(ins())).status is ACCEPTED
    # The script is used up: the next key under the prefix is served normally.
    assert (await gw.refund(ins("r-1:2:1"))).status is ACCEPTED
    assert gw.count("r-1:") == 2


async def test_script_applies_only_under_its_prefix(gw: SandboxGateway) -> None:
    gw.script("r-1:", ["transient"])
    # "r-10:..." is not under "r-1:": the colon keeps neighbouring refund ids apart.
    assert (await gw.refund(ins("r-10:1:1"))).status is ACCEPTED
    with pytest.raises(GatewayError):
        await gw.refund(ins("r-1:1:1"))


async def test_most_specific_prefix_speaks_first(gw: SandboxGateway) -> None:
    gw.script("r-1:", [("permanent", "CARD_CLOSED")])
    gw.script("r-1:2:", ["transient"])
    with pytest.raises(GatewayError):
        await gw.refund(ins("r-1:2:1"))
    assert (await gw.refund(ins("r-1:1:1"))).code == "CARD_CLOSED"


async def test_permanent_commits_a_failed_refund_with_the_code(gw: SandboxGateway) -> None:
    gw.script("r-1:", [("permanent", "CARD_CLOSED")])
    result = await gw.refund(ins())
    assert (result.status, result.code) == (FAILED, "CARD_CLOSED")
    again = await gw.refund(ins())  # the provider remembers its answer for the key
    assert (again.status, again.code, again.provider_ref) == (
        FAILED,
        "CARD_CLOSED",
        result.provider_ref,
    )
    queried = await gw.query("r-1:1:1")
    assert (queried.status, queried.code) == (FAILED, "CARD_CLOSED")
    assert gw.count() == 1


async def test_the_ledgers_own_refusal_stores_nothing(gw: SandboxGateway) -> None:
    # Scripted on the ledger underneath: refused before anything is stored, unlike "permanent".
    gw.ledger.script("r-1:", [("permanent", "NO_FUNDS")])
    refused = await gw.refund(ins())
    assert (refused.status, refused.code, refused.provider_ref) == (FAILED, "NO_FUNDS", "")
    assert gw.count() == 0 and (await gw.query("r-1:1:1")).status is NOT_FOUND


async def test_timeout_after_commit_is_found_by_query_and_never_paid_twice(
    gw: SandboxGateway,
) -> None:
    gw.script("r-lost:", ["timeout_after_commit"])
    with pytest.raises(GatewayTimeout):
        await gw.refund(ins("r-lost:1:1"))
    found = await gw.query("r-lost:1:1")
    assert found.status is ACCEPTED
    assert [r.payout_key for r in gw.refunds("r-lost:")] == ["r-lost:1:1"]
    resent = await gw.refund(ins("r-lost:1:1"))
    assert resent.provider_ref == found.provider_ref
    assert gw.count("r-lost:") == 1


def test_unknown_behaviour_or_rule_is_refused_up_front(gw: SandboxGateway) -> None:
    with pytest.raises(ValueError, match="unknown sandbox behaviour"):
        gw.script("r-1:", ["explode"])
    with pytest.raises(ValueError, match="settlement rule"):
        gw.script("r-1:", [("ok", "queries:0")])
    with pytest.raises(ValueError, match="settlement rule"):
        gw.default_settlement("soon")
    with pytest.raises(ValueError, match="settlement rule"):
        SandboxGateway(path=gw.path, settle_after_queries=0)


# ---------------------------------------------------------------------------- settlement
async def test_settle_after_queries(db: Path) -> None:
    gw = SandboxGateway(path=db, settle_after_queries=3)
    await gw.refund(ins())
    statuses = [(await gw.query("r-1:1:1")).status for _ in range(4)]
    assert statuses == [ACCEPTED, ACCEPTED, SETTLED, SETTLED]
    [record] = gw.refunds()
    assert record.queries == 4 and record.settled_at is not None


async def test_settle_after_seconds_by_the_injected_clock(db: Path) -> None:
    clock = Clock()
    gw = SandboxGateway(path=db, settle_after_seconds=5, clock=clock)
    await gw.refund(ins())
    clock.now += 4.9
    assert (await gw.query("r-1:1:1")).status is ACCEPTED
    clock.now += 0.1
    result = await gw.query("r-1:1:1")
    assert result.status is SETTLED
    assert result.settled_at is not None and result.settled_at.timestamp() == clock.now


async def test_a_seconds_0_rule_settles_while_answering(gw: SandboxGateway) -> None:
    gw.script("r-1", [("ok", "seconds:0")])
    answered = await gw.refund(ins())
    assert answered.status is SETTLED and answered.settled_at is not None
    assert (await gw.refund(ins("r-2:1:1"))).status is ACCEPTED  # the default rule: later


async def test_never_settles_until_told(gw: SandboxGateway) -> None:
    gw.default_settlement("never")
    await gw.refund(ins())
    for _ in range(5):
        assert (await gw.query("r-1:1:1")).status is ACCEPTED
    assert gw.settle("r-1:1:1").status is SETTLED
    assert (await gw.query("r-1:1:1")).status is SETTLED
    with pytest.raises(KeyError):
        gw.settle("r-unknown:1:1")


async def test_script_overrides_the_settlement_of_one_refund(gw: SandboxGateway) -> None:
    gw.script("r-1:1:", [("ok", "never")])
    gw.script("r-1:2:", [("timeout_after_commit", "queries:1")])
    await gw.refund(ins("r-1:1:1"))
    with pytest.raises(GatewayTimeout):
        await gw.refund(ins("r-1:2:1"))
    await gw.refund(ins("r-1:3:1"))  # the gateway default: queries:2
    first = [(await gw.query(f"r-1:{n}:1")).status for n in (1, 2, 3)]
    second = [(await gw.query(f"r-1:{n}:1")).status for n in (1, 2, 3)]
    assert first == [ACCEPTED, SETTLED, ACCEPTED]
    assert second == [ACCEPTED, SETTLED, SETTLED]


async def test_fail_reverses_a_settled_refund(gw: SandboxGateway) -> None:
    await gw.refund(ins())
    gw.settle("r-1:1:1")
    assert gw.fail("r-1:1:1", "ACCOUNT_CLOSED").status is FAILED
    result = await gw.query("r-1:1:1")
    assert (result.status, result.code, result.settled_at) == (FAILED, "ACCOUNT_CLOSED", None)
    with pytest.raises(ValueError, match="already failed"):
        gw.settle("r-1:1:1")


# ---------------------------------------------------------------------------- durability
async def test_state_and_scripts_survive_a_new_instance_on_the_same_file(db: Path) -> None:
    before = SandboxGateway(path=db, settle_after_queries=2)
    committed = await before.refund(ins())
    before.script("r-2:", ["transient"])
    del before

    after = SandboxGateway(path=db, settle_after_queries=5)
    found = await after.query("r-1:1:1")
    assert (found.status, found.provider_ref) == (ACCEPTED, committed.provider_ref)
    # The refund keeps the rule it was created under, not the new instance's default.
    assert (await after.query("r-1:1:1")).status is SETTLED
    with pytest.raises(GatewayError):
        await after.refund(ins("r-2:1:1"))


async def test_concurrent_refunds_with_one_key_create_one_refund(db: Path) -> None:
    gateways = [SandboxGateway(path=db, settle_after_queries=2) for _ in range(2)]
    results = await asyncio.gather(*(gateways[i % 2].refund(ins()) for i in range(10)))
    assert len({r.provider_ref for r in results}) == 1
    assert gateways[0].count() == 1


def _refund_in_process(path: str) -> str:
    gw = SandboxGateway(path=Path(path))
    return asyncio.run(gw.refund(ins())).provider_ref


def test_separate_processes_on_one_file_create_one_refund(db: Path) -> None:
    SandboxGateway(path=db)  # the schema exists before the race on the refund
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        refs = pool.map(_refund_in_process, [str(db)] * 8)
    assert len(set(refs)) == 1
    assert SandboxGateway(path=db).count() == 1


# ---------------------------------------------------------------------------- events
async def test_settling_emits_one_event_per_transition(db: Path) -> None:
    events: list[PayoutEvent] = []

    async def record(event: PayoutEvent) -> None:
        events.append(event)

    gw = SandboxGateway(path=db, settle_after_queries=1, on_event=record)
    await gw.refund(ins("r-1:1:1"))
    await gw.query("r-1:1:1")
    await gw.query("r-1:1:1")  # already settled: no second event
    assert [(e.payout_key, e.status) for e in events] == [("r-1:1:1", SETTLED)]

    gw.default_settlement("never")
    await gw.refund(ins("r-1:2:1"))
    gw.settle("r-1:2:1")
    gw.fail("r-1:2:1", "REVERSED")
    for _ in range(10):
        await asyncio.sleep(0)
    assert [(e.payout_key, e.status, e.code) for e in events[1:]] == [
        ("r-1:2:1", SETTLED, ""),
        ("r-1:2:1", FAILED, "REVERSED"),
    ]
    assert len({e.event_id for e in events}) == 3
    assert events[0].provider_ref and events[0].trace_ref


def test_settle_outside_an_event_loop_delivers_at_once(db: Path) -> None:
    events: list[PayoutEvent] = []

    async def record(event: PayoutEvent) -> None:
        events.append(event)

    gw = SandboxGateway(path=db, settle_after_seconds=None, on_event=record)
    asyncio.run(gw.refund(ins()))
    gw.settle("r-1:1:1")
    assert [e.status for e in events] == [SETTLED]


async def test_a_failing_event_callback_does_not_break_the_provider(db: Path) -> None:
    async def broken(event: PayoutEvent) -> None:
        raise RuntimeError("merchant endpoint down")

    gw = SandboxGateway(path=db, settle_after_queries=1, on_event=broken)
    await gw.refund(ins())
    assert (await gw.query("r-1:1:1")).status is SETTLED


async def test_an_event_the_callback_failed_on_is_offered_again(db: Path) -> None:
    clock, down = Clock(), [True]
    seen: list[str] = []

    async def flaky(event: PayoutEvent) -> None:
        seen.append(event.event_id)
        if down[0]:
            raise RuntimeError("merchant endpoint down")

    gw = SandboxGateway(path=db, settle_after_queries=1, clock=clock, on_event=flaky)
    await gw.refund(ins())
    await gw.query("r-1:1:1")
    down[0] = False
    await gw.query("r-1:1:1")  # within the backoff: not offered yet
    assert len(seen) == 1
    clock.now += 60
    await gw.query("r-1:1:1")
    await gw.query("r-1:1:1")  # acknowledged: never again
    assert seen == [seen[0]] * 2


# ---------------------------------------------------------------------------- webhooks
def _event_body(status: PayoutStatus = SETTLED) -> bytes:
    return (
        PayoutEvent(payout_key="r-1:1:1", status=status, event_id="evt_1")
        .model_dump_json()
        .encode()
    )


def test_signed_webhook_is_accepted(db: Path) -> None:
    clock = Clock()
    gw = SandboxGateway(path=db, secret="s3cret", clock=clock)
    body = _event_body()
    headers = gw.sign_webhook(body, int(clock.now) - 299)
    event = gw.verify_webhook({k.lower(): v for k, v in headers.items()}, body)
    assert (event.payout_key, event.status, event.event_id) == ("r-1:1:1", SETTLED, "evt_1")


@pytest.mark.parametrize(
    "forgery", ["body_changed", "signature_changed", "other_secret", "no_header", "malformed"]
)
def test_forged_webhook_is_rejected(db: Path, tmp_path: Path, forgery: str) -> None:
    gw = SandboxGateway(path=db, secret="s3cret", clock=Clock())
    body = _event_body()
    good = gw.sign_webhook(body)
    stamp, digest = good[SIGNATURE_HEADER].split(",")
    flipped = digest[:-1] + ("1" if digest.endswith("0") else "0")
    guesser = SandboxGateway(path=tmp_path / "other.db", secret="guess", clock=Clock())
    headers, sent = {
        "body_changed": (good, _event_body(FAILED)),
        "signature_changed": ({SIGNATURE_HEADER: f"{stamp},{flipped}"}, body),
        "other_secret": (guesser.sign_webhook(body), body),
        "no_header": ({}, body),
        "malformed": ({SIGNATURE_HEADER: "t=abc,v1=00"}, body),
    }[forgery]
    with pytest.raises(ValueError):
        gw.verify_webhook(headers, sent)


def test_stale_webhook_is_rejected(db: Path) -> None:
    clock = Clock()
    gw = SandboxGateway(path=db, secret="s3cret", clock=clock, webhook_tolerance=300)
    body = _event_body()
    headers = gw.sign_webhook(body, int(clock.now) - 301)
    with pytest.raises(ValueError, match="tolerance"):
        gw.verify_webhook(headers, body)


def test_generated_secret_is_shared_through_the_file(db: Path, tmp_path: Path) -> None:
    body = _event_body()
    headers = SandboxGateway(path=db).sign_webhook(body)
    assert SandboxGateway(path=db).verify_webhook(headers, body).payout_key == "r-1:1:1"
    with pytest.raises(ValueError, match="signature"):
        SandboxGateway(path=tmp_path / "elsewhere.db").verify_webhook(headers, body)
