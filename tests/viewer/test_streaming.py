"""The fast full load: chunked JSON, line decoding, incremental rows and the paused collector give
exactly what the plain loader (and a from-scratch index and listing) give."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from stroma import RunFileError, RunRecord
from stroma import events as ev
from stroma import runfile as loading
from stroma.runfile import _Unusual as StreamFallback  # the fast path giving up (the loader reads)
from viewer.model import Listing, RunIndex, load
from viewer.model.loading import collector_paused

from .conftest import jsonl_lines

TRICKY = '},{"type":"AttemptStarted","run_id":"x"},{"type":"RunFinished"} ] "events":['


def tricky_doc(fixtures: Path) -> dict[str, Any]:
    """failed.json with states that hold event-like text and lists of objects with a "type"."""
    doc: dict[str, Any] = json.loads((fixtures / "failed.json").read_text(encoding="utf-8"))
    for i, e in enumerate(doc["events"]):
        if e["type"] == "AttemptStarted":
            e["input_state"] = {
                "text": TRICKY,
                "parts": [{"type": "text"}, {"type": "AttemptStarted", "run_id": "nested"}],
                "i": i,
            }
        elif e["type"] == "AttemptSucceeded":
            e["output_state"] = {"parts": [[{"type": "RunStarted"}, {"type": "RunFinished"}]], "s": TRICKY}
        elif e["type"] == "AttemptFailed":
            e["message"] = TRICKY
    return doc


def compact(doc: dict[str, Any]) -> str:
    """The run.json text as Stroma writes it (compact separators)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def streamed(path: Path, batch_size: int = 20_000) -> list[ev.LifecycleEvent]:
    """The fast path's events (it raises StreamFallback where the loader takes over)."""
    return [e for batch in loading.RunStream(path, batch_size)._fast() for e in batch]


def _events_array(text: str) -> list[Any]:
    found = loading._top_level(text, "events")
    assert found is not None
    return [obj for piece in loading._json_event_objects(text, found[1]) for obj in piece]


@pytest.mark.parametrize("chunk", [1, 40, 700, 5_000, 256 * 1024])
def test_chunked_run_json_gives_exactly_the_events_array(
    fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Pieces cut at event-like text inside strings and states never parse, so the elements
    (and the decoded events) are exactly those of the whole array, for any piece size."""
    monkeypatch.setattr(loading, "_CHUNK_CHARS", chunk)
    monkeypatch.setattr(loading, "_CHUNK_MISSES", 10_000)
    doc = tricky_doc(fixtures)
    text = compact(doc)
    assert text.count('},{"type":') > len(doc["events"])  # there are false cuts to reject
    elements = _events_array(text)
    assert elements == doc["events"]
    path = tmp_path / "tricky.json"
    path.write_text(text, encoding="utf-8")
    assert streamed(path) == load(path).record.events


def test_chunking_gives_up_after_misses_and_still_decodes_everything(
    fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a few pieces that do not parse, the rest is decoded one element at a time."""
    monkeypatch.setattr(loading, "_CHUNK_CHARS", 1)
    monkeypatch.setattr(loading, "_CHUNK_MISSES", 1)
    doc = tricky_doc(fixtures)
    elements = _events_array(compact(doc))
    assert elements == doc["events"]


@pytest.mark.parametrize(
    "dumps",
    [
        json.dumps,
        lambda doc: json.dumps(doc, indent=2),
        lambda doc: json.dumps(doc, separators=(",", ":")).replace('},{"type"', '} , {"type"'),
    ],
)
def test_other_json_layouts_stream_the_same_events(
    fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dumps: Any
) -> None:
    """Spaces and newlines between events (hand-written or pretty-printed files) change nothing."""
    monkeypatch.setattr(loading, "_CHUNK_CHARS", 300)
    path = tmp_path / "run.json"
    path.write_text(dumps(tricky_doc(fixtures)), encoding="utf-8")
    assert streamed(path) == load(path).record.events


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace('},{"type":"NodeFinished"', '}{"type":"NodeFinished"', 1),
        lambda text: text.replace('},{"type":"NodeFinished"', '},x{"type":"NodeFinished"', 1),
        lambda text: text.replace('},{"type":"NodeFinished"', '},,{"type":"NodeFinished"', 1),
        lambda text: text[: text.rindex("]")],
    ],
)
def test_a_broken_events_array_falls_back_to_the_loader(
    fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Any
) -> None:
    """A missing comma, garbage between events or an unclosed array is not streamed."""
    monkeypatch.setattr(loading, "_CHUNK_CHARS", 200)
    path = tmp_path / "broken.json"
    path.write_text(damage(compact(tricky_doc(fixtures))), encoding="utf-8")
    with pytest.raises(StreamFallback):
        streamed(path)


def expected_sizes(total: int, batch_size: int) -> list[int]:
    """The batch sizes stream_events has always produced: 2,000 (or less), doubling, capped."""
    sizes = []
    size = min(2_000, batch_size)
    while total >= size:
        sizes.append(size)
        total -= size
        size = min(size * 2, batch_size)
    return [*sizes, total]


@pytest.mark.parametrize("batch_size", [300, 3_000, 20_000])
def test_batches_keep_their_sizes(fixtures: Path, monkeypatch: pytest.MonkeyPatch, batch_size: int) -> None:
    """A small first batch that doubles up to ``batch_size``, whatever the piece size."""
    monkeypatch.setattr(loading, "_CHUNK_CHARS", 10_000)
    path = fixtures / "big.json"
    total = len(load(path).record.events)
    sizes = [len(b) for b in loading.RunStream(path, batch_size).batches()]
    assert sizes == expected_sizes(total, batch_size)


