"""`refundflow dev` started where it should not run, and killed without Ctrl-C: one clear line
instead of a traceback, and never a Temporal server left behind."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e.conftest import Stack, temporal_servers


def test_a_second_stack_is_refused_in_one_line_before_it_starts_anything(
    stack: Stack,
    tmp_path: Path,
) -> None:
    stack.start()
    other = Stack(tmp_path / "other" / "data")
    other.api_port = stack.api_port
    done = other.refused()
    assert done.returncode == 2
    assert done.stdout == (
        f"error port_in_use: port {stack.api_port} (--api-port) is in use;"
        " stop the other stack or pass --api-port\n"
    )
    assert not (other.data_dir / "temporal.db").exists()  # nothing was started

    other.temporal_port, other.smtp_port = stack.temporal_port, stack.smtp_port
    listed = other.refused().stdout
    assert listed.startswith("error port_in_use: ports ") and listed.count("\n") == 1
    for port, option in [
        (stack.api_port, "--api-port"),
        (stack.temporal_port, "--temporal-port"),
        (stack.smtp_port, "--smtp-port"),
    ]:
        assert f"{port} ({option})" in listed

    same_data = Stack(stack.data_dir)
    refused = same_data.refused()
    assert refused.returncode == 2
    assert refused.stdout.startswith("error data_dir_in_use: ")
    assert refused.stdout.count("\n") == 1
    # The running stack did not notice.
    assert httpx.get(f"{stack.api_url}/readyz", timeout=5).status_code == 200
    assert stack.stop() == 0


def test_a_stack_killed_with_kill_9_leaves_no_temporal_server_behind(
    stack: Stack,
) -> None:
    stack.start()
    [orphan] = temporal_servers(stack.data_dir)
    assert stack.process is not None
    stack.process.kill()  # kill -9: no Ctrl-C, nothing stops in order
    stack.process.wait(timeout=30)
    time.sleep(1)
    assert temporal_servers(stack.data_dir) == [orphan]  # its own session outlived the stack

    stack.start()
    said = [line for line in stack.log.read_text().splitlines() if str(orphan) in line]
    assert said == [
        f"stopped the Temporal server (pid {orphan}) an earlier `refundflow dev` of"
        f" {stack.data_dir} left running"
    ]
    [server] = temporal_servers(stack.data_dir)
    assert server != orphan
    assert (stack.data_dir / "temporal.pid").read_text().strip() == str(server)
    assert stack.stop() == 0
    assert temporal_servers(stack.data_dir) == []
    assert not (stack.data_dir / "temporal.pid").exists()
