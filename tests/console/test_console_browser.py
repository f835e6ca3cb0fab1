"""The console in Debian's Chromium (Playwright), served over real HTTP by uvicorn, with a real
worker on the Temporal test server: an approver's day, a second approver, a refused forgery,
ops retrying a payout, a cross-site form; screenshots of each page go to the test artifacts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, expect
from temporalio.testing import WorkflowEnvironment

from refundflow.db.engine import session_scope
from refundflow.db.repository import create_api_key
from refundflow.devstack.ports import free_port
from refundflow.domain.states import RefundStatus
from tests.api.conftest import Api
from tests.browser import artifact
from tests.console.conftest import (
    BIG,
    MEDIUM,
    TEMPORAL_UI,
    console_stack,
    refund_waiting,
    wait_status,
)
from tests.console.test_console import refusals, status_of


@asynccontextmanager
async def served(api: Api) -> AsyncIterator[str]:
    """The console's app on a port of its own, over HTTP; its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the console did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def site(fresh_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[Api, str]]:
    """The console over HTTP, on a Temporal test server of its own (see ``console``)."""
    from refundflow.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'db' / 'refundflow.db'}"
    upgrade(url)
    async with console_stack(fresh_env, url, tmp_path) as api, served(api) as base:
        yield api, base


async def signed_in(chromium: Browser, base: str, key: str, locale: str = "en-US") -> Page:
    context = await chromium.new_context(
        base_url=base, locale=locale, viewport={"width": 1280, "height": 900}
    )
    page = await context.new_page()
    await page.goto("/console")
    await page.locator("#api_key").fill(key)
    await page.locator("form button[type=submit]").click()
    await page.wait_for_load_state()
    return page


async def assert_accessible(page: Page) -> None:
    """What a screen reader and a keyboard need: the language, one heading to start from,
    a label on every field, a name on every button and link."""
    found = await page.evaluate(
        """() => ({
            lang: document.documentElement.lang,
            h1: document.querySelectorAll('h1').length,
            unlabelled: [...document.querySelectorAll('input, select, textarea')]
                .filter(f => f.type !== 'hidden' && f.labels.length === 0
                             && !f.getAttribute('aria-label'))
                .map(f => f.name),
            nameless: [...document.querySelectorAll('button, a')]
                .filter(e => !e.textContent.trim() && !e.getAttribute('aria-label'))
                .map(e => e.outerHTML),
        })"""
    )
    assert found["lang"] in ("en", "zh-CN") and found["h1"] == 1, found
    assert found["unlabelled"] == [] and found["nameless"] == [], found


async def close(page: Page) -> None:
    context: BrowserContext = page.context
    await context.close()


