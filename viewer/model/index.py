"""The run index: nodes with their attempts, built in one pass over a run's events.

The viewer's lists, filters, search and detail tabs all read this index; none of them walks the
event list again. Payloads (input / output states) are not copied: an attempt keeps the index of
its events, and the detail view reads the state only for the selected attempt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stroma import RunHeader, RunRecord
from stroma import events as ev

__all__ = [
    "ICONS",
    "Attempt",
    "Node",
    "RunIndex",
]

ICONS = {
    "succeeded": "✔",
    "failed": "✖",
    "restored": "⤳",
    "running": "…",
    "cancelled": "⊘",
    "not_reached": "·",
}


@dataclass(slots=True)
class Attempt:
    """One attempt of a node, as the events tell it."""

    node_id: str
    number: int
    outcome: str = "running"  # succeeded | failed | running
    started: int | None = None  # event index of AttemptStarted
    finished: int | None = None  # event index of AttemptSucceeded / AttemptFailed
    ts: float | None = None
    duration_ms: float = 0.0
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None
    failure_class: str | None = None
    error_type: str | None = None
    message: str | None = None
    decided_by: str | None = None
    retry_delay_s: float | None = None
    contract_direction: str | None = None
    contract_errors: tuple[tuple[str, str], ...] = ()
    events: list[int] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when the attempt failed."""
        return self.outcome == "failed"

    @property
    def icon(self) -> str:
        """✔ ✖ or … (still running)."""
        return ICONS.get(self.outcome, "?")


@dataclass(slots=True)
class Node:
    """A logical node of the run (all of its attempts)."""

    node_id: str
    status: str = "not_reached"  # succeeded | failed | restored | running | cancelled | not_reached
    parent: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    duration_ms: float = 0.0
    tokens: int = 0
    cost_usd: float = 0.0
    failed_cost_usd: float = 0.0
    failures: int = 0
    failure_class: str | None = None
    error_type: str | None = None
    restored_from: int | None = None  # event index of NodeRestored
    position: int = 0

    @property
    def icon(self) -> str:
        """✔ ✖ ⤳ … ⊘ or · for the node's status."""
        return ICONS.get(self.status, "?")

    @property
    def depth(self) -> int:
        """0 for a pipeline node, 1 for a child of a parallel group."""
        return 0 if self.parent is None else 1

    @property
    def has_failures(self) -> bool:
        """True when the node failed or any attempt failed."""
        return self.failures > 0 or self.status == "failed"

    def failure_classes(self) -> set[str]:
        """Every failure class seen on the node."""
        found = {a.failure_class for a in self.attempts if a.failure_class}
        if self.failure_class:
            found.add(self.failure_class)
        return found


# What extend() does with an event of a node, by event class (the same isinstance order as a chain of
# checks, decided once per class: the index of a big run dispatches on a dict lookup).
_STARTED, _FINISHED, _NOTED, _NODE_STARTED, _NODE_FINISHED, _RESTORED, _BUDGET, _OTHER = range(8)
_KIND_CLASSES: tuple[tuple[int, tuple[type[ev.LifecycleEvent], ...]], ...] = (
    (_STARTED, (ev.AttemptStarted,)),
    (_FINISHED, (ev.AttemptSucceeded, ev.AttemptFailed)),
    (_NOTED, (ev.FailureClassified, ev.ContractViolated, ev.RetryScheduled)),
    (_NODE_STARTED, (ev.NodeStarted,)),
    (_NODE_FINISHED, (ev.NodeFinished,)),
    (_RESTORED, (ev.NodeRestored,)),
    (_BUDGET, (ev.BudgetChecked, ev.ModelFallback)),
)
_KINDS: dict[type, int] = {}


def _kind_of(cls: type) -> int:
    kind = next((k for k, classes in _KIND_CLASSES if issubclass(cls, classes)), _OTHER)
    _KINDS[cls] = kind
    return kind


