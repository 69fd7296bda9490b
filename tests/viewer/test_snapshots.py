"""SVG snapshots of every screen on the committed fixture runs (pytest-textual-snapshot).

Regenerate after an intended change with ``pytest tests/viewer/test_snapshots.py
--snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from viewer.app import StromaViewApp

FIXTURES = Path(__file__).parent / "fixtures"
SIZE = (140, 36)


async def _loaded(pilot: Pilot[None]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()


def _app(*names: str) -> StromaViewApp:
    return StromaViewApp([FIXTURES / n for n in names] if names else [FIXTURES])


SnapCompare = Callable[..., bool]

CASES: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "run_failed": (("failed.json",), []),
    "run_failed_failure_tab": (("failed.json",), ["e", "e", "e", "e", "4"]),
    "run_failures_only": (("failed.json",), ["f"]),
    "run_resumed_output_tab": (("resumed.json",), ["j", "3"]),
    "run_parallel": (("parallel.json",), ["j", "j"]),
    "run_budget": (("budget.json",), ["G"]),
    "run_big": (("big.json",), ["e"]),
    "run_truncated": (("truncated.jsonl",), []),
    "diff_failed_resumed": (("failed.json", "resumed.json"), ["n"]),
    "diff_changed_only": (("failed.json", "resumed.json"), ["x", "j"]),
    "cost_budget": (("budget.json",), ["dollar_sign"]),
    "cost_failed": (("failed.json",), ["dollar_sign"]),
    "runs_folder": ((), ["j"]),
    "help_run": (("failed.json",), ["question_mark"]),
    "timeline_failed": (("failed.json",), ["7"]),
    "timeline_interrupted": (("truncated.jsonl",), ["7"]),
    "timeline_resumed": (("resumed.json",), ["7"]),
    "timeline_failed_80x24": (("failed.json",), ["7"]),
    "timeline_failed_200x50": (("failed.json",), ["7"]),
    "diff_timeline_80x24": (("failed.json", "resumed.json"), ["n"]),
    "diff_timeline_200x50": (("failed.json", "resumed.json"), ["n"]),
    "runs_folder_80x24": ((), ["j"]),
}
SIZES = {"80x24": (80, 24), "200x50": (200, 50)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_screen_snapshot(snap_compare: SnapCompare, case: str) -> None:
    """Each screen on its fixture run looks the way the committed SVG shows."""
    names, keys = CASES[case]

    async def run_before(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        for key in keys:
            await pilot.press(key)
        await _loaded(pilot)

    before: Callable[[Pilot[Any]], Awaitable[None]] = run_before
    size = SIZES.get(case.rsplit("_", 1)[-1], SIZE)
    assert snap_compare(_app(*names), terminal_size=size, run_before=before)