async def test_approvers_day_in_the_browser(chromium: Browser, site: tuple[Api, str]) -> None:
    api, base = site
    with session_scope(api.engine) as s:
        _, api.keys["approver-as-client"] = create_api_key(
            s, merchant_id=api.merchant, name="approver-1", role="client"
        )
    big = await refund_waiting(
        api,
        "b-tv",
        BIG,
        discounts=[{"code": "SPRING", "kind": "coupon", "amount": 30000}],
        shipping_fee=2000,
        request={
            "note": "screen cracked on arrival",
            "evidence": ["https://photos.example/o-b-tv/1.jpg", "ticket 4411"],
        },
    )
    small = await refund_waiting(api, "b-lamp", MEDIUM)
    own = await refund_waiting(api, "b-own", MEDIUM, requester="approver-as-client")

    alice = await signed_in(chromium, base, api.keys["approver"])
    try:
        await expect(alice).to_have_url(f"{base}/console/inbox")
        rows = alice.locator("#inbox-rows tr")
        await expect(rows).to_have_count(2)  # oldest first; their own request is not there
        await expect(rows.nth(0)).to_contain_text("o-b-tv")
        await expect(rows.nth(0)).to_contain_text("CN¥8,720.00")
        await expect(rows.nth(1)).to_contain_text("o-b-lamp")
        await alice.screenshot(path=artifact("console-inbox.png"), full_page=True)
        await assert_accessible(alice)

        await rows.nth(0).get_by_role("link").click()
        await expect(alice.locator("h1")).to_contain_text("o-b-tv")
        quote = alice.locator("section.quote")
        await expect(quote.locator("tbody tr").first).to_contain_text("TV")
        # 9,000.00 less the coupon's share (300.00), plus shipping (20.00).
        await expect(quote.locator("tbody tr").first).to_contain_text("−CN¥300.00")
        await expect(quote.locator("[data-total]")).to_have_text("CN¥8,720.00")
        await expect(
            alice.get_by_role("link", name="https://photos.example/o-b-tv/1.jpg")
        ).to_be_visible()
        await expect(alice.locator("ul.needs")).to_contain_text("two different approvers")
        await expect(
            alice.get_by_role("link", name="Open its run in the Temporal UI")
        ).to_have_attribute("href", f"{TEMPORAL_UI}/namespaces/default/workflows/refund-{big}")
        await alice.screenshot(path=artifact("console-refund.png"), full_page=True)
        await assert_accessible(alice)
        # On paper: the refund without the navigation or the decision's buttons, on A4.
        await alice.emulate_media(media="print")
        await expect(alice.locator("header.bar")).to_be_hidden()
        await expect(alice.get_by_role("button", name="Approve")).to_be_hidden()
        await expect(quote.locator("[data-total]")).to_be_visible()
        await alice.pdf(path=artifact("console-refund.pdf"), format="A4")
        await alice.emulate_media(media="screen")
        await alice.get_by_label("Comment (on the refund's timeline)").fill("photos check out")
        await alice.get_by_role("button", name="Approve").click()
        await expect(alice.locator("[data-done=approved]")).to_be_visible()
        # One of two approvals: the run waits for someone else, and says so.
        await expect(alice.locator("[data-blocked='decide.already_approved']")).to_be_visible()
        await expect(alice.get_by_role("button", name="Approve")).to_have_count(0)
        assert status_of(api, big) == RefundStatus.AWAITING_APPROVAL.value

        # Their own request: no buttons; a forged POST with a valid session and token is
        # refused by the run, in words.
        await alice.goto(f"/console/refunds/{own}")
        await expect(alice.locator("[data-blocked='decide.own_request']")).to_be_visible()
        await expect(alice.get_by_role("button", name="Approve")).to_have_count(0)
        token = await alice.locator("input[name=csrf]").first.input_value()
        fingerprint = await alice.locator("section.quote code").last.inner_text()
        forged = await alice.context.request.post(
            f"/console/refunds/{own}/decision",
            form={"csrf": token, "decision": "APPROVE", "quote_fingerprint": fingerprint},
            headers={"Origin": base},
        )
        assert forged.status == 403
        assert "nobody approves a refund they requested" in await forged.text()
        assert refusals(api, own) == ["self_approval"]
    finally:
        await close(alice)

    bob = await signed_in(chromium, base, api.keys["approver2"], locale="zh-CN")
    try:
        await expect(bob.locator("html")).to_have_attribute("lang", "zh-CN")
        await bob.goto(f"/console/refunds/{big}")
        await expect(bob.locator("p.status")).to_have_text("等待审批")
        await bob.get_by_role("button", name="批准").click()
        await expect(bob.locator("[data-done=approved]")).to_be_visible()
        await expect(bob.locator("p.status")).not_to_have_text("等待审批")
        assert status_of(api, big) != RefundStatus.AWAITING_APPROVAL.value
    finally:
        await close(bob)
    assert status_of(api, small) == RefundStatus.AWAITING_APPROVAL.value


