"""The timeline: a waterfall of a run's attempts on one time axis, as text.

One line per node; each attempt is a bar from its start to its end (``█`` succeeded, ``▒`` failed,
ending in ``✖``, ``░`` cut off by a kill or a cancel, ending in ``↯``), the backoff between two
attempts is ``┄``, and a node restored from a checkpoint is a zero-width ``⤳`` at the moment it
was restored. The diff draws both runs on one axis, each from its own start, so their lengths
compare. Every time comes from the one node summary (:mod:`stroma.summary`).
"""

from __future__ import annotations

from stroma import events as ev
from stroma.summary import NodeSummary, RunSummary
from viewer.model.detail import fmt_ms

__all__ = ["LEGEND", "run_span", "timeline_lines", "timeline_pair", "timeline_text"]

LEGEND = "█ succeeded  ▒✖ failed  ┄ backoff\n░↯ cut off  ⤳ restored  ─ ran (no own attempts)"
_NAME = 14


def run_span(summary: RunSummary) -> tuple[float, float]:
    """(start, seconds) of a run: its RunStarted to its last attempt end or last event."""
    ends = [n.end_ts for n in summary.nodes if n.end_ts is not None]
    starts = [n.start_ts for n in summary.nodes if n.start_ts is not None]
    start = summary.started_at if summary.started_at is not None else min(starts, default=0.0)
    end = max([*ends, summary.last_ts or start], default=start)
    return start, max(end - start, 0.0)


def _bar(node: NodeSummary, summary: RunSummary, start: float, span: float, width: int) -> str:
    cells = [" "] * width

    def col(ts: float) -> int:
        return 0 if span <= 0 else max(0, min(width - 1, int((ts - start) / span * width)))

    if node.restored_from is not None:
        cells[col(summary.event(node.restored_from).ts)] = "⤳"
    if not node.attempts and node.start_ts is not None and node.end_ts is not None:
        for c in range(col(node.start_ts), col(node.end_ts) + 1):  # a node that ran no attempt itself
            cells[c] = "─"
    previous_end: int | None = None
    for a in node.attempts:
        if a.ts is None:
            continue
        s, e = col(a.ts), col(a.end_ts or a.ts)
        if previous_end is not None:
            for c in range(previous_end + 1, s):
                cells[c] = "┄"
        fill = "█" if a.outcome == "succeeded" else ("▒" if a.failed else "░")
        for c in range(s, e + 1):
            cells[c] = fill
        if a.failed:
            cells[e] = "✖"
        elif a.cut_off:
            cells[e] = "↯"
        previous_end = e
    return "".join(cells)


def timeline_lines(
    summary: RunSummary, start: float, span: float, width: int, *, label: str = ""
) -> dict[str, str]:
    """Each node's line (name, bar, wall time) on the axis ``start`` + ``span`` seconds."""
    out: dict[str, str] = {}
    for node in summary.ordered():
        name = ("  " * node.depth + node.node_id)[:_NAME]
        wall = "" if node.status in ("not_reached", "restored") else fmt_ms(node.wall_ms)
        out[node.node_id] = f"{label}{name:<{_NAME}} │{_bar(node, summary, start, span, width)}│ {wall}"
    return out


def _axis(span: float, width: int, indent: int) -> str:
    end = fmt_ms(span * 1000.0)
    return " " * indent + "0" + " " * max(1, width + 1 - len(end)) + end


def timeline_text(summary: RunSummary, width: int = 60) -> str:
    """The run's waterfall: an axis line, one line per node, the legend."""
    bar = max(10, width - _NAME - 12)
    start, span = run_span(summary)
    lines = [_axis(span, bar, _NAME + 1), *timeline_lines(summary, start, span, bar).values(), "", LEGEND]
    if any(isinstance(summary.event(i), ev.ModelFallback) for i in summary.budget):
        lines.append("(a model fallback happened: see the Cost screen)")
    return "\n".join(lines)


def timeline_pair(a: RunSummary, b: RunSummary, order: list[str], width: int = 60) -> str:
    """Both runs of a diff on one axis (each from its own start), a then b for every node."""
    bar = max(10, width - _NAME - 14)
    (a_start, a_span), (b_start, b_span) = run_span(a), run_span(b)
    span = max(a_span, b_span)
    a_lines = timeline_lines(a, a_start, span, bar, label="a ")
    b_lines = timeline_lines(b, b_start, span, bar, label="b ")
    lines = [_axis(span, bar, _NAME + 3)]
    for node_id in order:
        lines += [x for x in (a_lines.get(node_id), b_lines.get(node_id)) if x is not None]
    return "\n".join([*lines, "", LEGEND])
