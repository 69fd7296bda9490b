"""A structured, resume-aware comparison of two runs.

Runs are aligned by node, not by attempt number or run id, so a failed run and its resumed run
line up: each node is labelled (restored from checkpoint, re-ran with the same or a different
output, newly reached, failed in both, fixed, regressed, not reached), with deltas of status,
duration, tokens, cost and failures. ``ExecutionTrace.diff`` keeps its published line format;
this is the model the viewer and ``stroma-view --diff`` use.

Example::

    comparison = compare_runs("failed.json", "resumed.json")
    for node in comparison.nodes:
        print(node.node_id, node.change.value)
    if comparison.worse:
        raise SystemExit(1)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from stroma import events as ev
from stroma.runfile import RunRecord, load_run
from stroma.trace import ExecutionResult, ExecutionTrace

__all__ = [
    "FieldChange",
    "NodeChange",
    "NodeComparison",
    "NodeSide",
    "RunComparison",
    "compare_runs",
    "field_diff",
    "summarize_nodes",
]


class NodeChange(StrEnum):
    """How a node differs between the older run (a) and the newer run (b)."""

    RESTORED = "restored from checkpoint"
    SAME_OUTPUT = "re-ran, same output"
    DIFFERENT_OUTPUT = "re-ran, different output"
    NEWLY_REACHED = "newly reached"
    FAILED_IN_BOTH = "failed in both"
    FIXED = "fixed"
    REGRESSED = "regressed"
    NOT_REACHED = "not reached"

    def __str__(self) -> str:
        return self.value


UNCHANGED = frozenset({NodeChange.SAME_OUTPUT, NodeChange.RESTORED, NodeChange.NOT_REACHED})

_STATUS_RANK = {"COMPLETED": 0, "RESUMED": 0, "PARTIAL": 1, "FAILED": 2}


@dataclass(slots=True)
class NodeSide:
    """One node as seen in one run."""

    status: str = "not_reached"  # succeeded | failed | restored | running | not_reached
    attempts: int = 0
    failures: int = 0
    duration_ms: float = 0.0
    tokens: int = 0
    cost_usd: float = 0.0
    failed_cost_usd: float = 0.0
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    failure_class: str | None = None
    error_type: str | None = None
    parent: str | None = None

    @property
    def ran(self) -> bool:
        """True when the node executed (succeeded or failed) in this run."""
        return self.status in ("succeeded", "failed")


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs: ``kind`` is added, removed or changed."""

    path: str
    kind: str
    before: Any = None
    after: Any = None


