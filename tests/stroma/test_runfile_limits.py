"""Run files as untrusted input: redaction, and the depth, size and value limits of the readers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from stroma import RunFileError, StromaRunner, load_run, runfile
from stroma.events import AttemptFailed, ContractViolated, RunStarted
from stroma.runfile import RunRecord, RunStream, save_run
from stroma.testing import FakeClock

from .conftest import Count

SECRET = "sekrit-4242"


class Code(BaseModel):
    """An output whose validator quotes the value it refuses."""

    code: str

    @field_validator("code")
    @classmethod
    def _known(cls, value: str) -> str:
        raise ValueError(f"code {value!r} is not a known code")


async def test_redacted_save_drops_validator_messages_that_quote_values(
    clock: FakeClock, tmp_path: Path
) -> None:
    """save(redact=True) keeps a contract violation's field paths but not its quoting message."""
    runner = StromaRunner.quick(run_id="redact")

    @runner.node("leak", input=Count, output=Code)
    async def leak(state: Count) -> dict[str, str]:
        return {"code": SECRET}

    result = await runner.run([leak], Count(n=1))
    violated = [e for e in result.trace.log if isinstance(e, ContractViolated)]
    assert violated
    assert SECRET not in str(violated[0].errors)  # the event itself carries no values
    failed = [e for e in result.trace.log if isinstance(e, AttemptFailed)]
    assert SECRET in failed[0].message  # the local message (and the rejected output) quote it
    text = result.save(tmp_path / "shared.json", redact=True).read_text(encoding="utf-8")
    assert SECRET not in text
    saved = [e for e in load_run(tmp_path / "shared.json").events if isinstance(e, ContractViolated)]
    assert saved[0].errors == (("code", "<redacted>"),)
    assert saved[0].field_paths == ("code",)


def test_redacted_save_drops_baggage_but_keeps_the_trace_link(tmp_path: Path) -> None:
    """W3C baggage is free-form user data: redact drops it; traceparent stays for linking."""
    carrier = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "baggage": f"user={SECRET}"}
    start = RunStarted(run_id="r", ts=1.0, pipeline=("a",), carrier=carrier, parent_carrier=carrier)
    path = save_run(RunRecord.from_events([start]), tmp_path / "r.json", redact=True)
    loaded = load_run(path).events[0]
    assert isinstance(loaded, RunStarted)
    assert SECRET not in path.read_text(encoding="utf-8")
    assert loaded.carrier == loaded.parent_carrier == {"traceparent": carrier["traceparent"]}


HEADER = {"format": "stroma.run", "version": 1, "header": {"run_id": "r", "pipeline": ["a"]}}
START = {"type": "RunStarted", "run_id": "r", "ts": 1.0, "pipeline": ["a"]}
NODE = {"type": "NodeStarted", "run_id": "r", "ts": 2.0, "node_id": "a"}


