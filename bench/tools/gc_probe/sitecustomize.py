"""Logs the cyclic garbage collector's slow passes of a ``refundflow worker`` process.

Python imports ``sitecustomize`` at start-up from the path, so putting this folder first on
``PYTHONPATH`` (the bench's processes inherit it) makes every worker write one line per full
(generation 2) pass, or any pass over 20 ms, to ``$TMPDIR/refundflow-gc-<pid>.log``:

    PYTHONPATH=bench/tools/gc_probe:. .venv/bin/python -m bench.tools.worker_cost --open 1500

A pass holds the GIL: while it runs, nothing else in the worker does (docs/performance.md).
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from typing import Any

if "worker" in sys.argv:
    _started: list[float] = []
    _log = open(  # noqa: SIM115 - open for the life of the process
        os.path.join(tempfile.gettempdir(), f"refundflow-gc-{os.getpid()}.log"), "a", buffering=1
    )

    def _pass(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _started[:] = [time.perf_counter()]
            return
        ms = (time.perf_counter() - (_started or [time.perf_counter()])[0]) * 1000
        generation = info["generation"]
        if generation == 2 or ms > 20:
            tracked = len(gc.get_objects(generation))
            _log.write(
                f"gen{generation} {ms:.1f} ms collected={info['collected']} tracked={tracked}\n"
            )

    gc.callbacks.append(_pass)
