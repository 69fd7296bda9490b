"""The Run screen's master list as data: visible rows, filters, search and failure navigation.

A row is a node or one of its attempts. Filters (failures only, failure class) decide which rows
exist; a search marks matching rows without hiding the others, like ``less``.
"""

from __future__ import annotations

import bisect
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, compress, count
from typing import Any

from viewer.model.index import Attempt, Node, RunIndex

__all__ = [
    "CLASS_FILTERS",
    "Listing",
    "Query",
    "Row",
    "parse_query",
]

CLASS_FILTERS: tuple[str | None, ...] = (None, "RECOVERABLE", "TERMINAL", "AMBIGUOUS")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the master list: a node (``attempt`` is None) or one of its attempts."""

    node: Node
    attempt: Attempt | None = None

    @property
    def is_node(self) -> bool:
        """True for a node row."""
        return self.attempt is None

    @property
    def failed(self) -> bool:
        """True for a failed or cut-off attempt, or a node that failed or was cut off."""
        if self.attempt is not None:
            return self.attempt.failed or self.attempt.cut_off
        return self.node.status == "failed" or self.node.cut_off


_KEY_VALUE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*=\s*(.*?)\s*$")
_ATTEMPT_KEYS: dict[str, Callable[[Row], Any]] = {
    "node": lambda r: r.node.node_id,
    "node_id": lambda r: r.node.node_id,
    "status": lambda r: r.attempt.outcome if r.attempt else r.node.status,
    "outcome": lambda r: r.attempt.outcome if r.attempt else r.node.status,
    "class": lambda r: r.attempt.failure_class if r.attempt else r.node.failure_class,
    "failure_class": lambda r: r.attempt.failure_class if r.attempt else r.node.failure_class,
    "error": lambda r: r.attempt.error_type if r.attempt else r.node.error_type,
    "error_type": lambda r: r.attempt.error_type if r.attempt else r.node.error_type,
    "model": lambda r: r.attempt.model if r.attempt else None,
    "attempt": lambda r: r.attempt.number if r.attempt else None,
    "decided_by": lambda r: r.attempt.decided_by if r.attempt else None,
    "message": lambda r: r.attempt.message if r.attempt else None,
    "parent": lambda r: r.node.parent,
}


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed search: free text, or ``key=value``.

    Free text matches (case-insensitively) a node id, an error type or a failure message.
    ``key=value`` matches an attempt field (node, status, class, error, model, attempt,
    decided_by, message, parent), ``input.<path>`` / ``output.<path>``, or any top-level key of the
    attempt's input or output state.
    """

    text: str
    key: str | None = None
    value: str | None = None

    @property
    def empty(self) -> bool:
        """True when there is nothing to search for."""
        return not self.text.strip()

    def matches(self, row: Row, index: RunIndex) -> bool:
        """True when ``row`` matches."""
        if self.empty:
            return False
        if self.key is None:
            needle = self.text.strip().lower()
            if needle in row.node.node_id.lower():
                return True
            a = row.attempt
            if a is None:
                return bool(row.node.error_type and needle in row.node.error_type.lower())
            return bool(
                (a.error_type and needle in a.error_type.lower())
                or (a.message and needle in a.message.lower())
            )
        return self._matches_key(row, index)

    def _matches_key(self, row: Row, index: RunIndex) -> bool:
        key = (self.key or "").lower()
        want = (self.value or "").lower()
        getter = _ATTEMPT_KEYS.get(key)
        if getter is not None:
            return _same(getter(row), want)
        a = row.attempt
        if a is None:
            return False
        source, _, path = key.partition(".")
        if source in ("input", "output") and path:
            state = index.input_of(a) if source == "input" else index.output_of(a)
            return state is not None and _same(_lookup(state, path), want)
        for state in (index.input_of(a), index.output_of(a)):
            if state is not None and self.key in state and _same(state[self.key], want):
                return True
        return False


