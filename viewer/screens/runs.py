"""RunsScreen (folder mode): every run in a folder; mark two to diff them; a resumed run is shown
right under the run it resumed."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from viewer.keys import ALWAYS
from viewer.messages import GoBack, OpenDiff, OpenRun
from viewer.model.detail import fmt_cost, fmt_ms, fmt_ts, plural
from viewer.model.folder import RunEntry, scan_folder
from viewer.widgets.run_header import status_style
from viewer.widgets.virtual_list import VirtualList

__all__ = ["RunsScreen", "render_entry"]


def render_entry(entry: RunEntry, marked: bool) -> Text:
    """One run of the folder."""
    h = entry.header
    text = Text()
    text.append("● " if marked else "  ", "bold yellow")
    text.append("  ↳ " if entry.resumes else "")
    text.append(f"{entry.path.name:<26}", "bold")
    if h is None:
        text.append(f" {entry.error}", "red")
        return text
    state = entry.state
    text.append(f" {state:<11}", status_style(state))
    # An unfinished run's file says how long it ran until its last event, not what it spent.
    wall = h.duration_ms
    if wall is None and h.started_at is not None and h.last_event_at is not None:
        wall = (h.last_event_at - h.started_at) * 1000.0
    cost = f"{fmt_cost(h.cost_usd)} this run" if h.status else "spend unknown until opened"
    text.append(f" {fmt_ts(h.started_at)}  wall {fmt_ms(wall):>9}  {cost}")
    text.append(f"  {h.run_id}", "dim")
    if entry.resumes:
        text.append(f"  resumes {entry.resumes.name}", "cyan")
    if entry.copies:
        text.append(f"  (+{len(entry.copies)} copy: {', '.join(c.name for c in entry.copies)})", "dim")
    return text


_EMPTY = (
    "no run files here (*.json, *.jsonl): a runner writes them with .with_trace_dir(folder), "
    "a result with result.save(path); press r to look again"
)


class RunsScreen(Screen[None]):
    """A folder of runs."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *ALWAYS,
        Binding("enter,l", "open", "Open run"),
        Binding("space,m", "mark", "Mark for diff"),
        Binding("d", "diff", "Diff marked"),
        Binding("r", "rescan", "Rescan"),
        Binding("escape,backspace", "back", "Back", show=False),
    ]

    DEFAULT_CSS = """
    RunsScreen #runs-title {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.entries: list[RunEntry] = []
        self.marked: list[Path] = []

    def compose(self) -> ComposeResult:
        """Title, run list, footer."""
        yield Static(f"runs in {self.folder.resolve().name}/", id="runs-title")
        yield VirtualList(id="runs")
        yield Footer()

    def on_mount(self) -> None:
        """List the folder."""
        self.action_rescan()
        self.query_one("#runs", VirtualList).focus()

    def _redraw(self, cursor: int | None = None) -> None:
        entries = self.entries
        marked = self.marked
        rows = self.query_one("#runs", VirtualList)
        if entries:
            rows.set_rows(len(entries), lambda i: render_entry(entries[i], entries[i].path in marked), cursor)
        else:
            rows.set_rows(1, lambda i: Text(_EMPTY, "dim"), 0)
        files = sum(1 + len(e.copies) for e in entries)
        name = self.folder.resolve().name
        title = f"runs in {name}/ · {plural(len(entries), 'run')} in {plural(files, 'file')}"
        if marked:
            title += " · marked: " + ", ".join(p.name for p in marked)
        self.query_one("#runs-title", Static).update(title)

    @property
    def selected(self) -> RunEntry | None:
        """The run under the cursor."""
        if not self.entries:
            return None
        return self.entries[self.query_one("#runs", VirtualList).cursor]

    def action_back(self) -> None:
        """Back to the screen this list was opened from (the list is usually the first)."""
        self.post_message(GoBack())

    def action_rescan(self) -> None:
        """Read the folder again."""
        self.entries = scan_folder(self.folder)
        self._redraw()

    def action_open(self) -> None:
        """Open the selected run."""
        entry = self.selected
        if entry is not None:
            self.post_message(OpenRun(entry.path, exit_on_error=False))

    def action_mark(self) -> None:
        """Mark (or unmark) the selected run; two marked runs can be diffed."""
        entry = self.selected
        if entry is None:
            return
        if entry.path in self.marked:
            self.marked.remove(entry.path)
        else:
            self.marked = [*self.marked[-1:], entry.path]
        self._redraw()

    def action_diff(self) -> None:
        """Diff the two marked runs, older first (or the selected run and the run it resumes)."""
        pair = list(self.marked)
        entry = self.selected
        if len(pair) != 2 and entry is not None and entry.resumes is not None:
            pair = [entry.resumes, entry.path]
        if len(pair) != 2:
            self.notify("mark two runs with space first", severity="warning")
            return
        self.post_message(OpenDiff(pair[0], pair[1]))  # the diff orders them by start time
