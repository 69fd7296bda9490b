"""What the detail tabs show for a selected row, as plain text (the widgets only display it).

Payloads are formatted here, and only for the row that is selected.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from stroma import events as ev
from viewer.model.index import Attempt, Node, RunIndex
from viewer.model.listing import Row

__all__ = [
    "TABS",
    "attempt_text",
    "event_line",
    "events_text",
    "failure_text",
    "fmt_cost",
    "fmt_ms",
    "fmt_tokens",
    "fmt_ts",
    "input_text",
    "node_figures",
    "output_text",
    "plural",
    "record_json",
    "tab_text",
]

TABS = ("attempt", "input", "output", "failure", "events", "json", "timeline")


def fmt_ms(ms: float | None) -> str:
    """``12.3 ms`` / ``4.56 s`` / ``-`` (en dash)."""
    if ms is None:
        return "–"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms"


def fmt_cost(usd: float) -> str:
    """``$0.0012``."""
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


def fmt_tokens(tokens: int) -> str:
    """``12,345``."""
    return f"{tokens:,}"


def fmt_ts(ts: float | None) -> str:
    """UTC ``2026-11-23 15:20:16``."""
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def plural(count: int, word: str) -> str:
    """``1 attempt`` / ``2 attempts`` (the count formatted with separators)."""
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def node_figures(n: Node) -> tuple[str, str, str, str, str]:
    """A node's figures, worded as every screen and the headless output show them: attempts, wall
    time (backoff included), the attempts' own time, this run's tokens and cost."""
    return (
        plural(len(n.attempts), "attempt"),
        f"wall {fmt_ms(n.wall_ms)}",
        f"attempts {fmt_ms(n.attempt_ms)}",
        f"{fmt_tokens(n.tokens)} tok",
        fmt_cost(n.cost_usd),
    )


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def _selected_attempt(row: Row) -> Attempt | None:
    if row.attempt is not None:
        return row.attempt
    return row.node.attempts[-1] if row.node.attempts else None


def attempt_text(row: Row, index: RunIndex) -> str:
    """Timing, model, usage, classification (and who decided it), the retry delay that followed."""
    node = row.node
    a = _selected_attempt(row)
    lines = [f"node       {node.node_id}  ({node.icon} {node.status})"]
    if node.parent:
        lines.append(f"group      {node.parent}")
    if a is None:
        if node.status == "restored":
            lines.append("restored from checkpoint (not run again)")
        else:
            lines.append("no attempts")
        return "\n".join(lines)
    total = len(node.attempts)
    lines += [
        f"attempt    {a.number} of {total}  {a.icon} {a.outcome}",
        f"started    {fmt_ts(a.ts)} UTC",
        f"duration   {fmt_ms(a.duration_ms)}",
        f"model      {a.model or '–'}",
        f"tokens     {fmt_tokens(a.tokens)} (in {fmt_tokens(a.input_tokens)}, "
        f"out {fmt_tokens(a.output_tokens)})",
        f"cost       {fmt_cost(a.cost_usd)}",
    ]
    if a.failed:
        lines.append(f"class      {a.failure_class}  (decided by {a.decided_by or '–'})")
        lines.append(f"error      {a.error_type}")
    if a.retry_delay_s is not None:
        lines.append(f"retry      after {a.retry_delay_s:.3f} s")
    if a.started is not None:
        started = index.event(a.started)
        if isinstance(started, ev.AttemptStarted) and started.idempotency_key:
            lines.append(f"key        {started.idempotency_key}")
    return "\n".join(lines)


def input_text(row: Row, index: RunIndex) -> str:
    """The attempt's input state as JSON."""
    a = _selected_attempt(row)
    state = index.input_of(a) if a is not None else None
    return _dump(state) if state is not None else "(no input recorded)"


def output_text(row: Row, index: RunIndex) -> str:
    """The attempt's output state (or the restored checkpoint) as JSON."""
    if row.attempt is None and row.node.status == "restored":
        restored = index.restored_output(row.node)
        if restored is None:
            return "(restored from checkpoint; output not loaded: only the last restored node's is)"
        return _dump(restored)
    a = _selected_attempt(row)
    state = index.output_of(a) if a is not None else None
    if state is None:
        return "(no output: the attempt failed)" if a is not None and a.failed else "(no output)"
    if a is not None and a.failed:
        return f"(rejected: it failed its {a.contract_direction or 'output'} contract)\n" + _dump(state)
    return _dump(state)


def failure_text(row: Row, index: RunIndex) -> str:
    """Message, class, error type and contract errors per field."""
    a = row.attempt
    attempts = [a] if a is not None else [x for x in row.node.attempts if x.failed]
    attempts = [x for x in attempts if x is not None and x.failed]
    if not attempts:
        return "no failure"
    parts = []
    for x in attempts:
        lines = [
            f"attempt {x.number}: {x.error_type}  [{x.failure_class}]  decided by {x.decided_by or '–'}",
            f"  {x.message}",
        ]
        if x.contract_errors:
            lines.append(f"  contract ({x.contract_direction}) errors:")
            lines += [f"    {path}: {msg}" for path, msg in x.contract_errors]
        parts.append("\n".join(lines))
    del index
    return "\n\n".join(parts)


def _short_value(key: str, value: Any) -> str:
    """A field of an event, formatted: durations in ms / s, costs in $, other floats to 4 digits."""
    if isinstance(value, float):
        if key.endswith("_ms"):
            return fmt_ms(value)
        if key.endswith("_usd"):
            return fmt_cost(value)
        if key.endswith("_s"):
            return fmt_ms(value * 1000.0)
        return f"{value:.4g}"
    return str(value)


def event_line(e: ev.LifecycleEvent) -> str:
    """One event as a short line."""
    data = ev.event_to_dict(e)
    skip = {"type", "run_id", "ts", "node_id", "input_state", "output_state", "carrier", "parent_carrier"}
    fields = " ".join(
        f"{k}={_short_value(k, v)}" for k, v in data.items() if k not in skip and v not in (None, "")
    )
    return f"{fmt_ts(e.ts)[11:]} {e.kind:<17} {fields}"


def events_text(row: Row, index: RunIndex) -> str:
    """The node's (or attempt's) lifecycle events in order."""
    ids = row.attempt.events if row.attempt is not None else row.node.events
    return "\n".join(event_line(index.event(i)) for i in ids) or "(no events)"


def record_json(row: Row, index: RunIndex) -> str:
    """The raw record of the row: its events as run-file JSON (what ``y`` copies)."""
    ids = row.attempt.events if row.attempt is not None else row.node.events
    return _dump([ev.event_to_dict(index.event(i)) for i in ids])


_TAB_TEXT = {
    "attempt": attempt_text,
    "input": input_text,
    "output": output_text,
    "failure": failure_text,
    "events": events_text,
    "json": record_json,
}


def tab_text(tab: str, row: Row, index: RunIndex) -> str:
    """The text of one detail tab for ``row``."""
    return _TAB_TEXT[tab](row, index)


def node_line(node: Node) -> str:
    """A node as it appears in summaries."""
    return f"{node.icon} {node.node_id}"
