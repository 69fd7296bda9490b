"""Headless output: the run summary and the run diff as text, markdown or JSON.

The same model objects the screens show (RunIndex, CostReport, RunComparison) are printed here, so
``stroma-view --summary`` / ``--diff`` and the TUI never disagree.
"""

from __future__ import annotations

import json
from typing import Any

from stroma import RunComparison
from viewer.model.cost import cost_report
from viewer.model.detail import fmt_cost, fmt_ms, fmt_tokens, fmt_ts
from viewer.model.diff import CHANGE_ICONS, delta_parts
from viewer.model.index import RunIndex

__all__ = ["FORMATS", "diff_report", "run_is_bad", "summary_report"]

FORMATS = ("text", "markdown", "json")
_GOOD = ("COMPLETED", "RESUMED")


def run_is_bad(index: RunIndex) -> bool:
    """True when the run did not complete (failed, partial, unfinished or truncated)."""
    return index.header.status not in _GOOD or index.record.truncated


def header_line(index: RunIndex) -> str:
    """file · status · nodes · attempts · failures · tokens · cost · duration."""
    h = index.header
    status = h.status or ("TRUNCATED" if index.record.truncated else "RUNNING")
    # A finished run's totals come from RunFinished (spend carried over by a resume included);
    # an unfinished one's are what its events add up to so far.
    tokens = h.total_tokens if h.status else index.tokens
    cost = h.total_cost_usd if h.status else index.cost_usd
    carried = (
        f" (incl. {fmt_tokens(h.carried_tokens)} tokens carried from the resumed run)"
        if h.status and h.carried_tokens
        else ""
    )
    return (
        f"{h.run_id} · {status} · {len(index.nodes)} nodes · {index.attempt_count} attempts · "
        f"{index.failure_count} failures · {fmt_tokens(tokens)} tokens{carried} · "
        f"{fmt_cost(cost)} · {fmt_ms(h.duration_ms)}"
    )


def _summary_dict(index: RunIndex) -> dict[str, Any]:
    h = index.header
    return {
        "file": index.record.path,
        "run_id": h.run_id,
        "status": h.status,
        "truncated": index.record.truncated,
        "truncated_at_line": index.record.truncated_at_line,
        "resumed_from": h.resumed_from,
        "started_at": h.started_at,
        "duration_ms": h.duration_ms,
        "nodes": len(index.nodes),
        "attempts": index.attempt_count,
        "failures": index.failure_count,
        "total_tokens": h.total_tokens,
        "total_cost_usd": h.total_cost_usd,
        "bad": run_is_bad(index),
        "node_list": [
            {
                "node_id": n.node_id,
                "status": n.status,
                "parent": n.parent,
                "attempts": len(n.attempts),
                "failures": n.failures,
                "duration_ms": n.duration_ms,
                "tokens": n.tokens,
                "cost_usd": n.cost_usd,
                "failure_class": n.failure_class,
                "error_type": n.error_type,
            }
            for n in index.ordered()
        ],
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


def summary_report(index: RunIndex, fmt: str = "text", max_failures: int = 20) -> str:
    """The run summary in ``fmt`` (text, markdown or json)."""
    if fmt == "json":
        return json.dumps(_summary_dict(index), indent=2, ensure_ascii=False, default=str)
    h = index.header
    cost = cost_report(index)
    nodes = index.ordered()
    failures = index.failures()
    md = fmt == "markdown"
    out: list[str] = []
    if md:
        out.append(f"### Stroma run `{h.run_id}` — {h.status or 'unfinished'}")
        out.append("")
        out.append(f"{header_line(index)}  ")
        out.append(f"file: `{index.record.path}` · started {fmt_ts(h.started_at)} UTC")
    else:
        out.append(header_line(index))
        out.append(f"file: {index.record.path} · started {fmt_ts(h.started_at)} UTC")
    if h.resumed_from:
        out.append(f"resumed from node {h.resumed_from}")
    if index.record.truncated:
        out.append(
            f"TRUNCATED at line {index.record.truncated_at_line}: showing the valid prefix "
            "(the run was killed while writing)"
        )
    out.append("")
    if md:
        out += [
            "| | node | attempts | failures | time | tokens | cost | class |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for n in nodes:
            out.append(
                f"| {n.icon} | `{n.node_id}` | {len(n.attempts)} | {n.failures} | "
                f"{fmt_ms(n.duration_ms)} | {fmt_tokens(n.tokens)} | {fmt_cost(n.cost_usd)} | "
                f"{n.failure_class or ''} |"
            )
    else:
        out.append("nodes:")
        for n in nodes:
            indent = "    " if n.parent else "  "
            out.append(
                f"{indent}{n.icon} {n.node_id:<24} {len(n.attempts):>3} att  "
                f"{n.failures:>2} fail  {fmt_ms(n.duration_ms):>10}  "
                f"{fmt_tokens(n.tokens):>8} tok  {fmt_cost(n.cost_usd):>8}  {n.failure_class or ''}"
            )
    if failures:
        out.append("")
        out.append("**failures:**" if md else "failures:")
        for a in failures[:max_failures]:
            msg = (a.message or "").splitlines()[0][:120] if a.message else ""
            bullet = "- " if md else "  "
            out.append(
                f"{bullet}{a.node_id} #{a.number} {a.error_type} [{a.failure_class}, decided by "
                f"{a.decided_by or '–'}]: {msg}"
            )
        if len(failures) > max_failures:
            out.append(f"  … and {len(failures) - max_failures} more")
    out.append("")
    out.append(
        f"cost: {fmt_cost(cost.total_cost_usd)} / {fmt_tokens(cost.total_tokens)} tokens; "
        f"{cost.failed_share:.0%} spent on failed attempts"
    )
    denied = [d for d in cost.decisions if d.decision != "allow"]
    for d in denied:
        out.append(
            f"{'- ' if md else '  '}budget {d.decision}: {d.node_id} {d.dimension} "
            f"{d.detail or f'used {d.used:g} of {d.limit:g}'}"
        )
    return "\n".join(out)


def diff_report(c: RunComparison, fmt: str = "text") -> str:
    """The diff of two runs in ``fmt`` (text, markdown or json)."""
    if fmt == "json":
        return json.dumps(c.to_dict(), indent=2, ensure_ascii=False, default=str)
    md = fmt == "markdown"
    first = c.first_divergence
    out: list[str] = []
    title = f"{c.a_run_id} ({c.a_status or 'unfinished'}) → {c.b_run_id} ({c.b_status or 'unfinished'})"
    out.append(f"### Stroma diff {title}" if md else f"diff {title}")
    out.append(" · ".join(f"{k} {v}" for k, v in delta_parts(c)))
    out.append(
        f"first divergence: {first.node_id if first else 'none'}"
        + (" · NEWER RUN IS WORSE" if c.worse else "")
    )
    out.append("")
    if md:
        out += ["| | node | change | a | b |", "|---|---|---|---|---|"]
        for n in c.nodes:
            out.append(
                f"| {CHANGE_ICONS[n.change]} | `{n.node_id}` | {n.change.value} | {n.a.status} | "
                f"{n.b.status} |"
            )
    else:
        for n in c.nodes:
            out.append(
                f"  {CHANGE_ICONS[n.change]} {n.node_id:<24} {n.change.value:<26} {n.a.status} → {n.b.status}"
            )
    return "\n".join(out)
