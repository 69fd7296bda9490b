"""Stroma's failure-first demo: retry, contract boundary, crash, resume, diff, run files.

    python examples/demo.py [--out runs]

1. A research pipeline whose "fetch" node times out twice: Stroma retries it with jittered backoff.
2. A node returns malformed output: Stroma stops it at the contract boundary (terminal, no retry).
3. The pipeline runs in a worker process that is killed with SIGKILL in the middle of "publish".
4. A new process calls ``runner.resume(...)`` for the same run id on the same SQLite file:
   committed nodes are restored from their checkpoints, only "publish" runs again.
5. The crashed and the resumed runs are compared node by node, and every run is written as a
   run file you can open with ``stroma-view``.

No network and no API key: the "LLM" nodes are deterministic stand-ins that report token usage
the way a real client would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stroma import (
    FailureClass,
    FailurePolicy,
    RunStatus,
    SqliteStore,
    StromaRunner,
    compare_runs,
    load_run,
)
from stroma.events import NodeRestored, RetryScheduled


class Topic(BaseModel):
    """What to research."""

    topic: str


class Sources(BaseModel):
    """Documents found for the topic."""

    topic: str
    urls: list[str]


class Summary(BaseModel):
    """What the sources say."""

    topic: str
    summary: str
    word_count: int


class Post(BaseModel):
    """The published result."""

    title: str
    body: str
    published: bool


RUN_ID = "demo-research-1"
FAST_RETRIES = {
    FailureClass.RECOVERABLE: FailurePolicy(max_retries=3, backoff_seconds=0.2),
    FailureClass.TERMINAL: FailurePolicy(max_retries=0, backoff_seconds=0.0),
    FailureClass.AMBIGUOUS: FailurePolicy(max_retries=1, backoff_seconds=0.1),
}


def build(
    store: SqliteStore, trace_dir: Path, *, crash_in_publish: bool = False
) -> tuple[StromaRunner, list[Any]]:
    """The research pipeline: fetch → summarize → publish, checkpointed to SQLite."""
    runner = (
        StromaRunner.quick(store=store, run_id=RUN_ID, policy_map=FAST_RETRIES, pipeline_name="research")
        .with_trace_dir(trace_dir)
        .with_budget(tokens=20_000, cost_usd=0.50)
        .with_context({"model": "gpt-4o-mini"})
    )
    fetch_calls = {"n": 0}

    @runner.node("fetch", input=Topic, output=Sources)
    async def fetch(state: Topic) -> dict[str, Any]:
        fetch_calls["n"] += 1
        if fetch_calls["n"] <= 2:
            raise TimeoutError("search API timed out")  # transient: retried with backoff
        return {"topic": state.topic, "urls": [f"https://example.org/{state.topic}/{i}" for i in range(3)]}

    @runner.node("summarize", input=Sources, output=Summary)
    async def summarize(state: Sources, ctx: dict[str, Any]) -> tuple[dict[str, Any], int, int, str]:
        text = f"{len(state.urls)} sources agree that {state.topic} needs reliable pipelines."
        return (
            {"topic": state.topic, "summary": text, "word_count": len(text.split())},
            1200,
            300,
            ctx.get("_stroma_model", ctx["model"]),  # the fallback model once spend crosses it
        )

    @runner.node("publish", input=Summary, output=Post)
    async def publish(state: Summary) -> dict[str, Any]:
        if crash_in_publish:
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-node: nothing is committed
        return {"title": state.topic.title(), "body": state.summary, "published": True}

    return runner, [fetch, summarize, publish]


async def show_contract_boundary(store: SqliteStore, trace_dir: Path) -> Path:
    """A node that returns the wrong shape is stopped at its boundary."""
    runner = StromaRunner.quick(store=store, run_id="demo-contract-1").with_trace_dir(trace_dir)

    @runner.node("summarize", input=Sources, output=Summary)
    async def bad_summarize(state: Sources) -> dict[str, Any]:
        return {"summary": "forgot the topic", "word_count": "many"}

    result = await runner.run([bad_summarize], Sources(topic="x", urls=[]))
    print(f"  status: {result.status}  (terminal: not retried, attempts={len(result.trace)})")
    for event in result.trace.failures():
        print(f"  caught at the boundary -> {event.failure_message}")
    return result.save(trace_dir / "contract-violation.json")


def crash_worker(db: Path, trace_dir: Path) -> int:
    """Run the pipeline in a child process that SIGKILLs itself inside 'publish'."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(db), str(trace_dir)], env=env, check=False, timeout=120
    )
    return proc.returncode


