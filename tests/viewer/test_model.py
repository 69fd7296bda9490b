"""The model layer on its own: loading, indexing, filters, search, detail, cost, diff, folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stroma import RunFileError
from stroma.runfile import RunStream, peek_header
from viewer.model import (
    DiffView,
    Listing,
    RunIndex,
    ViewerInputError,
    cost_report,
    diff_report,
    load,
    parse_query,
    scan_folder,
    summary_report,
)
from viewer.model.detail import tab_text


def _index(fixtures: Path, name: str) -> RunIndex:
    return RunIndex(load(fixtures / name).record)


def test_model_never_imports_textual() -> None:
    """Importing the whole model (and the CLI's headless path) leaves Textual unimported."""
    code = (
        "import sys, viewer.model, viewer.cli; "
        "print(any(m == 'textual' or m.startswith('textual.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_index_nests_attempts_under_nodes_in_pipeline_order(fixtures: Path) -> None:
    """The failed run indexes five nodes in order with their attempts and outcomes."""
    index = _index(fixtures, "failed.json")
    assert [n.node_id for n in index.ordered()] == ["fetch", "summarize", "tag", "classify", "publish"]
    summarize = index.by_id["summarize"]
    assert [a.outcome for a in summarize.attempts] == ["failed", "failed", "succeeded"]
    assert summarize.attempts[0].decided_by == "builtin:TimeoutError"
    assert summarize.attempts[0].retry_delay_s is not None
    assert index.by_id["classify"].status == "failed"
    assert index.by_id["classify"].attempts[0].contract_errors[0][0] == "category"
    assert index.by_id["publish"].status == "not_reached"
    assert (index.attempt_count, index.failure_count) == (7, 4)


def test_parallel_children_follow_their_group(fixtures: Path) -> None:
    """Children of a parallel group are listed right after the group, one level deeper."""
    index = _index(fixtures, "parallel.json")
    order = [n.node_id for n in index.ordered()]
    group = order[1]
    assert group.startswith("parallel(")
    assert order[2:5] == ["sentiment", "entities", "keywords"]
    assert all(index.by_id[c].depth == 1 for c in order[2:5])
    assert [a.outcome for a in index.by_id[group].attempts] == ["failed", "succeeded"]


def test_restored_nodes_show_the_checkpoint_output(fixtures: Path) -> None:
    """In the resumed run, skipped nodes are restored and the last one carries its output."""
    index = _index(fixtures, "resumed.json")
    assert index.by_id["fetch"].status == "restored"
    listing = Listing(index)
    summarize_row = listing.rows[listing.position_of("summarize") or 0]
    assert '"word_count"' in tab_text("output", summarize_row, index)
    fetch_row = listing.rows[listing.position_of("fetch") or 0]
    assert "not loaded" in tab_text("output", fetch_row, index)


def test_failures_only_keeps_failed_nodes_and_attempts(fixtures: Path) -> None:
    """``f`` keeps nodes with failures and only their failed attempts."""
    listing = Listing(_index(fixtures, "failed.json"))
    listing.toggle_failures_only()
    shown = [(r.node.node_id, r.attempt.number if r.attempt else None) for r in listing.rows]
    assert shown == [
        ("summarize", None),
        ("summarize", 1),
        ("summarize", 2),
        ("tag", None),
        ("tag", 1),
        ("classify", None),
        ("classify", 1),
    ]


def test_class_filter_cycles_through_failure_classes(fixtures: Path) -> None:
    """``c`` cycles all → RECOVERABLE → TERMINAL → AMBIGUOUS → all, filtering rows each time."""
    listing = Listing(_index(fixtures, "failed.json"))
    seen = []
    for _ in range(4):
        cls = listing.cycle_class_filter()
        seen.append((cls, sorted({r.node.node_id for r in listing.rows})))
    assert seen == [
        ("RECOVERABLE", ["summarize"]),
        ("TERMINAL", ["classify"]),
        ("AMBIGUOUS", ["tag"]),
        (None, ["classify", "fetch", "publish", "summarize", "tag"]),
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("timed out", [("summarize", 1), ("summarize", 2)]),
        ("ValueError", [("tag", None), ("tag", 1)]),
        ("class=terminal", [("classify", None), ("classify", 1)]),
        ("model=gpt-4o-mini", [("fetch", 1), ("tag", 2)]),
        ("attempt=3", [("summarize", 3)]),
        ("output.tags=['reliability', 'agents']", [("tag", 2)]),
        ("word_count=11", [("summarize", 3), ("tag", 1), ("tag", 2), ("classify", 1)]),
        ("classify", [("classify", None), ("classify", 1)]),
    ],
)
def test_search_matches_text_and_key_value(fixtures: Path, query: str, expected: list[object]) -> None:
    """Search matches node ids, error types, messages and ``key=value`` over fields and states."""
    listing = Listing(_index(fixtures, "failed.json"))
    positions = listing.search(query)
    found = [
        (listing.rows[p].node.node_id, listing.rows[p].attempt.number if listing.rows[p].attempt else None)
        for p in positions
    ]
    assert found == expected


def test_parse_query_splits_key_value() -> None:
    """``key=value`` is parsed into key and value; other text stays free text."""
    q = parse_query(" error = TimeoutError ")
    assert (q.key, q.value) == ("error", "TimeoutError")
    assert parse_query("timed out").key is None


def test_next_failure_and_match_wrap_around(fixtures: Path) -> None:
    """Failure and match navigation move forward and backward and wrap at the ends."""
    listing = Listing(_index(fixtures, "failed.json"))
    failed = [i for i, r in enumerate(listing.rows) if r.failed]
    assert listing.next_failure(0) == failed[0]
    assert listing.next_failure(failed[-1]) == failed[0]
    assert listing.next_failure(failed[0], backwards=True) == failed[-1]
    listing.search("timed out")
    assert listing.next_match(listing.matches[-1]) == listing.matches[0]


def test_attempt_stepping_stays_within_the_node(fixtures: Path) -> None:
    """``[`` / ``]`` step through the selected node's attempts and stop at its ends."""
    listing = Listing(_index(fixtures, "failed.json"))
    node_row = listing.position_of("summarize")
    assert node_row is not None
    first = listing.step_attempt(node_row, 1)
    assert first is not None
    assert listing.rows[first].attempt is not None
    second = listing.step_attempt(first, 1)
    assert second is not None
    assert listing.rows[second].attempt.number == 2
    third = listing.step_attempt(second, 1)
    assert third is not None
    assert listing.step_attempt(third, 1) is None
    assert listing.step_attempt(first, -1) is None


def test_collapse_hides_attempts(fixtures: Path) -> None:
    """Collapsing a node removes its attempt rows; expanding brings them back."""
    listing = Listing(_index(fixtures, "failed.json"))
    before = len(listing.rows)
    listing.collapse("summarize")
    assert len(listing.rows) == before - 3
    listing.expand("summarize")
    assert len(listing.rows) == before


def test_failure_tab_lists_contract_errors_per_field(fixtures: Path) -> None:
    """The Failure tab of a contract violation names each failing field."""
    index = _index(fixtures, "failed.json")
    listing = Listing(index)
    row = listing.rows[listing.position_of("classify", 1) or 0]
    text = tab_text("failure", row, index)
    assert "TERMINAL" in text
    assert "category: Field required" in text
    assert "confidence: Field required" in text


def test_json_tab_is_the_attempts_events(fixtures: Path) -> None:
    """The JSON tab (what ``y`` copies) is the attempt's events as run-file JSON."""
    index = _index(fixtures, "failed.json")
    listing = Listing(index)
    row = listing.rows[listing.position_of("summarize", 1) or 0]
    events = json.loads(tab_text("json", row, index))
    assert [e["type"] for e in events] == [
        "AttemptStarted",
        "FailureClassified",
        "AttemptFailed",
        "RetryScheduled",
    ]


def test_cost_report_ranks_nodes_and_counts_failed_spend(fixtures: Path) -> None:
    """Cost ranks nodes by cost and computes the failed share from failed attempts."""
    report = cost_report(_index(fixtures, "failed.json"))
    assert [n.node_id for n in report.nodes][:2] == ["summarize", "classify"]
    classify = next(n for n in report.nodes if n.node_id == "classify")
    assert classify.failed_share == pytest.approx(1.0)
    assert 0 < report.failed_share < 1
    assert report.failed_cost_usd == pytest.approx(classify.failed_cost_usd)


def test_cost_report_lists_budget_decisions(fixtures: Path) -> None:
    """The budget stop shows allow (grouped), fallback, the model switch and the denial."""
    report = cost_report(_index(fixtures, "budget.json"))
    decisions = [(d.node_id, d.dimension, d.decision) for d in report.decisions]
    assert decisions == [
        ("refine_1", "cost", "allow"),
        ("refine_2", "cost", "allow"),
        ("refine_3", "cost", "fallback"),
        ("refine_3", "model", "fallback"),
        ("refine_3", "cost", "deny"),
    ]
    assert "gpt-4o → gpt-4o-mini" in report.decisions[3].detail


def test_diff_view_changed_only_and_first_divergence(fixtures: Path) -> None:
    """The diff hides unchanged nodes on toggle and points at the first divergence."""
    view = DiffView(load(fixtures / "failed.json").record, load(fixtures / "resumed.json").record)
    assert [r.change.value for r in view.rows] == [
        "restored from checkpoint",
        "restored from checkpoint",
        "re-ran, different output",
        "fixed",
        "newly reached",
    ]
    assert view.first_divergence() == 2
    view.toggle_changed_only()
    assert [r.node_id for r in view.rows] == ["tag", "classify", "publish"]
    assert view.first_divergence() == 0
    detail = view.detail(view.rows[0])
    assert "- tags: " in detail
    assert "+ tags: " in detail


def test_summary_report_formats_agree(fixtures: Path) -> None:
    """Text, markdown and JSON summaries carry the same status and counts."""
    index = _index(fixtures, "failed.json")
    text = summary_report(index, "text")
    md = summary_report(index, "markdown")
    data = json.loads(summary_report(index, "json"))
    assert "FAILED · 5 nodes · 7 attempts (4 failed) · 1 failed node" in text
    assert "| ✖ | `classify` | failed |" in md
    counts = (data["status"], data["attempts"], data["failed_attempts"], data["failed_nodes"], data["bad"])
    assert counts == ("FAILED", 7, 4, 1, True)


def test_diff_report_json_is_the_comparison(fixtures: Path) -> None:
    """The JSON diff report names the first divergence and says the resume is not worse."""
    view = DiffView(load(fixtures / "failed.json").record, load(fixtures / "resumed.json").record)
    data = json.loads(diff_report(view.comparison, "json"))
    assert data["first_divergence"] == "tag"
    assert data["worse"] is False
    assert "fixed" in diff_report(view.comparison, "markdown")


def test_truncated_jsonl_loads_its_valid_prefix(fixtures: Path) -> None:
    """A .jsonl cut mid-line loads what came before, marked truncated at the cut line."""
    loaded = load(fixtures / "truncated.jsonl")
    assert loaded.record.truncated
    assert loaded.record.truncated_at_line == 24
    assert loaded.record.interrupted  # written long ago by a writer that left no pid: gone
    assert not loaded.can_follow
    index = RunIndex(loaded.record)
    assert index.by_id["tag"].status == "interrupted"
    assert index.state == "INTERRUPTED"


def test_follower_reads_appended_lines_and_waits_for_complete_ones(
    tmp_path: Path, failed_lines: list[str]
) -> None:
    """A live .jsonl grows: complete lines become events, a half-written one waits."""
    lines = failed_lines
    live = tmp_path / "live.jsonl"
    live.write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    loaded = load(live)
    index = RunIndex(loaded.record)
    follower = loaded.stream
    assert follower.poll() == []
    with live.open("a", encoding="utf-8") as fh:
        fh.write(lines[6] + "\n" + lines[7][:10])
    assert len(follower.poll()) == 1
    with live.open("a", encoding="utf-8") as fh:
        fh.write(lines[7][10:] + "\n" + "\n".join(lines[8:]) + "\n")
    rest = follower.poll()
    assert len(rest) == len(lines) - 7
    index.append(rest)
    assert index.header.status == "FAILED"
    assert index.attempt_count == 7


def test_peek_reads_the_header_without_the_events(fixtures: Path) -> None:
    """The header peek gets run id, status and totals from the first bytes (and last line)."""
    peek = peek_header(fixtures / "failed.json")
    assert (peek.run_id, peek.status, peek.stroma_version) == ("doc-run-42", "FAILED", "0.4.0.dev0")
    assert peek_header(fixtures / "truncated.jsonl").status is None


def test_folder_places_a_resume_after_the_run_it_resumed(fixtures: Path) -> None:
    """Folder mode lists runs by start time and puts resumed.json right after failed.json."""
    entries = scan_folder(fixtures)
    names = [e.path.name for e in entries]
    at = names.index("failed.json")
    assert names[at + 1] == "resumed.json"
    assert entries[at + 1].resumes == fixtures / "failed.json"
    assert "make_fixtures.py" not in names


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        (None, "missing.json", "no such file"),
        ("{not json", "bad.json", "not valid JSON"),
        ('{"hello": 1}', "other.json", "not a Stroma run file"),
        (
            '{"format": "stroma.run", "version": 99, "header": {"run_id": "x"}, "events": []}',
            "newer.json",
            "newer Stroma",
        ),
        (
            '{"format": "stroma.run", "version": 1, "header": {"run_id": "x"}, '
            '"events": [{"type": "RunStarted", "run_id": "x", "ts": "soon", "pipeline": []}]}',
            "badevent.json",
            "does not validate",
        ),
    ],
)
def test_bad_input_is_one_paragraph_naming_file_and_line(
    tmp_path: Path, content: str | None, name: str, needle: str
) -> None:
    """Every kind of bad input raises a one-line message with the file and, when known, line."""
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ViewerInputError) as info:
        load(path)
    message = str(info.value)
    assert needle in message
    assert name in message
    assert "\n" not in message
    if content is not None:
        assert "line 1" in message