async def test_ops_retry_a_failed_payout_after_a_confirmation(
    chromium: Browser, site: tuple[Api, str]
) -> None:
    api, base = site
    escalate = await api.call(
        "admin", "PUT", f"/v1/policies/{api.merchant}", json={"on_permanent_failure": ["escalate"]}
    )
    assert escalate.status_code == 200, escalate.text
    api.sandbox.script("", [("permanent", "ACCOUNT_FROZEN")])  # the first payout, any key
    refund = await refund_waiting(api, "b-fail", MEDIUM, reason="LATE_DELIVERY")
    async with approved(chromium, base, api, refund):
        pass
    await wait_status(api, refund, RefundStatus.NEEDS_ATTENTION)

    ops = await signed_in(chromium, base, api.keys["ops"])
    try:
        await expect(ops).to_have_url(f"{base}/console/ops")
        row = ops.locator(f"#attention tr[data-refund='{refund}']")
        await expect(row).to_contain_text("ACCOUNT_FROZEN")
        # The repairs the run accepts, loaded into the row by htmx.
        await expect(row.locator("[data-action=retry_payout]")).to_be_visible()
        await ops.screenshot(path=artifact("console-ops.png"), full_page=True)
        await assert_accessible(ops)
        await row.get_by_role("link", name="o-b-fail").click()
        actions = ops.locator("ul.actions")
        offered = await actions.locator("[data-action]").evaluate_all(
            "links => links.map(a => a.dataset.action)"
        )
        # What the run's rules accept for a payout failed for good (resume is refused: the
        # payout needs repair first).
        assert offered == ["retry_payout", "switch_destination", "mark_settled", "cancel"]
        await actions.get_by_role("link", name="Retry the payout").click()
        await expect(ops.locator("h1")).to_contain_text("Retry the payout")
        await assert_accessible(ops)
        await ops.get_by_label("Note (on the timeline)").fill("provider unfroze the account")
        await ops.get_by_role("button", name="Confirm: Retry the payout").click()
        await expect(ops.locator("[data-done=repaired]")).to_be_visible()
        await expect(ops.locator("p.status")).not_to_have_text("Needs attention")
    finally:
        await close(ops)
    assert await api.finish(refund) == "COMPLETED"
    assert [r.payout_key.rsplit(":", 1)[1] for r in api.sandbox.refunds()] == ["1", "2"]


@asynccontextmanager
async def approved(chromium: Browser, base: str, api: Api, refund: str) -> AsyncIterator[None]:
    page = await signed_in(chromium, base, api.keys["approver"])
    try:
        await page.goto(f"/console/refunds/{refund}")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.locator("[data-done=approved]")).to_be_visible()
        yield
    finally:
        await close(page)


async def test_a_cross_site_form_post_changes_nothing(
    chromium: Browser, site: tuple[Api, str]
) -> None:
    api, base = site
    refund = await refund_waiting(api, "b-csrf", MEDIUM)
    alice = await signed_in(chromium, base, api.keys["approver"])
    try:
        await alice.goto(f"/console/refunds/{refund}")
        fingerprint = await alice.locator("input[name=quote_fingerprint]").input_value()
        # Another site's page that posts the approval form on load, in the same browser.
        evil = (
            "<html><body><form id=f method=post"
            f" action='{base}/console/refunds/{refund}/decision'>"
            "<input name=decision value=APPROVE>"
            f"<input name=quote_fingerprint value={fingerprint}></form>"
            "<script>document.getElementById('f').submit()</script></body></html>"
        )
        await alice.route(
            "http://evil.test/**", lambda route: route.fulfill(body=evil, content_type="text/html")
        )
        await alice.goto("http://evil.test/")
        await alice.wait_for_url(f"{base}/console/**")
        # SameSite=Strict: the browser sent no session cookie, so the console asks to sign in.
        await expect(alice.locator("#api_key")).to_be_visible()
    finally:
        await close(alice)
    assert status_of(api, refund) == RefundStatus.AWAITING_APPROVAL.value
    assert refusals(api, refund) == []


async def test_reports_page_in_both_languages(chromium: Browser, site: tuple[Api, str]) -> None:
    api, base = site
    refund = await refund_waiting(api, "b-report", MEDIUM)
    async with approved(chromium, base, api, refund):
        pass
    for locale, name in (("en-US", "console-reports.png"), ("zh-CN", "console-reports-zh.png")):
        page = await signed_in(chromium, base, api.keys["ops"], locale=locale)
        try:
            await page.goto("/console/reports")
            await expect(page.locator("figure.chart svg")).to_have_count(7)
            await page.screenshot(path=artifact(name), full_page=True)
            await assert_accessible(page)
            # A4 at 96 dpi is 794 px wide: the charts fit the printed page.
            await page.emulate_media(media="print")
            await page.set_viewport_size({"width": 794, "height": 1123})
            widths = await page.locator("figure.chart svg").evaluate_all(
                "svgs => svgs.map(s => s.getBoundingClientRect().width)"
            )
            assert all(0 < w <= 794 for w in widths), widths
        finally:
            await close(page)
