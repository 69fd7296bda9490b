"""The one node summary: a run's nodes and attempts, folded in one pass over its lifecycle events.

Every figure shown about a run is defined here, once, and read from here by ``compare_runs``, the
run-file header, the viewer's screens and ``stroma-view --summary`` / ``--diff``:

- a node's **wall time** (``wall_ms``): first attempt start to last attempt end, backoff between
  attempts included; its **attempt time** (``attempt_ms``): the sum of its attempts' own durations;
- **this run's** tokens and cost (``tokens`` / ``cost_usd``: what the run's attempts spent) and the
  spend **carried** from the runs it resumed (``carried_tokens`` / ``carried_cost_usd``, from
  ``RunFinished``); ``total_tokens`` / ``total_cost_usd`` are their sum, never a silent mix;
- a node's **status**: succeeded, failed, restored, running (its run is live), cancelled (the run
  finished while it ran), interrupted (its run's writer is gone: a kill) or not_reached;
- **final failures**: nodes that ended failed (a retry that later succeeded is not one), beside the
  **failed attempts** (every attempt that raised).

Payloads are not copied: an attempt keeps the indexes of its events, and a state is read from the
event list only when it is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stroma import events as ev

__all__ = [
    "CUT_OFF",
    "ICONS",
    "AttemptSummary",
    "NodeSummary",
    "RunSummary",
]

ICONS = {
    "succeeded": "✔",
    "failed": "✖",
    "restored": "⤳",
    "running": "…",
    "cancelled": "⊘",
    "interrupted": "↯",
    "not_reached": "·",
}

CUT_OFF = frozenset({"cancelled", "interrupted"})
"""Node statuses of a node whose run stopped while it ran (not a failure of the node)."""


@dataclass(slots=True)
class AttemptSummary:
    """One attempt of a node, as the events tell it."""

    node_id: str
    number: int
    outcome: str = "running"  # succeeded | failed | running | cancelled | interrupted
    started: int | None = None  # event index of AttemptStarted
    finished: int | None = None  # event index of AttemptSucceeded / AttemptFailed
    ts: float | None = None  # start time (epoch seconds)
    duration_ms: float = 0.0  # the attempt's own time (so far, for a cut-off attempt)
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
        """True when the attempt raised."""
        return self.outcome == "failed"

    @property
    def cut_off(self) -> bool:
        """True when the run stopped while the attempt ran (cancelled or interrupted)."""
        return self.outcome in CUT_OFF

    @property
    def icon(self) -> str:
        """✔ ✖ … ⊘ or ↯ for the attempt's outcome."""
        return ICONS.get(self.outcome, "?")

    @property
    def end_ts(self) -> float | None:
        """When the attempt ended (start plus its own time)."""
        return None if self.ts is None else self.ts + self.duration_ms / 1000.0


@dataclass(slots=True)
class NodeSummary:
    """A logical node of the run (all of its attempts)."""

    node_id: str
    status: str = "not_reached"
    parent: str | None = None
    attempts: list[AttemptSummary] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0
    failed_tokens: int = 0
    failed_cost_usd: float = 0.0
    failures: int = 0  # failed attempts
    failure_class: str | None = None
    error_type: str | None = None
    restored_from: int | None = None  # event index of NodeRestored
    position: int = 0
    start_ts: float | None = None  # NodeStarted, until an attempt starts
    end_ts: float | None = None  # NodeFinished, or the end of the last attempt
    input: dict[str, Any] | None = None  # the last attempt's input (a reference, not a copy)
    output: dict[str, Any] | None = None  # the succeeded or restored output

    @property
    def icon(self) -> str:
        """✔ ✖ ⤳ … ⊘ ↯ or · for the node's status."""
        return ICONS.get(self.status, "?")

    @property
    def depth(self) -> int:
        """0 for a pipeline node, 1 for a child of a parallel group."""
        return 0 if self.parent is None else 1

    @property
    def wall_ms(self) -> float:
        """First attempt start to last attempt end, backoff included (0 for a restored node)."""
        if self.start_ts is None or self.end_ts is None:
            return 0.0
        return max(0.0, (self.end_ts - self.start_ts) * 1000.0)

    @property
    def attempt_ms(self) -> float:
        """The sum of the node's attempts' own durations."""
        return sum(a.duration_ms for a in self.attempts)

    @property
    def ran(self) -> bool:
        """True when the node executed to an end (succeeded or failed) in this run."""
        return self.status in ("succeeded", "failed")

    @property
    def cut_off(self) -> bool:
        """True when the run stopped while the node ran (cancelled or interrupted)."""
        return self.status in CUT_OFF

    @property
    def has_failures(self) -> bool:
        """True when the node failed, was cut off, or any attempt failed."""
        return self.failures > 0 or self.status == "failed" or self.cut_off

    def failure_classes(self) -> set[str]:
        """Every failure class seen on the node."""
        found = {a.failure_class for a in self.attempts if a.failure_class}
        if self.failure_class:
            found.add(self.failure_class)
        return found