@pytest.mark.parametrize("name", ["failed.json", "parallel.json", "big.json"])
def test_streamed_events_equal_the_loaders(fixtures: Path, tmp_path: Path, name: str) -> None:
    """Streaming a run (.json, and the same run as .jsonl) yields exactly load_run's events."""
    expected = load(fixtures / name).record
    jsonl = tmp_path / (Path(name).stem + ".jsonl")
    lines = [json.dumps({"format": "stroma.run", "version": 1, "header": expected.header.to_dict()})]
    doc = json.loads((fixtures / name).read_text(encoding="utf-8"))
    jsonl.write_text("\n".join(lines + [json.dumps(e) for e in doc["events"]]) + "\n")
    for path in (fixtures / name, jsonl):
        stream = RunStream(path, batch_size=500)
        events = [e for b in stream.batches() for e in b]
        assert events == expected.events
        assert stream.record is not None
        assert stream.record.header == expected.header


@pytest.mark.parametrize(
    "content",
    [
        '{"format": "stroma.run", "version": 1, "header": {"run_id": "x"}, "events": [{"type": 1}]}',
        '{"format": "stroma.run", "version": 9, "header": {"run_id": "x"}, "events": []}',
        '{"format": "other", "version": 1, "header": {"run_id": "x"}, "events": []}',
    ],
)
def test_stream_falls_back_to_the_loader_on_anything_unusual(tmp_path: Path, content: str) -> None:
    """Bad or unusual files make the stream use the loader, so its message (and rules) are used."""
    path = tmp_path / "odd.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RunFileError) as info:
        list(RunStream(path).batches())
    assert str(info.value).startswith(str(path))


