"""RunHeaderBar: the one-line header of a run (file, status, nodes, attempts, failures, tokens,
cost, duration), shown from a header peek at once and from the full index once it is parsed."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from viewer.model.detail import fmt_cost, fmt_ms, fmt_tokens
from viewer.model.index import RunIndex
from viewer.model.loading import HeaderPeek
from viewer.model.report import header_line

__all__ = ["RunHeaderBar", "status_style"]

_STATUS_STYLES = {
    "COMPLETED": "bold green",
    "RESUMED": "bold cyan",
    "PARTIAL": "bold yellow",
    "FAILED": "bold red",
}


def status_style(status: str | None) -> str:
    """The style of a run status."""
    return _STATUS_STYLES.get(status or "", "bold magenta")


class RunHeaderBar(Static):
    """The run's header line."""

    DEFAULT_CSS = """
    RunHeaderBar {
        height: auto;
        padding: 0 1;
        background: $boost;
        color: $text;
    }
    """

    def show_peek(self, peek: HeaderPeek) -> None:
        """What the first bytes of the file say, before the events are parsed."""
        status = peek.status or "…"
        text = Text.assemble(
            (peek.path.name, "bold"),
            "  ",
            (status, status_style(peek.status)),
            f"  {peek.run_id} · {len(peek.pipeline)} nodes · loading events… · "
            f"{fmt_tokens(peek.total_tokens)} tokens · {fmt_cost(peek.total_cost_usd)} · "
            f"{fmt_ms(peek.duration_ms)}",
        )
        self.update(text)

    def show_index(self, index: RunIndex, file_name: str) -> None:
        """The full header, once the index is built."""
        h = index.header
        status = h.status or ("TRUNCATED" if index.record.truncated else "RUNNING")
        line = header_line(index)
        rest = line.split(" · ", 2)[-1]
        text = Text.assemble(
            (file_name, "bold"),
            "  ",
            (status, status_style(h.status)),
            f"  {h.run_id} · {rest}",
        )
        if h.resumed_from:
            text.append(f" · resumed from {h.resumed_from}", style="cyan")
        self.update(text)
