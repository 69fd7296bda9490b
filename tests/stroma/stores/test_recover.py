"""recover(): a fresh process finds the runs a killed worker left behind and finishes them; two
recovering processes at once resume each run exactly once; committed nodes never run again."""

from __future__ import annotations

import asyncio
import collections
import http.server
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stroma import CheckpointManager
from tests.stroma.stores.test_kill9 import Target, target  # noqa: F401 - the kill -9 test's fixture

WORKER = Path(__file__).with_name("recover_pipeline.py")
RUNS = 6
STORES = ["sqlite", "redis", "postgres"]


def argv(where: Target, mode: str, prefix: str, ledger: Path, charge_url: str) -> list[str]:
    """The recover pipeline's command line for the storage ``where``."""
    return [
        sys.executable, str(WORKER), mode, "--store", where.kind, "--target", where.target,
        "--prefix", prefix, "--ledger", str(ledger), "--runs", str(RUNS),
        "--key-prefix", where.key_prefix, "--table", where.table, "--charge-url", charge_url,
    ]  # fmt: skip


class Provider(http.server.ThreadingHTTPServer):
    """A loopback 'payment provider' that records every idempotency key it is charged with."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        keys = self.keys

        class Charge(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                keys.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"charged")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Charge)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """Where nodes send their charges."""
        return f"http://127.0.0.1:{self.server_address[1]}/charge"


@pytest.mark.parametrize("kind", STORES)
def test_recover_finishes_a_killed_workers_runs_once(
    kind: str, target: Target, tmp_path: Path, unique: str  # noqa: F811 - the fixture
) -> None:
    """A worker is SIGKILLed with six runs inside node b (a committed, b already charged a loopback
    payment provider); two processes then call recover() at once: every run completes, each is
    recovered by exactly one process, node a never runs again, b and c run once more, and the
    provider saw one idempotency key per run's b (charged twice, de-duplicable)."""
    ledger = tmp_path / "ledger.txt"
    prefix = f"rec-{unique}"
    provider = Provider()
    worker = subprocess.Popen(
        argv(target, "work", prefix, ledger, provider.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert worker.stdout is not None
    ready = worker.stdout.readline()
    assert ready == b"ready\n", worker.stderr.read() if worker.stderr else ready
    worker.kill()
    worker.wait(timeout=30)
    run_ids = [f"{prefix}-{i}" for i in range(RUNS)]
    for run_id in run_ids:
        target.expire_lease(run_id)  # what each lease's TTL does after the kill (SQLite sees the dead pid)
    recoverers = [
        subprocess.Popen(
            argv(target, "recover", prefix, ledger, provider.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    recovered: list[str] = []
    for proc in recoverers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        results = json.loads(out.decode().strip().splitlines()[-1])
        for run_id, (status, final) in results.items():
            assert status == "RESUMED"
            assert final["path"] == ["a", "b", "c"]
            recovered.append(run_id)
    assert sorted(recovered) == sorted(run_ids)  # every run, each by exactly one process
    starts = collections.Counter(tuple(line.split()[1:3]) for line in ledger.read_text().splitlines())
    for run_id in run_ids:
        assert starts[(run_id, "a")] == 1  # committed before the kill: never again
        assert starts[(run_id, "b")] == 2  # cut off by the kill, then recovered (at least once)
        assert starts[(run_id, "c")] == 1

    async def statuses() -> list[str | None]:
        store = target.store()
        try:
            manager = CheckpointManager(store)
            found = [await manager.load_progress(r) for r in run_ids]
        finally:
            if hasattr(store, "aclose"):
                await store.aclose()
        return [p.status if p is not None else None for p in found]

    assert asyncio.run(statuses()) == ["RESUMED"] * RUNS
    provider.shutdown()
    # charged twice (before the kill, and by the recovery), always with one key: de-duplicable
    charges = collections.Counter(provider.keys)
    assert charges == {f"{run_id}:b": 2 for run_id in run_ids}


@pytest.mark.parametrize("kind", STORES)
def test_a_worker_stopped_past_its_lease_commits_nothing_after_the_takeover(
    kind: str, target: Target, tmp_path: Path, unique: str  # noqa: F811 - the fixture
) -> None:
    """A worker SIGSTOPped inside node b past its lease; another process recovers the run and
    finishes it; the stopped worker, continued, has its commit refused and ends FAILED without
    running c: after the takeover every node ran exactly once."""
    ledger = tmp_path / "ledger.txt"
    prefix = f"stop-{unique}"
    provider = Provider()
    worker = subprocess.Popen(
        argv(target, "pause", prefix, ledger, provider.url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert worker.stdout is not None
    assert worker.stdin is not None
    assert worker.stdout.readline() == b"in-b\n"
    worker.send_signal(signal.SIGSTOP)
    try:
        target.expire_lease(f"{prefix}-0")  # its lease lapses while it is stopped
        recover = argv(target, "recover", prefix, ledger, provider.url)
        recoverer = subprocess.run(recover, capture_output=True, timeout=120, check=False)
        assert recoverer.returncode == 0, recoverer.stderr.decode()
        recovered = json.loads(recoverer.stdout.decode().strip().splitlines()[-1])
        assert recovered == {f"{prefix}-0": ["RESUMED", {"n": 1, "path": ["a", "b", "c"]}]}
    finally:
        worker.send_signal(signal.SIGCONT)
    out, err = worker.communicate(b"go\n", timeout=60)
    assert json.loads(out.decode().strip().splitlines()[-1]) == {"status": "FAILED"}, err.decode()
    starts = [line.split() for line in ledger.read_text().splitlines()]  # pid run node attempt
    by_worker = collections.Counter(node for pid, _, node, _ in starts if int(pid) == worker.pid)
    by_others = collections.Counter(node for pid, _, node, _ in starts if int(pid) != worker.pid)
    assert by_worker == {"a": 1, "b": 1}  # c never ran in the stopped worker
    assert by_others == {"b": 1, "c": 1}  # the takeover ran each remaining node once
    provider.shutdown()
