"""Three Celery workers on a real RabbitMQ, one killed with SIGKILL mid-run: every run completes,
no committed node runs twice, and the killed worker's run is resumed where it stopped (its run
files and its spans say so).

The pipeline and the worker app are in worker_app.py; the workers are subprocesses of this test
(``-P solo``: the worker process is the one running the task, so SIGKILL takes the run with it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stroma import CheckpointManager, RedisStore, RunStatus
from stroma.runfile import load_run
from stroma_otel import attributes as attr
from stroma_otel._export import export_run

pytest.importorskip("celery")

ROOT = Path(__file__).resolve().parents[2]
RUNS = 200
WORKERS = 3
DEADLINE_S = 150.0  # the lease of the killed run lapses after 30 s; everything else takes seconds
POLL_S = 0.1


class Workers:
    """Celery worker subprocesses sharing one queue; each logs to its own file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start one solo-pool worker named ``name``."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the worker writes it
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "tests.celery.worker_app", "worker",
                "-P", "solo", "-c", "1", "-n", f"{name}@%h", "-l", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT, env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """Warm shutdown (SIGTERM) of every worker still up; SIGKILL after 20 s."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def tails(self) -> str:
        """The end of every worker's log and what each process ran, for a failure message."""
        logs = "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )
        ledger = Path(self.env["STROMA_TEST_LEDGER"])
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        by_pid = Counter(line.split()[-1] for line in lines)
        alive = {proc.pid: proc.poll() for proc in self.procs}
        return f"{logs}\n--- node executions by pid: {dict(by_pid)}; exit codes by pid: {alive}"


def _wait_for(what: str, check: Any, workers: Workers) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE_S:g} s waiting for {what}\n{workers.tails()}")
        time.sleep(POLL_S)  # polling other processes; nothing here waits on a timing


@pytest.fixture
def env(tmp_path: Path, rabbitmq_url: str, redis_url: str, unique: str) -> dict[str, str]:
    """The worker app's settings: a queue and key prefix of this test's own."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STROMA_TEST_BROKER": rabbitmq_url,
        "STROMA_TEST_QUEUE": f"stroma-test-{unique}",
        "STROMA_TEST_REDIS": redis_url,
        "STROMA_TEST_PREFIX": f"stroma-test-{unique}",
        "STROMA_TEST_TRACE_DIR": str(tmp_path / "runs"),
        "STROMA_TEST_LEDGER": str(tmp_path / "ledger.txt"),
        "STROMA_TEST_HUNG": str(tmp_path / "hung.txt"),
        "STROMA_TEST_RETRY_S": "1",
    }


@pytest.fixture
def app_module(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """worker_app imported here with the workers' settings (to send messages and read the store)."""
    for key, value in env.items():
        if key.startswith("STROMA_TEST_"):
            monkeypatch.setenv(key, value)
    sys.modules.pop("tests.celery.worker_app", None)
    from tests.celery import worker_app

    queue = worker_app.app.amqp.queues[env["STROMA_TEST_QUEUE"]]
    with worker_app.app.connection_for_write() as conn:
        queue.bind(conn.default_channel).declare()
    try:
        yield worker_app
    finally:
        with worker_app.app.connection_for_write() as conn:
            queue.bind(conn.default_channel).delete()
        sys.modules.pop("tests.celery.worker_app", None)


def _consumers(app: Any, queue: str) -> int:
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).consumer_count)


def _check_ledger(
    ledger: Path, nodes: tuple[str, ...], finals: dict[str, Any], hung: str, victim_pid: int
) -> None:
    """Every committed node ran exactly once; the only lost execution is the victim's n3."""
    # every execution of a node, committed or not, fsynced before the node returned
    executions: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for line in ledger.read_text().splitlines():
        run_id, node_id, token, pid = line.split()
        executions[run_id, node_id].append((token, int(pid)))
    for run_id, final in finals.items():
        assert final is not None
        assert len(final.tokens) == len(nodes)
        for node_id, committed in zip(nodes, final.tokens, strict=True):
            ran = executions[run_id, node_id]
            assert ran[-1][0] == committed, (run_id, node_id, ran)  # nothing ran after the commit
            lost = ran[:-1]  # executions whose output no commit kept
            if run_id == hung and node_id == "n3":
                assert [pid for _, pid in lost] == [victim_pid]  # the one the kill interrupted
            else:
                assert lost == [], (run_id, node_id, ran)
    for node_id in ("n1", "n2"):  # committed by the victim before the kill, and kept
        assert [pid for _, pid in executions[hung, node_id]] == [victim_pid]