def test_stream_leaves_a_truncated_jsonl_to_the_loader(fixtures: Path) -> None:
    """A .jsonl without its final newline (killed mid-line) is read by the loader, marked truncated."""
    stream = RunStream(fixtures / "truncated.jsonl")
    events = [e for b in stream.batches() for e in b]
    assert stream.record is not None
    assert stream.record.truncated
    assert stream.record.events == events


def test_peek_and_stream_handle_a_header_bigger_than_the_first_read(fixtures: Path, tmp_path: Path) -> None:
    """A header listing 20k pipeline nodes (far over 64 KiB) is still peeked and streamed."""
    doc = json.loads((fixtures / "failed.json").read_text(encoding="utf-8"))
    doc["header"]["pipeline"] = [f"node_{i:06d}" for i in range(20_000)]
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    peek = peek_header(path)
    assert (peek.run_id, peek.status, len(peek.pipeline)) == ("doc-run-42", "FAILED", 20_000)
    assert sum(len(b) for b in RunStream(path).batches()) == len(doc["events"])


def _runtime_imports(path: Path) -> set[str]:
    """Modules a file imports at run time (anywhere in it, except under ``if TYPE_CHECKING``)."""
    import ast

    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_no_import_cycles_between_runfile_and_trace_or_screens_and_app() -> None:
    """stroma.runfile never imports stroma.trace, and no screen or widget imports viewer.app."""
    root = Path(__file__).parents[2]
    assert not {m for m in _runtime_imports(root / "stroma" / "runfile.py") if m.startswith("stroma.trace")}
    for path in [*(root / "viewer" / "screens").glob("*.py"), *(root / "viewer" / "widgets").glob("*.py")]:
        assert "viewer.app" not in _runtime_imports(path), path


