"""compare_runs: two runs aligned by node with resume-aware labels, deltas and field diffs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stroma import NodeChange, RunRecord, compare_runs
from stroma import events as ev
from stroma.compare import field_diff
from stroma.summary import RunSummary

FIXTURES = Path(__file__).parent.parent / "viewer" / "fixtures"


def _run(run_id: str, status: str | None, *nodes: tuple[str, str, Any], start: float = 0.0) -> RunRecord:
    """A run whose nodes are (node_id, "ok" | "fail" | "retried" | "restored", output)."""
    out: list[ev.LifecycleEvent] = [
        ev.RunStarted(run_id=run_id, ts=start, pipeline=tuple(n[0] for n in nodes))
    ]
    failures = 0
    for node_id, kind, output in nodes:
        what = "ok" if kind == "retried" else kind
        if what == "restored":
            out.append(ev.NodeRestored(run_id=run_id, ts=1.0, node_id=node_id, output_state=output))
            continue
        out.append(ev.NodeStarted(run_id=run_id, ts=1.0, node_id=node_id))
        if kind == "retried":  # a failed first attempt, then a success
            failures += 1
            out.append(
                ev.AttemptFailed(
                    run_id=run_id,
                    ts=1.0,
                    node_id=node_id,
                    attempt=0,
                    duration_ms=1.0,
                    error_type="TimeoutError",
                    message="slow",
                    failure_class="RECOVERABLE",
                )
            )
        out.append(
            ev.AttemptStarted(
                run_id=run_id,
                ts=1.0,
                node_id=node_id,
                attempt=1,
                max_attempts=1,
                input_state={"x": 1},
            )
        )
        if what == "ok":
            out.append(
                ev.AttemptSucceeded(
                    run_id=run_id,
                    ts=2.0,
                    node_id=node_id,
                    attempt=1,
                    duration_ms=10.0,
                    output_state=output,
                    tokens=5,
                    cost_usd=0.5,
                )
            )
        else:
            failures += 1
            out.append(
                ev.AttemptFailed(
                    run_id=run_id,
                    ts=2.0,
                    node_id=node_id,
                    attempt=1,
                    duration_ms=10.0,
                    error_type="RuntimeError",
                    message="boom",
                    failure_class="TERMINAL",
                    tokens=5,
                    cost_usd=0.5,
                )
            )
        out.append(
            ev.NodeFinished(
                run_id=run_id,
                ts=2.0,
                node_id=node_id,
                outcome="succeeded" if what == "ok" else "failed",
                attempts=1,
                duration_ms=10.0,
            )
        )
    if status is not None:
        out.append(
            ev.RunFinished(
                run_id=run_id,
                ts=3.0,
                status=status,
                duration_ms=100.0,
                total_tokens=5 * len(nodes),
                total_cost_usd=0.5 * len(nodes),
                failures=failures,
            )
        )
    return RunRecord.from_events(out, run_id=run_id)


@pytest.mark.parametrize(
    ("a", "b", "label"),
    [
        (("n", "ok", {"v": 1}), ("n", "restored", {"v": 1}), NodeChange.RESTORED),
        (("n", "ok", {"v": 1}), ("n", "ok", {"v": 1}), NodeChange.SAME_OUTPUT),
        (("n", "ok", {"v": 1}), ("n", "ok", {"v": 2}), NodeChange.DIFFERENT_OUTPUT),
        (("n", "fail", None), ("n", "ok", {"v": 1}), NodeChange.FIXED),
        (("n", "fail", None), ("n", "fail", None), NodeChange.FAILED_IN_BOTH),
        (("n", "ok", {"v": 1}), ("n", "fail", None), NodeChange.REGRESSED),
    ],
)
def test_each_node_gets_its_resume_aware_label(
    a: tuple[str, str, Any], b: tuple[str, str, Any], label: NodeChange
) -> None:
    """One node in two runs is labelled by what happened to it in each."""
    comparison = compare_runs(_run("a", "FAILED", a), _run("b", "COMPLETED", b))
    assert comparison.nodes[0].change is label


def test_newly_reached_and_not_reached() -> None:
    """A node only the newer run reached is newly reached; one neither reached is unchanged."""
    a = _run("r", "FAILED", ("x", "fail", None))
    b = _run("r", "PARTIAL", ("x", "ok", {"v": 1}), ("y", "ok", {"v": 2}))
    comparison = compare_runs(a, b)
    assert [n.change for n in comparison.nodes] == [NodeChange.FIXED, NodeChange.NEWLY_REACHED]
    assert comparison.same_run


def test_deltas_and_first_divergence() -> None:
    """Run-level deltas are b minus a, and the first divergence skips unchanged nodes."""
    a = _run("r", "FAILED", ("p", "ok", {"v": 1}), ("q", "fail", None))
    b = _run("r", "RESUMED", ("p", "restored", {"v": 1}), ("q", "ok", {"v": 3}))
    c = compare_runs(a, b)
    assert c.first_divergence is not None
    assert c.first_divergence.node_id == "q"
    assert [n.node_id for n in c.changed_nodes()] == ["q"]
    assert (c.final_failures_delta, c.status_changed, c.worse) == (-1, True, False)


def test_worse_when_the_newer_run_ends_worse_or_regresses() -> None:
    """``worse`` is true for a worse status or any regressed node, false otherwise."""
    ok = _run("r", "COMPLETED", ("p", "ok", {"v": 1}))
    bad = _run("r", "FAILED", ("p", "fail", None))
    assert compare_runs(ok, bad).worse
    assert not compare_runs(bad, ok).worse
    unfinished = _run("r", None, ("p", "ok", {"v": 1}))
    assert compare_runs(ok, unfinished).worse


def test_field_diff_recurses_into_dicts_and_lists() -> None:
    """Field-level diffs name added, removed and changed paths, through nested values."""
    changes = field_diff({"a": 1, "b": {"c": [1, 2]}, "gone": True}, {"a": 1, "b": {"c": [1, 3]}, "new": "x"})
    assert [(c.path, c.kind) for c in changes] == [
        ("b.c[1]", "changed"),
        ("gone", "removed"),
        ("new", "added"),
    ]
    assert field_diff([1], [1, 2])[0].kind == "changed"


def test_the_node_summary_counts_attempts_failures_and_spend() -> None:
    """The one node summary sums attempts, failed attempts, tokens and failed cost in one pass."""
    s = RunSummary(_run("r", "FAILED", ("p", "ok", {"v": 1}), ("q", "fail", None)).events).by_id
    assert (s["p"].status, len(s["p"].attempts), s["p"].tokens) == ("succeeded", 1, 5)
    assert (s["q"].status, s["q"].failures, s["q"].failed_cost_usd) == ("failed", 1, 0.5)


def test_runs_are_compared_in_start_time_order_whatever_the_argument_order() -> None:
    """Either argument order gives the same comparison: the run that started first is a."""
    older = _run("r", "FAILED", ("p", "ok", {"v": 1}), ("q", "fail", None), start=0.0)
    newer = _run("r", "RESUMED", ("p", "restored", {"v": 1}), ("q", "ok", {"v": 3}), start=10.0)
    forward, backward = compare_runs(older, newer), compare_runs(newer, older)
    assert (forward.reordered, backward.reordered) == (False, True)
    assert forward.to_dict() | {"reordered": None} == backward.to_dict() | {"reordered": None}
    assert [n.change for n in backward.nodes] == [NodeChange.RESTORED, NodeChange.FIXED]
    assert not backward.worse


def test_a_retry_that_later_succeeded_is_not_a_failure_of_the_run() -> None:
    """Recovered retries count as failed attempts, not failed nodes: they never make a run worse."""
    clean = _run("r", "COMPLETED", ("p", "ok", {"v": 1}), start=0.0)
    retried = _run("r2", "COMPLETED", ("p", "retried", {"v": 1}), start=1.0)
    c = compare_runs(clean, retried)
    assert (c.failed_attempts_delta, c.final_failures_delta, c.worse) == (1, 0, False)


def test_worse_means_worse_status_fewer_nodes_or_more_failed_nodes() -> None:
    """Each of the three rules alone makes the newer run worse, and says why."""
    two_ok = _run("r", "PARTIAL", ("p", "ok", {"v": 1}), ("q", "ok", {"v": 1}), start=0.0)
    one_ok = _run("r", "PARTIAL", ("p", "ok", {"v": 1}), start=1.0)
    assert compare_runs(two_ok, one_ok).worse_reasons == ["reached 1 fewer node(s)"]
    a = _run("r", "FAILED", ("p", "fail", None), ("q", "ok", {"v": 1}), start=0.0)
    b = _run("r", "FAILED", ("p", "fail", None), ("q", "fail", None), start=1.0)
    assert compare_runs(a, b).worse_reasons == ["1 more failed node(s)"]
    killed = _run("r", None, ("p", "retried", {"v": 1}), start=0.0)
    killed.path = "killed.json"  # a saved file without its end: its writer is gone
    failed = _run("r", "FAILED", ("p", "fail", None), start=1.0)
    c = compare_runs(killed, failed)
    assert (c.a_status, c.b_status) == ("INTERRUPTED", "FAILED")
    assert c.worse_reasons[0] == "ended FAILED after INTERRUPTED"


def test_failed_and_resumed_fixture_runs() -> None:
    """The committed failed run and its resume line up with every resume-aware label."""
    c = compare_runs(FIXTURES / "failed.json", FIXTURES / "resumed.json")
    assert {n.node_id: n.change for n in c.nodes} == {
        "fetch": NodeChange.RESTORED,
        "summarize": NodeChange.RESTORED,
        "tag": NodeChange.DIFFERENT_OUTPUT,
        "classify": NodeChange.FIXED,
        "publish": NodeChange.NEWLY_REACHED,
    }
    assert c.to_dict()["first_divergence"] == "tag"
    assert [ch.path for ch in c.nodes[2].output_changes()] == ["tags"]


def test_parallel_children_are_aligned_under_their_group() -> None:
    """Children of a parallel group follow the group in the comparison's node order."""
    c = compare_runs(FIXTURES / "parallel.json", FIXTURES / "parallel.json")
    ids = [n.node_id for n in c.nodes]
    assert ids[2:5] == ["sentiment", "entities", "keywords"]
    assert all(n.change is NodeChange.SAME_OUTPUT for n in c.nodes if n.a.attempts)
    assert not c.reordered


def test_a_node_interrupted_by_a_kill_counts_as_not_completed() -> None:
    """A node still running when the older run's record ends is 'fixed' once the newer run completes it;
    a node still running in the newer run is 'not reached' (yet), not 'regressed'."""
    killed = _run("r", None, ("a", "ok", {"v": 1}))
    killed.events.append(ev.NodeStarted(run_id="r", ts=5.0, node_id="b"))
    resumed = _run("r", "RESUMED", ("a", "restored", {"v": 1}), ("b", "ok", {"v": 2}))
    labels = {n.node_id: n.change for n in compare_runs(killed, resumed).nodes}
    assert labels == {"a": NodeChange.RESTORED, "b": NodeChange.FIXED}
    live = _run("r2", None, ("a", "ok", {"v": 1}))
    live.events.append(ev.NodeStarted(run_id="r2", ts=5.0, node_id="b"))
    done = _run("r1", "COMPLETED", ("a", "ok", {"v": 1}), ("b", "ok", {"v": 2}))
    assert {n.node_id: n.change for n in compare_runs(done, live).nodes}["b"] is NodeChange.NOT_REACHED
