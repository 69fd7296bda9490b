"""RunScreen: one run — header, nodes with nested attempts, tabbed detail of the selection."""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input

from stroma import RunRecord
from stroma import events as ev
from stroma.runfile import RunStream
from viewer.keys import ALWAYS
from viewer.messages import GoBack, OpenCost, OpenDiff
from viewer.model.detail import fmt_cost, fmt_ms, fmt_tokens, node_figures, record_json, tab_text
from viewer.model.index import RunIndex
from viewer.model.listing import Listing, Row
from viewer.model.loading import (
    LoadedRun,
    RunCache,
    ViewerInputError,
    collector_paused,
    loaded,
    peek,
    read,
)
from viewer.model.report import state_line
from viewer.model.timeline import timeline_text
from viewer.widgets.banner import Banner
from viewer.widgets.detail_tabs import DetailTabs
from viewer.widgets.run_header import RunHeaderBar
from viewer.widgets.search_bar import SearchBar
from viewer.widgets.virtual_list import VirtualList

__all__ = ["RunScreen", "render_row"]

_CLASS_STYLE = {"RECOVERABLE": "yellow", "TERMINAL": "red", "AMBIGUOUS": "magenta"}
_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "restored": "cyan",
    "running": "yellow",
    "cancelled": "magenta",
    "interrupted": "bold magenta",
    "not_reached": "dim",
}


_NARROW = 120  # terminal columns under which node rows show their figures compactly


def render_row(row: Row, collapsed: bool, narrow: bool = False) -> Text:
    """One line of the master list (``narrow``: the figures that fit 80 columns, wall time first)."""
    node = row.node
    a = row.attempt
    indent = "  " * node.depth
    if a is None:
        arrow = "▸" if collapsed and node.attempts else ("▾" if node.attempts else " ")
        text = Text(f"{indent}{arrow} ")
        text.append(node.icon, _STATUS_STYLE.get(node.status, ""))
        text.append(f" {node.node_id:<{max(1, (14 if narrow else 22) - len(indent))}}", "bold")
        if node.status == "restored":
            text.append(" restored from checkpoint", "cyan")
            return text
        if node.status == "not_reached":
            text.append(" not reached", "dim")
            return text
        if node.cut_off:
            text.append(f" {node.status} after {fmt_ms(node.wall_ms)}", "bold magenta")
        attempts, wall, _, tokens, cost = node_figures(node)
        if narrow:
            text.append(f" {wall} · {attempts} · {cost}")
            return text
        text.append(f" {attempts:>11} {wall:>14} {tokens:>11} {cost:>8}")
        if node.failure_class and node.has_failures:
            text.append(f" {node.failure_class}", _CLASS_STYLE.get(node.failure_class, ""))
        return text
    text = Text(f"{indent}    ")
    text.append(a.icon, _STATUS_STYLE.get(a.outcome, ""))
    text.append(f" #{a.number:<3}", "dim")
    text.append(f" {fmt_ms(a.duration_ms):>9} {fmt_tokens(a.tokens):>7} tok {fmt_cost(a.cost_usd):>8}")
    if a.failed:
        text.append(f" {a.failure_class}", _CLASS_STYLE.get(a.failure_class or "", ""))
        text.append(f" {a.error_type}", "red")
    elif a.model:
        text.append(f" {a.model}", "dim")
    return text


