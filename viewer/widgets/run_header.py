"""RunHeaderBar: the one-line header of a run (file, status, nodes, attempts, failures, tokens,
cost, duration), shown from a header peek at once and from the full index once it is parsed."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from stroma.runfile import RunHeader
from viewer.model.detail import fmt_ms, plural
from viewer.model.folder import run_state
from viewer.model.index import RunIndex
from viewer.model.report import header_line, spend_text

__all__ = ["RunHeaderBar", "status_style"]

_STATUS_STYLES = {
    "COMPLETED": "bold green",
    "RESUMED": "bold cyan",
    "PARTIAL": "bold yellow",
    "FAILED": "bold red",
    "INTERRUPTED": "bold magenta",
    "RUNNING": "bold yellow",
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

    def show_peek(self, header: RunHeader, file_name: str) -> None:
        """What the first bytes of the file say, before the events are parsed."""
        h = header
        status = run_state(h, None) if h.status else "…"
        text = Text.assemble(
            (file_name, "bold"),
            "  ",
            (status, status_style(h.status)),
            f"  {h.run_id} · {plural(len(h.pipeline), 'node')} · loading events… · "
            f"{spend_text(h.tokens, h.cost_usd, h.carried_tokens, h.carried_cost_usd)} · "
            f"wall {fmt_ms(h.duration_ms)}",
        )
        self.update(text)

    def show_index(self, index: RunIndex, file_name: str) -> None:
        """The full header, once the index is built (from the run's one summary)."""
        state = index.state
        rest = header_line(index).split(" · ", 2)[-1]
        text = Text.assemble(
            (file_name, "bold"),
            "  ",
            (state, status_style(state)),
            f"  {index.header.run_id} · {rest}",
        )
        if index.header.resumed_from:
            text.append(f" · resumed from {index.header.resumed_from}", style="cyan")
        self.update(text)