def test_three_workers_one_killed_every_run_completes_once(
    env: dict[str, str], app_module: Any, tmp_path: Path, unique: str
) -> None:
    """200 runs on three workers, one SIGKILLed inside a node: all complete, each committed node
    ran exactly once, and the killed run resumed after its last committed node."""
    workers = Workers(env, tmp_path)
    try:
        # The victim consumes alone until it stops inside its third run's n3 (so it has finished
        # two runs by then, whatever the other workers' start-up time); then the others start.
        victim = workers.start("victim", STROMA_TEST_HANG_AT="3")
        queue = env["STROMA_TEST_QUEUE"]
        _wait_for(f"the victim consuming {queue}", lambda: _consumers(app_module.app, queue) == 1, workers)

        run_ids = [f"{unique}-{i:03d}" for i in range(RUNS)]
        for run_id in run_ids:
            app_module.pipeline.start({"run": run_id}, run_id=run_id)

        hung_file = Path(env["STROMA_TEST_HUNG"])
        hung = _wait_for("the victim to stop inside n3", lambda: hung_file.exists() and hung_file.read_text(),
                         workers)
        for i in range(WORKERS - 1):
            workers.start(f"w{i}")
        _wait_for(f"{WORKERS} consumers on {queue}", lambda: _consumers(app_module.app, queue) == WORKERS,
                  workers)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()

        store = RedisStore(env["STROMA_TEST_REDIS"], key_prefix=env["STROMA_TEST_PREFIX"])
        manager = CheckpointManager(store)
        with asyncio.Runner() as loop:

            def progress_of_all() -> dict[str, Any]:
                return {r: loop.run(manager.load_progress(r)) for r in run_ids}

            def all_finished() -> bool:
                return all(p is not None and p.status != "running" for p in progress_of_all().values())

            _wait_for("every run to finish", all_finished, workers)
            progress = progress_of_all()
            finals = {r: loop.run(manager.resume(r, "n5", app_module.Trail)) for r in run_ids}
    finally:
        workers.stop()

    statuses = Counter(p.status for p in progress.values() if p is not None)
    assert statuses == {RunStatus.COMPLETED: RUNS - 1, RunStatus.RESUMED: 1}, statuses
    assert progress[hung].status == RunStatus.RESUMED

    _check_ledger(Path(env["STROMA_TEST_LEDGER"]), app_module.NODES, finals, hung, victim.pid)

    # The killed run's files: the attempt cut short by the kill, then the resume after n2.
    records = [load_run(p) for p in (tmp_path / "runs").glob("*.jsonl")]
    attempts = sorted((r for r in records if r.header.run_id == hung), key=lambda r: r.header.started_at or 0)
    assert [(r.header.resumed_from, r.header.status) for r in attempts] == [
        (None, None), ("n3", RunStatus.RESUMED)
    ]
    assert {r.header.run_id for r in records} == set(run_ids)

    # ... and as spans (the run file replayed through the recorder the live hooks use).
    exporter = InMemorySpanExporter()
    export_run(attempts[1], exporter)
    spans = exporter.get_finished_spans()
    (run_span,) = [s for s in spans if s.attributes and attr.RUN_RESUMED_FROM in s.attributes]
    assert run_span.attributes is not None
    assert run_span.attributes[attr.RUN_RESUMED_FROM] == "n3"
    restored = sorted(
        str(s.attributes[attr.NODE_ID])
        for s in spans
        if s.attributes and s.attributes.get(attr.NODE_RESTORED)
    )
    assert restored == ["n1", "n2"]
