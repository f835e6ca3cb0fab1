"""What a customer is told to quote to their bank or wallet: for every provider, through the
workflow and its simulator, the payout notice's reference is one the provider knows the
refund by, never the name of the account that received it."""

from __future__ import annotations

import re

from refundflow.domain.notices import render_notice
from refundflow.domain.states import RefundStatus
from tests.providers.conftest import ProviderStack, provider  # noqa: F401  (fixture)
from tests.workflows.conftest import payment

# A reference is quoted over the phone or typed into a form: letters, digits, a few marks.
REFERENCE = re.compile(r"^[A-Za-z0-9_*:-]+$")


async def test_the_payout_notice_quotes_a_reference_the_provider_knows(
    provider: ProviderStack,  # noqa: F811
) -> None:
    p = provider
    txn = f"{p.provider.txn_prefix}{p.name}-o-trace"
    p.pay(txn, 10000)
    tender = payment("p1", p.provider.method.value, 10000, await p.stack.now())
    order = await p.stack.order(f"{p.name}-o-trace", payments=[{**tender, "provider_txn_id": txn}])
    refund_id = f"{p.name}-trace"
    result = await p.run(refund_id, order, contact={"email": "c@example.com", "locale": "en"})
    assert result.status is RefundStatus.COMPLETED

    [at_provider] = p.refunds(refund_id)
    [sent] = [r for r in p.stack.outbox(refund_id, "customer") if r.template == "payout_sent"]
    quoted = sent.payload["trace_ref"]
    known = {at_provider.provider_ref, at_provider.trace_ref} - {""}
    if p.name == "wechat":
        # WeChat Pay's answer names the receiving account ("支付用户零钱", "招商银行信用卡0403")
        # beside its own refund number; only the number traces the refund.
        assert quoted == at_provider.provider_ref != at_provider.trace_ref
    if quoted:
        assert quoted in known and REFERENCE.match(quoted), quoted
        notice = render_notice("payout_sent", "en", sent.payload)
        assert f"Reference: {quoted}." in notice.text
    assert all(REFERENCE.match(ref) for ref in (r.trace_ref for r in result.payouts) if ref)
