"""stroma-view performance against the targets of VIEWER.md, with ratios to a plain-JSON baseline.

    /tmp/venv/bin/python benchmarks/viewer.py [--attempts-big 100000] [--repeat 3] [--quick]

Run files are generated at run time in a temporary folder (nothing big is committed), in the exact
run-file format Stroma writes. Each row is measured in this process, next to a baseline measured on
the same file in the same run (``json.loads`` of the file, or reading it), so the ratios hold
across machines:

- 10k-attempt run interactive: the TUI (headless Pilot) from start until the list is drawn;
- 100k-attempt run header: start until the header line shows (peeked from the first bytes);
- 100k-attempt run fully indexed, and page-down scrolling (frame time per page, line API);
- 100k-attempt run full load without drawing: what the Run screen's loader does (stream the
  events in batches, index and list each batch, final record), as CPU time, median of
  ``--repeat`` runs (the TUI rows are single wall-clock runs, noisy on a shared machine);
- diff of two 10k-node runs: ``compare_runs`` plus the Diff screen's model;
- memory: peak Python allocations of load + index, as a multiple of the file size.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This script is named like the package it measures: keep its folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

TEXT = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 4


def _write_run(
    path: Path,
    *,
    run_id: str,
    nodes: int,
    attempts: int,
    fail_at: int | None = None,
    restored_until: int = 0,
    payload: int = 300,
    seed: int = 1,
) -> int:
    """Write a run file of ``nodes`` nodes and about ``attempts`` attempts; returns its size."""
    rng = random.Random(seed)
    body = TEXT[:payload]
    ids = [f"node_{i:06d}" for i in range(nodes)]
    extra = max(0, attempts - nodes)
    # Spread the retries over the nodes: each extra attempt is one failure before a success.
    failures = [0] * nodes
    for _ in range(extra):
        failures[rng.randrange(nodes)] += 1
    ts = 1_763_900_000.0
    events: list[dict[str, Any]] = [
        {
            "type": "RunStarted",
            "run_id": run_id,
            "ts": ts,
            "pipeline": ids,
            "resumed_from": ids[restored_until] if restored_until else None,
            "pipeline_name": "bench",
            "carrier": {},
            "parent_carrier": {},
        }
    ]
    n_fail = tokens = 0
    cost = 0.0
    status = "RESUMED" if restored_until else "COMPLETED"
    for i, node_id in enumerate(ids):
        if i < restored_until:
            events.append(
                {
                    "type": "NodeRestored",
                    "run_id": run_id,
                    "ts": ts,
                    "node_id": node_id,
                    "output_state": {"i": i, "text": body} if i == restored_until - 1 else None,
                }
            )
            continue
        events.append(
            {
                "type": "NodeStarted",
                "run_id": run_id,
                "ts": ts,
                "node_id": node_id,
                "parent": None,
                "max_attempts": 8,
            }
        )
        state = {"i": i, "text": body}
        final_fail = fail_at is not None and i == fail_at
        tries = failures[i] + 1
        for a in range(1, tries + 1):
            ts += 0.01
            events.append(
                {
                    "type": "AttemptStarted",
                    "run_id": run_id,
                    "ts": ts,
                    "node_id": node_id,
                    "attempt": a,
                    "max_attempts": 8,
                    "input_state": state,
                    "model": "gpt-4o-mini",
                    "idempotency_key": f"{run_id}:{node_id}:{a}",
                }
            )
            if a < tries or final_fail:
                n_fail += 1
                events.append(
                    {
                        "type": "FailureClassified",
                        "run_id": run_id,
                        "ts": ts,
                        "node_id": node_id,
                        "attempt": a,
                        "failure_class": "RECOVERABLE",
                        "decided_by": "builtin:TimeoutError",
                        "error_type": "TimeoutError",
                    }
                )
                events.append(
                    {
                        "type": "AttemptFailed",
                        "run_id": run_id,
                        "ts": ts,
                        "node_id": node_id,
                        "attempt": a,
                        "duration_ms": 10.0,
                        "error_type": "TimeoutError",
                        "message": "upstream timed out",
                        "failure_class": "RECOVERABLE",
                        "tokens": 0,
                        "input_tokens": 0,
                        "output_tokens": 0,
                        "cost_usd": 0.0,
                        "model": "gpt-4o-mini",
                    }
                )
                if a < tries:
                    events.append(
                        {
                            "type": "RetryScheduled",
                            "run_id": run_id,
                            "ts": ts,
                            "node_id": node_id,
                            "attempt": a,
                            "delay_s": 0.1,
                            "error_type": "TimeoutError",
                            "failure_class": "RECOVERABLE",
                        }
                    )
            else:
                tokens += 60
                cost += 0.00002
                events.append(
                    {
                        "type": "CheckpointSaved",
                        "run_id": run_id,
                        "ts": ts,
                        "node_id": node_id,
                        "store": "memory",
                        "size_bytes": payload,
                        "duration_ms": 0.1,
                    }
                )
                events.append(
                    {
                        "type": "AttemptSucceeded",
                        "run_id": run_id,
                        "ts": ts,
                        "node_id": node_id,
                        "attempt": a,
                        "duration_ms": 10.0,
                        "output_state": {"i": i + (1 if seed % 2 else 0), "text": body},
                        "tokens": 60,
                        "input_tokens": 50,
                        "output_tokens": 10,
                        "cost_usd": 0.00002,
                        "model": "gpt-4o-mini",
                    }
                )
        events.append(
            {
                "type": "NodeFinished",
                "run_id": run_id,
                "ts": ts,
                "node_id": node_id,
                "outcome": "failed" if final_fail else "succeeded",
                "attempts": tries,
                "duration_ms": 10.0 * tries,
                "failure_class": None,
                "parent": None,
            }
        )
        if final_fail:
            status = "FAILED"
            break
    events.append(
        {
            "type": "RunFinished",
            "run_id": run_id,
            "ts": ts,
            "status": status,
            "duration_ms": (ts - 1_763_900_000.0) * 1000,
            "total_tokens": tokens,
            "total_cost_usd": cost,
            "failures": n_fail,
            "error_type": None,
            "failed_node": None,
        }
    )
    header = {
        "run_id": run_id,
        "pipeline": ids,
        "pipeline_name": "bench",
        "started_at": events[0]["ts"],
        "finished_at": ts,
        "status": status,
        "duration_ms": events[-1]["duration_ms"],
        "total_tokens": tokens,
        "total_cost_usd": cost,
        "failures": n_fail,
        "resumed_from": events[0]["resumed_from"],
        "carrier": {},
        "parent_carrier": {},
        "stroma_version": "bench",
    }
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with path.open("w", encoding="utf-8") as fh:
        if path.suffix == ".jsonl":
            fh.write(dumps({"format": "stroma.run", "version": 1, "header": header}) + "\n")
            for e in events:
                fh.write(dumps(e) + "\n")
        else:
            fh.write('{"format":"stroma.run","version":1,"header":' + dumps(header) + ',"events":[')
            fh.write(",".join(dumps(e) for e in events))
            fh.write("]}")
    return path.stat().st_size


def _plain_json(path: Path) -> Any:
    """The baseline: what ``json.loads`` alone costs on the same file (per line for .jsonl)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return json.loads(text)


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _cpu_median(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median CPU time of ``repeat`` runs (process time: every thread, no waiting)."""
    times = []
    result: Any = None
    for _ in range(repeat):
        result = None
        gc.collect()
        t0 = time.process_time()
        result = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), result


def _full_load(path: Path) -> Any:
    """What the Run screen does to load a run in full, minus the drawing: stream the events in
    batches, index and list each batch as it arrives (on the UI thread in the app), then build the
    final record; the collector is paused meanwhile, as in the screen's load worker."""
    from stroma import RunRecord
    from stroma.runfile import RunStream
    from viewer.model import Listing, RunIndex, loading

    total = 0
    index: RunIndex | None = None
    listing: Listing | None = None
    stream = RunStream(path)
    with loading.collector_paused():
        for batch in loading.read(stream):
            total += len(batch)
            if index is None or listing is None:
                index = RunIndex(RunRecord.from_events(list(batch), run_id=path.stem))
                listing = Listing(index)
            else:
                index.append(batch)
                listing.refresh()
        loaded = loading.loaded(stream)
    assert listing is not None
    assert len(loaded.record.events) == total
    return loaded, listing


def _peak_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, result


def _retained_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    result = fn()
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current, result


async def _tui_times(path: Path, *, pages: int = 0) -> dict[str, float]:
    """Start the app headless on ``path``; time header, list drawn, and page-down frames."""
    from viewer.app import StromaViewApp
    from viewer.screens.run import RunScreen
    from viewer.widgets.virtual_list import VirtualList

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    app = StromaViewApp([path])
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        header = screen.query_one("#header")
        rows = screen.query_one("#rows", VirtualList)
        # Polling is the measurement here (how soon each thing appears), not a test wait.
        while not str(header.render()).strip():  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        out["header"] = time.perf_counter() - t0
        while rows.row_count == 0:  # noqa: ASYNC110 - the first streamed batch is drawn
            await asyncio.sleep(0.002)
        out["interactive"] = time.perf_counter() - t0
        await app.workers.wait_for_complete()
        await pilot.pause()
        out["indexed"] = time.perf_counter() - t0
        rows = screen.query_one("#rows", VirtualList)
        out["rows"] = rows.row_count
        if pages:
            frames = []
            for _ in range(pages):
                f0 = time.perf_counter()
                rows.action_page_down_rows()
                for y in range(rows.size.height):  # what a refresh draws: the visible lines
                    rows.render_line(y)
                frames.append(time.perf_counter() - f0)
            out["frame_p50"] = statistics.median(frames)
            out["frame_max"] = max(frames)
    return out


def main() -> None:
    """Generate the runs, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts-big", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the full-load measurement")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args()
    big_attempts = 10_000 if args.quick else args.attempts_big

    from stroma import compare_runs, load_run
    from stroma.runfile import peek_header
    from viewer.model import DiffView, Listing, RunIndex, load

    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, value: float, unit: str, target: str, ok: bool, base: float | None) -> None:
        ratio = f"{value / base:.2f}×" if base else "–"
        shown = f"{value * 1000:.0f} ms" if unit == "s" else f"{value:.2f}×"
        rows.append((name, shown, target, ratio, "PASS" if ok else "MISS"))

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t_gen = time.perf_counter()
        tiny = d / "tiny.json"
        _write_run(tiny, run_id="tiny", nodes=3, attempts=4)
        startup = asyncio.run(_tui_times(tiny))["interactive"]
        ten = d / "run10k.jsonl"
        size10 = _write_run(ten, run_id="r10k", nodes=4_000, attempts=10_000)
        big = d / "run_big.json"
        size_big = _write_run(
            big, run_id="rbig", nodes=big_attempts * 2 // 5, attempts=big_attempts, payload=200
        )
        a10 = d / "a_10k_nodes.json"
        b10 = d / "b_10k_nodes.json"
        _write_run(a10, run_id="rdiff", nodes=10_000, attempts=11_000, fail_at=9_000, seed=2)
        _write_run(b10, run_id="rdiff", nodes=10_000, attempts=1_500, restored_until=9_000, seed=3)
        print(
            f"generated runs in {time.perf_counter() - t_gen:.1f} s: 10k attempts "
            f"{size10 / 1e6:.1f} MB, {big_attempts // 1000}k attempts {size_big / 1e6:.1f} MB"
        )

        row("TUI startup on a 4-attempt run (fixed cost)", startup, "s", "–", True, None)

        # -- 10k attempts --------------------------------------------------------------------
        base10, _ = _timed(lambda: _plain_json(ten), repeat=3)
        t_model10, _ = _timed(lambda: Listing(RunIndex(load(ten).record)), repeat=3)
        tui10 = asyncio.run(_tui_times(ten, pages=20))
        row("10k attempts: model (load+index+rows)", t_model10, "s", "–", True, base10)
        row(
            "10k attempts: TUI interactive (rows shown)",
            tui10["interactive"],
            "s",
            "< 1 s",
            tui10["interactive"] < 1.0,
            base10,
        )
        row("10k attempts: TUI fully indexed", tui10["indexed"], "s", "(background)", True, base10)

        # -- 100k attempts -------------------------------------------------------------------
        base_big, _ = _timed(lambda: json.loads(big.read_text()), repeat=1)
        t_peek, _ = _timed(lambda: peek_header(big), repeat=3)
        tui_big = asyncio.run(_tui_times(big, pages=50))
        row(f"{big_attempts // 1000}k attempts: header peek", t_peek, "s", "< 2 s", t_peek < 2, base_big)
        row(
            f"{big_attempts // 1000}k attempts: TUI header shown",
            tui_big["header"],
            "s",
            "< 2 s",
            tui_big["header"] < 2.0,
            base_big,
        )
        row(
            f"{big_attempts // 1000}k attempts: TUI interactive (rows shown)",
            tui_big["interactive"],
            "s",
            "–",
            True,
            base_big,
        )
        row(
            f"{big_attempts // 1000}k attempts: TUI fully indexed",
            tui_big["indexed"],
            "s",
            "(background)",
            True,
            base_big,
        )
        t_full, _ = _cpu_median(lambda: _full_load(big), repeat=max(1, args.repeat))
        row(
            f"{big_attempts // 1000}k attempts: full load, no drawing (CPU, median)",
            t_full,
            "s",
            "< 3× json.loads",
            t_full < 3 * base_big,
            base_big,
        )
        row(
            f"{big_attempts // 1000}k attempts: page-down frame p50",
            tui_big["frame_p50"],
            "s",
            "< 16 ms",
            tui_big["frame_p50"] < 0.016,
            None,
        )
        row(
            f"{big_attempts // 1000}k attempts: page-down frame max",
            tui_big["frame_max"],
            "s",
            "< 50 ms",
            tui_big["frame_max"] < 0.05,
            None,
        )

        # -- diff of two 10k-node runs -------------------------------------------------------
        ra, rb = load_run(a10), load_run(b10)
        base_diff, _ = _timed(lambda: (json.loads(a10.read_text()), json.loads(b10.read_text())))
        t_cmp, _ = _timed(lambda: compare_runs(ra, rb), repeat=3)
        t_view, view = _timed(lambda: DiffView(ra, rb), repeat=3)
        t_first, _ = _timed(view.first_divergence, repeat=3)
        row("diff 10k nodes: compare_runs", t_cmp, "s", "< 0.5 s", t_cmp < 0.5, base_diff)
        row(
            "diff 10k nodes: Diff screen model",
            t_view + t_first,
            "s",
            "< 0.5 s",
            t_view + t_first < 0.5,
            base_diff,
        )

        # -- memory ----------------------------------------------------------------------------
        for label, path, size in (("10k", ten, size10), (f"{big_attempts // 1000}k", big, size_big)):
            base_mem, _ = _retained_bytes(lambda p=path: _plain_json(p))  # type: ignore[misc]
            kept, _ = _retained_bytes(lambda p=path: Listing(RunIndex(load(p).record)))  # type: ignore[misc]
            ratio = kept / size
            rows.append(
                (
                    f"memory {label}: retained after load / file size",
                    f"{ratio:.2f}×",
                    "< 3×",
                    f"{kept / base_mem:.2f}×",
                    "PASS" if ratio < 3 else "MISS",
                )
            )
            if label == "10k":
                peak, _ = _peak_bytes(lambda p=path: Listing(RunIndex(load(p).record)))  # type: ignore[misc]
                rows.append(
                    (
                        f"memory {label}: peak while loading / file size",
                        f"{peak / size:.2f}×",
                        "(info)",
                        "–",
                        "info",
                    )
                )

    widths = [
        max(len(r[i]) for r in [("metric", "measured", "target", "vs json.loads", ""), *rows])
        for i in range(5)
    ]
    head = ("metric", "measured", "target", "vs json.loads", "")
    print()
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
