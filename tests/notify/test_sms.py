"""The Twilio adapter against the Twilio simulator, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from refundflow.devstack.sms_simulator import TwilioSimulator, segments
from refundflow.notify.errors import DeliveryError
from refundflow.notify.sms import TwilioSms, to_e164


async def test_a_message_is_queued_and_recorded(
    sms: TwilioSms, twilio: tuple[TwilioSimulator, str]
) -> None:
    sim, _url = twilio
    text = "您订单SO-88的¥1,234.56退款已退回至支付宝，预计2027年10月8日前到账。"
    sid = await sms.send("+86 138-0013-8000", text)
    assert sid.startswith("SM") and len(sid) == 34
    [msg] = [m for m in sim.messages if m.sid == sid]
    assert (msg.to, msg.from_, msg.body, msg.status) == (
        "+8613800138000",
        "+15005550006",
        text,
        "queued",
    )
    async with httpx.AsyncClient(auth=(sim.account_sid, sim.auth_token)) as client:
        url = f"{_url}/2010-04-01/Accounts/{sim.account_sid}/Messages/{sid}.json"
        resource = (await client.get(url)).json()
    assert resource["sid"] == sid and resource["num_segments"] == "1"
    assert resource["direction"] == "outbound-api"


async def test_an_invalid_number_is_refused_for_good_with_21211(
    sms: TwilioSms, twilio: tuple[TwilioSimulator, str]
) -> None:
    sim, _ = twilio
    before = len(sim.messages)
    with pytest.raises(DeliveryError, match="Invalid 'To' Phone Number") as err:
        await sms.send("12345", "hello")
    assert err.value.code == "21211" and not err.value.retryable
    assert len(sim.messages) == before


@pytest.mark.parametrize(("status", "code"), [(500, "20500"), (429, "20429")])
async def test_a_busy_provider_is_retryable_and_the_retry_goes_through(
    sms: TwilioSms, twilio: tuple[TwilioSimulator, str], status: int, code: str
) -> None:
    sim, _ = twilio
    sim.fail_next(1, status=status)
    with pytest.raises(DeliveryError) as err:
        await sms.send("+15558675310", "Your refund is on its way.")
    assert err.value.retryable and err.value.code == code
    sid = await sms.send("+15558675310", "Your refund is on its way.")
    assert sid in {m.sid for m in sim.messages}


async def test_wrong_credentials_are_20003(twilio: tuple[TwilioSimulator, str]) -> None:
    sim, url = twilio
    wrong = TwilioSms(
        account_sid=sim.account_sid, auth_token="nope", from_number="+15005550006", base_url=url
    )
    try:
        with pytest.raises(DeliveryError, match="Authenticate") as err:
            await wrong.send("+15558675310", "hi")
    finally:
        await wrong.aclose()
    # Our configuration, not the customer's number: retried until the operator fixes it.
    assert err.value.code == "20003" and err.value.retryable


async def test_the_simulator_checks_the_other_fields_as_twilio_does(
    twilio: tuple[TwilioSimulator, str],
) -> None:
    sim, url = twilio
    endpoint = f"{url}/2010-04-01/Accounts/{sim.account_sid}/Messages.json"
    cases = [
        ({"From": "+15005550006", "Body": "x"}, 21604),
        ({"To": "+15558675310", "Body": "x"}, 21603),
        ({"To": "+15558675310", "From": "+15005550006"}, 21602),
        ({"To": "+15558675310", "From": "+15550000000", "Body": "x"}, 21606),
        ({"To": "+15558675310", "From": "+15005550006", "Body": "x" * 1601}, 21617),
    ]
    async with httpx.AsyncClient(auth=(sim.account_sid, sim.auth_token)) as client:
        for form, code in cases:
            resp = await client.post(endpoint, data=form)
            assert resp.status_code == 400
            assert resp.json()["code"] == code
            assert resp.json()["more_info"].endswith(str(code))


def test_segments_and_number_normalization() -> None:
    assert segments("a" * 160) == 1 and segments("a" * 161) == 2
    assert segments("退" * 70) == 1 and segments("退" * 71) == 2
    assert to_e164("+1 (555) 867-5310") == "+15558675310"
