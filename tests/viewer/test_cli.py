"""The real ``stroma-view`` command in a subprocess: headless output, exit codes, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

STROMA_VIEW = [sys.executable, "-m", "viewer"]


def run_cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``stroma-view`` with ``args`` (the timeout only guards against a hang)."""
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [*STROMA_VIEW, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_console_script_is_installed() -> None:
    """The ``stroma-view`` console script exists next to the interpreter and prints help."""
    script = Path(sys.executable).parent / "stroma-view"
    assert script.exists()
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0
    assert "--summary" in out.stdout


def test_summary_of_a_failed_run_exits_one(fixtures: Path) -> None:
    """``--summary`` prints the header and failures, and exits 1 for a run that failed."""
    out = run_cli("--summary", fixtures / "failed.json")
    assert out.returncode == 1, out.stderr
    assert "doc-run-42 · FAILED · 5 nodes · 7 attempts (4 failed) · 1 failed node" in out.stdout
    assert "classify #1 stroma.contracts.ContractViolation [TERMINAL" in out.stdout


def test_summary_of_a_completed_run_exits_zero(fixtures: Path) -> None:
    """A resumed (completed) run's summary exits 0."""
    out = run_cli("--summary", fixtures / "resumed.json")
    assert out.returncode == 0, out.stderr
    assert "RESUMED" in out.stdout
    assert "resumed from node tag" in out.stdout


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_diff_formats_and_exit_codes(fixtures: Path, fmt: str) -> None:
    """``--diff`` prints the same labels in every format, in both argument orders (runs are ordered
    by start time); a fixing resume exits 0, a newer run that fails again exits 1."""
    better = run_cli("--diff", fixtures / "failed.json", fixtures / "resumed.json", "--format", fmt)
    assert better.returncode == 0, better.stderr
    if fmt == "json":
        data = json.loads(better.stdout)
        assert [n["label"] for n in data["nodes"]][2:] == [
            "re-ran, different output",
            "fixed",
            "newly reached",
        ]
    else:
        assert "re-ran, different output" in better.stdout
        assert "fixed" in better.stdout
    backwards = run_cli("--diff", fixtures / "resumed.json", fixtures / "failed.json", "--format", fmt)
    assert backwards.returncode == 0, backwards.stderr
    if fmt == "json":
        assert json.loads(backwards.stdout) | {"reordered": None} == data | {"reordered": None}
    else:
        assert "ordered by start time, not argument order" in backwards.stdout
        assert backwards.stdout.split("\n")[2:] == better.stdout.split("\n")[2:]
    worse = run_cli(
        "--diff", tmp_path_factory_newer_failed(fixtures), fixtures / "resumed.json", "--format", fmt
    )
    assert worse.returncode == 1
    if fmt != "json":
        assert "NEWER RUN IS WORSE: ended FAILED after RESUMED" in worse.stdout


def tmp_path_factory_newer_failed(fixtures: Path) -> Path:
    """failed.json moved a day later: a newer run than resumed.json that failed again."""
    doc = json.loads((fixtures / "failed.json").read_text(encoding="utf-8"))
    for e in doc["events"]:
        e["ts"] += 86_400
    doc["header"]["started_at"] += 86_400
    out = Path(tempfile.mkdtemp()) / "failed-again.json"
    out.write_text(json.dumps(doc), encoding="utf-8")
    return out


def test_summary_json_of_truncated_run(fixtures: Path) -> None:
    """A truncated .jsonl summarises its valid prefix, says where it was cut, and exits 1."""
    out = run_cli("--summary", fixtures / "truncated.jsonl", "--format", "json")
    data = json.loads(out.stdout)
    assert (data["truncated"], data["truncated_at_line"], out.returncode) == (True, 24, 1)


def _bad_files(tmp: Path, fixtures: Path) -> dict[str, tuple[Path, str]]:
    good = (fixtures / "failed.json").read_text(encoding="utf-8")
    doc = json.loads(good)
    at = next(i for i, e in enumerate(doc["events"]) if e["type"] == "AttemptStarted")
    doc["events"][at]["attempt"] = "two"
    newer = json.loads(good)
    newer["version"] = 7
    lines = [json.dumps({k: doc[k] for k in ("format", "version", "header")})]
    lines += [json.dumps(e) for e in json.loads(good)["events"][:5]]
    broken_middle = [*lines[:3], '{"type": "NodeStarted", "run_id": ', *lines[3:]]
    files = {
        "missing": ("missing.json", None, "no such file"),
        "not_json": ("garbage.json", "this is not json", "not valid JSON"),
        "not_a_run": ("package.json", '{"name": "x", "version": "1.0"}', "not a Stroma run file"),
        "newer": ("newer.json", json.dumps(newer), "newer Stroma"),
        "bad_event": ("bad_event.json", json.dumps(doc), "does not validate"),
        "bad_line": ("bad_line.jsonl", "\n".join(broken_middle) + "\n", "line 4"),
        "empty": ("empty.jsonl", "", "empty"),
    }
    out = {}
    for key, (name, content, needle) in files.items():
        path = tmp / name
        if content is not None:
            path.write_text(content, encoding="utf-8")
        out[key] = (path, needle)
    return out


@pytest.mark.parametrize(
    "case", ["missing", "not_json", "not_a_run", "newer", "bad_event", "bad_line", "empty"]
)
@pytest.mark.parametrize("mode", ["tui", "summary"])
def test_bad_input_is_a_clear_message_not_a_traceback(
    tmp_path: Path, fixtures: Path, case: str, mode: str
) -> None:
    """Bad input exits 2 with one paragraph naming the file (and line), no traceback, no hang."""
    path, needle = _bad_files(tmp_path, fixtures)[case]
    args = ["--summary", path] if mode == "summary" else [path]
    out = run_cli(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout
    message = out.stderr.strip()
    assert needle in message
    assert path.name in message
    assert len(message.splitlines()) == 1
    if case not in ("missing",):
        assert "line" in message


def test_tui_without_a_terminal_says_so_instead_of_hanging(fixtures: Path) -> None:
    """With no terminal attached, the TUI mode refuses with a hint to use --summary."""
    out = run_cli(fixtures / "failed.json")
    assert out.returncode == 2
    assert "--summary" in out.stderr


def test_diff_with_a_missing_file_names_it(tmp_path: Path, fixtures: Path) -> None:
    """``--diff`` with one missing file names that file and exits 2."""
    out = run_cli("--diff", fixtures / "failed.json", tmp_path / "nope.json")
    assert out.returncode == 2
    assert "nope.json" in out.stderr
    assert "Traceback" not in out.stderr


def test_usage_errors_exit_two(fixtures: Path) -> None:
    """Three paths, or ``--diff`` with one, are usage errors that say what to give."""
    three = run_cli(fixtures / "failed.json", fixtures / "failed.json", fixtures / "failed.json")
    assert three.returncode == 2
    assert "one run file, two run files" in three.stderr
    one = run_cli("--diff", fixtures / "failed.json")
    assert one.returncode == 2
    assert "two run files" in one.stderr


def test_a_reader_that_goes_away_is_not_a_traceback(fixtures: Path) -> None:
    """`stroma-view --summary big.json | head -1`: the closed pipe ends the command quietly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "viewer", "--summary", str(fixtures / "big.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before anything is written
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err
    assert proc.returncode == 0


def test_diff_exit_status_follows_time_order_and_final_failures(fixtures: Path) -> None:
    """A killed run then a newer FAILED one exits 1 in either argument order; the reverse story
    (failed, then a resume that recovers with retries) exits 0 in either order."""
    newer_failed = tmp_path_factory_newer_failed(fixtures)
    for args in ((fixtures / "truncated.jsonl", newer_failed), (newer_failed, fixtures / "truncated.jsonl")):
        out = run_cli("--diff", *args)
        assert out.returncode == 1, out.stdout
        assert "INTERRUPTED → " in out.stdout
        assert "ended FAILED after INTERRUPTED" in out.stdout
    for args in (
        (fixtures / "failed.json", fixtures / "resumed.json"),
        (fixtures / "resumed.json", fixtures / "failed.json"),
    ):
        out = run_cli("--diff", *args, "--format", "json")
        data = json.loads(out.stdout)
        assert (out.returncode, data["worse"], data["delta"]["final_failures"]) == (0, False, -1)
