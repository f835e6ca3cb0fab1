from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateways.webhook_receiver import Receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()