class RunScreen(Screen[None]):
    """Browse one run: move through nodes and attempts, filter failures, search, inspect."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *ALWAYS,
        Binding("enter,l", "expand", "Open/expand"),
        Binding("h", "collapse", "Collapse", show=False),
        Binding("slash", "search", "Search"),
        Binding("n", "next_match", "Next match", show=False),
        Binding("N", "prev_match", "Prev match", show=False),
        Binding("escape", "escape", "Back / clear search", show=False),
        Binding("backspace", "back", "Back"),
        Binding("f", "failures_only", "Failures only"),
        Binding("c", "cycle_class", "Class filter", show=False),
        Binding("e", "next_failure", "Next failure"),
        Binding("E", "prev_failure", "Prev failure", show=False),
        Binding("left_square_bracket", "prev_attempt", "Prev attempt", show=False),
        Binding("right_square_bracket", "next_attempt", "Next attempt", show=False),
        Binding("1", "tab('attempt')", "Attempt tab", show=False),
        Binding("2", "tab('input')", "Input tab", show=False),
        Binding("3", "tab('output')", "Output tab", show=False),
        Binding("4", "tab('failure')", "Failure tab", show=False),
        Binding("5", "tab('events')", "Events tab", show=False),
        Binding("6", "tab('json')", "JSON tab", show=False),
        Binding("7,t", "tab('timeline')", "Timeline", show=False),
        Binding("d", "diff", "Diff"),
        Binding("dollar_sign", "cost", "Cost"),
        Binding("y", "copy", "Copy JSON", show=False),
    ]

    DEFAULT_CSS = """
    RunScreen #run-body {
        height: 1fr;
    }
    RunScreen #nodes {
        width: 3fr;
        min-width: 40;
        border-right: solid $primary 50%;
    }
    RunScreen DetailTabs {
        width: 2fr;
    }
    RunScreen #filters {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    """

    def __init__(
        self, path: Path, runs: RunCache, *, exit_on_error: bool = True, node_id: str | None = None
    ) -> None:
        super().__init__()
        self.path = path
        self.runs = runs
        self.exit_on_error = exit_on_error
        self.node_id = node_id
        self.loaded: LoadedRun | None = None
        self.index: RunIndex | None = None
        self.listing: Listing | None = None
        self.follower: RunStream | None = None
        self._follow_timer: Timer | None = None
        self.error: str | None = None
        self.streaming = False
        self._narrow: bool | None = None  # compact rows, as last drawn

    def compose(self) -> ComposeResult:
        """Header, banner, filter line, list | detail, search box, footer."""
        yield RunHeaderBar(id="header")
        yield Banner(id="banner")
        with Horizontal(id="run-body"):
            with Vertical(id="nodes"):
                yield Banner(id="filters")
                yield VirtualList(id="rows")
            yield DetailTabs(id="detail")
        yield SearchBar(placeholder="search: node id, error type, message, key=value", id="search")
        yield Footer()

    # -- loading ---------------------------------------------------------------------------

    def on_mount(self) -> None:
        """Show the peeked header at once; parse the events in a worker."""
        with contextlib.suppress(ViewerInputError):  # the load says what is wrong
            self.query_one(RunHeaderBar).show_peek(peek(self.path), self.path.name)
        cached = self.runs.cached(self.path)
        if cached is not None:
            self._show(cached)
        else:
            self._load()
        self.query_one("#rows", VirtualList).focus()

    @work(thread=True, exclusive=True, group="load")
    def _load(self) -> None:
        # The batches are indexed on the UI thread while this one decodes: the collector stays
        # paused until the run is in (and then frozen, as _after_load does).
        with collector_paused(freeze=True):
            self._stream_run()

    def _stream_run(self) -> None:
        # Stream the events in batches: the list is browsable while a big file still loads.
        stream = RunStream(self.path)
        total = 0
        try:
            for batch in read(stream):
                total += len(batch)
                self.app.call_from_thread(self._show_partial, batch, total)
        except ViewerInputError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        run = loaded(stream)
        self.runs.put(run)
        self.app.call_from_thread(self._streamed, run)

    def _show_partial(self, batch: list[ev.LifecycleEvent], total: int) -> None:
        """Index a batch of streamed events and redraw (the cursor stays where it is)."""
        self.streaming = True
        if self.index is None:
            # No path: whether its writer is gone is decided once the whole file is in.
            partial = RunRecord.from_events(list(batch), run_id=self.path.stem)
            self.index = RunIndex(partial)
            self.listing = Listing(self.index)
            self._refresh_all(cursor=0)
        else:
            assert self.listing is not None
            self.index.append(batch)
            self.listing.refresh()
            self._refresh_all()
        self.query_one("#banner", Banner).say(f"loading… {total:,} events so far", "info")

    def _streamed(self, loaded: LoadedRun) -> None:
        """All events are in: swap in the final record (header from the whole run)."""
        self.query_one("#banner", Banner).say("")
        self.streaming = False
        if self.index is None:
            self._show(loaded)
            return
        self.loaded = loaded
        self.index.record = loaded.record
        self.index.events = loaded.record.events
        if loaded.record.interrupted:
            self.index.interrupt()
        self._after_load(loaded)
        self._refresh_all(cursor=self._start_cursor())

    def _failed(self, message: str) -> None:
        self.error = message
        if self.exit_on_error:
            self.app.exit(return_code=2, message=message)
        else:
            self.query_one("#banner", Banner).say(message, "error")

    def _show(self, loaded: LoadedRun, index: RunIndex | None = None) -> None:
        self.loaded = loaded
        self.index = index or RunIndex(loaded.record)
        self.listing = Listing(self.index)
        self.streaming = False
        self.query_one("#banner", Banner).say("")
        self._after_load(loaded)
        self._refresh_all(cursor=self._start_cursor())

    def _start_cursor(self) -> int:
        """The row of the node this screen was opened at (the first row otherwise)."""
        if self.listing is None or self.node_id is None:
            return 0
        return self.listing.position_of(self.node_id) or 0

    def _after_load(self, loaded: LoadedRun) -> None:
        # The run's objects live as long as the screen: keep the collector from walking them on
        # every full collection (a 100k-attempt run otherwise stalls scrolling for ~0.2 s).
        gc.freeze()
        if loaded.can_follow:
            self.follower = loaded.stream
            self._follow_timer = self.set_interval(0.5, self.poll_follow)
        self._say_state()

    def _say_state(self) -> None:
        """The banner: live (since when), interrupted (what was cut off), or truncated."""
        if self.index is None:
            return
        line = state_line(self.index)
        style = "warning" if self.index.interrupted or self.index.record.truncated else "info"
        self.query_one("#banner", Banner).say(line, style)

    def poll_follow(self) -> int:
        """Read events appended to a live ``.jsonl``; returns how many arrived."""
        if self.follower is None or self.index is None or self.listing is None:
            return 0
        new = self.follower.poll()
        if not new:
            if self.index.record.interrupted:  # the writer went away: stop following
                self.index.interrupt()
                self._stop_following()
                self.listing.refresh()
                self._refresh_all(cursor=self.query_one("#rows", VirtualList).cursor)
            self._say_state()
            return 0
        rows = self.query_one("#rows", VirtualList)
        keep = rows.cursor
        self.index.append(new)
        self.listing.refresh()
        if self.index.finished is not None:
            self._stop_following()
        self._say_state()
        self._refresh_all(cursor=keep)
        return len(new)

    def _stop_following(self) -> None:
        if self._follow_timer is not None:
            self._follow_timer.stop()
        self.follower = None

    # -- drawing ---------------------------------------------------------------------------

    def _refresh_all(self, cursor: int | None = None) -> None:
        listing = self.listing
        if listing is None or self.index is None:
            return
        if not self.streaming:  # while streaming, the peeked header is the truthful one
            self.query_one(RunHeaderBar).show_index(self.index, self.path.name)
        rows = self.query_one("#rows", VirtualList)
        collapsed = listing.collapsed
        listing_rows = listing.rows
        narrow = self._narrow = self.app.size.width < _NARROW
        rows.marked = set(listing.matches)
        rows.set_rows(
            len(listing_rows),
            lambda i: render_row(listing_rows[i], listing_rows[i].node.node_id in collapsed, narrow),
            cursor,
        )
        self._show_filters()
        self._show_detail()

    def _show_filters(self) -> None:
        listing = self.listing
        if listing is None:
            return
        parts = []
        if listing.failures_only:
            parts.append("failures only")
        if listing.class_filter:
            parts.append(f"class: {listing.class_filter}")
        if not listing.query.empty:
            number = listing.match_number(self.query_one("#rows", VirtualList).cursor)
            at = f"match {number}/{len(listing.matches)}" if number else f"{len(listing.matches)} matches"
            parts.append(f"search '{listing.query.text}': {at}")
        shown = f"{len(listing.rows)} rows"
        self.query_one("#filters", Banner).say(" · ".join([shown, *parts]) if parts else "", "info")

    @property
    def selected(self) -> Row | None:
        """The row under the cursor."""
        if self.listing is None or not self.listing.rows:
            return None
        cursor = self.query_one("#rows", VirtualList).cursor
        return self.listing.rows[min(cursor, len(self.listing.rows) - 1)]

    def _show_detail(self) -> None:
        row = self.selected
        index = self.index
        detail = self.query_one(DetailTabs)
        if row is None or index is None:
            detail.show(lambda tab: "nothing selected")
            return
        width = max(40, detail.size.width - 2)
        detail.show(
            lambda tab: timeline_text(index, width) if tab == "timeline" else tab_text(tab, row, index)
        )

    def on_resize(self) -> None:
        """Redraw the rows when the terminal crosses the compact-row width."""
        if self._narrow is not None and self._narrow != (self.app.size.width < _NARROW):
            self._refresh_all()

    @on(VirtualList.Highlighted, "#rows")
    def _highlighted(self, event: VirtualList.Highlighted) -> None:
        self._show_detail()
        if self.listing is not None and self.listing.matches:
            self._show_filters()  # "match i/N" follows the cursor

    def _move(self, position: int | None) -> None:
        if position is not None:
            self.query_one("#rows", VirtualList).cursor = position

    # -- actions ---------------------------------------------------------------------------

    def action_expand(self) -> None:
        """Expand the selected node (show its attempts)."""
        row = self.selected
        if row is None or self.listing is None:
            return
        self.listing.expand(row.node.node_id)
        self._refresh_all()

    def action_collapse(self) -> None:
        """Collapse the selected node (or the node of the selected attempt)."""
        row = self.selected
        if row is None or self.listing is None:
            return
        self.listing.collapse(row.node.node_id)
        self._refresh_all(cursor=self.listing.position_of(row.node.node_id))

    def action_search(self) -> None:
        """Open the search box."""
        self.query_one(SearchBar).open()

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        bar = self.query_one(SearchBar)
        bar.close()
        rows = self.query_one("#rows", VirtualList)
        rows.focus()
        if self.listing is None:
            return
        self.listing.search(event.value)
        self._refresh_all()
        self._move(self.listing.next_match(rows.cursor - 1))
        if (unknown := self.listing.unknown_key()) is not None:
            self.notify(unknown, severity="error")
        elif not self.listing.matches:
            self.notify(f"no match for '{event.value}'", severity="warning")

    def action_next_match(self) -> None:
        """Go to the next search match."""
        if self.listing is not None:
            self._move(self.listing.next_match(self.query_one("#rows", VirtualList).cursor))

    def action_prev_match(self) -> None:
        """Go to the previous search match."""
        if self.listing is not None:
            cursor = self.query_one("#rows", VirtualList).cursor
            self._move(self.listing.next_match(cursor, backwards=True))

    def action_escape(self) -> None:
        """Clear the search when there is one, else go back."""
        if self.listing is not None and not self.listing.query.empty:
            self.action_clear_search()
        else:
            self.action_back()

    def action_back(self) -> None:
        """Back to the screen this run was opened from."""
        self.post_message(GoBack())

    def action_clear_search(self) -> None:
        """Close the search box and forget the search."""
        bar = self.query_one(SearchBar)
        bar.close()
        bar.value = ""
        self.query_one("#rows", VirtualList).focus()
        if self.listing is not None:
            self.listing.clear_search()
            self._refresh_all()

    def action_failures_only(self) -> None:
        """Show only failed nodes and attempts (toggle)."""
        if self.listing is not None:
            row = self.selected
            self.listing.toggle_failures_only()
            self._reselect(row)

    def action_cycle_class(self) -> None:
        """Cycle the failure-class filter: all → RECOVERABLE → TERMINAL → AMBIGUOUS."""
        if self.listing is not None:
            row = self.selected
            self.listing.cycle_class_filter()
            self._reselect(row)

    def _reselect(self, row: Row | None) -> None:
        assert self.listing is not None
        position = None
        if row is not None:
            number = row.attempt.number if row.attempt else None
            position = self.listing.position_of(row.node.node_id, number)
            if position is None:
                position = self.listing.position_of(row.node.node_id)
        self._refresh_all(cursor=position or 0)

    def action_next_failure(self) -> None:
        """Go to the next failed attempt."""
        if self.listing is not None:
            self._move(self.listing.next_failure(self.query_one("#rows", VirtualList).cursor))

    def action_prev_failure(self) -> None:
        """Go to the previous failed attempt."""
        if self.listing is not None:
            cursor = self.query_one("#rows", VirtualList).cursor
            self._move(self.listing.next_failure(cursor, backwards=True))

    def action_prev_attempt(self) -> None:
        """Select the previous attempt of the selected node."""
        if self.listing is not None:
            self._move(self.listing.step_attempt(self.query_one("#rows", VirtualList).cursor, -1))

    def action_next_attempt(self) -> None:
        """Select the next attempt of the selected node."""
        if self.listing is not None:
            self._move(self.listing.step_attempt(self.query_one("#rows", VirtualList).cursor, 1))

    def action_tab(self, tab: str) -> None:
        """Open a detail tab."""
        self.query_one(DetailTabs).open_tab(tab)

    def action_diff(self) -> None:
        """Open the diff of the two runs (when two runs are loaded)."""
        self.post_message(OpenDiff())

    def action_cost(self) -> None:
        """Open the cost screen of this run."""
        if self.index is not None:
            self.post_message(OpenCost(self.index, self.path.name))

    def action_copy(self) -> None:
        """Copy the selected record (its events) as JSON."""
        row = self.selected
        if row is None or self.index is None:
            return
        text = record_json(row, self.index)
        self.app.copy_to_clipboard(text)
        what = row.node.node_id + (f" #{row.attempt.number}" if row.attempt else "")
        self.notify(f"copied {what} as JSON ({len(text):,} chars)")