def _lookup(state: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(state, dict) and part in state:
            state = state[part]
        else:
            return _MISSING
    return state


_MISSING = object()


def _same(actual: Any, want: str) -> bool:
    if actual is None or actual is _MISSING:
        return want in ("none", "null")
    if isinstance(actual, bool):
        return str(actual).lower() == want or (want in ("1", "0") and str(int(actual)) == want)
    return str(actual).lower() == want


def parse_query(text: str) -> Query:
    """Parse a search box entry: ``key=value`` or free text."""
    m = _KEY_VALUE.match(text)
    if m:
        return Query(text, m.group(1), m.group(2))
    return Query(text)


class Listing:
    """The visible rows of a run, with expansion, filters, search and failure navigation."""

    def __init__(self, index: RunIndex) -> None:
        self.index = index
        self.collapsed: set[str] = set()
        self.failures_only = False
        self.class_filter: str | None = None
        self.query = Query("")
        self.rows: list[Row] = []
        self.matches: list[int] = []
        # The rows of every node as last shown unfiltered, for _all_rows.
        self._order: list[Node] = []
        self._sizes: list[int] = []
        self._blocks: list[list[Row]] = []
        self.refresh()

    # -- filters ---------------------------------------------------------------------------

    def _keep_node(self, node: Node) -> bool:
        if self.failures_only and not node.has_failures:
            return False
        return self.class_filter is None or self.class_filter in node.failure_classes()

    def _keep_attempt(self, attempt: Attempt) -> bool:
        if self.failures_only and not (attempt.failed or attempt.cut_off):
            return False
        return self.class_filter is None or attempt.failure_class == self.class_filter

    def refresh(self) -> None:
        """Recompute rows (and search matches) after a filter, expansion or data change."""
        if not self.failures_only and self.class_filter is None:
            self.rows = self._all_rows()
            self._search()
            return
        rows: list[Row] = []
        for node in self.index.ordered():
            if not self._keep_node(node):
                continue
            rows.append(Row(node))
            if node.node_id in self.collapsed:
                continue
            rows.extend(Row(node, a) for a in node.attempts if self._keep_attempt(a))
        self.rows = rows
        self._search()

    def _all_rows(self) -> list[Row]:
        """Every row (no filter on), in display order.

        Each node's rows (its block) are kept between refreshes and rebuilt only when the node's
        size changed: it gained attempts (the index only ever appends them), or was collapsed or
        expanded. A refresh per streamed batch of a big run then costs a few list operations over
        the nodes instead of rebuilding every row.
        """
        order = self.index.ordered()
        collapsed = self.collapsed
        if collapsed:
            sizes = [1 if n.node_id in collapsed else len(n.attempts) + 1 for n in order]
        else:
            sizes = [len(attempts) + 1 for attempts in map(_ATTEMPTS, order)]
        blocks = self._blocks
        if len(order) == len(self._order) and all(map(operator.is_, order, self._order)):
            for i in compress(count(), map(operator.ne, sizes, self._sizes)):
                blocks[i] = _block(order[i], sizes[i])
        else:
            kept = {b[0].node.node_id: b for b in blocks}
            blocks = [
                b
                if (b := kept.get(n.node_id)) is not None and b[0].node is n and len(b) == size
                else _block(n, size)
                for n, size in zip(order, sizes, strict=True)
            ]
        self._order, self._sizes, self._blocks = order, sizes, blocks
        return list(chain.from_iterable(blocks))

    def toggle_failures_only(self) -> None:
        """Show only failed nodes and failed attempts (or everything again)."""
        self.failures_only = not self.failures_only
        self.refresh()

    def cycle_class_filter(self) -> str | None:
        """all → RECOVERABLE → TERMINAL → AMBIGUOUS → all; returns the new filter."""
        at = CLASS_FILTERS.index(self.class_filter)
        self.class_filter = CLASS_FILTERS[(at + 1) % len(CLASS_FILTERS)]
        self.refresh()
        return self.class_filter

    def collapse(self, node_id: str) -> None:
        """Hide a node's attempts."""
        self.collapsed.add(node_id)
        self.refresh()

    def expand(self, node_id: str) -> None:
        """Show a node's attempts."""
        self.collapsed.discard(node_id)
        self.refresh()

    # -- search ----------------------------------------------------------------------------

    def search(self, text: str) -> list[int]:
        """Mark the rows matching ``text`` (expanding a collapsed node whose attempts match);
        returns their positions."""
        self.query = q = parse_query(text)
        opened = [
            node_id
            for node_id in self.collapsed
            if any(
                q.matches(Row(node, a), self.index)
                for node in [self.index.by_id[node_id]]
                for a in node.attempts
            )
        ]
        if opened:
            self.collapsed.difference_update(opened)
            self.refresh()
        else:
            self._search()
        return self.matches

    def match_number(self, cursor: int) -> int | None:
        """1-based number of the match at ``cursor`` (None when the cursor is not on one)."""
        at = bisect.bisect_left(self.matches, cursor)
        return at + 1 if at < len(self.matches) and self.matches[at] == cursor else None

    def unknown_key(self) -> str | None:
        """Why a ``key=value`` search found nothing, when its key names nothing searchable."""
        key = self.query.key
        if key is None or self.matches or key.lower() in _ATTEMPT_KEYS:
            return None
        if key.split(".", 1)[0] in ("input", "output") and "." in key:
            return None
        for node in self.index.nodes:
            for a in node.attempts:
                for state in (self.index.input_of(a), self.index.output_of(a)):
                    if state is not None and key in state:
                        return None
        known = ", ".join(sorted(_ATTEMPT_KEYS))
        return f"unknown search key '{key}': use {known}, input.<path>, output.<path> or a state field"

    def clear_search(self) -> None:
        """Forget the search."""
        self.query = Query("")
        self.matches = []

    def _search(self) -> None:
        q = self.query
        if q.empty:
            self.matches = []
            return
        index = self.index
        self.matches = [i for i, row in enumerate(self.rows) if q.matches(row, index)]

    def next_match(self, cursor: int, backwards: bool = False) -> int | None:
        """The position of the next (or previous) match after ``cursor``, wrapping around."""
        return _next(self.matches, cursor, backwards)

    # -- navigation ------------------------------------------------------------------------

    def next_failure(self, cursor: int, backwards: bool = False) -> int | None:
        """The position of the next (or previous) failed row after ``cursor``, wrapping."""
        failed = [i for i, row in enumerate(self.rows) if row.failed]
        return _next(failed, cursor, backwards)

    def step_attempt(self, cursor: int, delta: int) -> int | None:
        """The row of the previous (delta -1) or next (+1) attempt of the selected node."""
        if not 0 <= cursor < len(self.rows):
            return None
        row = self.rows[cursor]
        positions = self._attempt_rows_near(cursor)
        if not positions:
            return None
        if row.attempt is None:
            return positions[0] if delta > 0 else positions[-1]
        at = positions.index(cursor)
        new = at + delta
        return positions[new] if 0 <= new < len(positions) else None

    def _attempt_rows_near(self, cursor: int) -> list[int]:
        node = self.rows[cursor].node
        start = cursor
        while start > 0 and self.rows[start].attempt is not None:
            start -= 1
        out = []
        i = start
        while i < len(self.rows) and self.rows[i].node is node:
            if self.rows[i].attempt is not None:
                out.append(i)
            i += 1
        return out

    def position_of(self, node_id: str, attempt: int | None = None) -> int | None:
        """The row of a node (or one of its attempts)."""
        for i, row in enumerate(self.rows):
            if row.node.node_id == node_id and (
                (attempt is None and row.attempt is None)
                or (row.attempt is not None and row.attempt.number == attempt)
            ):
                return i
        return None


_ATTEMPTS = operator.attrgetter("attempts")


def _block(node: Node, size: int) -> list[Row]:
    """A node's row, then (``size`` > 1: not collapsed) a row per attempt."""
    if size == 1:
        return [Row(node)]
    return [Row(node), *[Row(node, a) for a in node.attempts]]


def _next(positions: list[int], cursor: int, backwards: bool) -> int | None:
    if not positions:
        return None
    if backwards:
        before = [p for p in positions if p < cursor]
        return before[-1] if before else positions[-1]
    after = [p for p in positions if p > cursor]
    return after[0] if after else positions[0]