def _as_jsonl(record_path: Path, out: Path) -> None:
    """Write the run at ``record_path`` as the .jsonl a trace dir would have written."""
    doc = json.loads(record_path.read_text(encoding="utf-8"))
    lines = [json.dumps({k: doc[k] for k in ("format", "version", "header")})]
    out.write_text("\n".join(lines + [json.dumps(e) for e in doc["events"]]) + "\n", encoding="utf-8")


def test_folder_lists_one_row_per_run_and_lineage_from_run_ids(fixtures: Path, tmp_path: Path) -> None:
    """A run's .json and .jsonl copies make one row (the .json shown); names do not make lineage."""
    (tmp_path / "zzz-first.json").write_bytes((fixtures / "resumed.json").read_bytes())
    _as_jsonl(fixtures / "resumed.json", tmp_path / "aaa-copy.jsonl")
    (tmp_path / "resumed-later.json").write_bytes((fixtures / "failed.json").read_bytes())
    entries = scan_folder(tmp_path)
    assert [e.path.name for e in entries] == ["resumed-later.json", "zzz-first.json"]
    assert entries[1].copies == (tmp_path / "aaa-copy.jsonl",)
    assert entries[1].resumes == tmp_path / "resumed-later.json"  # it started later, same run id
    assert [e.state for e in entries] == ["FAILED", "RESUMED"]


