"""Run files: save, stream, load (including killed runs) and clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stroma import RunFileError, RunStatus, StromaRunner, load_run
from stroma.events import AttemptFailed, NodeRestored, RunFinished, RunStarted
from stroma.testing import FakeClock

from .conftest import Count


def runner_with_failure(tmp_path: Path | None = None) -> tuple[StromaRunner, list[Any]]:
    """Two nodes; the second fails once (recoverable), then succeeds."""
    runner = StromaRunner.quick(run_id="rf")
    if tmp_path is not None:
        runner.with_trace_dir(tmp_path)
    calls = {"n": 0}

    @runner.node("first", input=Count, output=Count)
    async def first(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    @runner.node("second", input=Count, output=Count)
    async def second(state: Count) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("later")
        return {"n": state.n * 10}

    return runner, [first, second]


async def test_saved_run_loads_back_with_the_same_events(clock: FakeClock, tmp_path: Path) -> None:
    """result.save writes a versioned document that load_run reads into the same events and attempts."""
    runner, nodes = runner_with_failure()
    result = await runner.run(nodes, Count(n=1))
    path = result.save(tmp_path / "run.json")
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"]) == ("stroma.run", 1)
    record = load_run(path)
    assert record.header.status == "COMPLETED"
    assert record.header.pipeline == ("first", "second")
    assert record.events == result.trace.log
    assert [a.model_dump() for a in record.attempts()] == [e.model_dump() for e in result.trace]
    assert not list(tmp_path.glob(".run.json.*"))  # the temp file was renamed away


async def test_redacted_save_strips_states_and_messages(clock: FakeClock, tmp_path: Path) -> None:
    """save(redact=True) keeps the shape of the run but not its data."""
    runner, nodes = runner_with_failure()
    result = await runner.run(nodes, Count(n=12345))
    text = result.save(tmp_path / "shared.json", redact=True).read_text()
    assert "12345" not in text
    assert "later" not in text
    assert load_run(tmp_path / "shared.json").header.status == "COMPLETED"


async def test_trace_dir_streams_a_jsonl_as_the_run_goes(clock: FakeClock, tmp_path: Path) -> None:
    """with_trace_dir writes header + one line per event; it loads to the same events."""
    runner, nodes = runner_with_failure(tmp_path)
    result = await runner.run(nodes, Count(n=1))
    files = list(tmp_path.glob("rf-*.jsonl"))
    assert len(files) == 1
    lines = files[0].read_text().splitlines()
    assert json.loads(lines[0])["format"] == "stroma.run"
    assert len(lines) == 1 + len(result.trace.log)
    record = load_run(files[0])
    assert record.events == result.trace.log
    assert record.header.status == "COMPLETED"
    assert not record.truncated


def test_a_run_killed_mid_write_loads_its_valid_prefix(tmp_path: Path) -> None:
    """A SIGKILLed run leaves a .jsonl whose cut-off last line is dropped and flagged as truncated."""
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        from pydantic import BaseModel
        from stroma import StromaRunner

        class S(BaseModel):
            n: int

        runner = StromaRunner.quick(run_id="killed").with_trace_dir(sys.argv[1])

        @runner.node("a", input=S, output=S)
        async def a(state):
            return {"n": state.n + 1}

        @runner.node("boom", input=S, output=S)
        async def boom(state):
            path = [p for p in os.listdir(sys.argv[1]) if p.endswith(".jsonl")][0]
            with open(os.path.join(sys.argv[1], path), "a") as fh:
                fh.write('{"type": "AttemptSucc')  # a line cut off by the kill
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(runner.run([a, boom], S(n=0)))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == -9, proc.stderr
    (path,) = tmp_path.glob("killed-*.jsonl")
    record = load_run(path)
    assert record.truncated
    assert record.truncated_at_line == len(path.read_text().splitlines())
    assert record.status is None  # the run never finished
    assert [e.kind for e in record.events][-1] == "AttemptStarted"
    assert [a.node_id for a in record.attempts()] == ["a"]


async def test_plain_to_json_attempt_lists_load(clock: FakeClock, tmp_path: Path) -> None:
    """The published ExecutionTrace.to_json() list loads as a run with its attempts."""
    runner, nodes = runner_with_failure()
    result = await runner.run(nodes, Count(n=1))
    path = tmp_path / "attempts.json"
    path.write_text(result.trace.to_json())
    record = load_run(path)
    assert [(a.node_id, a.attempt, a.failure) for a in record.attempts()] == [
        (e.node_id, e.attempt, e.failure) for e in result.trace
    ]
    assert record.header.pipeline == ("first", "second")
    assert isinstance(record.events[0], RunStarted)
    assert any(isinstance(e, AttemptFailed) for e in record.events)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = '{"format": "stroma.run", "version": 1, "header": {"run_id": "r"}}'
STARTED = '{"type": "RunStarted", "run_id": "r", "ts": 1.0, "pipeline": ["a"]}'


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("missing.json", None, "missing.json: no such file"),
        ("bad.json", "{not json", "bad.json, line 1: not valid JSON"),
        ("other.json", '{"hello": 1}', "other.json: not a Stroma run file"),
        (
            "newer.json",
            '{"format": "stroma.run", "version": 99, "header": {}, "events": []}',
            "newer.json, field 'version': written by a newer Stroma (run file format version 99",
        ),
        (
            "event.jsonl",
            HEADER + "\n" + STARTED + '\n{"type": "AttemptStarted", "run_id": "r", "ts": 2.0}\n',
            "event.jsonl, line 3, field 'node_id': event does not validate",
        ),
        (
            "type.jsonl",
            HEADER + "\n" + '{"type": "RunStarted", "run_id": "r", "ts": "yesterday", "pipeline": []}\n',
            "type.jsonl, line 2, field 'ts': event does not validate: expected int or float, got str",
        ),
        (
            "middle.jsonl",
            HEADER + "\n{broken\n" + STARTED + "\n",
            "middle.jsonl, line 2: not valid JSON",
        ),
        (
            "unknown.json",
            '{"format": "stroma.run", "version": 1, "header": {"run_id": "r"}, "events": [{"type": "Nope"}]}',
            "unknown.json, field 'events[0].type': event does not validate: unknown event type 'Nope'",
        ),
        ("empty.jsonl", "", "empty.jsonl, line 1: file is empty"),
    ],
)
def test_bad_run_files_raise_errors_naming_file_line_and_field(
    tmp_path: Path, name: str, text: str | None, expected: str
) -> None:
    """Each kind of malformed input is a RunFileError that says where and what."""
    path = tmp_path / name if text is None else _write(tmp_path, name, text)
    with pytest.raises(RunFileError) as info:
        load_run(path)
    assert str(info.value).startswith(
        str(tmp_path / expected.split(":", maxsplit=1)[0].split(",", maxsplit=1)[0])
    )
    assert expected.split(name, 1)[1] in str(info.value)


async def test_resumed_run_file_records_restored_nodes(clock: FakeClock, tmp_path: Path) -> None:
    """A resumed run's file says where it resumed from and which nodes were restored."""
    runner, nodes = runner_with_failure()
    runner.config.policy_map = {}
    failed = await runner.run(nodes, Count(n=1))
    assert failed.status is RunStatus.PARTIAL
    resumed = await runner.resume(nodes, Count(n=1))
    record = load_run(resumed.save(tmp_path / "resumed.json"))
    assert record.header.resumed_from == "second"
    restored = [e for e in record.events if isinstance(e, NodeRestored)]
    assert [(e.node_id, e.output_state) for e in restored] == [("first", {"n": 2})]
    assert isinstance(record.events[-1], RunFinished)
    assert record.header.status == "RESUMED"
