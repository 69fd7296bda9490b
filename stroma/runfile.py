"""Run files: a run persisted as a versioned header plus its ordered lifecycle events.

Two encodings of one model:

- ``run.json``: ``{"format": "stroma.run", "version": 1, "header": {...}, "events": [...]}``,
  written atomically by ``ExecutionResult.save(path)``;
- ``run.jsonl``: the same ``format`` / ``version`` / ``header`` object on the first line, then one
  event per line, appended and flushed while the run goes (``with_trace_dir(dir)``), so a run
  killed by SIGKILL leaves everything up to the kill.

:func:`load_run` reads both, and the plain attempt list of ``ExecutionTrace.to_json()``, into a
:class:`RunRecord`. Malformed input raises :class:`~stroma.errors.RunFileError` naming the file,
line and field. A ``.jsonl`` whose last line was cut off by a kill loads its valid prefix with
``truncated=True``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stroma import events as ev
from stroma.errors import RunFileError
from stroma.failures import FailureClass
from stroma.trace import ExecutionResult, ExecutionTrace, RunStatus, TraceEvent

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RunFileWriter",
    "RunHeader",
    "RunRecord",
    "load_run",
    "save_run",
]

FORMAT = "stroma.run"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RunHeader:
    """What a run file says about the run as a whole."""

    run_id: str
    pipeline: tuple[str, ...] = ()
    pipeline_name: str = "pipeline"
    started_at: float | None = None
    finished_at: float | None = None
    status: str | None = None
    duration_ms: float | None = None
    total_tokens: int = 0
    total_cost_usd: float = 0.0
    failures: int = 0
    resumed_from: str | None = None
    carried_tokens: int = 0
    carried_cost_usd: float = 0.0
    carrier: dict[str, str] = field(default_factory=dict)
    parent_carrier: dict[str, str] = field(default_factory=dict)
    stroma_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run_id": self.run_id,
            "pipeline": list(self.pipeline),
            "pipeline_name": self.pipeline_name,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "total_tokens": self.total_tokens,
            "total_cost_usd": self.total_cost_usd,
            "failures": self.failures,
            "resumed_from": self.resumed_from,
            "carried_tokens": self.carried_tokens,
            "carried_cost_usd": self.carried_cost_usd,
            "carrier": dict(self.carrier),
            "parent_carrier": dict(self.parent_carrier),
            "stroma_version": self.stroma_version,
        }


def _version() -> str:
    from stroma import __version__  # noqa: PLC0415 - stroma/__init__ imports this module

    return __version__


def _header_from_events(events: list[ev.LifecycleEvent], run_id: str = "") -> RunHeader:
    start = next((e for e in events if isinstance(e, ev.RunStarted)), None)
    end = next((e for e in reversed(events) if isinstance(e, ev.RunFinished)), None)
    header = RunHeader(run_id=start.run_id if start else run_id, stroma_version=_version())
    if start is not None:
        header = replace(
            header,
            pipeline=start.pipeline,
            pipeline_name=start.pipeline_name,
            started_at=start.ts,
            resumed_from=start.resumed_from,
            carrier=dict(start.carrier),
            parent_carrier=dict(start.parent_carrier),
        )
    if end is not None:
        header = replace(
            header,
            finished_at=end.ts,
            status=end.status,
            duration_ms=end.duration_ms,
            total_tokens=end.total_tokens,
            total_cost_usd=end.total_cost_usd,
            failures=end.failures,
            carried_tokens=end.carried_tokens,
            carried_cost_usd=end.carried_cost_usd,
        )
    else:
        failures = sum(1 for e in events if isinstance(e, ev.AttemptFailed))
        tokens = sum(e.tokens for e in events if isinstance(e, ev.AttemptSucceeded | ev.AttemptFailed))
        cost = sum(e.cost_usd for e in events if isinstance(e, ev.AttemptSucceeded | ev.AttemptFailed))
        header = replace(header, failures=failures, total_tokens=tokens, total_cost_usd=cost)
    return header


def _attempts(events: Iterable[ev.LifecycleEvent]) -> list[TraceEvent]:
    """Rebuild the peer-compatible attempt list from lifecycle events."""
    out: list[TraceEvent] = []
    open_attempts: dict[tuple[str, int], ev.AttemptStarted] = {}
    for e in events:
        if isinstance(e, ev.AttemptStarted):
            open_attempts[(e.node_id, e.attempt)] = e
        elif isinstance(e, ev.AttemptSucceeded | ev.AttemptFailed):
            started = open_attempts.pop((e.node_id, e.attempt), None)
            failed = isinstance(e, ev.AttemptFailed)
            out.append(
                TraceEvent.model_construct(
                    node_id=e.node_id,
                    run_id=e.run_id,
                    attempt=e.attempt,
                    timestamp_utc=datetime.fromtimestamp(started.ts if started else e.ts, UTC),
                    input_state=started.input_state if started else {},
                    output_state=None if failed else e.output_state,  # type: ignore[union-attr]
                    duration_ms=e.duration_ms,
                    failure=FailureClass(e.failure_class) if failed else None,  # type: ignore[union-attr]
                    failure_message=e.message if failed else None,  # type: ignore[union-attr]
                )
            )
    return out


@dataclass
class RunRecord:
    """A run read from (or about to be written to) a run file."""

    header: RunHeader
    events: list[ev.LifecycleEvent]
    truncated: bool = False
    path: str | None = None
    format_version: int = FORMAT_VERSION
    truncated_at_line: int | None = None

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.header.run_id

    @property
    def status(self) -> str | None:
        """The run's final status, or None while it has not finished (a live or killed run)."""
        return self.header.status

    @property
    def finished(self) -> bool:
        """True when the file records the end of the run."""
        return self.header.status is not None

    def attempts(self) -> list[TraceEvent]:
        """The peer-compatible attempt list."""
        return _attempts(self.events)

    def to_trace(self) -> ExecutionTrace:
        """An ExecutionTrace equivalent to the one the run produced."""
        return ExecutionTrace(self.attempts(), list(self.events))

    @classmethod
    def from_events(
        cls, events: list[ev.LifecycleEvent], *, run_id: str = "", path: str | None = None
    ) -> RunRecord:
        """Build a record (and its header) from an event list."""
        return cls(_header_from_events(events, run_id), events, path=path)

    @classmethod
    def from_result(cls, result: ExecutionResult) -> RunRecord:
        """The record of a finished run."""
        return cls.from_events(list(result.trace.log), run_id=result.run_id)

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """The ``run.json`` document."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "header": self.header.to_dict(),
            "events": [_encode(e, redact) for e in self.events],
        }


_REDACTED = "<redacted>"


def _encode(event: ev.LifecycleEvent, redact: bool) -> dict[str, Any]:
    data = ev.event_to_dict(event)
    if redact:
        for key in ("input_state", "output_state"):
            if data.get(key) is not None:
                data[key] = {}
        if "message" in data:
            data["message"] = _REDACTED
    return data


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def save_run(record: RunRecord, path: str | Path, *, redact: bool = False) -> Path:
    """Write ``record`` as a ``run.json`` document, atomically (temp file + rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = _dumps(record.to_dict(redact=redact))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_file_name(run_id: str, started_at: float) -> str:
    """A file name for a run's ``.jsonl``: run id (made safe), start time, random suffix (two runs
    of one id in the same microsecond, as under a fake clock, still get two files)."""
    stamp = datetime.fromtimestamp(started_at, UTC).strftime("%Y%m%dT%H%M%S%f")
    safe = _UNSAFE.sub("_", run_id)[:80] or "run"
    return f"{safe}-{stamp}-{secrets.token_hex(3)}.jsonl"


class RunFileWriter:
    """Streams a run to ``<dir>/<run>.jsonl``: header on RunStarted, then one line per event.

    Each line is flushed as it is written, so a kill loses at most the line being written.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path: Path | None = None
        self._fh: io.TextIOWrapper | None = None

    def start(self, started: ev.RunStarted) -> Path:
        """Open the file and write the header line and the RunStarted event."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / run_file_name(started.run_id, started.ts)
        self._fh = open(self.path, "x", encoding="utf-8")  # noqa: SIM115 - held open for the run
        header = _header_from_events([started])
        self._fh.write(
            _dumps({"format": FORMAT, "version": FORMAT_VERSION, "header": header.to_dict()}) + "\n"
        )
        self.write(started)
        return self.path

    def write(self, event: ev.LifecycleEvent) -> None:
        """Append one event and flush it."""
        fh = self._fh
        if fh is None:
            return
        fh.write(_dumps(ev.event_to_dict(event)) + "\n")
        fh.flush()

    def close(self) -> None:
        """Flush to disk and close."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.flush()
                os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


# -- reading ---------------------------------------------------------------------------------


def _decode_event(data: Any, path: str, line: int | None, index: int | None = None) -> ev.LifecycleEvent:
    where = f"events[{index}]" if index is not None else None
    if not isinstance(data, dict):
        raise RunFileError(
            f"expected an event object, got {type(data).__name__}", path=path, line=line, field=where
        )
    try:
        return ev.event_from_dict(data)
    except KeyError as exc:
        name, _, why = str(exc.args[0]).partition(": ")
        raise RunFileError(
            f"event does not validate: {why or name}",
            path=path,
            line=line,
            field=f"{where}.{name}" if where else name,
        ) from None
    except TypeError as exc:
        name, _, why = str(exc).partition(": ")
        raise RunFileError(
            f"event does not validate: {why or name}",
            path=path,
            line=line,
            field=f"{where}.{name}" if where else name,
        ) from None


def _check_header(obj: Any, path: str, line: int | None) -> int:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise RunFileError(
            'not a Stroma run file (no "format": "stroma.run" header); open a run.json or '
            "run.jsonl written by Stroma, or the list from ExecutionTrace.to_json()",
            path=path,
            line=line,
        )
    version = obj.get("version")
    if not isinstance(version, int):
        raise RunFileError("format version is missing or not a number", path=path, line=line, field="version")
    if version > FORMAT_VERSION:
        raise RunFileError(
            f"written by a newer Stroma (run file format version {version}; this Stroma reads up "
            f"to {FORMAT_VERSION}); upgrade stroma to open it",
            path=path,
            line=line,
            field="version",
        )
    return version


def _header_from_dict(data: Any, events: list[ev.LifecycleEvent], path: str, line: int | None) -> RunHeader:
    if not isinstance(data, dict):
        raise RunFileError("header is not an object", path=path, line=line, field="header")
    run_id = data.get("run_id")
    if not isinstance(run_id, str):
        raise RunFileError("header has no run_id string", path=path, line=line, field="header.run_id")
    derived = _header_from_events(events, run_id)
    # Events are the source of truth (the header of a .jsonl is written before the run ends).
    return replace(
        derived,
        run_id=run_id,
        stroma_version=str(data.get("stroma_version", "")),
        pipeline=derived.pipeline or tuple(data.get("pipeline") or ()),
    )


def _attempt_list(items: list[Any], path: str) -> RunRecord:
    """Read the peer's plain ``to_json()`` attempt list into a record."""
    events: list[ev.LifecycleEvent] = []
    pipeline: list[str] = []
    run_id = ""
    for index, item in enumerate(items):
        try:
            trace_event = TraceEvent.model_validate(item)
        except ValidationError as exc:  # report the first field
            errors = exc.errors(include_url=False)
            loc = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
            msg = errors[0]["msg"] if errors else str(exc)
            raise RunFileError(
                f"attempt does not validate: {msg}", path=path, field=f"[{index}].{loc}"
            ) from None
        run_id = run_id or trace_event.run_id
        if trace_event.node_id not in pipeline:
            pipeline.append(trace_event.node_id)
        ts = trace_event.timestamp_utc.timestamp()
        events.append(
            ev.AttemptStarted(
                run_id=trace_event.run_id,
                ts=ts,
                node_id=trace_event.node_id,
                attempt=trace_event.attempt,
                max_attempts=trace_event.attempt,
                input_state=trace_event.input_state,
            )
        )
        if trace_event.failure is None:
            events.append(
                ev.AttemptSucceeded(
                    run_id=trace_event.run_id,
                    ts=ts + trace_event.duration_ms / 1000,
                    node_id=trace_event.node_id,
                    attempt=trace_event.attempt,
                    duration_ms=trace_event.duration_ms,
                    output_state=trace_event.output_state or {},
                )
            )
        else:
            events.append(
                ev.AttemptFailed(
                    run_id=trace_event.run_id,
                    ts=ts + trace_event.duration_ms / 1000,
                    node_id=trace_event.node_id,
                    attempt=trace_event.attempt,
                    duration_ms=trace_event.duration_ms,
                    error_type="unknown",
                    message=trace_event.failure_message or "",
                    failure_class=trace_event.failure.value,
                )
            )
    start_ts = events[0].ts if events else 0.0
    events.insert(0, ev.RunStarted(run_id=run_id, ts=start_ts, pipeline=tuple(pipeline)))
    return RunRecord.from_events(events, run_id=run_id, path=path)


def _message(exc: RunFileError) -> str:
    """The message of a RunFileError without its 'file, line, field: ' prefix."""
    prefix = exc.path
    if exc.line is not None:
        prefix += f", line {exc.line}"
    if exc.field:
        prefix += f", field '{exc.field}'"
    text = str(exc)
    return text[len(prefix) + 2 :] if text.startswith(prefix + ": ") else text


def _element_line(text: str, index: int) -> int | None:
    """The line on which element ``index`` of the top-level ``"events"`` list starts (error path
    only: walks the document's top-level keys with the JSON decoder)."""
    if index < 0:
        return None
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    pos = text.find("{")
    if pos < 0:
        return None
    pos += 1
    try:
        while pos < len(text):
            while text[pos] in ws or text[pos] == ",":
                pos += 1
            key, pos = decoder.raw_decode(text, pos)
            while text[pos] in ws or text[pos] == ":":
                pos += 1
            if key != "events":
                _, pos = decoder.raw_decode(text, pos)
                continue
            pos += 1  # the list's "["
            for i in range(index + 1):
                while text[pos] in ws or text[pos] == ",":
                    pos += 1
                if i == index:
                    return text.count("\n", 0, pos) + 1
                _, pos = decoder.raw_decode(text, pos)
    except (ValueError, IndexError):
        return None
    return None


def _load_json(path: str, text: str) -> RunRecord:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _load_jsonl(path, text)  # a .jsonl saved under another name
        raise RunFileError(
            f"not valid JSON ({exc.msg}, column {exc.colno})", path=path, line=exc.lineno
        ) from None
    if isinstance(doc, list):
        return _attempt_list(doc, path)
    version = _check_header(doc, path, None)
    raw_events = doc.get("events")
    if not isinstance(raw_events, list):
        raise RunFileError('"events" is missing or not a list', path=path, field="events")
    try:
        events = [_decode_event(item, path, None, i) for i, item in enumerate(raw_events)]
    except RunFileError as exc:
        index = int(exc.field.split("[", 1)[1].split("]", 1)[0]) if exc.field else -1
        line = _element_line(text, index)
        if line is None:
            raise
        raise RunFileError(_message(exc), path=path, line=line, field=exc.field) from None
    header = _header_from_dict(doc.get("header"), events, path, None)
    return RunRecord(header, events, path=path, format_version=version)


def _iter_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, line


def _load_jsonl(path: str, text: str) -> RunRecord:
    lines = list(_iter_lines(text))
    if not lines:
        raise RunFileError("file is empty; a run file starts with its header line", path=path, line=1)
    ends_cleanly = text.endswith("\n")
    first_no, first = lines[0]
    try:
        head = json.loads(first)
    except json.JSONDecodeError as exc:
        raise RunFileError(f"header line is not valid JSON ({exc.msg})", path=path, line=first_no) from None
    version = _check_header(head, path, first_no)
    events: list[ev.LifecycleEvent] = []
    truncated_at: int | None = None
    last_index = len(lines) - 1
    for i, (number, line) in enumerate(lines[1:], start=1):
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == last_index and not ends_cleanly:
                truncated_at = number  # the line being written when the process died
                break
            raise RunFileError(f"not valid JSON ({exc.msg})", path=path, line=number) from None
        events.append(_decode_event(data, path, number))
    header = _header_from_dict(head.get("header"), events, path, first_no)
    return RunRecord(
        header,
        events,
        truncated=truncated_at is not None,
        path=path,
        format_version=version,
        truncated_at_line=truncated_at,
    )


def load_run(path: str | Path) -> RunRecord:
    """Read a ``.json`` / ``.jsonl`` run file (or a ``to_json()`` attempt list).

    Raises :class:`~stroma.errors.RunFileError` (naming file, line and field) for a missing file,
    invalid JSON, something that is not a run file, a newer format version, or an event that does
    not validate.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFileError("no such file; check the path", path=name) from None
    except IsADirectoryError:
        raise RunFileError("is a folder, not a run file", path=name) from None
    except UnicodeDecodeError:
        raise RunFileError("not a text file (not UTF-8); a run file is JSON", path=name) from None
    except OSError as exc:
        raise RunFileError(f"cannot be read ({exc.strerror})", path=name) from None
    if name.endswith(".jsonl"):
        return _load_jsonl(name, text)
    return _load_json(name, text)


def status_of(record: RunRecord) -> RunStatus | None:
    """The record's status as a RunStatus (None while unfinished or unknown)."""
    try:
        return RunStatus(record.header.status) if record.header.status else None
    except ValueError:
        return None
