"""examples/langgraph_adapter.py runs end to end and leaves run files the viewer can open."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stroma import load_run
from tests.adapters.conftest import framework

ROOT = Path(__file__).parents[2]


def run_script(path: Path, *args: str) -> str:
    """Run a Python script with this checkout importable; its stdout (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_langgraph_example_retries_prices_and_stops_a_violation(tmp_path: Path) -> None:
    """The example retries 'search', prices 'summarize', catches the violation and writes two runs."""
    framework("langgraph")
    out = run_script(ROOT / "examples" / "langgraph_adapter.py", "--out", str(tmp_path))
    assert "summary: 3 documents found" in out
    assert "status: COMPLETED; retried 'search' 1 time(s)" in out
    assert "tokens: 340" in out
    assert (
        "caught at the boundary -> Contract violation for 'summarize' (output): summary: Field required"
        in out
    )
    assert "status: FAILED" in out
    statuses = sorted(load_run(path).header.status or "" for path in tmp_path.glob("*.jsonl"))
    assert statuses == ["COMPLETED", "FAILED"]


def test_readme_adapter_section_runs_and_prints_what_it_says(tmp_path: Path) -> None:
    """The README's LangGraph snippet runs as written and prints the output its comments show."""
    framework("langgraph")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using Stroma inside LangGraph / DeepAgents / CrewAI", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme_adapter.py"
    script.write_text(code, encoding="utf-8")
    assert run_script(script).splitlines() == [
        "{'question': 'why?', 'answer': 'WHY?'}",
        "COMPLETED 15",
    ]