class RunIndex:
    """Nodes (pipeline order, parallel children after their group) and attempts of one run."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.events: list[ev.LifecycleEvent] = record.events
        self.nodes: list[Node] = []
        self.by_id: dict[str, Node] = {}
        self.budget: list[int] = []  # event indexes of BudgetChecked / ModelFallback
        self.attempt_count = 0
        self.failure_count = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self.finished: ev.RunFinished | None = None
        self._open: dict[tuple[str, int], Attempt] = {}
        self._ordered: list[Node] | None = None  # display order, until a node or a parent is added
        self._seed(record.header.pipeline)
        self.extend(record.events, 0)

    # -- building --------------------------------------------------------------------------

    def _seed(self, pipeline: Sequence[str]) -> None:
        for node_id in pipeline:
            self._node(node_id)

    def _node(self, node_id: str) -> Node:
        node = self.by_id.get(node_id)
        if node is None:
            node = Node(node_id, position=len(self.nodes))
            self.by_id[node_id] = node
            self.nodes.append(node)
            self._ordered = None
        return node

    def append(self, events: Iterable[ev.LifecycleEvent]) -> None:
        """Add events that arrived after the index was built (a followed ``.jsonl``)."""
        start = len(self.events)
        new = list(events)
        self.events.extend(new)
        self.extend(new, start)
        if any(type(e) is ev.RunFinished for e in new):
            record = self.record
            record.header = RunRecord.from_events(self.events, run_id=record.run_id).header
            record.truncated = False
            record.truncated_at_line = None

    def extend(self, events: Iterable[ev.LifecycleEvent], start: int) -> None:
        """Index ``events``, the first of which is event number ``start``."""
        by_id = self.by_id
        node_fn = self._node
        opened = self._open
        kinds = _KINDS
        for i, e in enumerate(events, start):
            node_id: str | None = getattr(e, "node_id", None)
            if node_id is None:
                if isinstance(e, ev.RunStarted):
                    self._seed(e.pipeline)
                elif isinstance(e, ev.RunFinished):
                    self.finished = e
                continue
            node = by_id.get(node_id)
            if node is None:
                node = node_fn(node_id)
            node.events.append(i)
            kind = kinds.get(type(e))
            if kind is None:
                kind = _kind_of(type(e))
            if kind == _STARTED:
                assert isinstance(e, ev.AttemptStarted)
                a = Attempt(node_id, e.attempt, started=i, ts=e.ts, model=e.model)
                a.events.append(i)
                node.attempts.append(a)
                opened[(node_id, a.number)] = a
                node.status = "running"
                self.attempt_count += 1
            elif kind == _FINISHED:
                assert isinstance(e, ev.AttemptSucceeded | ev.AttemptFailed)
                found = opened.pop((node_id, e.attempt), None)
                if found is None:
                    found = Attempt(node_id, e.attempt, ts=e.ts)
                    node.attempts.append(found)
                    self.attempt_count += 1
                a = found
                a.events.append(i)
                a.finished = i
                a.duration_ms = e.duration_ms
                a.tokens = e.tokens
                a.input_tokens = e.input_tokens
                a.output_tokens = e.output_tokens
                a.cost_usd = e.cost_usd
                a.model = e.model or a.model
                node.tokens += a.tokens
                node.cost_usd += a.cost_usd
                self.tokens += a.tokens
                self.cost_usd += a.cost_usd
                if node.parent is None:
                    node.duration_ms += a.duration_ms
                if isinstance(e, ev.AttemptFailed):
                    a.outcome = "failed"
                    a.failure_class = e.failure_class
                    a.error_type = e.error_type
                    a.message = e.message
                    node.failures += 1
                    node.failed_cost_usd += a.cost_usd
                    node.failure_class = a.failure_class
                    node.error_type = a.error_type
                    self.failure_count += 1
                else:
                    a.outcome = "succeeded"
            elif kind == _NOTED:
                assert isinstance(e, ev.FailureClassified | ev.ContractViolated | ev.RetryScheduled)
                target = self._attempt_of(node, e.attempt)
                if target is None:
                    continue
                target.events.append(i)
                if isinstance(e, ev.FailureClassified):
                    target.decided_by = e.decided_by
                elif isinstance(e, ev.ContractViolated):
                    target.contract_direction = e.direction
                    target.contract_errors = e.errors or tuple((p, "") for p in e.field_paths)
                else:
                    target.retry_delay_s = e.delay_s
            elif kind == _NODE_STARTED:
                assert isinstance(e, ev.NodeStarted)
                if e.parent is not None and e.parent != node.parent:
                    node.parent = e.parent
                    self._ordered = None
                if node.status == "not_reached":
                    node.status = "running"
            elif kind == _NODE_FINISHED:
                assert isinstance(e, ev.NodeFinished)
                outcome = e.outcome
                node.status = outcome if outcome in ("succeeded", "failed", "cancelled") else "failed"
                if e.failure_class:
                    node.failure_class = e.failure_class
                # Wall time of the node, backoff included (attempt times are on each attempt).
                node.duration_ms = e.duration_ms
            elif kind == _RESTORED:
                node.status = "restored"
                node.restored_from = i
            elif kind == _BUDGET:
                self.budget.append(i)

    @staticmethod
    def _attempt_of(node: Node, number: int) -> Attempt | None:
        for a in reversed(node.attempts):
            if a.number == number:
                return a
        return None

    # -- reading ---------------------------------------------------------------------------

    @property
    def header(self) -> RunHeader:
        """The run's header."""
        return self.record.header

    def ordered(self) -> list[Node]:
        """Nodes in display order: pipeline order, each parallel child right after its group."""
        if self._ordered is None:
            self._ordered = self._order()
        return list(self._ordered)

    def _order(self) -> list[Node]:
        children: dict[str, list[Node]] = {}
        for node in self.nodes:
            if node.parent is not None:
                children.setdefault(node.parent, []).append(node)
        out: list[Node] = []
        for node in self.nodes:
            if node.parent is None or node.parent not in self.by_id:
                out.append(node)
                out.extend(children.get(node.node_id, ()))
        return out

    def event(self, i: int) -> ev.LifecycleEvent:
        """Event number ``i``."""
        return self.events[i]

    def input_of(self, attempt: Attempt) -> dict[str, Any] | None:
        """The input state of an attempt (read only when it is shown)."""
        if attempt.started is None:
            return None
        started = self.events[attempt.started]
        return started.input_state if isinstance(started, ev.AttemptStarted) else None

    def output_of(self, attempt: Attempt) -> dict[str, Any] | None:
        """The output state of a succeeded attempt."""
        if attempt.finished is None:
            return None
        done = self.events[attempt.finished]
        return done.output_state if isinstance(done, ev.AttemptSucceeded) else None

    def restored_output(self, node: Node) -> dict[str, Any] | None:
        """The output a restored node loaded from its checkpoint (None when not loaded)."""
        if node.restored_from is None:
            return None
        restored = self.events[node.restored_from]
        return restored.output_state if isinstance(restored, ev.NodeRestored) else None

    def failures(self) -> list[Attempt]:
        """Every failed attempt, in run order."""
        return [a for node in self.ordered() for a in node.attempts if a.failed]
