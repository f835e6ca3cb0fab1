"""Headless Chromium for browser tests: Playwright driving Debian's Chromium (`make browser`
installs it), since Playwright's own browser download is not reachable from CI.

Tests take the ``chromium`` fixture (one browser for the session) and open their own context,
so cookies never leak from one test to the next. Screenshots go to ``ARTIFACTS``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path(os.environ.get("REFUNDFLOW_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("REFUNDFLOW_TEST_ARTIFACTS", "test-artifacts"))
"""Where browser tests leave their screenshots (ignored by git)."""


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run `make browser` (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()


def artifact(name: str) -> Path:
    """A path for a screenshot or page dump that CI keeps after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
