"""Memory: peak RSS of loading a big ``.jsonl`` run file, as a multiple of the file's size.

    python benchmarks/runfile_memory.py              # a 250 MB file
    python benchmarks/runfile_memory.py --mb 20      # a smaller one (smoke test)

Writes a run of many 3-field nodes (each node: NodeStarted, AttemptStarted with its input,
AttemptSucceeded with its output, CheckpointSaved, NodeFinished) to a temporary ``.jsonl`` until
it reaches the size asked for, then loads it in a fresh subprocess per reader and prints that
process's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, interpreter and imports
included) divided by the file size. Readers: ``stroma.load_run`` and the viewer's
``viewer.model.loading.load`` (the streamed reader ``stroma-view`` uses). Issue 16's target: under
3x the file size for both.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = 3.0

_CHILD = """
import resource, sys
from pathlib import Path
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "load_run":
    from stroma import load_run
    record = load_run(sys.argv[2])
else:
    from viewer.model.loading import load
    record = load(sys.argv[2]).record
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before * 1024, peak * 1024, len(record.events))
"""


def write_run(path: Path, size_bytes: int) -> int:
    """Write a finished run of ``.jsonl`` lines to ``path`` until it is ``size_bytes``; returns the
    node count."""
    from stroma import events as ev
    from stroma.runfile import FORMAT, FORMAT_VERSION, RunHeader, _dumps

    run_id, ts, written, node = "bench-run", 1_700_000_000.0, 0, 0
    with path.open("w", encoding="utf-8") as fh:

        def put(obj: dict[str, object]) -> None:
            nonlocal written
            line = _dumps(obj) + "\n"
            fh.write(line)
            written += len(line)

        header = RunHeader(run_id=run_id, started_at=ts)
        put({"format": FORMAT, "version": FORMAT_VERSION, "header": header.to_dict()})
        put(ev.event_to_dict(ev.RunStarted(run_id=run_id, ts=ts, pipeline=())))
        while written < size_bytes:
            node_id = f"node-{node}"
            state = {"text": f"document {node} " + "lorem ipsum " * 4, "score": node / 7, "n": node}
            out = {"summary": f"summary of {node}", "tokens": node % 900, "ok": True}
            for event in (
                ev.NodeStarted(run_id=run_id, ts=ts, node_id=node_id),
                ev.AttemptStarted(
                    run_id=run_id, ts=ts, node_id=node_id, attempt=1, max_attempts=3, input_state=state
                ),
                ev.AttemptSucceeded(
                    run_id=run_id,
                    ts=ts + 0.01,
                    node_id=node_id,
                    attempt=1,
                    duration_ms=10.0,
                    output_state=out,
                ),
                ev.CheckpointSaved(
                    run_id=run_id,
                    ts=ts + 0.011,
                    node_id=node_id,
                    store="memory",
                    size_bytes=120,
                    duration_ms=0.1,
                ),
                ev.NodeFinished(
                    run_id=run_id,
                    ts=ts + 0.012,
                    node_id=node_id,
                    outcome="ok",
                    attempts=1,
                    duration_ms=12.0,
                ),
            ):
                put(ev.event_to_dict(event))
            node += 1
            ts += 0.02
        end = ev.RunFinished(
            run_id=run_id,
            ts=ts,
            status="COMPLETED",
            duration_ms=1.0,
            total_tokens=0,
            total_cost_usd=0.0,
            failures=0,
        )
        put(ev.event_to_dict(end))
    return node


def measure(reader: str, path: Path) -> tuple[int, int, int]:
    """(RSS before loading, peak RSS, events) of a fresh process loading ``path`` with ``reader``."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, reader, str(path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def main() -> int:
    """Write the file, measure each reader, print the ratios; exit 1 when one is over target."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=250.0, help="file size in MB (default 250)")
    args = p.parse_args()
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        nodes = write_run(path, int(args.mb * 1_000_000))
        size = path.stat().st_size
        print(f"file: {size / 1e6:.1f} MB, {nodes:,} nodes")
        for reader in ("load_run", "viewer"):
            before, peak, count = measure(reader, path)
            ratio = peak / size
            worst = max(worst, ratio)
            print(
                f"{reader:>9}: {count:,} events, peak RSS {peak / 1e6:.0f} MB = {ratio:.2f}x the file "
                f"(before loading {before / 1e6:.0f} MB; target < {TARGET:.0f}x)"
            )
    return 0 if worst < TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
