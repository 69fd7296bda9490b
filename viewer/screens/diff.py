"""DiffScreen: two runs aligned by node, resume-aware labels, delta strip, field-level diffs."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from stroma import NodeChange, NodeComparison
from viewer.keys import ALWAYS
from viewer.messages import GoBack, OpenCost, OpenRun
from viewer.model.diff import CHANGE_ICONS, DiffView, order_line
from viewer.model.index import ICONS, RunIndex
from viewer.model.loading import RunCache, ViewerInputError
from viewer.widgets.banner import Banner
from viewer.widgets.delta_strip import DeltaStrip
from viewer.widgets.virtual_list import VirtualList

__all__ = ["DiffScreen", "render_diff_row"]

_CHANGE_STYLE = {
    NodeChange.RESTORED: "cyan",
    NodeChange.SAME_OUTPUT: "dim",
    NodeChange.DIFFERENT_OUTPUT: "yellow",
    NodeChange.NEWLY_REACHED: "green",
    NodeChange.FAILED_IN_BOTH: "red",
    NodeChange.FIXED: "bold green",
    NodeChange.REGRESSED: "bold red",
    NodeChange.NOT_REACHED: "dim",
}


def render_diff_row(row: NodeComparison, first: bool) -> Text:
    """One node of the diff list."""
    style = _CHANGE_STYLE[row.change]
    indent = "  " if row.a.parent or row.b.parent else ""
    # Most telling first, so a narrow terminal cuts the least: marker, node, a → b, label.
    text = Text()
    text.append("◀ " if first else "  ", "bold yellow")
    text.append(f"{indent}{CHANGE_ICONS[row.change]} ", style)
    text.append(f"{row.node_id:<{20 - len(indent)}}", "bold")
    text.append(f" {ICONS.get(row.a.status, '?')}→{ICONS.get(row.b.status, '?')} ", "dim")
    text.append(row.change.value, style)
    if first:
        text.append("  first divergence", "bold yellow")
    return text


class DiffScreen(Screen[None]):
    """What changed between an older run (a) and a newer one (b), node by node."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *ALWAYS,
        Binding("x", "changed_only", "Changed only"),
        Binding("n", "first_divergence", "First divergence"),
        Binding("enter,l,b", "open_run('b')", "Open newer run"),
        Binding("a", "open_run('a')", "Open older run"),
        Binding("escape,backspace,d", "back", "Back"),
        Binding("dollar_sign", "cost", "Cost"),
        Binding("y", "copy", "Copy JSON"),
    ]

    DEFAULT_CSS = """
    DiffScreen #diff-body {
        height: 1fr;
    }
    DiffScreen #diff-rows {
        width: 3fr;
        border-right: solid $primary 50%;
    }
    DiffScreen #diff-detail {
        width: 2fr;
    }
    DiffScreen #field-diff {
        padding: 0 1;
    }
    """

    def __init__(self, a: Path, b: Path, runs: RunCache) -> None:
        super().__init__()
        self.a = a
        self.b = b
        self.runs = runs
        self.view: DiffView | None = None

    def compose(self) -> ComposeResult:
        """Delta strip, banner, node list | field diff, footer."""
        yield DeltaStrip(f"{self.a.name} → {self.b.name}   comparing…", id="delta")
        yield Banner(id="diff-banner")
        with Horizontal(id="diff-body"):
            yield VirtualList(id="diff-rows")
            with VerticalScroll(id="diff-detail"):
                yield Static("", id="field-diff", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        """Load both runs and compare them in a worker."""
        self.query_one("#diff-rows", VirtualList).focus()
        self._compare()

    @work(thread=True, exclusive=True, group="diff")
    def _compare(self) -> None:
        runs = self.runs
        try:
            a, b = runs.get(self.a), runs.get(self.b)
        except ViewerInputError as exc:
            self.app.call_from_thread(self.app.exit, None, 2, str(exc))
            return
        view = DiffView(a.record, b.record)
        self.app.call_from_thread(self._show, view)

    def _show(self, view: DiffView) -> None:
        self.view = view
        c = view.comparison
        if c.reordered:  # a is the run that started first, whatever the argument order
            self.a, self.b = self.b, self.a
        self.query_one(DeltaStrip).show(c, self.a.name, self.b.name)
        self.query_one("#diff-banner", Banner).say(order_line(c), "info")
        self._redraw(cursor=0)

    def _redraw(self, cursor: int | None = None) -> None:
        view = self.view
        if view is None:
            return
        rows = view.rows
        first = view.comparison.first_divergence
        lst = self.query_one("#diff-rows", VirtualList)
        lst.set_rows(len(rows), lambda i: render_diff_row(rows[i], rows[i] is first), cursor)
        self._show_detail()

    @property
    def selected(self) -> NodeComparison | None:
        """The node under the cursor."""
        if self.view is None or not self.view.rows:
            return None
        cursor = self.query_one("#diff-rows", VirtualList).cursor
        return self.view.rows[min(cursor, len(self.view.rows) - 1)]

    def _show_detail(self) -> None:
        row = self.selected
        body = self.query_one("#field-diff", Static)
        if row is None or self.view is None:
            body.update("no nodes" if self.view is not None else "")
            return
        width = max(40, body.size.width - 2)
        timeline = self.view.timeline(width)
        body.update(f"{self.view.detail(row)}\n\ntimeline (one axis, each run from its start):\n{timeline}")

    @on(VirtualList.Highlighted, "#diff-rows")
    def _highlighted(self, event: VirtualList.Highlighted) -> None:
        self._show_detail()

    def action_changed_only(self) -> None:
        """Hide (or show) the nodes that did not change."""
        if self.view is None:
            return
        row = self.selected
        self.view.toggle_changed_only()
        position = next((i for i, r in enumerate(self.view.rows) if r is row), 0)
        self._redraw(cursor=position)
        # Said in the banner (it lasts as long as the filter does), not in a passing toast.
        state = f" · showing changed nodes only ({len(self.view.rows)})" if self.view.changed_only else ""
        self.query_one("#diff-banner", Banner).say(order_line(self.view.comparison) + state, "info")

    def action_first_divergence(self) -> None:
        """Jump to the first node whose label is a change."""
        if self.view is None:
            return
        position = self.view.first_divergence()
        if position is None:
            self.notify("the runs do not diverge")
            return
        self.query_one("#diff-rows", VirtualList).cursor = position

    def action_open_run(self, side: str) -> None:
        """Open the newer (b) or the older (a) run at the selected node."""
        row = self.selected
        path = self.b if side == "b" else self.a
        self.post_message(OpenRun(path, exit_on_error=False, node_id=row.node_id if row else None))

    def action_back(self) -> None:
        """Back to the previous screen."""
        self.post_message(GoBack())

    def action_cost(self) -> None:
        """Open the cost screen of the newer run (b)."""
        if self.view is not None:
            self.post_message(OpenCost(RunIndex(self.view.b), self.b.name))

    def action_copy(self) -> None:
        """Copy the selected node's comparison as JSON."""
        import json  # noqa: PLC0415 - only when copying

        row = self.selected
        if row is None:
            return
        self.app.copy_to_clipboard(json.dumps(row.to_dict(), indent=2, default=str))
        self.notify(f"copied {row.node_id} comparison as JSON")
