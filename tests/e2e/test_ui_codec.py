"""The Temporal UI of `refundflow dev` shows a refund's customer data decrypted through the
codec server; without the codec's authorization the same run shows only ciphertext."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from playwright.async_api import Browser, Page, Route

from tests.browser import artifact
from tests.e2e.conftest import Stack
from tests.e2e.test_dev_stack import _client, _start_refund, _wait_status

EMAIL = "ui.decoded.customer@example.com"


# The run's input as the UI shows a payload it could not decode: the ciphertext, base64.
CIPHERTEXT = re.compile(r'Input\s*"[A-Za-z0-9+/=]{200,}"')


async def _input_shown(page: Page, url: str, *, shown: Callable[[str], bool]) -> str:
    """The page's text once the run's input is ``shown`` (the UI loads it after the page)."""
    await page.goto(url)
    text = ""
    for _ in range(120):
        text = await page.inner_text("body")
        if shown(text):
            return text
        await asyncio.sleep(0.25)
    raise AssertionError(f"the run's input never showed:\n{text[:6000]}")


async def test_the_ui_decodes_with_the_codec_and_not_without(
    stack: Stack, chromium: Browser
) -> None:
    await asyncio.to_thread(stack.start)
    admin = (stack.data_dir / "admin.key").read_text().strip()
    with _client(stack, admin) as http:
        refund_id = await asyncio.to_thread(
            _start_refund,
            http,
            "ui-codec-1",
            "alipay",
            5000,
            contact={"email": EMAIL, "locale": "en"},
        )
        await asyncio.to_thread(_wait_status, http, refund_id, "AWAITING_FUNDS")
    url = f"http://127.0.0.1:{stack.ui_port}/namespaces/default/workflows/refund-{refund_id}"

    decoded = await chromium.new_context(viewport={"width": 1400, "height": 1800})
    try:
        page = await decoded.new_page()
        text = await _input_shown(page, url, shown=lambda t: EMAIL in t or "Codec" in t)
        assert EMAIL in text and '"refund_id"' in text
        # The customer's address in view in the input's scrolled code block.
        await page.get_by_text(EMAIL).first.scroll_into_view_if_needed()
        await page.screenshot(path=artifact("temporal-ui-decoded.png"), full_page=True)
    finally:
        await decoded.close()

    # Someone whose UI reaches the codec server without an ops or admin key: it answers 401,
    # and the UI shows the payloads as they are stored.
    refused = await chromium.new_context(viewport={"width": 1400, "height": 1800})
    try:

        async def without_key(route: Route) -> None:
            operation = route.request.url.rsplit("/", 1)[-1]
            await route.continue_(url=f"http://127.0.0.1:{stack.codec_port}/{operation}")

        await refused.route(f"http://127.0.0.1:{stack.codec_port}/**", without_key)
        page = await refused.new_page()
        text = await _input_shown(
            page, url, shown=lambda t: EMAIL in t or CIPHERTEXT.search(t) is not None
        )
        assert EMAIL not in text and '"refund_id"' not in text
        assert "Codec Server could not connect" in text
        await page.screenshot(path=artifact("temporal-ui-encrypted.png"), full_page=True)
    finally:
        await refused.close()
    assert stack.stop() == 0
    # The UI's key travels in its codec endpoint, never in what the stack prints.
    ui_key = (stack.data_dir / "ui-codec.key").read_text().strip()
    assert ui_key.startswith("rf_") and ui_key not in stack.log.read_text()
