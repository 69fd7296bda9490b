"""The Diff screen's model: two runs aligned by node (``stroma.compare_runs``), the delta strip,
the changed-only filter, the first divergence and field-level diffs of a node's output and input.
"""

from __future__ import annotations

import json
from typing import Any

from stroma import NodeChange, NodeComparison, RunComparison, RunRecord, compare_runs
from stroma.compare import FieldChange
from viewer.model.detail import fmt_cost, fmt_ms

__all__ = ["CHANGE_ICONS", "DiffView", "delta_parts", "field_lines"]

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


def delta_parts(c: RunComparison) -> list[tuple[str, str]]:
    """The delta strip as (label, value) pairs: Δ status, duration, tokens, cost, failures."""
    status = f"{c.a_status or 'unfinished'} → {c.b_status or 'unfinished'}"
    dur = fmt_ms(abs(c.duration_ms_delta))
    cost = fmt_cost(abs(c.cost_usd_delta))
    return [
        ("Δ status", status),
        ("Δ duration", _sign(c.duration_ms_delta) + dur),
        ("Δ tokens", _signed(c.tokens_delta, ",")),
        ("Δ cost", _sign(c.cost_usd_delta) + cost),
        ("Δ failures", _signed(c.failures_delta, "d")),
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
        self.a = a
        self.b = b
        self.comparison = compare_runs(a, b)
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
        lines = [
            f"{row.node_id}: {row.change.value}",
            f"  a: {a.status:<11} attempts {a.attempts}  failures {a.failures}  "
            f"{fmt_ms(a.duration_ms)}  {a.tokens:,} tok  {fmt_cost(a.cost_usd)}"
            + (f"  [{a.failure_class}] {a.error_type}" if a.failures else ""),
            f"  b: {b.status:<11} attempts {b.attempts}  failures {b.failures}  "
            f"{fmt_ms(b.duration_ms)}  {b.tokens:,} tok  {fmt_cost(b.cost_usd)}"
            + (f"  [{b.failure_class}] {b.error_type}" if b.failures else ""),
            "",
        ]
        if row.change is NodeChange.RESTORED:
            lines.append("b did not run this node: its output came from a's checkpoint.")
        out_changes = row.output_changes() if a.output is not None and b.output is not None else []
        lines.append("output:")
        if a.output is None or b.output is None:
            lines.append("  (only one run has an output for this node)")
        elif out_changes:
            lines += ["  " + x for x in field_lines(out_changes)]
        else:
            lines.append("  (same)")
        in_changes = row.input_changes() if a.input is not None and b.input is not None else []
        lines.append("input:")
        if a.input is None or b.input is None:
            lines.append("  (only one run has an input for this node)")
        elif in_changes:
            lines += ["  " + x for x in field_lines(in_changes)]
        else:
            lines.append("  (same)")
        return "\n".join(lines)
