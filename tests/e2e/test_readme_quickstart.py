"""The README's Quickstart curl session, exactly as written, against a real `refundflow dev`:
it completes a refund, and run a second time it answers the same refund."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.e2e.conftest import BIN, Stack

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart_session() -> str:
    """The shell block after "A refund from start to finish with curl"."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index("A refund from start to finish with curl") :]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match is not None
    return match.group(1)


def run_session(stack: Stack) -> dict[str, str]:
    """Run the session as a user would, in a folder whose ``data`` is the stack's and whose
    ``.venv/bin`` is this environment's; the refund id and the last status it printed."""
    home = stack.data_dir.parent
    (home / ".venv").mkdir(exist_ok=True)
    if not (home / ".venv" / "bin").exists():
        (home / ".venv" / "bin").symlink_to(BIN)
    script = quickstart_session().replace("http://127.0.0.1:8000", stack.api_url)
    done = subprocess.run(
        ["bash", "-c", script + '\necho\necho "REFUND=$REFUND"\n'],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    statuses = re.findall(r'"status":\s*"([A-Z_]+)"', done.stdout)
    refund = re.search(r"^REFUND=(.*)$", done.stdout, re.M)
    return {
        "refund": refund.group(1) if refund else "",
        "last_status": statuses[-1] if statuses else "",
        "output": done.stdout + done.stderr,
    }


def test_the_readme_quickstart_completes_a_refund(stack: Stack) -> None:
    stack.start()
    first = run_session(stack)
    assert first["refund"].startswith("rf_"), first["output"]
    assert first["last_status"] == "COMPLETED", first["output"]
    assert "Traceback" not in first["output"]
    assert stack.stop() == 0


def test_the_readme_quickstart_run_twice_answers_the_same_refund(
    stack: Stack,
) -> None:
    stack.start()
    first = run_session(stack)
    second = run_session(stack)
    assert first["refund"].startswith("rf_"), first["output"]
    assert second["refund"] == first["refund"], second["output"]
    assert '"code":"wrong_state"' in second["output"]  # the decision, the receipt: done
    assert "Traceback" not in second["output"]
    assert stack.stop() == 0
