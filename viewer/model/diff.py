"""The Diff screen's model: two runs aligned by node (``stroma.compare_runs``), the delta strip,
the changed-only filter, the first divergence and field-level diffs of a node's output and input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stroma import NodeChange, NodeComparison, RunComparison, RunRecord, compare_runs
from stroma.compare import FieldChange
from stroma.summary import NodeSummary
from viewer.model.detail import fmt_cost, fmt_ms, fmt_ts, node_figures
from viewer.model.timeline import timeline_pair

__all__ = ["CHANGE_ICONS", "DiffView", "delta_parts", "field_lines", "order_line"]

CHANGE_ICONS = {
    NodeChange.RESTORED: "⤳",
    NodeChange.SAME_OUTPUT: "=",
    NodeChange.DIFFERENT_OUTPUT: "≠",
    NodeChange.NEWLY_REACHED: "+",
    NodeChange.FAILED_IN_BOTH: "✖",
    NodeChange.FIXED: "✔",
    NodeChange.REGRESSED: "!",
    NodeChange.NOT_REACHED: "·",
}


def _sign(value: float) -> str:
    return "+" if value > 0 else ("−" if value < 0 else "±")


def _signed(value: float, fmt: str) -> str:
    return _sign(value) + format(abs(value), fmt)


def order_line(c: RunComparison) -> str:
    """Which run is older and why: the two are ordered by start time, not by argument order."""

    def name(file: str | None, run_id: str) -> str:
        return Path(file).name if file else run_id

    text = (
        f"older: {name(c.a_file, c.a_run_id)} (started {fmt_ts(c.a_started_at)} UTC) → "
        f"newer: {name(c.b_file, c.b_run_id)} (started {fmt_ts(c.b_started_at)} UTC)"
    )
    return text + (" · ordered by start time, not argument order" if c.reordered else "")


def delta_parts(c: RunComparison) -> list[tuple[str, str]]:
    """The delta strip as (label, value) pairs: Δ status, wall time, this run's tokens and cost,
    failed nodes (final failures) and failed attempts."""
    return [
        ("Δ status", f"{c.a_status} → {c.b_status}"),
        ("Δ wall", _sign(c.wall_ms_delta) + fmt_ms(abs(c.wall_ms_delta))),
        ("Δ tokens (this run)", _signed(c.tokens_delta, ",")),
        ("Δ cost (this run)", _sign(c.cost_usd_delta) + fmt_cost(abs(c.cost_usd_delta))),
        ("Δ failed nodes", _signed(c.final_failures_delta, "d")),
        ("Δ failed attempts", _signed(c.failed_attempts_delta, "d")),
    ]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def field_lines(changes: list[FieldChange]) -> list[str]:
    """Field changes as ``- path: before`` / ``+ path: after`` lines."""
    out: list[str] = []
    for ch in changes:
        if ch.kind == "added":
            out.append(f"+ {ch.path}: {_short(ch.after)}")
        elif ch.kind == "removed":
            out.append(f"- {ch.path}: {_short(ch.before)}")
        else:
            out.append(f"- {ch.path}: {_short(ch.before)}")
            out.append(f"+ {ch.path}: {_short(ch.after)}")
    return out


class DiffView:
    """Rows of the Diff screen with the changed-only toggle."""

    def __init__(self, a: RunRecord, b: RunRecord) -> None:
        self.comparison = compare_runs(a, b)
        # a is the run that started first, whatever the argument order.
        self.a, self.b = (b, a) if self.comparison.reordered else (a, b)
        self.changed_only = False
        self.rows: list[NodeComparison] = list(self.comparison.nodes)

    def toggle_changed_only(self) -> None:
        """Hide (or show again) the nodes that did not change."""
        self.changed_only = not self.changed_only
        nodes = self.comparison.nodes
        self.rows = [n for n in nodes if n.changed] if self.changed_only else list(nodes)

    def first_divergence(self) -> int | None:
        """The row of the first node whose label is a change."""
        first = self.comparison.first_divergence
        if first is None:
            return None
        for i, row in enumerate(self.rows):
            if row is first:
                return i
        return None

    def detail(self, row: NodeComparison) -> str:
        """The field-level diff of a node's output (and input) between the two runs."""
        a, b = row.a, row.b
        lines = [f"{row.node_id}: {row.change.value}", _side_line("a", a), _side_line("b", b), ""]
        if row.change is NodeChange.RESTORED:
            lines.append("b did not run this node: its output came from a's checkpoint.")
        lines += _state_block("output", a.output, b.output, row.output_changes)
        lines += _state_block("input", a.input, b.input, row.input_changes)
        return "\n".join(lines)

    def timeline(self, width: int = 60) -> str:
        """Both runs' waterfalls on one time axis (each from its own start)."""
        c = self.comparison
        if c.summaries is None:
            return ""
        return timeline_pair(*c.summaries, [n.node_id for n in c.nodes], width)


def _side_line(label: str, side: NodeSummary) -> str:
    """One run's view of a node: status, then its figures as every screen words them, last error."""
    figures = "  ".join(node_figures(side))
    return f"  {label}: {side.status.replace('_', ' '):<11} {figures}  failed {side.failures}" + (
        f"  [{side.failure_class}] {side.error_type}" if side.failures else ""
    )


def _state_block(
    name: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    changes: Callable[[], list[FieldChange]],
) -> list[str]:
    """``name:`` and its field-level changes, "(same)", or why there is nothing to compare."""
    if before is None and after is None:
        return [f"{name}:", "  (neither run has one)"]
    if before is None or after is None:
        only, value = ("b", after) if before is None else ("a", before)
        shown = json.dumps(value, indent=2, ensure_ascii=False, default=str).splitlines()
        return [f"{name} (only run {only} has one):", *("  " + x for x in shown)]
    found = changes()
    if not found:
        return [f"{name}:", "  (same)"]
    return [f"{name}:", *("  " + x for x in field_lines(found))]
