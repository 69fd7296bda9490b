"""The README's demo runs end to end and leaves run files the viewer can open."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stroma import compare_runs, load_run

ROOT = Path(__file__).parents[2]


def test_demo_retries_catches_crashes_resumes_and_writes_run_files(tmp_path: Path) -> None:
    """examples/demo.py shows each failure mode, resumes the killed run and saves loadable run files."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "caught at the boundary -> Contract violation for 'summarize' (output)" in out
    assert "worker exit code: -9" in out
    assert "retried 'fetch' 2 times" in out
    assert "status: RESUMED" in out
    assert "restored from checkpoint (not run again): fetch, summarize" in out
    assert "Traceback" not in proc.stderr

    crashed = load_run(sorted(tmp_path.glob("demo-research-1-*.jsonl"))[0])  # the first, killed run
    resumed = load_run(tmp_path / "resumed.json")
    assert not crashed.finished
    assert resumed.header.status == "RESUMED"
    labels = {n.node_id: n.change.name for n in compare_runs(crashed, resumed).nodes}
    assert labels["fetch"] == "RESTORED"
    assert labels["summarize"] == "RESTORED"
    assert labels["publish"] == "FIXED"  # interrupted by the kill, completed by the resume
    assert load_run(tmp_path / "contract-violation.json").header.status == "FAILED"