# What extend() does with an event, by event class (decided once per class: the summary of a big
# run dispatches on a dict lookup).
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


_FINAL_STATUS = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}


class RunSummary:
    """Nodes (pipeline order, parallel children after their group) and attempts of one run.

    Built from the run's events (``extend`` / ``append`` add more as a followed file grows);
    ``interrupt`` marks what was still running when the run's writer went away.
    """

    def __init__(self, events: list[ev.LifecycleEvent], pipeline: Sequence[str] = ()) -> None:
        self.events = events
        self.nodes: list[NodeSummary] = []
        self.by_id: dict[str, NodeSummary] = {}
        self.budget: list[int] = []  # event indexes of BudgetChecked / ModelFallback
        self.attempt_count = 0
        self.failure_count = 0  # failed attempts
        self.tokens = 0  # this run's attempts
        self.cost_usd = 0.0
        self.started: ev.RunStarted | None = None
        self.finished: ev.RunFinished | None = None
        self.interrupted = False
        self.last_ts: float | None = None
        self._open: dict[tuple[str, int], AttemptSummary] = {}
        self._ordered: list[NodeSummary] | None = None
        self._seed(pipeline)
        self.extend(events, 0)

    # -- building --------------------------------------------------------------------------

    def _seed(self, pipeline: Sequence[str]) -> None:
        for node_id in pipeline:
            self._node(node_id)

    def _node(self, node_id: str) -> NodeSummary:
        node = self.by_id.get(node_id)
        if node is None:
            node = NodeSummary(node_id, position=len(self.nodes))
            self.by_id[node_id] = node
            self.nodes.append(node)
            self._ordered = None
        return node

    def append(self, events: Iterable[ev.LifecycleEvent]) -> list[ev.LifecycleEvent]:
        """Add events that arrived after the summary was built (a followed ``.jsonl``)."""
        new = list(events)
        start = len(self.events)
        self.events.extend(new)
        self.extend(new, start)
        return new

    def extend(self, events: Iterable[ev.LifecycleEvent], start: int) -> None:
        """Fold ``events``, the first of which is event number ``start``."""
        by_id = self.by_id
        kinds = _KINDS
        fold = self._fold_by_kind
        e: ev.LifecycleEvent | None = None
        for i, e in enumerate(events, start):
            node_id: str | None = getattr(e, "node_id", None)
            if node_id is None:
                if isinstance(e, ev.RunStarted):
                    self.started = self.started or e
                    self._seed(e.pipeline)
                elif isinstance(e, ev.RunFinished):
                    self._finish(e)
                continue
            node = by_id.get(node_id)
            if node is None:
                node = self._node(node_id)
            node.events.append(i)
            kind = kinds.get(type(e))
            if kind is None:
                kind = _kind_of(type(e))
            handler = fold.get(kind)
            if handler is not None:
                handler(self, node, e, i)
        if e is not None:
            self.last_ts = e.ts

    def _attempt_started(self, node: NodeSummary, e: Any, i: int) -> None:
        a = AttemptSummary(node.node_id, e.attempt, started=i, ts=e.ts, model=e.model)
        a.events.append(i)
        node.attempts.append(a)
        self._open[(node.node_id, a.number)] = a
        node.status = "running"
        node.input = e.input_state
        if len(node.attempts) == 1:  # the first attempt's start, not NodeStarted's
            node.start_ts = e.ts
        self.attempt_count += 1

    def _attempt_finished(self, node: NodeSummary, e: Any, i: int) -> None:
        a = self._open.pop((node.node_id, e.attempt), None)
        if a is None:  # its start is not in the file (a cut or hand-made file)
            a = AttemptSummary(node.node_id, e.attempt, ts=e.ts - e.duration_ms / 1000.0)
            node.attempts.append(a)
            self.attempt_count += 1
            if node.start_ts is None:
                node.start_ts = a.ts
        a.events.append(i)
        a.finished = i
        a.duration_ms = e.duration_ms
        a.tokens = e.tokens
        a.input_tokens = e.input_tokens
        a.output_tokens = e.output_tokens
        a.cost_usd = e.cost_usd
        a.model = e.model or a.model
        node.end_ts = a.end_ts
        node.tokens += a.tokens
        node.cost_usd += a.cost_usd
        self.tokens += a.tokens
        self.cost_usd += a.cost_usd
        if not isinstance(e, ev.AttemptFailed):
            a.outcome = "succeeded"
            node.output = e.output_state
            return
        a.outcome = "failed"
        a.failure_class = e.failure_class
        a.error_type = e.error_type
        a.message = e.message
        node.failures += 1
        node.failed_tokens += a.tokens
        node.failed_cost_usd += a.cost_usd
        node.failure_class = a.failure_class
        node.error_type = a.error_type
        self.failure_count += 1

    def _attempt_noted(self, node: NodeSummary, e: Any, i: int) -> None:
        target = self._attempt_of(node, e.attempt)
        if target is None:
            return
        target.events.append(i)
        if isinstance(e, ev.FailureClassified):
            target.decided_by = e.decided_by
        elif isinstance(e, ev.ContractViolated):
            target.contract_direction = e.direction
            target.contract_errors = e.errors or tuple((p, "") for p in e.field_paths)
        else:
            target.retry_delay_s = e.delay_s

    def _node_started(self, node: NodeSummary, e: Any, i: int) -> None:
        if e.parent is not None and e.parent != node.parent:
            node.parent = e.parent
            self._ordered = None
        if node.status == "not_reached":
            node.status = "running"
        if node.start_ts is None:
            node.start_ts = e.ts

    def _node_finished(self, node: NodeSummary, e: Any, i: int) -> None:
        node.status = _FINAL_STATUS.get(e.outcome, "failed")
        if e.failure_class:
            node.failure_class = e.failure_class
        if not node.attempts:  # a parallel group: its own start and end
            node.end_ts = e.ts
        self._cut_attempts(node, node.status, e.ts)

    def _node_restored(self, node: NodeSummary, e: Any, i: int) -> None:
        node.status = "restored"
        node.restored_from = i
        node.output = e.output_state

    def _budget_noted(self, node: NodeSummary, e: Any, i: int) -> None:
        self.budget.append(i)

    _fold_by_kind: ClassVar[dict[int, Callable[[RunSummary, NodeSummary, Any, int], None]]] = {
        _STARTED: _attempt_started,
        _FINISHED: _attempt_finished,
        _NOTED: _attempt_noted,
        _NODE_STARTED: _node_started,
        _NODE_FINISHED: _node_finished,
        _RESTORED: _node_restored,
        _BUDGET: _budget_noted,
    }

    def _finish(self, e: ev.RunFinished) -> None:
        """The run ended: a node still running was cancelled with it."""
        self.finished = e
        self.interrupted = False
        for node in self.nodes:
            if node.status == "running":
                self._cut(node, "cancelled", e.ts)

    def interrupt(self) -> None:
        """The run's writer is gone without a RunFinished: what was running was cut off by it."""
        if self.finished is not None:
            return
        self.interrupted = True
        for node in self.nodes:
            if node.status == "running":
                self._cut(node, "interrupted", self.last_ts)

    def _cut(self, node: NodeSummary, status: str, at: float | None) -> None:
        node.status = status
        self._cut_attempts(node, status, at)
        if node.end_ts is None or (at is not None and at > node.end_ts):
            node.end_ts = at

    def _cut_attempts(self, node: NodeSummary, status: str, at: float | None) -> None:
        for a in node.attempts:
            if a.outcome == "running":
                a.outcome = status if status in CUT_OFF else "cancelled"
                if at is not None and a.ts is not None:
                    a.duration_ms = max(0.0, (at - a.ts) * 1000.0)
                self._open.pop((node.node_id, a.number), None)

    @staticmethod
    def _attempt_of(node: NodeSummary, number: int) -> AttemptSummary | None:
        for a in reversed(node.attempts):
            if a.number == number:
                return a
        return None

    # -- reading ---------------------------------------------------------------------------

    @property
    def carried_tokens(self) -> int:
        """Tokens carried over from the runs this one resumed (known once it finished)."""
        return self.finished.carried_tokens if self.finished else 0

    @property
    def carried_cost_usd(self) -> float:
        """Cost carried over from the runs this one resumed (known once it finished)."""
        return self.finished.carried_cost_usd if self.finished else 0.0

    @property
    def total_tokens(self) -> int:
        """This run's tokens plus the carried ones."""
        return self.tokens + self.carried_tokens

    @property
    def total_cost_usd(self) -> float:
        """This run's cost plus the carried cost."""
        return self.cost_usd + self.carried_cost_usd

    @property
    def final_failures(self) -> int:
        """Nodes that ended failed (a retry that later succeeded does not count)."""
        return sum(1 for n in self.nodes if n.status == "failed")

    @property
    def reached(self) -> int:
        """Nodes that ran, were restored or were cut off (every node but the not-reached ones)."""
        return sum(1 for n in self.nodes if n.status != "not_reached")

    @property
    def cut_off(self) -> list[NodeSummary]:
        """Nodes the run stopped while they ran (interrupted or cancelled)."""
        return [n for n in self.ordered() if n.cut_off]

    @property
    def state(self) -> str:
        """The run's status: RunFinished's, else INTERRUPTED (writer gone) or RUNNING."""
        if self.finished is not None:
            return self.finished.status
        return "INTERRUPTED" if self.interrupted else "RUNNING"

    @property
    def started_at(self) -> float | None:
        """When the run started."""
        return self.started.ts if self.started else None

    @property
    def wall_ms(self) -> float | None:
        """The run's duration: RunFinished's, else start to the last event so far."""
        if self.finished is not None:
            return self.finished.duration_ms
        if self.started is None or self.last_ts is None:
            return None
        return max(0.0, (self.last_ts - self.started.ts) * 1000.0)

    def ordered(self) -> list[NodeSummary]:
        """Nodes in display order: pipeline order, each parallel child right after its group."""
        if self._ordered is None:
            self._ordered = self._order()
        return list(self._ordered)

    def _order(self) -> list[NodeSummary]:
        children: dict[str, list[NodeSummary]] = {}
        for node in self.nodes:
            if node.parent is not None:
                children.setdefault(node.parent, []).append(node)
        out: list[NodeSummary] = []
        for node in self.nodes:
            if node.parent is None or node.parent not in self.by_id:
                out.append(node)
                out.extend(children.get(node.node_id, ()))
        return out

    def event(self, i: int) -> ev.LifecycleEvent:
        """Event number ``i``."""
        return self.events[i]

    def input_of(self, attempt: AttemptSummary) -> dict[str, Any] | None:
        """The input state of an attempt (read only when it is shown)."""
        if attempt.started is None:
            return None
        started = self.events[attempt.started]
        return started.input_state if isinstance(started, ev.AttemptStarted) else None

    def output_of(self, attempt: AttemptSummary) -> dict[str, Any] | None:
        """The output state of a succeeded attempt, or the output a failed one returned that its
        contract rejected."""
        if attempt.finished is None:
            return None
        done = self.events[attempt.finished]
        return done.output_state if isinstance(done, ev.AttemptSucceeded | ev.AttemptFailed) else None

    def restored_output(self, node: NodeSummary) -> dict[str, Any] | None:
        """The output a restored node loaded from its checkpoint (None when not loaded)."""
        if node.restored_from is None:
            return None
        restored = self.events[node.restored_from]
        return restored.output_state if isinstance(restored, ev.NodeRestored) else None

    def failures(self) -> list[AttemptSummary]:
        """Every failed attempt, in run order."""
        return [a for node in self.ordered() for a in node.attempts if a.failed]
