"""Headless ``stroma-view`` on hostile files: escape sequences never reach the terminal, and bad
values are one line on stderr with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from viewer.cli import main

from .test_cli import run_cli

ESC_ID = "evil\x1b]0;pwned\x07"  # an OSC sequence that would retitle the terminal
ESC_NODE = "tag\x1b[2J\x9b31m\u202e"  # clear screen, a C1 CSI, a bidi override
ESC_TYPE = "Boom\x1b[5m"
ESC_MESSAGE = "bad \x1b[8m\ud800hidden\rthing"
RAW = (ESC_ID, ESC_NODE, ESC_TYPE, ESC_MESSAGE)


def hostile(fixtures: Path, tmp_path: Path, name: str, source: str = "failed.json") -> Path:
    """A fixture run whose run id, node id 'tag', error types and messages hold escape sequences."""
    doc: dict[str, Any] = json.loads((fixtures / source).read_text(encoding="utf-8"))
    doc["header"]["run_id"] = ESC_ID
    doc["header"]["pipeline"] = [ESC_NODE if n == "tag" else n for n in doc["header"]["pipeline"]]
    for e in doc["events"]:
        e["run_id"] = ESC_ID
        if e.get("node_id") == "tag":
            e["node_id"] = ESC_NODE
        if e["type"] == "RunStarted":
            e["pipeline"] = doc["header"]["pipeline"]
        if e["type"] in ("AttemptFailed", "FailureClassified") and e.get("error_type"):
            e["error_type"] = ESC_TYPE
        if e["type"] == "AttemptFailed":
            e["message"] = ESC_MESSAGE
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")  # ASCII JSON: the escapes are \u escapes
    return path


def assert_terminal_safe(text: str) -> None:
    """Every character is printable, or the report's own line break."""
    bad = sorted({c for c in text if not c.isprintable() and c != "\n"})
    assert not bad, bad


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_summary_escapes_ids_types_and_messages(
    fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """--summary prints the file's run id, node ids, error types and messages escaped, in every format."""
    path = hostile(fixtures, tmp_path, "hostile.json")
    assert main(["--summary", str(path), "--format", fmt]) == 1
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    if fmt == "json":
        data = json.loads(out)  # escaped as JSON: the same values
        assert data["run_id"] == ESC_ID
        assert {n["node_id"] for n in data["node_list"]} >= {ESC_NODE}
        assert {(f["error_type"], f["message"]) for f in data["failure_list"]} >= {(ESC_TYPE, ESC_MESSAGE)}
    else:
        for raw in RAW:
            assert repr(raw)[1:-1] in out or repr(raw.split("\r")[0])[1:-1] in out
        assert "\\x1b]0;pwned\\x07" in out
        assert "\\ud800" in out


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_diff_escapes_ids(
    fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """--diff prints both runs' ids and the node ids escaped, in every format."""
    a = hostile(fixtures, tmp_path, "a.json")
    b = hostile(fixtures, tmp_path, "b.json", source="resumed.json")
    main(["--diff", str(a), str(b), "--format", fmt])
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    if fmt == "json":
        assert json.loads(out)["a"]["run_id"] == ESC_ID
    else:
        assert "evil\\x1b]0;pwned\\x07" in out
        assert "tag\\x1b[2J\\x9b31m\\u202e" in out


def test_bad_input_messages_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file name with an escape sequence is escaped in the one-line error message."""
    path = tmp_path / "run\x1b[2J.json"
    assert main(["--summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert_terminal_safe(err)
    assert "run\\x1b[2J.json" in err


HEAD = '{"format":"stroma.run","version":1,"header":{"run_id":"r","pipeline":["a"]}}'
START = '{"type":"RunStarted","run_id":"r","ts":1.0,"pipeline":["a"]}'
NODE = '{"type":"NodeStarted","run_id":"r","ts":2.0,"node_id":"a"}'
VIOLATED = (
    '{"type":"ContractViolated","run_id":"r","ts":2.0,"node_id":"a","attempt":1,'
    '"direction":"output","field_paths":["x"],"error_count":1,"errors":[[1,2,3]]}'
)
BAD_FILES = {
    "ts NaN": (NODE.replace("2.0", "NaN"), "line 3: refused: NaN"),
    "ts 1e300": (NODE.replace("2.0", "1e300"), "line 3, field 'ts'"),
    "ts -1e300": (NODE.replace("2.0", "-1e300"), "line 3, field 'ts'"),
    "lone surrogate node id": (NODE.replace('"a"', '"\\ud800"'), "line 3, field 'node_id'"),
    "errors [[1,2,3]]": (VIOLATED, "line 3, field 'errors[0]'"),
    "version true": (None, "line 1, field 'version'"),
    "deep": ('{"type":"NodeStarted","x":' + "[" * 100_000 + "]" * 100_000 + "}", "line 3: JSON nested"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_summary_of_a_file_with_bad_values_is_one_line_and_exit_two(tmp_path: Path, case: str) -> None:
    """The real command prints one line naming file, line and field, exits 2, and no traceback."""
    line, needle = BAD_FILES[case]
    head = HEAD.replace('"version":1', '"version":true') if line is None else HEAD
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([head, START, line or NODE]) + "\n", encoding="utf-8")
    out = run_cli("--summary", path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    message = out.stderr.strip()
    assert len(message.splitlines()) == 1
    assert f"bad.jsonl, {needle}" in message
