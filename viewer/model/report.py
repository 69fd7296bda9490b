"""Headless output: the run summary and the run diff as text, markdown or JSON.

The same model objects the screens show (RunIndex, CostReport, RunComparison) are printed here, so
``stroma-view --summary`` / ``--diff`` and the TUI never disagree.

Everything printed comes from a file someone else may have written, so every character that is
not printable (control characters such as ESC, C1 controls, bidi overrides, lone surrogates, a
newline inside an id or message) is escaped before it reaches the terminal: ``\x1b`` in text and
markdown (as ``repr`` shows it), ``\u001b`` in JSON (still the same JSON value).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from stroma import RunComparison
from viewer.model.cost import cost_report
from viewer.model.detail import fmt_cost, fmt_ms, fmt_tokens, fmt_ts, node_figures, plural
from viewer.model.diff import CHANGE_ICONS, delta_parts, order_line
from viewer.model.index import Node, RunIndex

__all__ = [
    "FORMATS",
    "diff_report",
    "header_line",
    "label",
    "node_line",
    "run_is_bad",
    "spend_text",
    "state_line",
    "summary_report",
    "terminal_safe",
]


def label(status: str) -> str:
    """A node status in words (``not_reached`` → ``not reached``)."""
    return status.replace("_", " ")


FORMATS = ("text", "markdown", "json")


def _repr_escape(char: str) -> str:
    return repr(char)[1:-1]


def _json_escape(char: str) -> str:
    return json.dumps(char)[1:-1]


def terminal_safe(line: str, *, in_json: bool = False) -> str:
    """``line`` with every non-printable character (a newline too) escaped: ``repr``-style, or as
    a JSON ``\\uXXXX`` escape when ``line`` is a line of JSON text (where it stays the same value)."""
    if line.isprintable():
        return line
    escape = _json_escape if in_json else _repr_escape
    return "".join(c if c.isprintable() else escape(c) for c in line)


def _lines(out: list[str]) -> str:
    """The report's lines joined for printing, each made terminal-safe."""
    return "\n".join(map(terminal_safe, out))


def _json_report(data: Any) -> str:
    """``data`` as indented JSON whose every line is terminal-safe (json.dumps leaves DEL, C1
    controls, format characters and lone surrogates as they are)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return "\n".join(terminal_safe(line, in_json=True) for line in text.split("\n"))


_GOOD = ("COMPLETED", "RESUMED")


def run_is_bad(index: RunIndex) -> bool:
    """True when the run did not complete (failed, partial, running, interrupted or truncated)."""
    return index.state not in _GOOD or index.record.truncated


def spend_text(tokens: int, cost_usd: float, carried_tokens: int, carried_cost_usd: float) -> str:
    """This run's tokens and cost, then what was carried from the runs it resumed, labelled."""
    text = f"{fmt_tokens(tokens)} tokens · {fmt_cost(cost_usd)} this run"
    if carried_tokens or carried_cost_usd:
        carried = f"{fmt_tokens(carried_tokens)} tokens · {fmt_cost(carried_cost_usd)}"
        text += f" (+{carried} carried from earlier runs)"
    return text


def header_line(index: RunIndex) -> str:
    """run id · state · nodes · attempts · failed attempts · failed nodes · spend · wall time."""
    h = index.header
    return (
        f"{h.run_id} · {index.state} · {plural(len(index.nodes), 'node')} · "
        f"{plural(index.attempt_count, 'attempt')} ({index.failure_count:,} failed) · "
        f"{plural(index.final_failures, 'failed node')} · "
        f"{spend_text(index.tokens, index.cost_usd, index.carried_tokens, index.carried_cost_usd)} · "
        f"wall {fmt_ms(index.wall_ms)}"
    )


def state_line(index: RunIndex) -> str:
    """What the run's state means for a reader: live (how long since the last event), interrupted
    (when the last event was written, which node was cut off and after how long), truncated."""
    parts: list[str] = []
    if index.interrupted:
        h = index.header
        writer = f" (pid {h.writer_pid} on {h.writer_host})" if h.writer_pid else ""
        parts.append(
            f"interrupted: its writer{writer} is gone; last event written {fmt_ts(index.last_ts)} UTC"
        )
        parts += [f"cut off: {n.node_id} after {fmt_ms(n.wall_ms)}" for n in index.cut_off]
    elif index.finished is None and index.record.path and index.record.path.endswith(".jsonl"):
        since = time.time() - index.last_ts if index.last_ts is not None else None
        ago = f"{since:.0f} s ago" if since is not None else "not yet"
        parts.append(f"live: following {Path(index.record.path).name}; last event {ago}")
    if index.record.truncated:
        parts.append(f"truncated at line {index.record.truncated_at_line}: showing the valid prefix")
    return " · ".join(parts)


def _node_dict(n: Node) -> dict[str, Any]:
    return {
        "node_id": n.node_id,
        "status": n.status,
        "parent": n.parent,
        "attempts": len(n.attempts),
        "failed_attempts": n.failures,
        "wall_ms": n.wall_ms,
        "attempt_ms": n.attempt_ms,
        "tokens": n.tokens,
        "cost_usd": n.cost_usd,
        "failure_class": n.failure_class,
        "error_type": n.error_type,
    }


