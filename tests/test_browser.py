"""The browser tests' own footing: Debian's Chromium under Playwright renders a page, reads it
back and leaves a screenshot."""

from __future__ import annotations

from playwright.async_api import Browser

from tests.browser import artifact


async def test_chromium_renders_a_page_over_http(chromium: Browser) -> None:
    page = await chromium.new_page()
    try:
        await page.set_content("<html><body><h1 id='t'>退款 refund</h1></body></html>")
        assert await page.inner_text("#t") == "退款 refund"
        await page.screenshot(path=artifact("browser-smoke.png"))
        assert artifact("browser-smoke.png").stat().st_size > 0
    finally:
        await page.close()
