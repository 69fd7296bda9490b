"""The benchmark scripts run and print their tables (``--quick`` sizes; no timing assertions:
the targets live in the scripts, whose numbers depend on the machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BENCHMARKS = ROOT / "benchmarks"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _has_table(out: str, *headers: str) -> None:
    lines = out.splitlines()
    header = next((line for line in lines if line.startswith("| ") and headers[0] in line), None)
    assert header is not None, out
    for name in headers:
        assert name in header, (name, out)
    assert any(line.startswith("|--") for line in lines), out
    assert "machine: nproc=" in out, out


@pytest.mark.timeout(300)
def test_pipeline_prints_its_table() -> None:
    out = _run("pipeline.py", "--repeats", "1")
    _has_table(out, "N", "floor µs/node", "stroma µs/node", "stroma/floor")
    assert "|  10 |" in out, out
    assert "| 100 |" in out, out


@pytest.mark.timeout(300)
def test_pipeline_with_langgraph_prints_its_ratio() -> None:
    pytest.importorskip("langgraph")
    out = _run("pipeline.py", "--repeats", "1", "--sizes", "10")
    _has_table(out, "N", "langgraph µs/node", "lg+ckpt µs/node", "stroma/lg")


@pytest.mark.timeout(300)
def test_concurrency_prints_its_table_and_verdict() -> None:
    out = _run("concurrency.py", "--repeats", "1")
    _has_table(out, "runs x nodes", "floor µs/node", "stroma µs/node", "stroma/floor")
    assert "PASS" in out or "FAIL" in out, out


@pytest.mark.timeout(300)
def test_memory_prints_both_tables() -> None:
    out = _run("memory.py")
    _has_table(out, "N", "floor B/node", "stroma result B/attempt")
    assert "floor peak KiB" in out, out
    assert "stroma peak KiB" in out, out
    assert "PASS" in out or "FAIL" in out, out
