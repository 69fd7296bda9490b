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

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from stroma.runfile import RunRecord, load_run
from stroma.summary import NodeSummary, RunSummary
from stroma.trace import ExecutionResult, ExecutionTrace

__all__ = [
    "FieldChange",
    "NodeChange",
    "NodeComparison",
    "RunComparison",
    "compare_runs",
    "field_diff",
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
    a: NodeSummary
    b: NodeSummary

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
            "a": _side_dict(self.a),
            "b": _side_dict(self.b),
        }


def _side_dict(node: NodeSummary) -> dict[str, Any]:
    return {
        "status": node.status,
        "attempts": len(node.attempts),
        "failed_attempts": node.failures,
        "wall_ms": node.wall_ms,
        "attempt_ms": node.attempt_ms,
        "tokens": node.tokens,
        "cost_usd": node.cost_usd,
        "failure_class": node.failure_class,
        "error_type": node.error_type,
    }


_STATUS_RANK = {"COMPLETED": 0, "RESUMED": 0, "PARTIAL": 1, "RUNNING": 2, "INTERRUPTED": 2, "FAILED": 3}


@dataclass(slots=True)
class RunComparison:
    """Two runs aligned by node, the older (by start time) as ``a``, with deltas b minus a.

    Spend deltas are of each run's own attempts (``tokens_delta``, ``cost_usd_delta``); what a
    resumed run carried over from earlier runs is in ``a_carried_cost_usd`` / ``b_carried_cost_usd``.
    """

    a_run_id: str
    b_run_id: str
    a_status: str
    b_status: str
    a_file: str | None = None
    b_file: str | None = None
    a_started_at: float | None = None
    b_started_at: float | None = None
    reordered: bool = False
    nodes: list[NodeComparison] = field(default_factory=list)
    wall_ms_delta: float = 0.0
    tokens_delta: int = 0
    cost_usd_delta: float = 0.0
    a_carried_cost_usd: float = 0.0
    b_carried_cost_usd: float = 0.0
    failed_attempts_delta: int = 0
    final_failures_delta: int = 0
    reached_delta: int = 0
    same_run: bool = False
    summaries: tuple[RunSummary, RunSummary] | None = field(default=None, repr=False, compare=False)
    """The two runs' node summaries (a, b) the comparison was made from."""

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
    def worse_reasons(self) -> list[str]:
        """Why the newer run (b) is worse: a worse end status, fewer nodes reached, or more final
        failures (a retry that later succeeded is not a failure of the run); [] when it is not."""
        reasons: list[str] = []
        if _STATUS_RANK.get(self.b_status, 3) > _STATUS_RANK.get(self.a_status, 3):
            reasons.append(f"ended {self.b_status} after {self.a_status}")
        if self.reached_delta < 0:
            reasons.append(f"reached {-self.reached_delta} fewer node(s)")
        if self.final_failures_delta > 0:
            reasons.append(f"{self.final_failures_delta} more failed node(s)")
        return reasons

    @property
    def worse(self) -> bool:
        """True when the newer run is worse (see ``worse_reasons``)."""
        return bool(self.worse_reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "a": {
                "run_id": self.a_run_id,
                "status": self.a_status,
                "file": self.a_file,
                "started_at": self.a_started_at,
                "carried_cost_usd": self.a_carried_cost_usd,
            },
            "b": {
                "run_id": self.b_run_id,
                "status": self.b_status,
                "file": self.b_file,
                "started_at": self.b_started_at,
                "carried_cost_usd": self.b_carried_cost_usd,
            },
            "ordered_by": "start time",
            "reordered": self.reordered,
            "same_run": self.same_run,
            "delta": {
                "status": [self.a_status, self.b_status],
                "wall_ms": self.wall_ms_delta,
                "tokens": self.tokens_delta,
                "cost_usd": self.cost_usd_delta,
                "failed_attempts": self.failed_attempts_delta,
                "final_failures": self.final_failures_delta,
                "reached": self.reached_delta,
            },
            "worse": self.worse,
            "worse_reasons": self.worse_reasons,
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


_FAILED = frozenset({"failed", "cancelled", "interrupted"})


def _label(a: NodeSummary, b: NodeSummary) -> NodeChange:
    a_done = a.status in ("succeeded", "restored")
    # Failed, or cut off by a kill or a cancel (or still running when the newer run exists): the
    # older run did not complete the node.
    a_failed = a.status in _FAILED or a.status == "running"
    if b.status == "restored":
        return NodeChange.RESTORED
    if b.status == "running":  # the newer run is live: the node has not finished yet
        return NodeChange.NOT_REACHED
    if b.status == "succeeded":
        if a_failed:
            return NodeChange.FIXED
        if a_done:
            if a.output is None or a.output == b.output:
                return NodeChange.SAME_OUTPUT
            return NodeChange.DIFFERENT_OUTPUT
        return NodeChange.NEWLY_REACHED
    if b.status in _FAILED:
        if a_failed:
            return NodeChange.FAILED_IN_BOTH
        if a_done:
            return NodeChange.REGRESSED
        return NodeChange.NEWLY_REACHED
    if a_done:
        return NodeChange.REGRESSED
    return NodeChange.NOT_REACHED


def _order(a: RunSummary, b: RunSummary) -> list[str]:
    children: dict[str, list[str]] = {}
    for nodes in (b.nodes, a.nodes):
        for s in nodes:
            if s.parent is not None and s.node_id not in children.setdefault(s.parent, []):
                children[s.parent].append(s.node_id)
    order: list[str] = []
    seen: set[str] = set()

    def add(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        order.append(node_id)
        for child in children.get(node_id, ()):
            add(child)

    for node in (*b.nodes, *a.nodes):
        if (b.by_id.get(node.node_id) or node).parent is None:
            add(node.node_id)
    for node in (*b.nodes, *a.nodes):
        add(node.node_id)
    return order


def compare_runs(a: RunLike, b: RunLike) -> RunComparison:
    """Compare two runs, the one that started first as ``a`` (e.g. the failed run) and the other
    as ``b`` (its resume), whatever the argument order; ``reordered`` says when they were swapped.

    Each argument may be a RunRecord, an ExecutionResult, an ExecutionTrace or a run-file path.
    """
    ra, rb = _record(a), _record(b)
    sa, sb = ra.summary(), rb.summary()
    reordered = sa.started_at is not None and sb.started_at is not None and sb.started_at < sa.started_at
    if reordered:
        ra, rb, sa, sb = rb, ra, sb, sa
    nodes = [
        NodeComparison(
            node_id,
            _label(
                na := sa.by_id.get(node_id) or NodeSummary(node_id),
                nb := sb.by_id.get(node_id) or NodeSummary(node_id),
            ),
            na,
            nb,
        )
        for node_id in _order(sa, sb)
    ]
    return RunComparison(
        a_run_id=ra.run_id,
        b_run_id=rb.run_id,
        a_status=sa.state,
        b_status=sb.state,
        a_file=ra.path,
        b_file=rb.path,
        a_started_at=sa.started_at,
        b_started_at=sb.started_at,
        reordered=reordered,
        nodes=nodes,
        wall_ms_delta=(sb.wall_ms or 0.0) - (sa.wall_ms or 0.0),
        tokens_delta=sb.tokens - sa.tokens,
        cost_usd_delta=sb.cost_usd - sa.cost_usd,
        a_carried_cost_usd=sa.carried_cost_usd,
        b_carried_cost_usd=sb.carried_cost_usd,
        failed_attempts_delta=sb.failure_count - sa.failure_count,
        final_failures_delta=sb.final_failures - sa.final_failures,
        reached_delta=sb.reached - sa.reached,
        same_run=ra.run_id == rb.run_id and sa.started_at == sb.started_at,
        summaries=(sa, sb),
    )
