"""The console without a browser (httpx on the ASGI app): sessions and CSRF, roles and merchant
scope, decisions through the run's Update with refusals in words, languages, bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from refundflow.api.console.texts import TEXTS
from refundflow.db.engine import session_scope
from refundflow.db.models import AuditEventRow, RefundRow
from refundflow.db.repository import create_api_key, list_audit, revoke_api_key
from refundflow.domain.states import RefundStatus
from tests.api.conftest import Api, serve_api
from tests.console.conftest import MEDIUM, person, refund_waiting, start_refund, wait_status
from tests.payload_keys import PAYLOAD_KEYS

TEMPLATES = Path(__file__).parents[2] / "refundflow" / "api" / "console" / "templates"


def fingerprint_on(html: str) -> str:
    found = re.search(r'name="quote_fingerprint" value="([0-9a-f]+)"', html)
    assert found, "no decision form on the page"
    return found.group(1)


def status_of(api: Api, refund_id: str) -> str:
    with session_scope(api.engine, readonly=True) as s:
        row = s.get(RefundRow, refund_id)
        assert row is not None
        return row.status


def refusals(api: Api, refund_id: str) -> list[str]:
    with session_scope(api.engine, readonly=True) as s:
        return [
            str(e.data["code"])
            for e in list_audit(s, refund_id=refund_id)
            if e.kind == "message_refused"
        ]


async def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_it(console: Api) -> None:
    async with person(console) as someone:
        wrong = await someone.get("/console/sign-in")
        assert wrong.status_code == 200
        refused = await someone.post("/console/sign-in", {"api_key": "rf_nope_nope"})
        assert refused.status_code == 401 and 'data-code="unauthorized"' in refused.text
        signed = await someone.post("/console/sign-in", {"api_key": console.keys["approver"]})
        assert signed.status_code == 303 and signed.headers["location"] == "/console"
        cookie = signed.headers["set-cookie"]
        assert "rf_console=" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure (below)
        assert console.keys["approver"] not in cookie  # sealed: the key is not in it
        assert (await someone.get("/console/inbox")).status_code == 200
        out = await someone.post("/console/sign-out", {})
        assert out.status_code == 303
        after = await someone.get("/console/inbox")
        assert after.status_code == 303
        assert after.headers["location"].startswith("/console/sign-in")


async def test_over_tls_the_cookie_is_secure(console: Api) -> None:
    async with person(console) as someone:
        someone.http.base_url = "https://console.test"
        await someone.get("/console/sign-in")
        signed = await someone.post("/console/sign-in", {"api_key": console.keys["ops"]})
        assert "Secure" in signed.headers["set-cookie"]


async def test_each_role_sees_only_its_pages(console: Api) -> None:
    # Who may open what, as the API's roles say (ops answer suppliers, approvers read reports).
    pages = {
        "inbox": {"approver"},
        "ops": {"ops"},
        "warehouse": {"warehouse", "ops"},
        "reports": {"ops", "approver"},
        "refunds": {"approver", "ops", "warehouse", "client"},
    }
    for role in ("approver", "ops", "warehouse", "client"):
        async with person(console, role) as someone:
            home = await someone.get("/console")
            for name, allowed in pages.items():
                response = await someone.get(f"/console/{name}")
                admitted = role in allowed
                assert response.status_code == (200 if admitted else 403), (role, name)
                if not admitted:
                    assert 'data-code="forbidden"' in response.text
            page = await someone.get(home.headers["location"])
            links = set(
                re.findall(r'href="/console/(inbox|ops|warehouse|reports|refunds)"', page.text)
            )
            assert links == {n for n, roles in pages.items() if role in roles}, role


async def test_an_approver_approves_through_the_run_and_sees_refusals_in_words(
    console: Api,
) -> None:
    refund_id = await refund_waiting(console, "c-approve", MEDIUM)
    async with person(console, "approver") as alice:
        inbox = await alice.get("/console/inbox")
        assert f"/console/refunds/{refund_id}" in inbox.text and "CN¥500.00" in inbox.text
        page = await alice.get(f"/console/refunds/{refund_id}")
        shown = fingerprint_on(page.text)
        stale = await alice.post(
            f"/console/refunds/{refund_id}/decision",
            {"decision": "APPROVE", "quote_fingerprint": "0" * 32},
        )
        assert stale.status_code == 409
        assert "the quote changed since this page was loaded" in stale.text
        assert refusals(console, refund_id) == ["outdated_quote"]  # the run refused it
        approved = await alice.post(
            f"/console/refunds/{refund_id}/decision",
            {"decision": "APPROVE", "quote_fingerprint": shown, "comment": "photos check out"},
        )
        assert approved.status_code == 303
        assert approved.headers["location"] == f"/console/refunds/{refund_id}?done=approved"
        assert status_of(console, refund_id) != RefundStatus.AWAITING_APPROVAL.value
        done = await alice.get(approved.headers["location"])
        assert 'data-done="approved"' in done.text and "photos check out" in done.text
        assert f"/console/refunds/{refund_id}" not in (await alice.get("/console/inbox")).text


async def test_own_request_shows_no_buttons_and_a_forged_post_is_refused(console: Api) -> None:
    with session_scope(console.engine) as s:
        # The approver's own client key: a refund they ask for is theirs.
        _, console.keys["approver-as-client"] = create_api_key(
            s, merchant_id=console.merchant, name="approver-1", role="client"
        )
    refund_id = await refund_waiting(console, "c-own", MEDIUM, requester="approver-as-client")
    async with person(console, "approver") as alice:
        assert f"/console/refunds/{refund_id}" not in (await alice.get("/console/inbox")).text
        page = await alice.get(f"/console/refunds/{refund_id}")
        assert 'data-blocked="decide.own_request"' in page.text
        assert 'value="APPROVE"' not in page.text
        fingerprint = re.search(r"<code>([0-9a-f]{32})</code>", page.text)
        assert fingerprint
        forged = await alice.post(
            f"/console/refunds/{refund_id}/decision",
            {"decision": "APPROVE", "quote_fingerprint": fingerprint.group(1)},
        )
        assert forged.status_code == 403  # as the API answers self_approval
        assert "nobody approves a refund they requested" in forged.text.replace("Refused: ", "")
    assert refusals(console, refund_id) == ["self_approval"]
    assert status_of(console, refund_id) == RefundStatus.AWAITING_APPROVAL.value


async def test_another_merchants_refund_is_not_found(console: Api) -> None:
    refund_id = await refund_waiting(console, "c-scope", MEDIUM)
    async with person(console, "client") as mine:
        listed = await mine.get("/console/refunds?order_id=o-c-scope&status=AWAITING_APPROVAL")
        assert f"/console/refunds/{refund_id}" in listed.text
        other_status = await mine.get("/console/refunds?status=COMPLETED")
        assert refund_id not in other_status.text
    async with person(console, "approver-b") as other:
        assert refund_id not in (await other.get("/console/refunds")).text
        page = await other.get(f"/console/refunds/{refund_id}")
        assert page.status_code == 404 and 'data-code="not_found"' in page.text
        assert refund_id not in page.text
        forged = await other.post(
            f"/console/refunds/{refund_id}/decision",
            {"decision": "APPROVE", "quote_fingerprint": "0" * 32},
        )
        assert forged.status_code == 404
    assert refusals(console, refund_id) == []
    assert status_of(console, refund_id) == RefundStatus.AWAITING_APPROVAL.value


async def test_csrf_a_stolen_cookie_without_the_token_or_from_another_site_is_refused(
    console: Api,
) -> None:
    refund_id = await refund_waiting(console, "c-csrf", MEDIUM)
    async with person(console, "approver") as alice:
        shown = fingerprint_on((await alice.get(f"/console/refunds/{refund_id}")).text)
        form = {"decision": "APPROVE", "quote_fingerprint": shown}
        # The cookie alone, as a thief or another site's form would send it.
        no_token = await alice.http.post(f"/console/refunds/{refund_id}/decision", data=form)
        assert no_token.status_code == 403 and 'data-code="csrf_token"' in no_token.text
        wrong = await alice.http.post(
            f"/console/refunds/{refund_id}/decision", data={**form, "csrf": "x" * 32}
        )
        assert wrong.status_code == 403
        cross = await alice.post(
            f"/console/refunds/{refund_id}/decision",
            form,
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403 and 'data-code="cross_site"' in cross.text
        # A token from another session is worth nothing in this one.
        async with person(console, "approver2") as bob:
            await bob.get("/console/inbox")
            theirs = await alice.http.post(
                f"/console/refunds/{refund_id}/decision", data={**form, "csrf": bob.csrf}
            )
            assert theirs.status_code == 403
    assert refusals(console, refund_id) == []
    assert status_of(console, refund_id) == RefundStatus.AWAITING_APPROVAL.value


async def test_a_revoked_key_ends_its_session(console: Api) -> None:
    async with person(console, "ops") as ops:
        assert (await ops.get("/console/ops")).status_code == 200
        with session_scope(console.engine) as s:
            key_id = console.keys["ops"].split("_")[1]
            revoke_api_key(s, key_id=key_id)
        assert (await ops.get("/console/ops")).status_code == 303


async def test_bad_form_input_changes_nothing_and_is_never_a_500(console: Api) -> None:
    refund_id = await refund_waiting(console, "c-bad", MEDIUM)
    async with person(console, "approver") as alice:
        await alice.get(f"/console/refunds/{refund_id}")
        for form in (
            {"decision": "MAYBE", "quote_fingerprint": "x"},
            {"decision": "APPROVE", "quote_fingerprint": "f" * 500},
            {},
        ):
            bad = await alice.post(f"/console/refunds/{refund_id}/decision", form)
            assert bad.status_code == 422, bad.text
        missing = await alice.get("/console/refunds/no-such-refund")
        assert missing.status_code == 404
    async with person(console, "ops") as ops:
        await ops.get(f"/console/refunds/{refund_id}/ops/switch_destination")
        bank = await ops.post(
            f"/console/refunds/{refund_id}/ops/switch_destination",
            {"destination": "BANK_TRANSFER", "holder_name": "A"},
        )
        assert bank.status_code == 422
        nowhere = await ops.post(
            f"/console/refunds/{refund_id}/ops/switch_destination", {"destination": "MOON"}
        )
        assert nowhere.status_code == 422
        unknown = await ops.get(f"/console/refunds/{refund_id}/ops/launch_rocket")
        assert unknown.status_code == 404
    async with person(console, "warehouse") as warehouse:
        await warehouse.get("/console/warehouse")
        for amount in ("abc", "1.234", "-5"):
            bad = await warehouse.post(
                f"/console/refunds/{refund_id}/inspection", {"deduction": amount}
            )
            assert bad.status_code == 422, amount
    assert refusals(console, refund_id) == []
    assert status_of(console, refund_id) == RefundStatus.AWAITING_APPROVAL.value


async def test_languages_follow_the_browser_and_the_switch(console: Api) -> None:
    refund_id = await refund_waiting(console, "c-lang", MEDIUM)
    async with person(console, "approver") as alice:
        zh = await alice.get(
            f"/console/refunds/{refund_id}", headers={"Accept-Language": "zh-CN,zh;q=0.9"}
        )
        assert '<html lang="zh-CN">' in zh.text
        assert "等待审批" in zh.text and "¥500.00" in zh.text and "批准" in zh.text
        switched = await alice.get(
            f"/console/refunds/{refund_id}?lang=en", headers={"Accept-Language": "zh-CN"}
        )
        assert '<html lang="en">' in switched.text and "Awaiting approval" in switched.text
        assert "rf_lang=en" in switched.headers["set-cookie"]
        kept = await alice.get("/console/inbox", headers={"Accept-Language": "zh-CN"})
        assert '<html lang="en">' in kept.text  # the switch outlasts the browser's preference


def test_every_text_the_templates_use_exists_in_both_languages() -> None:
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r't\("([a-z_]+\.[A-Za-z_.-]*[A-Za-z_-])"', template.read_text()))
    missing = {k for k in used if k not in TEXTS}
    assert not missing
    assert all(set(TEXTS[k]) == {"en", "zh-CN"} and all(TEXTS[k].values()) for k in TEXTS)
    for status in RefundStatus:
        assert f"status.{status.value}" in TEXTS


async def test_without_encryption_keys_nobody_signs_in(
    fresh_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    from refundflow.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'db' / 'refundflow.db'}"
    upgrade(url)
    async with (
        serve_api(fresh_env, url, tmp_path, keyring=None) as api,
        person(api) as someone,
    ):
        page = await someone.get("/console/sign-in")
        assert page.status_code == 503 and 'data-code="console_unavailable"' in page.text
        refused = await someone.http.post(
            "/console/sign-in", data={"api_key": api.keys["admin"], "csrf": "x"}
        )
        assert refused.status_code == 503 and "set-cookie" not in refused.headers


async def test_reports_export_the_charted_numbers_as_csv(console_db: Api) -> None:
    console = console_db
    first = await refund_waiting(console, "c-rep-1", MEDIUM)
    await refund_waiting(console, "c-rep-2", MEDIUM)
    async with person(console, "approver") as alice:
        page = await alice.get(f"/console/refunds/{first}")
        await alice.post(
            f"/console/refunds/{first}/decision",
            {"decision": "REJECT", "quote_fingerprint": fingerprint_on(page.text)},
        )
    await wait_status(console, first, RefundStatus.REJECTED)
    async with person(console, "ops") as ops:
        reports = await ops.get("/console/reports")
        assert reports.status_code == 200
        assert reports.text.count("<svg") >= 7 and "pygal" in reports.text
        assert "<script" not in reports.text.split("</head>")[1]  # charts carry no script
        day = (await ops.get("/console/reports/by_day.csv")).text.splitlines()
        assert day[0] == "day,status,currency,refunds,amount_minor"
        rows = {tuple(line.split(",")[1:]) for line in day[1:]}
        assert ("REJECTED", "CNY", "1", "50000") in rows
        assert ("AWAITING_APPROVAL", "CNY", "1", "50000") in rows
        turnaround = (await ops.get("/console/reports/approval_turnaround.csv")).text
        assert turnaround.splitlines()[1].startswith("approver-1,1,")
        reasons = (await ops.get("/console/reports/rate_by_reason.csv")).text.splitlines()
        assert reasons[1:] == ["DAMAGED,2,2,1.0000"]
        assert (await ops.get("/console/reports/nope.csv")).status_code == 404
    with session_scope(console.engine, readonly=True) as s:
        assert s.exec(select(AuditEventRow).where(AuditEventRow.kind == "rejected")).first()


SMALL = [{"line_id": "l1", "sku": "MUG", "quantity": 1, "unit_price": 10000}]
"""100.00 CNY: approved automatically."""


async def test_the_warehouse_records_an_inspection_that_sends_it_back_for_approval(
    console: Api,
) -> None:
    refund_id = await start_refund(console, "c-return", SMALL)
    await wait_status(console, refund_id, RefundStatus.AWAITING_RETURN)
    async with person(console, "warehouse") as warehouse:
        listed = await warehouse.get("/console/warehouse")
        assert f"/console/refunds/{refund_id}" in listed.text
        page = await warehouse.get(f"/console/refunds/{refund_id}")
        assert 'action="/console/refunds/' + refund_id + '/inspection"' in page.text
        done = await warehouse.post(
            f"/console/refunds/{refund_id}/inspection",
            {"condition": "DAMAGED", "deduction": "20.00", "note": "cracked handle"},
        )
        assert done.status_code == 303, done.text
    await wait_status(console, refund_id, RefundStatus.AWAITING_APPROVAL)
    async with person(console, "approver") as alice:
        page = await alice.get(f"/console/refunds/{refund_id}")
        assert "Damage found at inspection" in page.text and "cracked handle" in page.text
        assert 'data-total="8000"' in page.text
        assert "A deduction after inspection changed the amount." in page.text


async def test_ops_record_a_suppliers_answer_on_a_presale_order(console: Api) -> None:
    now = await console.env.get_current_time()
    presale = {
        "supplier_ref": "factory-9",
        "expected_ship_date": (now + timedelta(days=30)).date().isoformat(),
        "production_starts_on": (now - timedelta(days=3)).date().isoformat(),
    }
    refund_id = await start_refund(
        console,
        "c-presale",
        SMALL,
        reason="PRESALE_CANCEL",
        status="PAID",
        delivered_at=None,
        presale=presale,
    )
    await wait_status(console, refund_id, RefundStatus.AWAITING_SUPPLIER)
    async with person(console, "warehouse") as warehouse:
        # The warehouse inspects returns; suppliers' answers are the ops' and the warehouse's.
        page = await warehouse.get(f"/console/refunds/{refund_id}")
        assert "/supplier-response" in page.text
    async with person(console, "ops") as ops:
        listed = await ops.get("/console/warehouse")
        assert f"/console/refunds/{refund_id}" in listed.text
        await ops.get(f"/console/refunds/{refund_id}")
        done = await ops.post(
            f"/console/refunds/{refund_id}/supplier-response",
            {"supplier_ref": "factory-9", "can_cancel": "yes", "cancellation_fee": "5.00"},
        )
        assert done.status_code == 303, done.text
    await wait_status(console, refund_id, RefundStatus.AWAITING_APPROVAL)
    async with person(console, "approver") as alice:
        page = await alice.get(f"/console/refunds/{refund_id}")
        assert "Presale cancellation fee" in page.text and 'data-total="9500"' in page.text


def test_the_api_does_not_start_without_encryption_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    env |= {
        "REFUNDFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "REFUNDFLOW_DATA_DIR": str(tmp_path),
        "REFUNDFLOW_SANDBOX": "true",
        "REFUNDFLOW_PAYLOAD_KEYS": PAYLOAD_KEYS,
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "refundflow"), "api", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert "error missing_encryption_key: no encryption keys" in message
    assert "Traceback" not in done.stderr


async def test_the_inbox_shows_a_page_and_loads_the_rest_on_demand(console: Api) -> None:
    from bench.console_inbox import seed_waiting

    console.keys["busy"] = seed_waiting(str(console.engine.url), f"{console.merchant}-busy", 150)
    async with person(console, "busy") as busy:
        first = await busy.get("/console/inbox")
        assert "150 refunds wait for your decision" in first.text
        assert first.text.count('<tr>\n  <td><a href="/console/refunds/') == 100
        assert 'hx-get="/console/inbox/rows?offset=100"' in first.text
        assert "o-0<" in first.text and "o-100<" not in first.text  # oldest first
        rest = await busy.get("/console/inbox/rows?offset=100")
        assert rest.text.count('<a href="/console/refunds/') == 50
        assert "o-149<" in rest.text and "hx-get" not in rest.text  # nothing more to load


async def test_ops_see_late_refunds_with_the_runs_words(console_db: Api) -> None:
    console = console_db
    console.sandbox.default_settlement("never")
    refund_id = await start_refund(console, "c-late", SMALL, reason="LATE_DELIVERY")
    await wait_status(console, refund_id, RefundStatus.AWAITING_FUNDS)
    for _ in range(30):
        with session_scope(console.engine, readonly=True) as s:
            if any(e.kind == "delay_notice" for e in list_audit(s, refund_id=refund_id)):
                break
        await console.env.sleep(timedelta(hours=12))
    async with person(console, "ops") as ops:
        page = await ops.get("/console/ops")
        late = page.text.split('id="late"')[1]
        assert f"/console/refunds/{refund_id}" in late and "customer told" in late


async def test_bank_accounts_show_only_their_last_four_digits(console: Api) -> None:
    from tests.workflows.conftest import ACCOUNT

    destination = {"kind": "BANK_TRANSFER", "bank_account": ACCOUNT}
    refund_id = await start_refund(
        console, "c-bank", SMALL, reason="LATE_DELIVERY", request={"destination": destination}
    )
    await wait_status(console, refund_id, RefundStatus.AWAITING_FUNDS)
    async with person(console, "ops") as ops:
        page = await ops.get(f"/console/refunds/{refund_id}")
        assert page.status_code == 200
        assert ACCOUNT["account_number"] not in page.text
        assert page.text.count("****2233") == 2  # the request's destination and the payout's


def test_the_console_writes_nothing_itself() -> None:
    """Every change goes through refund_messages (the run's Updates): no console module opens
    a writing session, adds a row or commits."""
    package = TEMPLATES.parent
    for module in package.glob("*.py"):
        source = module.read_text()
        for needle in ("session_scope(", "session.add(", ".commit(", ".delete(", "execute_update("):
            assert needle not in source, (module.name, needle)
    sends = (package / "pages.py").read_text() + (package / "ops_pages.py").read_text()
    for message in ("decide", "repair", "cancel", "inspect_return", "answer_for_supplier"):
        # Called, or handed to the one form handler that calls it.
        assert re.search(rf"refund_messages\.{message}[(,]", sends), message


async def test_a_second_approval_by_the_same_person_is_refused_in_words(console: Api) -> None:
    refund_id = await refund_waiting(console, "c-twice")  # two approvers needed
    async with person(console, "approver") as alice:
        shown = fingerprint_on((await alice.get(f"/console/refunds/{refund_id}")).text)
        form = {"decision": "APPROVE", "quote_fingerprint": shown}
        first = await alice.post(f"/console/refunds/{refund_id}/decision", form)
        assert first.status_code == 303
        again = await alice.post(f"/console/refunds/{refund_id}/decision", form)
        assert again.status_code == 409
        assert "you already approved this quote" in again.text
    assert refusals(console, refund_id) == ["repeated_approver"]
    async with person(console, "ops") as ops:
        # Other roles see the refund, not the approver's buttons.
        page = await ops.get(f"/console/refunds/{refund_id}")
        assert page.status_code == 200 and 'name="decision"' not in page.text


async def test_pages_load_no_script_or_style_from_elsewhere(console: Api) -> None:
    for template in TEMPLATES.glob("*.html"):
        for found in re.findall(r'(?:src|href)="([^"{]+)"', template.read_text()):
            assert found.startswith(("/console", "#", "?")), (template.name, found)
    async with person(console) as someone:
        htmx = await someone.get("/console/static/htmx.min.js")
        assert htmx.status_code == 200 and "Zero-Clause BSD" in htmx.text.splitlines()[0]
        page = await someone.get("/console/sign-in")
        assert "script-src" not in page.headers["content-security-policy"]  # 'self' only
        assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_malformed_query_parameters_are_problems_not_500s(console: Api) -> None:
    async with person(console, "ops") as ops:
        for url in ("/console/reports?days=abc", "/console/inbox/rows?offset=x"):
            answer = await ops.get(url)
            assert answer.status_code == 422, url
            assert answer.json()["code"] == "validation_error"
        odd = await ops.get("/console/reports?days=12")  # not offered: the default window
        assert odd.status_code == 200 and '<option value="30" selected>' in odd.text
