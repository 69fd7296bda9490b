"""``stroma-view`` in a real terminal: tmux runs it, keys are sent, the screen is captured."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed, so no real terminal to drive"
)

HANG_GUARD_S = 30.0


def _tmux(*args: str) -> str:
    out = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)
    return out.stdout


def _wait_for(session: str, *needles: str) -> str:
    """Capture the pane until one capture holds every needle; the deadline is a hang guard."""
    deadline = time.monotonic() + HANG_GUARD_S
    text = ""
    while time.monotonic() < deadline:
        text = _tmux("capture-pane", "-p", "-t", session)
        if all(n in text for n in needles):
            return text
        time.sleep(0.05)
    raise AssertionError(f"never saw {needles!r} on screen:\n{text}")


@pytest.fixture
def session() -> Iterator[str]:
    """A tmux session name, killed afterwards if the test left it running."""
    name = f"stroma-view-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, timeout=10, check=False)


def test_stroma_view_in_tmux(session: str, fixtures: Path) -> None:
    """The real command draws the run, moves to a failure on ``e``, and exits on ``q``."""
    script = Path(sys.executable).parent / "stroma-view"
    # Unset COLUMNS/LINES (test plugins set them): the app must size itself from the terminal.
    command = f"env -u COLUMNS -u LINES {script} {fixtures / 'failed.json'}; echo EXITED=$?; sleep 30"
    _tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "36", command)

    first = _wait_for(session, "doc-run-42", "FAILED", "7 attempts", "▾ ✔ fetch", "summarize")
    assert "✖ #1" in first
    assert "TimeoutError" in first
    _tmux("send-keys", "-t", session, "e")
    _wait_for(session, "attempt    1 of 3  ✖ failed", "RECOVERABLE  (decided by builtin:Timeout")
    _tmux("send-keys", "-t", session, "4")
    _wait_for(session, "upstream API timed out after 500 ms")
    _tmux("send-keys", "-t", session, "q")
    _wait_for(session, "EXITED=0")


def test_demo_folder_in_tmux_killed_run_back_and_diff(session: str, tmp_path: Path) -> None:
    """On a real demo run: open runs/, open the killed run (interrupted), Esc back, diff it against
    its resume, quit."""
    root = Path(__file__).parents[2]
    demo = subprocess.run(
        [sys.executable, str(root / "examples" / "demo.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    script = Path(sys.executable).parent / "stroma-view"
    command = f"env -u COLUMNS -u LINES {script} {tmp_path}; echo EXITED=$?; sleep 30"
    _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "30", command)
    listing = _wait_for(session, "INTERRUPTED", "RESUMED", "3 runs in 5 files")
    assert "resumes demo-research-1-" in listing
    _tmux("send-keys", "-t", session, "j", "Enter")  # the killed run: second by start time
    _wait_for(session, "interrupted: its writer", "cut off: publish")
    _tmux("send-keys", "-t", session, "Escape")
    _wait_for(session, "3 runs in 5 files")
    _tmux("send-keys", "-t", session, "j", "d")  # the resumed run, diffed against the run it resumed
    _wait_for(session, "INTERRUPTED → RESUMED", "publish", "fixed", "older: demo-research-1-")
    _tmux("send-keys", "-t", session, "q")
    _wait_for(session, "EXITED=0")