def test_interrupted_nodes_count_under_failures_only(fixtures: Path) -> None:
    """A node cut off by a kill (and its attempt) stays visible with 'failures only' on."""
    listing = Listing(_index(fixtures, "truncated.jsonl"))
    listing.toggle_failures_only()
    keys = [(r.node.node_id, r.attempt.outcome if r.attempt else r.node.status) for r in listing.rows]
    assert ("tag", "interrupted") in keys
    assert keys.count(("tag", "interrupted")) == 2  # the node row and its cut-off attempt


def test_writer_liveness_rule(fixtures: Path, tmp_path: Path) -> None:
    """Same host: live while the writer's pid is; a dead pid is gone; no pid: stale after 5 min."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from stroma.runfile import STALE_AFTER_S, RunHeader

    here = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    path = tmp_path / "r.jsonl"
    assert RunHeader("r", writer_host=here, writer_pid=os.getpid()).writer_alive(path)
    assert not RunHeader("r", writer_host=here, writer_pid=int(dead.stdout)).writer_alive(path)
    fresh, stale = time.time() - 1, time.time() - STALE_AFTER_S - 1
    assert RunHeader("r", writer_host="elsewhere", writer_pid=1, last_event_at=fresh).writer_alive(path)
    assert not RunHeader("r", last_event_at=stale).writer_alive(path)
    assert not RunHeader("r", status="COMPLETED", last_event_at=fresh).writer_alive(path)
    assert not RunHeader("r", last_event_at=fresh).writer_alive(tmp_path / "saved.json")


def test_timeline_marks_failures_backoff_the_cut_off_node_and_restored_nodes(fixtures: Path) -> None:
    """The waterfall puts every attempt on one axis: failed ✖, backoff ┄, cut off ↯, restored ⤳."""
    from viewer.model.timeline import timeline_pair, timeline_text

    def lines(name: str) -> dict[str, str]:
        text = timeline_text(_index(fixtures, name), 80)
        return {line.split("│")[0].strip(): line for line in text.splitlines() if "│" in line}

    failed = lines("failed.json")
    assert "✖" in failed["tag"]
    assert "┄" in failed["tag"]
    assert failed["tag"].split("│")[1].rstrip().endswith("█")  # the retry that succeeded
    assert "↯" in lines("truncated.jsonl")["tag"]
    resumed = lines("resumed.json")
    bar = resumed["fetch"].split("│")[1]
    assert bar.strip() == "⤳"  # zero width: restored, not run
    both = timeline_pair(_index(fixtures, "failed.json"), _index(fixtures, "resumed.json"), ["tag"], 80)
    a_line, b_line = (x for x in both.splitlines() if "tag" in x)
    assert a_line.startswith("a tag")
    assert b_line.startswith("b tag")
    assert len(a_line.split("│")[1]) == len(b_line.split("│")[1])  # one axis


def test_search_opens_collapsed_nodes_numbers_matches_and_names_unknown_keys(fixtures: Path) -> None:
    """A match inside a collapsed node expands it; matches are numbered; an unknown key says so."""
    listing = Listing(_index(fixtures, "failed.json"))
    listing.collapse("summarize")
    matches = listing.search("TimeoutError")
    assert "summarize" not in listing.collapsed
    assert len(matches) == 3  # the node (its last error) and its two timed-out attempts
    assert listing.match_number(matches[2]) == 3
    assert listing.match_number(0) is None
    listing.search("colour=red")
    assert listing.unknown_key() is not None
    assert "unknown search key 'colour'" in (listing.unknown_key() or "")
    listing.search("word_count=11")  # a field of the attempts' states is a known key
    assert listing.unknown_key() is None


def test_events_tab_formats_numbers(fixtures: Path) -> None:
    """The Events tab shows durations in ms/s and costs in $, never raw floats."""
    index = _index(fixtures, "failed.json")
    rows = Listing(index).rows
    row = next(r for r in rows if r.attempt is not None and r.node.node_id == "summarize")
    text = tab_text("events", row, index)
    assert "duration_ms=500.0 ms" in text
    assert "0000000" not in text