def test_jsonl_lines_decode_like_json_loads(fixtures: Path, tmp_path: Path) -> None:
    """Spaces around a line's value, CRLF endings and blank lines are what json.loads allows."""
    lines = jsonl_lines(fixtures / "failed.json")
    odd = [lines[0]]
    for i, line in enumerate(lines[1:]):
        odd.append([line, f"  {line}", f"{line} \t", f"{line}\r", f"\t {line}  \r"][i % 5])
        if i % 7 == 0:
            odd.append(["", "   ", "\t", "\r"][i % 4])
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(odd) + "\n", encoding="utf-8")
    expected = [ev.event_from_dict(json.loads(x)) for x in odd[1:] if x.strip()]
    assert streamed(path) == expected == load(path).record.events


@pytest.mark.parametrize("extra", ["{}", "x", "]", ",", '"tail"'])
def test_a_jsonl_line_with_extra_data_is_refused(fixtures: Path, tmp_path: Path, extra: str) -> None:
    """Two values on one line (or trailing garbage) is not a valid line: the reader names it."""
    lines = jsonl_lines(fixtures / "failed.json")
    lines[3] = f"{lines[3]} {extra}"
    path = tmp_path / "extra.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RunFileError, match=r"extra\.jsonl, line 4: not valid JSON"):
        streamed(path)


def _summary(index: RunIndex) -> Any:
    nodes = [
        (
            n.node_id,
            n.status,
            n.parent,
            n.events,
            n.failures,
            n.tokens,
            n.failure_class,
            n.restored_from,
            [(a.number, a.outcome, a.started, a.finished, a.events, a.decided_by) for a in n.attempts],
        )
        for n in index.ordered()
    ]
    return nodes, index.attempt_count, index.failure_count, index.tokens, index.cost_usd, index.budget


def _row_keys(listing: Listing) -> list[tuple[str, int | None]]:
    return [(r.node.node_id, r.attempt.number if r.attempt else None) for r in listing.rows]


@pytest.mark.parametrize("name", ["big.json", "parallel.json", "failed.json", "resumed.json"])
def test_streamed_index_and_rows_match_a_fresh_build(fixtures: Path, name: str) -> None:
    """Indexed batch by batch as the Run screen does (cached order, rows kept between refreshes,
    collapsing and filters switched on the way), the index and rows match ones built from scratch."""
    events = load(fixtures / name).record.events
    step = 3 if len(events) < 1_000 else 613
    batches = [events[i : i + step] for i in range(0, len(events), step)]
    index = RunIndex(RunRecord.from_events(list(batches[0]), run_id="x"))
    listing = Listing(index)
    for n, batch in enumerate(batches[1:]):
        index.append(batch)
        if n % 5 == 1 and index.nodes:
            listing.collapse(index.nodes[n % len(index.nodes)].node_id)
        if n % 7 == 3:
            listing.toggle_failures_only()
        if n % 11 == 4 and listing.collapsed:
            listing.expand(sorted(listing.collapsed)[0])
        listing.refresh()
        fresh = RunIndex(RunRecord.from_events(events[: len(index.events)], run_id="x"))
        assert _summary(index) == _summary(fresh)
        again = Listing(fresh)
        again.collapsed = set(listing.collapsed)
        again.failures_only = listing.failures_only
        again.refresh()
        assert _row_keys(listing) == _row_keys(again)
    if listing.failures_only:
        listing.toggle_failures_only()
    listing.collapsed.clear()
    listing.refresh()
    assert _row_keys(listing) == _row_keys(Listing(RunIndex(load(fixtures / name).record)))


def test_display_order_follows_new_nodes_and_new_parents() -> None:
    """The cached display order is redone when a node appears or a node gets its parallel group."""
    index = RunIndex(
        RunRecord.from_events([ev.RunStarted(run_id="r", ts=0.0, pipeline=("a", "b", "group"))], run_id="r")
    )
    listing = Listing(index)

    def order() -> list[str]:
        return [n.node_id for n in index.ordered()]

    assert order() == ["a", "b", "group"]
    index.append([ev.NodeStarted(run_id="r", ts=1.0, node_id="extra")])
    assert order() == ["a", "b", "group", "extra"]
    index.append([ev.NodeStarted(run_id="r", ts=2.0, node_id="b", parent="group")])
    assert order() == ["a", "group", "b", "extra"]
    listing.refresh()
    assert _row_keys(listing) == [("a", None), ("group", None), ("b", None), ("extra", None)]
    index.ordered().clear()  # a caller's copy: the index keeps its order
    assert order() == ["a", "group", "b", "extra"]


def _fail_while_paused() -> None:
    with collector_paused(freeze=True):
        raise RuntimeError


def test_collector_pauses_nest_and_restore() -> None:
    """The collector is off inside (nested) pauses and back as it was after the last one."""
    was = gc.isenabled()
    try:
        gc.enable()
        with collector_paused():
            assert not gc.isenabled()
            with collector_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()
        gc.disable()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off: it stays off
        gc.enable()
        frozen = gc.get_freeze_count()
        with pytest.raises(RuntimeError):
            _fail_while_paused()
        assert gc.get_freeze_count() == frozen  # no freezing after an error
        assert gc.isenabled()
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()