def write_jsonl(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` as a .jsonl (one per line, newline-terminated)."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def jsonl_with(third: str) -> list[str]:
    """A header, a RunStarted and ``third`` as line 3."""
    return [json.dumps(HEADER), json.dumps(START), third]


def deep(levels: int) -> str:
    """A NodeStarted line whose extra member nests ``levels`` lists."""
    start = '{"type":"NodeStarted","run_id":"r","ts":2.0,"node_id":"a","x":'
    return start + "[" * levels + "]" * levels + "}"


BAD_LINES: dict[str, tuple[str, str]] = {
    "100k-deep JSON": (deep(100_000), r"line 3: JSON nested too deeply"),
    "NaN literal": (json.dumps(NODE).replace("2.0", "NaN"), r"line 3: refused: NaN is not a number"),
    "Infinity literal": (json.dumps(NODE).replace("2.0", "-Infinity"), r"line 3: refused: -Infinity"),
    "overflowing float": (json.dumps(NODE).replace("2.0", "1e999"), r"line 3: refused: the number 1e999"),
    "too many digits": (json.dumps(NODE).replace("2.0", "9" * 5000), r"line 3: refused: "),
    "ts 1e300": (json.dumps(NODE).replace("2.0", "1e300"), r"line 3, field 'ts': .*1e\+300 is not a time"),
    "ts -1e300": (json.dumps(NODE).replace("2.0", "-1e300"), r"line 3, field 'ts': .*is not a time"),
    "lone surrogate node id": (
        json.dumps(NODE).replace('"a"', '"\\ud800"'),
        r"line 3, field 'node_id': .*lone surrogate",
    ),
    "errors item of 3": (
        json.dumps(
            {
                "type": "ContractViolated",
                "run_id": "r",
                "ts": 2.0,
                "node_id": "a",
                "attempt": 1,
                "direction": "output",
                "field_paths": ["x"],
                "error_count": 1,
                "errors": [[1, 2, 3]],
            }
        ),
        r"line 3, field 'errors\[0\]': event does not validate: expected a \[path, message\] pair",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_values_in_a_jsonl_give_a_run_file_error_naming_the_line(tmp_path: Path, case: str) -> None:
    """Each bad value is a RunFileError naming file, line and field, from load_run and the stream."""
    line, expected = BAD_LINES[case]
    path = write_jsonl(tmp_path / "bad.jsonl", jsonl_with(line))
    with pytest.raises(RunFileError, match=r"bad\.jsonl, " + expected):
        load_run(path)
    with pytest.raises(RunFileError, match=r"bad\.jsonl, " + expected):
        list(RunStream(path).batches())


@pytest.mark.parametrize("case", ["100k-deep JSON", "NaN literal", "ts 1e300", "lone surrogate node id"])
def test_bad_values_in_a_run_json_give_a_run_file_error(tmp_path: Path, case: str) -> None:
    """The same values inside a run.json are refused too, by load_run and by the stream's fallback."""
    line, _ = BAD_LINES[case]
    text = '{"format":"stroma.run","version":1,"header":{"run_id":"r"},"events":[' + json.dumps(START)
    path = tmp_path / "bad.json"
    path.write_text(text + "," + line + "]}", encoding="utf-8")
    with pytest.raises(RunFileError, match=r"bad\.json"):
        load_run(path)
    with pytest.raises(RunFileError, match=r"bad\.json"):
        list(RunStream(path).batches())


HEADER_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "version true": (lambda h: h.update(version=True), r"field 'version': format version is missing"),
    "pipeline not a list": (
        lambda h: h["header"].update(pipeline=5),
        r"field 'header.pipeline': header pipeline is not a list",
    ),
    "started_at 1e300": (
        lambda h: h["header"].update(started_at=1e300),
        r"field 'header.started_at': header started_at 1e\+300 is not a time",
    ),
    "lone surrogate run id": (
        lambda h: h["header"].update(run_id="\ud800"),
        r"field 'header.run_id': header run_id is not valid Unicode",
    ),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_bad_headers_are_refused_by_load_and_peek(tmp_path: Path, case: str) -> None:
    """A bool version, a non-list pipeline, an impossible start time, a lone surrogate id: refused."""
    change, expected = HEADER_CASES[case]
    head = json.loads(json.dumps(HEADER))
    change(head)
    path = write_jsonl(tmp_path / "bad.jsonl", [json.dumps(head), json.dumps(START)])
    for read in (load_run, runfile.peek_header):
        with pytest.raises(RunFileError, match=r"bad\.jsonl, line 1, " + expected):
            read(path)


def test_a_line_over_the_size_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .jsonl line longer than MAX_LINE_BYTES is refused by size, naming the line."""
    monkeypatch.setattr(runfile, "MAX_LINE_BYTES", 100)
    node = dict(NODE, parent="p" * 200)
    path = write_jsonl(tmp_path / "big.jsonl", [json.dumps(HEADER), json.dumps(START), json.dumps(node)])
    with pytest.raises(RunFileError, match=r"big\.jsonl, line 3: line is 2\d\d bytes, over the 100-byte"):
        load_run(path)


def test_a_truncated_last_line_still_loads_its_prefix_and_the_stream_follows_it(tmp_path: Path) -> None:
    """Read a line at a time, a cut-off last line is dropped, and poll picks it up once complete."""
    path = tmp_path / "live.jsonl"
    full = json.dumps(NODE)
    path.write_text(json.dumps(HEADER) + "\n" + json.dumps(START) + "\n" + full[:10], encoding="utf-8")
    record = load_run(path)
    assert (record.truncated, record.truncated_at_line, len(record.events)) == (True, 3, 1)
    stream = RunStream(path)
    assert sum(len(b) for b in stream.batches()) == 1
    with path.open("a", encoding="utf-8") as fh:
        fh.write(full[10:] + "\n")
    assert [e.kind for e in stream.poll()] == ["NodeStarted"]