async def worker(db: Path, trace_dir: Path) -> None:
    """The child: runs until it kills itself."""
    runner, nodes = build(SqliteStore(db), trace_dir, crash_in_publish=True)
    await runner.run(nodes, Topic(topic="agent reliability"))


def _viewer_command() -> str:
    """``stroma-view`` as this interpreter's environment has it (e.g. ``.venv/bin/stroma-view``)."""
    script = Path(sys.executable).parent / "stroma-view"
    if not script.exists():
        return "stroma-view"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


async def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.jsonl"), *out.glob("*.json"), *out.glob("demo.db*")]:
        old.unlink()
    db = out / "demo.db"
    store = SqliteStore(db)

    print("1) contract boundary: bad output is caught where it happens")
    await show_contract_boundary(store, out)

    print("\n2) crash: the pipeline runs in a worker that is killed with SIGKILL inside 'publish'")
    code = crash_worker(db, out)
    print(f"  worker exit code: {code} (killed by signal {-code})" if code < 0 else f"  worker exit: {code}")
    crashed_files = sorted(out.glob(f"{RUN_ID}-*.jsonl"))
    if not crashed_files:
        print("  the worker left no run file", file=sys.stderr)
        return 1
    crashed = load_run(crashed_files[0])
    delays = [f"{e.delay_s:.3f}s" for e in crashed.events if isinstance(e, RetryScheduled)]
    print(f"  before dying it retried 'fetch' {len(delays)} times, after {', '.join(delays)}")
    print(f"  run file left behind: {crashed_files[0].name} (finished: {crashed.finished})")

    print("\n3) resume: a new process continues the same run id from its last checkpoint")
    runner, nodes = build(SqliteStore(db), out)
    resumed = await runner.resume(nodes, Topic(topic="agent reliability"))
    print(f"  status: {resumed.status}")
    print(f"  final state: {resumed.final_state}")
    restored = [e.node_id for e in resumed.trace.log if isinstance(e, NodeRestored)]
    print(f"  restored from checkpoint (not run again): {', '.join(restored)}")
    resumed_file = resumed.save(out / "resumed.json")

    print("\n4) what the resume changed, node by node")
    comparison = compare_runs(crashed, resumed)
    for node in comparison.nodes:
        print(f"  {node.node_id:<10} {node.change.value}")
    print(
        f"  status {comparison.a_status} -> {comparison.b_status}; this run's tokens "
        f"{comparison.tokens_delta:+d}; cost {comparison.cost_usd_delta:+.6f} USD"
    )

    # Each run is streamed to a .jsonl by the trace dir (what a kill leaves behind) and the
    # finished ones are also saved as a complete .json; stroma-view lists each run once.
    print("\nrun files:")
    for path in sorted([*out.glob("*.json"), *out.glob("*.jsonl")]):
        print(f"  {path}")
    print(f"\nopen them: {_viewer_command()} {out}    (or diff: {crashed_files[0]} {resumed_file})")
    ok = resumed.status is RunStatus.RESUMED and restored == ["fetch", "summarize"]
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        asyncio.run(worker(Path(sys.argv[2]), Path(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("runs"), help="folder for run files (default: runs)")
    sys.exit(asyncio.run(main(parser.parse_args().out)))
