"""What a screen asks of the app, as Textual messages (they bubble from the screen to the app), so
no screen imports the app."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from viewer.model.index import RunIndex

__all__ = ["GoBack", "OpenCost", "OpenDiff", "OpenRun"]


class OpenRun(Message):
    """Open a run's Run screen (at ``node_id`` when given)."""

    def __init__(self, path: Path, *, exit_on_error: bool = True, node_id: str | None = None) -> None:
        super().__init__()
        self.path = path
        self.exit_on_error = exit_on_error
        self.node_id = node_id


class OpenDiff(Message):
    """Open the Diff screen of two runs (None: the two runs on the command line)."""

    def __init__(self, a: Path | None = None, b: Path | None = None) -> None:
        super().__init__()
        self.a = a
        self.b = b


class OpenCost(Message):
    """Open the Cost screen of a run."""

    def __init__(self, index: RunIndex, file_name: str) -> None:
        super().__init__()
        self.index = index
        self.file_name = file_name


class GoBack(Message):
    """Back to the screen this one was opened from."""
