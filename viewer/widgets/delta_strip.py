"""DeltaStrip: Δ status, Δ duration, Δ tokens, Δ cost, Δ failures of a run diff, in one line."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from stroma import RunComparison
from viewer.model.diff import delta_parts

__all__ = ["DeltaStrip"]


class DeltaStrip(Static):
    """The run-level deltas of two runs (b minus a)."""

    DEFAULT_CSS = """
    DeltaStrip {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    """

    def show(self, comparison: RunComparison, a_name: str, b_name: str) -> None:
        """Draw the strip for ``comparison`` of files ``a_name`` → ``b_name``."""
        text = Text.assemble((f"{a_name} → {b_name}", "bold"), "   ")
        for label, value in delta_parts(comparison):
            bad = value.startswith("+") and label in ("Δ failures", "Δ cost", "Δ tokens")
            text.append(f"{label} ", style="dim")
            text.append(value, style="bold red" if bad else "bold")
            text.append("   ")
        if comparison.worse:
            text.append("newer run is worse", style="bold red")
        self.update(text)