def field_diff(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Field-level differences between two JSON-like values (dicts recurse by key)."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[FieldChange] = []
        for key in before:
            sub = f"{path}.{key}" if path else str(key)
            if key not in after:
                changes.append(FieldChange(sub, "removed", before[key], None))
            else:
                changes.extend(field_diff(before[key], after[key], sub))
        for key in after:
            if key not in before:
                sub = f"{path}.{key}" if path else str(key)
                changes.append(FieldChange(sub, "added", None, after[key]))
        return changes
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out: list[FieldChange] = []
        for i, (x, y) in enumerate(zip(before, after, strict=True)):
            out.extend(field_diff(x, y, f"{path}[{i}]"))
        return out
    return [FieldChange(path or "<value>", "changed", before, after)]


@dataclass(frozen=True, slots=True)
class NodeComparison:
    """One node aligned across two runs."""

    node_id: str
    change: NodeChange
    a: NodeSide
    b: NodeSide

    @property
    def changed(self) -> bool:
        """False for nodes that are the same in both runs (same output, restored, not reached)."""
        return self.change not in UNCHANGED

    def output_changes(self) -> list[FieldChange]:
        """Field-level differences of the node's output (a → b)."""
        return field_diff(self.a.output or {}, self.b.output or {})

    def input_changes(self) -> list[FieldChange]:
        """Field-level differences of the node's input (a → b)."""
        return field_diff(self.a.input or {}, self.b.input or {})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (states left out; use output_changes for them)."""
        return {
            "node_id": self.node_id,
            "change": self.change.name.lower(),
            "label": self.change.value,
            "a": {k: getattr(self.a, k) for k in _SIDE_KEYS},
            "b": {k: getattr(self.b, k) for k in _SIDE_KEYS},
        }


_SIDE_KEYS = (
    "status",
    "attempts",
    "failures",
    "duration_ms",
    "tokens",
    "cost_usd",
    "failure_class",
    "error_type",
)


@dataclass(slots=True)
class RunComparison:
    """Two runs aligned by node, with run-level deltas (b minus a)."""

    a_run_id: str
    b_run_id: str
    a_status: str | None
    b_status: str | None
    nodes: list[NodeComparison] = field(default_factory=list)
    duration_ms_delta: float = 0.0
    tokens_delta: int = 0
    cost_usd_delta: float = 0.0
    failures_delta: int = 0
    same_run: bool = False

    @property
    def status_changed(self) -> bool:
        """True when the two runs ended differently."""
        return self.a_status != self.b_status

    @property
    def first_divergence(self) -> NodeComparison | None:
        """The first node (in pipeline order) whose label is a change."""
        return next((n for n in self.nodes if n.changed), None)

    def changed_nodes(self) -> list[NodeComparison]:
        """Only the nodes that changed."""
        return [n for n in self.nodes if n.changed]

    @property
    def worse(self) -> bool:
        """True when the newer run (b) ended worse than a, or a node regressed."""
        rank_a = _STATUS_RANK.get(self.a_status or "", 3)
        rank_b = _STATUS_RANK.get(self.b_status or "", 3)
        return rank_b > rank_a or any(n.change is NodeChange.REGRESSED for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "a": {"run_id": self.a_run_id, "status": self.a_status},
            "b": {"run_id": self.b_run_id, "status": self.b_status},
            "same_run": self.same_run,
            "delta": {
                "status": [self.a_status, self.b_status],
                "duration_ms": self.duration_ms_delta,
                "tokens": self.tokens_delta,
                "cost_usd": self.cost_usd_delta,
                "failures": self.failures_delta,
            },
            "worse": self.worse,
            "first_divergence": d.node_id if (d := self.first_divergence) else None,
            "nodes": [n.to_dict() for n in self.nodes],
        }


RunLike = RunRecord | ExecutionResult | ExecutionTrace | str | Path


def _record(run: RunLike) -> RunRecord:
    if isinstance(run, RunRecord):
        return run
    if isinstance(run, ExecutionResult):
        return run.record()
    if isinstance(run, ExecutionTrace):
        return RunRecord.from_events(list(run.log))
    return load_run(run)


def summarize_nodes(events: Iterable[ev.LifecycleEvent]) -> dict[str, NodeSide]:
    """Per-node roll-up of a run's events, in first-seen order (one pass)."""
    nodes: dict[str, NodeSide] = {}

    def side(node_id: str) -> NodeSide:
        found = nodes.get(node_id)
        if found is None:
            found = nodes[node_id] = NodeSide()
        return found

    for e in events:
        kind = type(e)
        if kind is ev.NodeStarted:
            s = side(e.node_id)  # type: ignore[attr-defined]
            s.status = "running"
            s.parent = e.parent  # type: ignore[attr-defined]
        elif kind is ev.AttemptStarted:
            s = side(e.node_id)  # type: ignore[attr-defined]
            s.attempts += 1
            s.input = e.input_state  # type: ignore[attr-defined]
        elif kind is ev.AttemptSucceeded:
            s = side(e.node_id)  # type: ignore[attr-defined]
            s.output = e.output_state  # type: ignore[attr-defined]
            s.duration_ms += e.duration_ms  # type: ignore[attr-defined]
            s.tokens += e.tokens  # type: ignore[attr-defined]
            s.cost_usd += e.cost_usd  # type: ignore[attr-defined]
        elif kind is ev.AttemptFailed:
            s = side(e.node_id)  # type: ignore[attr-defined]
            s.failures += 1
            s.duration_ms += e.duration_ms  # type: ignore[attr-defined]
            s.tokens += e.tokens  # type: ignore[attr-defined]
            s.cost_usd += e.cost_usd  # type: ignore[attr-defined]
            s.failed_cost_usd += e.cost_usd  # type: ignore[attr-defined]
            s.failure_class = e.failure_class  # type: ignore[attr-defined]
            s.error_type = e.error_type  # type: ignore[attr-defined]
        elif kind is ev.NodeFinished:
            s = side(e.node_id)  # type: ignore[attr-defined]
            outcome = e.outcome  # type: ignore[attr-defined]
            s.status = "succeeded" if outcome == "succeeded" else "failed"
            if outcome != "succeeded" and e.failure_class:  # type: ignore[attr-defined]
                s.failure_class = e.failure_class  # type: ignore[attr-defined]
            if s.parent is not None:
                s.duration_ms = e.duration_ms  # type: ignore[attr-defined]
        elif kind is ev.NodeRestored:
            s = side(e.node_id)  # type: ignore[attr-defined]
            s.status = "restored"
            s.output = e.output_state  # type: ignore[attr-defined]
    return nodes


def _label(a: NodeSide, b: NodeSide) -> NodeChange:
    a_done = a.status in ("succeeded", "restored")
    # A node still "running" when its run's record ends was interrupted (a killed worker): in the
    # older run it did not complete, like a failure; in the newer run it has not finished yet.
    a_failed = a.status in ("failed", "running")
    if b.status == "restored":
        return NodeChange.RESTORED
    if b.status == "running":
        return NodeChange.NOT_REACHED
    if b.status == "succeeded":
        if a_failed:
            return NodeChange.FIXED
        if a_done:
            if a.output is None or a.output == b.output:
                return NodeChange.SAME_OUTPUT
            return NodeChange.DIFFERENT_OUTPUT
        return NodeChange.NEWLY_REACHED
    if b.status == "failed":
        if a_failed:
            return NodeChange.FAILED_IN_BOTH
        if a_done:
            return NodeChange.REGRESSED
        return NodeChange.NEWLY_REACHED
    if a_done:
        return NodeChange.REGRESSED
    return NodeChange.NOT_REACHED


def _order(
    a: RunRecord, b: RunRecord, a_nodes: dict[str, NodeSide], b_nodes: dict[str, NodeSide]
) -> list[str]:
    children: dict[str, list[str]] = {}
    for nodes in (b_nodes, a_nodes):
        for node_id, s in nodes.items():
            if s.parent is not None and node_id not in children.setdefault(s.parent, []):
                children[s.parent].append(node_id)
    order: list[str] = []
    seen: set[str] = set()

    def add(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        order.append(node_id)
        for child in children.get(node_id, ()):
            add(child)

    for node_id in (*b.header.pipeline, *a.header.pipeline, *b_nodes, *a_nodes):
        if (b_nodes.get(node_id) or a_nodes.get(node_id) or NodeSide()).parent is None:
            add(node_id)
    for node_id in (*b_nodes, *a_nodes):
        add(node_id)
    return order


def compare_runs(a: RunLike, b: RunLike) -> RunComparison:
    """Compare an older run ``a`` (e.g. the failed run) with a newer run ``b`` (its resume).

    Each argument may be a RunRecord, an ExecutionResult, an ExecutionTrace or a run-file path.
    """
    ra, rb = _record(a), _record(b)
    a_nodes, b_nodes = summarize_nodes(ra.events), summarize_nodes(rb.events)
    empty = NodeSide()
    nodes = [
        NodeComparison(
            node_id,
            _label(a_nodes.get(node_id, empty), b_nodes.get(node_id, empty)),
            a_nodes.get(node_id, empty),
            b_nodes.get(node_id, empty),
        )
        for node_id in _order(ra, rb, a_nodes, b_nodes)
    ]
    ha, hb = ra.header, rb.header
    return RunComparison(
        a_run_id=ha.run_id,
        b_run_id=hb.run_id,
        a_status=ha.status,
        b_status=hb.status,
        nodes=nodes,
        duration_ms_delta=(hb.duration_ms or 0.0) - (ha.duration_ms or 0.0),
        tokens_delta=hb.total_tokens - ha.total_tokens,
        cost_usd_delta=hb.total_cost_usd - ha.total_cost_usd,
        failures_delta=hb.failures - ha.failures,
        same_run=ha.run_id == hb.run_id,
    )