def _summary_dict(index: RunIndex) -> dict[str, Any]:
    h = index.header
    return {
        "file": index.record.path,
        "run_id": h.run_id,
        "status": index.state,
        "truncated": index.record.truncated,
        "truncated_at_line": index.record.truncated_at_line,
        "resumed_from": h.resumed_from,
        "started_at": index.started_at,
        "last_event_at": index.last_ts,
        "wall_ms": index.wall_ms,
        "nodes": len(index.nodes),
        "attempts": index.attempt_count,
        "failed_attempts": index.failure_count,
        "failed_nodes": index.final_failures,
        "cut_off": [n.node_id for n in index.cut_off],
        "tokens": index.tokens,
        "cost_usd": index.cost_usd,
        "carried_tokens": index.carried_tokens,
        "carried_cost_usd": index.carried_cost_usd,
        "bad": run_is_bad(index),
        "node_list": [_node_dict(n) for n in index.ordered()],
        "failure_list": [
            {
                "node_id": a.node_id,
                "attempt": a.number,
                "error_type": a.error_type,
                "failure_class": a.failure_class,
                "decided_by": a.decided_by,
                "message": a.message,
            }
            for a in index.failures()
        ],
        "cost": cost_report(index).to_dict(),
    }


def node_line(n: Node) -> str:
    """One node's figures on one line (the headless summary, the diff's detail)."""
    attempts, wall, own, tokens, cost = node_figures(n)
    return f"{attempts:>11}  {n.failures:>2} failed  {wall:>14}  {own:>18}  {tokens:>11}  {cost:>8}"


def _node_lines(nodes: list[Any], md: bool) -> list[str]:
    """One line per node: a markdown table, or the text listing."""
    if not md:
        out = ["nodes:"]
        for n in nodes:
            indent = "    " if n.parent else "  "
            head = f"{indent}{n.icon} {n.node_id:<24} {label(n.status):<12}"
            out.append(f"{head} {node_line(n)}  {n.failure_class or ''}")
        return out
    out = [
        "| | node | status | attempts | failed | wall | attempts' time | tokens | cost | class |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in nodes:
        out.append(
            f"| {n.icon} | `{n.node_id}` | {label(n.status)} | {len(n.attempts)} | {n.failures} | "
            f"{fmt_ms(n.wall_ms)} | {fmt_ms(n.attempt_ms)} | {fmt_tokens(n.tokens)} | "
            f"{fmt_cost(n.cost_usd)} | {n.failure_class or ''} |"
        )
    return out


def _failure_lines(failures: list[Any], md: bool, max_failures: int) -> list[str]:
    """One line per failed attempt (the first ``max_failures``)."""
    out = []
    for a in failures[:max_failures]:
        msg = (a.message or "").splitlines()[0][:120] if a.message else ""
        bullet = "- " if md else "  "
        out.append(
            f"{bullet}{a.node_id} #{a.number} {a.error_type} [{a.failure_class}, decided by "
            f"{a.decided_by or '–'}]: {msg}"
        )
    if len(failures) > max_failures:
        out.append(f"  … and {len(failures) - max_failures} more")
    return out


def summary_report(index: RunIndex, fmt: str = "text", max_failures: int = 20) -> str:
    """The run summary in ``fmt`` (text, markdown or json)."""
    if fmt == "json":
        return _json_report(_summary_dict(index))
    h = index.header
    cost = cost_report(index)
    nodes = index.ordered()
    failures = index.failures()
    md = fmt == "markdown"
    out: list[str] = []
    if md:
        out.append(f"### Stroma run `{h.run_id}` — {index.state}")
        out.append("")
        out.append(f"{header_line(index)}  ")
        out.append(f"file: `{index.record.path}` · started {fmt_ts(h.started_at)} UTC")
    else:
        out.append(header_line(index))
        out.append(f"file: {index.record.path} · started {fmt_ts(h.started_at)} UTC")
    if h.resumed_from:
        out.append(f"resumed from node {h.resumed_from}")
    if state := state_line(index):
        out.append(state)
    out.append("")
    out += _node_lines(nodes, md)
    if failures:
        out.append("")
        out.append("**failures:**" if md else "failures:")
        out += _failure_lines(failures, md, max_failures)
    out.append("")
    spent = spend_text(cost.total_tokens, cost.total_cost_usd, cost.carried_tokens, cost.carried_cost_usd)
    out.append(f"cost: {spent}; {cost.failed_share:.0%} of this run's spent on failed attempts")
    denied = [d for d in cost.decisions if d.decision != "allow"]
    for d in denied:
        out.append(
            f"{'- ' if md else '  '}budget {d.decision}: {d.node_id} {d.dimension} "
            f"{d.detail or f'used {d.used:g} of {d.limit:g}'}"
        )
    return _lines(out)


def diff_report(c: RunComparison, fmt: str = "text") -> str:
    """The diff of two runs in ``fmt`` (text, markdown or json), older run (by start time) first."""
    if fmt == "json":
        return _json_report(c.to_dict())
    md = fmt == "markdown"
    first = c.first_divergence
    out: list[str] = []
    title = f"{c.a_run_id} ({c.a_status}) → {c.b_run_id} ({c.b_status})"
    out.append(f"### Stroma diff {title}" if md else f"diff {title}")
    out.append(order_line(c))
    out.append(" · ".join(f"{k} {v}" for k, v in delta_parts(c)))
    verdict = "; ".join(c.worse_reasons)
    out.append(
        f"first divergence: {first.node_id if first else 'none'}"
        + (f" · NEWER RUN IS WORSE: {verdict}" if verdict else "")
    )
    out.append("")
    if md:
        out += ["| | node | change | older | newer |", "|---|---|---|---|---|"]
        for n in c.nodes:
            out.append(
                f"| {CHANGE_ICONS[n.change]} | `{n.node_id}` | {n.change.value} | {label(n.a.status)} | "
                f"{label(n.b.status)} |"
            )
    else:
        for n in c.nodes:
            out.append(
                f"  {CHANGE_ICONS[n.change]} {n.node_id:<24} {n.change.value:<26} "
                f"{label(n.a.status)} → {label(n.b.status)}"
            )
    return _lines(out)
