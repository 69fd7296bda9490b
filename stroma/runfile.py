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

Limits (a run file is untrusted input: each refusal is a ``RunFileError``, never a crash):

- depth: JSON nested deeper than the interpreter can parse (about ``sys.getrecursionlimit()``
  levels, 1,000 by default) is refused; no stack is exhausted;
- size: one ``.jsonl`` line is at most ``MAX_LINE_BYTES`` (64 MiB, the checkpoint stores' load
  limit); a ``.jsonl`` is read a line at a time, so a big file costs its events, not its text;
- values: ``NaN`` / ``Infinity`` literals, numbers that overflow a float (``1e999``) and integers
  over Python's 4,300 digits are refused; ``version`` must be a plain integer (not ``true``); an
  event's ``ts`` must be a time between 1970 and 9999 (seconds since the epoch); ids (``run_id``,
  ``node_id``, ``parent``, ``failed_node``) must be valid Unicode (no lone surrogates);
  ``errors`` items must be ``[path, message]`` pairs; the header's ``pipeline`` a list of strings.

Text read from a file can still hold control characters (in messages, states, ids): whoever prints
it to a terminal escapes them (``stroma-view``'s headless modes do).

``save(path, redact=True)`` writes a file for sharing: input and output states become ``{}``,
error messages and the messages of ``ContractViolated.errors`` become ``"<redacted>"`` (field paths
are kept), and the trace context's ``baggage`` (free-form user data) is dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stroma import events as ev
from stroma._trace_model import RunStatus, TraceEvent
from stroma.errors import RunFileError
from stroma.failures import FailureClass
from stroma.summary import RunSummary

if TYPE_CHECKING:
    from stroma.trace import ExecutionResult

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RunFileWriter",
    "RunHeader",
    "RunRecord",
    "RunStream",
    "load_run",
    "peek_header",
    "save_run",
]

FORMAT = "stroma.run"
FORMAT_VERSION = 1
MAX_LINE_BYTES = 64 * 1024 * 1024
"""The longest ``.jsonl`` line read (a bigger one is refused with a RunFileError)."""
_MAX_TS = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second datetime can show
_ID_FIELDS = ("run_id", "node_id", "parent", "failed_node")
_IDS_OF = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name in _ID_FIELDS)
    for cls in ev.EVENT_TYPES.values()
}
_JSON_SPACE = " \t\r\n"


class _Refused(ValueError):
    """A JSON value a run file may not hold (NaN, an infinity, a float that overflows)."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number a run file may hold (only finite numbers)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf (nan cannot be written as a JSON number)
        raise _Refused(f"the number {text[:40]} overflows a float; a run file holds finite numbers")
    return value


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _loads(raw: str, path: str, line: int | None) -> Any:
    """``json.loads`` with the module's value limits: ``JSONDecodeError`` for text that is not
    JSON; RunFileError (naming ``path`` and ``line``) for NaN/Infinity, overflowing numbers, too
    many digits or too deep nesting."""
    try:
        try:  # the decoder's scanner on a line that is one object: decode() without its overhead
            if raw[:1] == "{":
                obj, end = _SCAN(raw, 0)
                if end == len(raw) or not raw[end:].strip(_JSON_SPACE):
                    return obj
        except StopIteration:
            pass
        return _DECODER.decode(raw)  # anything else, and the JSONDecodeError that explains
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise RunFileError(
            "JSON nested too deeply to read (over about "
            f"{sys.getrecursionlimit()} levels); a run file's states are not nested so deep",
            path=path,
            line=line,
        ) from None
    except ValueError as exc:  # _Refused, or int() over 4,300 digits
        raise RunFileError(f"refused: {exc}", path=path, line=line) from None


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
    writer_host: str = ""
    writer_pid: int | None = None
    last_event_at: float | None = field(default=None, compare=False)
    """When the file's last event was written (read from the file, not written in the header)."""

    @property
    def tokens(self) -> int:
        """This run's own tokens (the total less what was carried from the runs it resumed)."""
        return self.total_tokens - self.carried_tokens

    @property
    def cost_usd(self) -> float:
        """This run's own cost (the total less what was carried from the runs it resumed)."""
        return self.total_cost_usd - self.carried_cost_usd

    def writer_alive(self, path: str | Path | None) -> bool:
        """Whether the process writing this run may still add to it.

        A finished run, or a saved ``.json``, is done. A ``.jsonl`` written on this host is live
        while its writer's pid is (a zombie counts as gone); one from another host, or an older
        file without a writer, is live while its last event is under ``STALE_AFTER_S`` old. A run
        with no file (built from live events) is live.
        """
        if self.status is not None:
            return False
        if path is None:
            return True
        if not str(path).endswith(".jsonl"):
            return False
        if self.writer_pid is not None and self.writer_host == socket.gethostname():
            return _pid_alive(self.writer_pid)
        last = self.last_event_at if self.last_event_at is not None else self.started_at
        return last is not None and time.time() - last < STALE_AFTER_S

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
            "writer_host": self.writer_host,
            "writer_pid": self.writer_pid,
        }


STALE_AFTER_S = 300.0
"""A ``.jsonl`` from another host (or without a writer pid) whose last event is older than this
is shown as interrupted."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:  # a killed child its parent has not reaped yet is a zombie: gone
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _version() -> str:
    from stroma import __version__  # noqa: PLC0415 - stroma/__init__ imports this module

    return __version__


def _header_from_events(events: list[ev.LifecycleEvent], run_id: str = "") -> RunHeader:
    start = next((e for e in events if isinstance(e, ev.RunStarted)), None)
    end = next((e for e in reversed(events) if isinstance(e, ev.RunFinished)), None)
    header = RunHeader(
        run_id=start.run_id if start else run_id,
        stroma_version=_version(),
        last_event_at=events[-1].ts if events else None,
    )
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
        header = _ended(header, end)
    elif events:  # unfinished: what the events add up to so far (the one node summary's sums)
        summary = RunSummary(events)
        header = replace(
            header,
            failures=summary.failure_count,
            total_tokens=summary.tokens,
            total_cost_usd=summary.cost_usd,
        )
    return header


def _ended(header: RunHeader, end: ev.RunFinished) -> RunHeader:
    """``header`` with what the run's RunFinished says."""
    return replace(
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
                    output_state=None if failed else e.output_state,
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

    @property
    def interrupted(self) -> bool:
        """True when the run has no end and its writer is gone (a kill): see ``writer_alive``."""
        return not self.finished and not self.header.writer_alive(self.path)

    def summary(self) -> RunSummary:
        """The run's node summary, with what a gone writer left running marked interrupted."""
        summary = RunSummary(self.events, self.header.pipeline)
        if self.interrupted:
            summary.interrupt()
        return summary

    def refresh(self) -> None:
        """Recompute the header from the events (after a followed file recorded its end)."""
        self.header = _merge(self.header, self.events)
        if self.finished:
            self.truncated = False
            self.truncated_at_line = None

    def attempts(self) -> list[TraceEvent]:
        """The peer-compatible attempt list."""
        return _attempts(self.events)

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
        header = self.header.to_dict()
        if redact:
            _drop_baggage(header)
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "header": header,
            "events": [_encode(e, redact) for e in self.events],
        }


_REDACTED = "<redacted>"


def _encode(event: ev.LifecycleEvent, redact: bool) -> dict[str, Any]:
    """An event's JSON form; with ``redact``, without values (see the module docstring)."""
    data = ev.event_to_dict(event)
    if redact:
        for key in ("input_state", "output_state"):
            if data.get(key) is not None:
                data[key] = {}
        if "message" in data:
            data["message"] = _REDACTED
        if "errors" in data:  # a validator's message can quote the value: keep the paths only
            data["errors"] = [[path, _REDACTED] for path, _ in data["errors"]]
        _drop_baggage(data)
    return data


def _drop_baggage(data: dict[str, Any]) -> None:
    """Remove W3C ``baggage`` (free-form user data) from ``data``'s trace context carriers."""
    for key in ("carrier", "parent_carrier"):
        if key in data:
            data[key] = {k: v for k, v in data[key].items() if k != "baggage"}


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
        header = replace(
            _header_from_events([started]), writer_host=socket.gethostname(), writer_pid=os.getpid()
        )
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


def _value_problem(event: ev.LifecycleEvent) -> tuple[str, str] | None:
    """(field, what is wrong) when a decoded event holds a value a run file may not (see the
    module docstring), else None."""
    ts = event.ts
    if not 0.0 <= ts <= _MAX_TS:
        return "ts", _not_a_time(ts)
    for name in _IDS_OF[type(event)]:
        value = getattr(event, name)
        if value is not None and not value.isascii() and not _valid_text(value):
            return name, _NOT_UNICODE
    return None


def _not_a_time(value: float) -> str:
    return f"{value!r} is not a time between 1970 and 9999 (seconds since the epoch)"


_NOT_UNICODE = "is not valid Unicode text (it holds a lone surrogate such as \\ud800)"


def _valid_text(value: str) -> bool:
    """False for a string with a lone surrogate (JSON can escape one; no text can hold one)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _checked(event: ev.LifecycleEvent, path: str, line: int | None, where: str | None) -> ev.LifecycleEvent:
    problem = _value_problem(event)
    if problem is None:
        return event
    name, why = problem
    raise RunFileError(
        f"event does not validate: {name} {why}",
        path=path,
        line=line,
        field=f"{where}.{name}" if where else name,
    )


def _bad_errors_item(value: Any) -> int | None:
    """The index of the first ``errors`` item that is not a ``[path, message]`` pair."""
    if not isinstance(value, list):
        return None
    return next((i for i, item in enumerate(value) if not (isinstance(item, list) and len(item) == 2)), None)


def _decode_event(data: Any, path: str, line: int | None, index: int | None = None) -> ev.LifecycleEvent:
    where = f"events[{index}]" if index is not None else None
    if not isinstance(data, dict):
        raise RunFileError(
            f"expected an event object, got {type(data).__name__}", path=path, line=line, field=where
        )
    try:
        return _checked(ev.event_from_dict(data), path, line, where)
    except ValueError:
        bad = _bad_errors_item(data.get("errors"))
        if bad is None:
            raise
        raise RunFileError(
            "event does not validate: expected a [path, message] pair",
            path=path,
            line=line,
            field=f"{where}.errors[{bad}]" if where else f"errors[{bad}]",
        ) from None
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
    if type(version) is not int:
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


def _written_header(data: Any, path: str, line: int | None) -> RunHeader:
    """The header object as the file wrote it (a .jsonl's is written when the run starts)."""
    if not isinstance(data, dict):
        raise RunFileError("header is not an object", path=path, line=line, field="header")
    run_id = data.get("run_id")
    if not isinstance(run_id, str):
        raise RunFileError("header has no run_id string", path=path, line=line, field="header.run_id")
    if not _valid_text(run_id):
        raise RunFileError(f"header run_id {_NOT_UNICODE}", path=path, line=line, field="header.run_id")
    for key in ("started_at", "finished_at"):
        value = data.get(key)
        if isinstance(value, int | float) and not 0.0 <= value <= _MAX_TS:
            raise RunFileError(
                f"header {key} {_not_a_time(value)}",
                path=path,
                line=line,
                field=f"header.{key}",
            )

    def num(key: str) -> float | None:
        value = data.get(key)
        return None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    def mapping(key: str) -> dict[str, str]:
        value = data.get(key)
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    pipeline = data.get("pipeline") or []
    if not isinstance(pipeline, list) or not all(isinstance(x, str) for x in pipeline):
        raise RunFileError(
            "header pipeline is not a list of node ids", path=path, line=line, field="header.pipeline"
        )
    pid = data.get("writer_pid")
    return RunHeader(
        run_id=run_id,
        pipeline=tuple(pipeline),
        pipeline_name=text("pipeline_name") or "pipeline",
        started_at=num("started_at"),
        finished_at=num("finished_at"),
        status=text("status"),
        duration_ms=num("duration_ms"),
        total_tokens=int(num("total_tokens") or 0),
        total_cost_usd=num("total_cost_usd") or 0.0,
        failures=int(num("failures") or 0),
        resumed_from=text("resumed_from"),
        carried_tokens=int(num("carried_tokens") or 0),
        carried_cost_usd=num("carried_cost_usd") or 0.0,
        carrier=mapping("carrier"),
        parent_carrier=mapping("parent_carrier"),
        stroma_version=text("stroma_version") or "",
        writer_host=text("writer_host") or "",
        writer_pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
    )


def _merge(written: RunHeader, events: list[ev.LifecycleEvent]) -> RunHeader:
    """The file's header updated from its events: the events are the source of truth for the run
    (a .jsonl's header is written before the run ends); who wrote it comes from the file."""
    derived = _header_from_events(events, written.run_id)
    return replace(
        derived,
        run_id=written.run_id,
        stroma_version=written.stroma_version,
        writer_host=written.writer_host,
        writer_pid=written.writer_pid,
        pipeline=derived.pipeline or written.pipeline,
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


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _JSON_SPACE:
        pos += 1
    return pos


def _top_level(text: str, until: str) -> tuple[dict[str, Any], int] | None:
    """The members of a JSON object document before key ``until``, decoded in order, and where
    ``until``'s value starts (its value is not decoded); None when ``until`` is not found so."""
    decoder = _DECODER
    pos = _skip_space(text, 0)
    if not text.startswith("{", pos):
        return None
    pos += 1
    members: dict[str, Any] = {}
    try:
        while pos < len(text):
            pos = _skip_space(text, pos)
            if text[pos] == ",":
                pos = _skip_space(text, pos + 1)
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip_space(text, pos)
            if text[pos] != ":":
                return None
            pos = _skip_space(text, pos + 1)
            if key == until:
                return members, pos
            members[str(key)], pos = decoder.raw_decode(text, pos)
    except (ValueError, IndexError, RecursionError):
        return None
    return None


def _element_line(text: str, index: int) -> int | None:
    """The line on which element ``index`` of the top-level ``"events"`` list starts (error path
    only)."""
    found = _top_level(text, "events") if index >= 0 else None
    if found is None:
        return None
    decoder = _DECODER
    pos = found[1] + 1  # the list's "["
    try:
        for i in range(index + 1):
            pos = _skip_space(text, pos)
            if text[pos] == ",":
                pos = _skip_space(text, pos + 1)
            if i == index:
                return text.count("\n", 0, pos) + 1
            _, pos = decoder.raw_decode(text, pos)
    except (ValueError, IndexError):
        return None
    return None


def _load_json(path: str, text: str) -> RunRecord:
    try:
        doc = _loads(text, path, None)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            # a .jsonl saved under another name
            return _JsonlReader(path, io.BytesIO(text.encode("utf-8"))).record()
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
    header = _merge(_written_header(doc.get("header"), path, None), events)
    return RunRecord(header, events, path=path, format_version=version)


class _JsonlReader:
    """One pass over a ``.jsonl``'s lines (from an open file: never its whole text): the header
    line, then the events a batch at a time. Bad input raises RunFileError naming file and line;
    a last line cut off mid-write (no newline, not JSON) ends the run with ``truncated_at``.
    """

    def __init__(self, path: str, source: Iterable[bytes]) -> None:
        self.path = path
        self._lines = enumerate(source, start=1)
        self.line = 0
        """The number of the last line consumed."""
        self.offset = 0
        """Bytes up to the end of the last line consumed (where ``RunStream.poll`` goes on)."""
        self.truncated_at: int | None = None
        self._ids: dict[str, str] = {}
        head = self._next()
        if head is None:
            raise RunFileError("file is empty; a run file starts with its header line", path=path, line=1)
        number, text, nbytes, _ = head
        self.offset += nbytes
        self.line = number
        try:
            doc = _loads(text, path, number)
        except json.JSONDecodeError as exc:
            raise RunFileError(f"header line is not valid JSON ({exc.msg})", path=path, line=number) from None
        self.version = _check_header(doc, path, number)
        self.written = _written_header(doc.get("header"), path, number)

    def _next(self) -> tuple[int, str, int, bool] | None:
        """The next non-blank line: (number, text, size read, whether it ended with a newline);
        ``offset`` counts the blank lines skipped, the caller counts the line it consumes."""
        for number, raw in self._lines:
            nbytes = len(raw)
            if nbytes > MAX_LINE_BYTES:
                raise RunFileError(
                    f"line is {nbytes:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit of a run file line",
                    path=self.path,
                    line=number,
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RunFileError(
                    "not a text file (not UTF-8); a run file is JSON", path=self.path, line=number
                ) from None
            if text.strip():
                return number, text, nbytes, text.endswith("\n")
            self.offset += nbytes
        return None

    def batches(self, first: int = 2_000, most: int = 20_000) -> Iterator[list[ev.LifecycleEvent]]:
        """The events, ``first`` in the first batch, doubling up to ``most``."""
        size, batch = first, list[ev.LifecycleEvent]()
        while (item := self._next()) is not None:
            number, text, nbytes, complete = item
            try:
                data = _loads(text, self.path, number)
            except json.JSONDecodeError as exc:
                if not complete:
                    self.truncated_at = number  # the line being written when the process died
                    break
                raise RunFileError(f"not valid JSON ({exc.msg})", path=self.path, line=number) from None
            self.offset += nbytes
            self.line = number
            if type(data) is dict:  # one string per id, not one per line: a big run is mostly ids
                for key in ("run_id", "node_id"):
                    value = data.get(key)
                    if type(value) is str:
                        data[key] = self._ids.setdefault(value, value)
            batch.append(_decode_event(data, self.path, number))
            if len(batch) >= size:
                yield batch
                batch, size = [], min(size * 2, most)
        yield batch

    def record(self, events: list[ev.LifecycleEvent] | None = None) -> RunRecord:
        """The run: ``events`` as the batches gave them (read here when None)."""
        if events is None:
            events = [e for batch in self.batches() for e in batch]
        return RunRecord(
            _merge(self.written, events),
            events,
            truncated=self.truncated_at is not None,
            path=self.path,
            format_version=self.version,
            truncated_at_line=self.truncated_at,
        )


def load_run(path: str | Path) -> RunRecord:
    """Read a ``.json`` / ``.jsonl`` run file (or a ``to_json()`` attempt list).

    Raises :class:`~stroma.errors.RunFileError` (naming file, line and field) for a missing file,
    invalid JSON, something that is not a run file, a newer format version, an event that does
    not validate, or a value over the limits in the module docstring.
    """
    name = str(path)
    try:
        if name.endswith(".jsonl"):
            with open(path, "rb") as fh:
                return _JsonlReader(name, fh).record()
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFileError("no such file; check the path", path=name) from None
    except IsADirectoryError:
        raise RunFileError("is a folder, not a run file", path=name) from None
    except UnicodeDecodeError:
        raise RunFileError("not a text file (not UTF-8); a run file is JSON", path=name) from None
    except OSError as exc:
        raise RunFileError(f"cannot be read ({exc.strerror})", path=name) from None
    try:
        return _load_json(name, text)
    except RunFileError as exc:
        if exc.line is not None or "\n" in text.rstrip("\n"):
            raise
        # A run.json written by Stroma is one compact line: name it, so every message has one.
        raise RunFileError(_message(exc), path=name, line=1, field=exc.field) from None


def status_of(record: RunRecord) -> RunStatus | None:
    """The record's status as a RunStatus (None while unfinished or unknown)."""
    try:
        return RunStatus(record.header.status) if record.header.status else None
    except ValueError:
        return None


# -- peeking, streaming and following (what a viewer needs) ---------------------------------

_PEEK_BYTES = 64 * 1024
_MAX_PEEK_BYTES = 64 * 1024 * 1024
# The comma between two events of a run.json, most likely: "}" "," then an object starting "type".
_EVENT_CUT = re.compile(r'\}\s*,\s*(?=\{\s*"type"\s*:)')
_CHUNK_CHARS = 256 * 1024
_CHUNK_MISSES = 3


def _read_head(path: Path, jsonl: bool) -> str:
    """The file's first bytes: 64 KiB, quadrupled while its header is not complete in them, up to
    64 MiB (a header lists every pipeline node, so it can be large)."""
    size = _PEEK_BYTES
    with path.open("rb") as fh:
        while True:
            fh.seek(0)
            head = fh.read(size)
            text = head.decode("utf-8", errors="ignore")
            if len(head) < size or size >= _MAX_PEEK_BYTES:
                return text
            if (b"\n" in head) if jsonl else (_top_level(text, "events") is not None):
                return text
            size *= 4


def _last_line(path: Path, size: int) -> dict[str, Any] | None:
    """The last complete JSON object line of a ``.jsonl``."""
    with path.open("rb") as fh:
        fh.seek(max(0, size - _PEEK_BYTES))
        tail = fh.read()
    for raw in reversed(tail.split(b"\n")):
        if raw.strip():
            try:
                obj = _DECODER.decode(raw.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            return obj if isinstance(obj, dict) else None
    return None


def peek_header(path: str | Path) -> RunHeader:
    """A run file's header from its first bytes (and a ``.jsonl``'s last line), without decoding
    its events: what a folder listing shows. ``last_event_at`` is the last line's time.

    Raises :class:`~stroma.errors.RunFileError` when the file is not a readable run file.
    """
    p = Path(path)
    name = str(p)
    jsonl = p.suffix == ".jsonl"
    try:
        size = p.stat().st_size
        text = _read_head(p, jsonl)
    except FileNotFoundError:
        raise RunFileError("no such file; check the path", path=name) from None
    except OSError as exc:
        raise RunFileError(f"cannot be read ({exc.strerror})", path=name) from None
    if jsonl:
        try:
            doc: Any = _loads(text.split("\n", 1)[0], name, 1)
        except json.JSONDecodeError as exc:
            raise RunFileError(f"header line is not valid JSON ({exc})", path=name, line=1) from None
        _check_header(doc, name, 1)
        header = _written_header(doc.get("header"), name, 1)
        last = _last_line(p, size)
        ts = last.get("ts") if last is not None else None
        if last is not None and isinstance(ts, int | float) and 0 <= ts <= _MAX_TS:
            header = replace(header, last_event_at=float(last["ts"]))
            if last.get("type") == "RunFinished":
                end = _decode_event(last, name, None)
                assert isinstance(end, ev.RunFinished)
                header = _ended(header, end)
        return header
    found = _top_level(text, "events")
    members = found[0] if found is not None else None
    _check_header(members, name, None)
    assert members is not None
    header = _written_header(members.get("header"), name, None)
    return replace(header, last_event_at=header.finished_at)


class _Unusual(Exception):
    """The fast path met something unusual: the full loader reads the file (and explains)."""


class RunStream:
    """A run file read a batch of events at a time (a big run is browsable while it loads), then
    followed while it grows (a live ``.jsonl``).

    Example::

        stream = RunStream("runs/run.jsonl")
        for batch in stream.batches():
            show(batch)
        record = stream.record          # the whole run, header included
        new_events = stream.poll()      # later: lines appended since
    """

    def __init__(self, path: str | Path, batch_size: int = 20_000) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.record: RunRecord | None = None
        self.offset = 0
        """Bytes of the file consumed (after the last complete line); ``poll`` reads from here."""
        self.line = 0
        """Lines of the file consumed."""
        self.errors: list[str] = []
        """Appended lines ``poll`` skipped because they did not decode."""

    def batches(self) -> Iterator[list[ev.LifecycleEvent]]:
        """The run's events, in order, a batch at a time; ``record`` is set when they are all in.

        A ``.jsonl`` is read a line at a time by the one ``.jsonl`` reader (its
        :class:`~stroma.errors.RunFileError` names file, line and field). In a ``.json``, anything
        unusual (a bad header, invalid JSON, an event that does not validate) is read again by
        :func:`load_run`, which explains it.
        """
        if self.path.suffix == ".jsonl":
            yield from self._jsonl()
            return
        sent = 0
        try:
            for batch in self._fast():
                sent += len(batch)
                yield batch
        except (_Unusual, RecursionError):
            record = load_run(self.path)
            if len(record.events) > sent:
                yield record.events[sent:]
            self.record = record

    def _jsonl(self) -> Iterator[list[ev.LifecycleEvent]]:
        name = str(self.path)
        try:
            fh = self.path.open("rb")
        except OSError:
            self.record = load_run(self.path)  # raises the RunFileError that explains
            yield self.record.events
            return
        with fh:
            reader = _JsonlReader(name, fh)
            events: list[ev.LifecycleEvent] = []
            for batch in reader.batches(min(2_000, self.batch_size), self.batch_size):
                events.extend(batch)
                yield batch
        self.record = reader.record(events)
        self.offset, self.line = reader.offset, reader.line

    def _fast(self) -> Iterator[list[ev.LifecycleEvent]]:
        """A ``.json``'s events by the fast path; raises ``_Unusual`` where the loader takes over."""
        p, name = self.path, str(self.path)
        if p.suffix == ".jsonl":
            yield from self._jsonl()
            return
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise _Unusual from None
        found = _top_level(text, "events")
        try:
            if found is None:
                raise _Unusual
            version = _check_header(found[0], name, None)
            written = _written_header(found[0].get("header"), name, None)
        except RunFileError:
            raise _Unusual from None
        raw = _json_event_objects(text, found[1])
        events: list[ev.LifecycleEvent] = []
        decode = ev.event_from_dict
        size = min(2_000, self.batch_size)  # a small first batch puts rows on screen at once
        batch: list[ev.LifecycleEvent] = []
        try:
            for objs in raw:
                if any(type(obj) is not dict for obj in objs):
                    raise _Unusual
                decoded = list(map(decode, objs))
                if any(map(_value_problem, decoded)):
                    raise _Unusual
                batch.extend(decoded)
                while len(batch) >= size:
                    events.extend(batch[:size])
                    yield batch[:size]
                    del batch[:size]
                    size = min(size * 2, self.batch_size)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise _Unusual from None
        events.extend(batch)
        yield batch
        self.record = RunRecord(_merge(written, events), events, path=name, format_version=version)

    def poll(self) -> list[ev.LifecycleEvent]:
        """Events appended to a ``.jsonl`` since the last read (an incomplete last line waits for
        the next poll); a line that does not decode is skipped and noted in ``errors``."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError as exc:
            self.errors.append(f"{self.path}: cannot be read ({exc.strerror})")
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        out: list[ev.LifecycleEvent] = []
        for raw in data[: end + 1].split(b"\n"):
            if not raw.strip():
                continue
            self.line += 1
            try:
                data = _loads(raw.decode("utf-8"), str(self.path), self.line)
                out.append(_decode_event(data, str(self.path), self.line))
            except RunFileError as exc:
                self.errors.append(f"{exc} (skipped)")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.errors.append(f"{self.path}, line {self.line}: skipped ({exc})")
        self.offset += end + 1
        return out


def _json_event_objects(text: str, pos: int) -> Iterator[list[Any]]:
    """The elements of a run.json's ``events`` array (its ``[`` at ``pos``), a list at a time.

    Most of the array is parsed by ``json.loads`` in pieces of about 256 KiB, each cut at a
    ``},{"type":`` (normally the end of an event) and wrapped in ``[...]``; the tail and any piece
    that does not parse are decoded one element at a time. A cut that is not between two events
    leaves its piece unbalanced, so the piece never parses: the lists are exactly the elements.
    """
    if not text.startswith("[", pos):
        raise _Unusual
    pos += 1
    n = len(text)
    misses = 0
    while True:
        pos = _skip_space(text, pos)
        if pos < n and text[pos] == "]":
            return
        limit = n
        if misses < _CHUNK_MISSES:
            cut = _EVENT_CUT.search(text, pos + _CHUNK_CHARS)
            if cut is not None:
                try:
                    objs = _DECODER.decode("[" + text[pos : cut.start() + 1] + "]")
                except ValueError:
                    misses += 1
                    limit = cut.end()  # one at a time up to (and past) the cut that missed
                else:
                    yield objs
                    pos = cut.end()
                    continue
        objs, pos = _one_at_a_time(text, pos, limit)
        yield objs


def _one_at_a_time(text: str, pos: int, limit: int) -> tuple[list[Any], int]:
    """The array elements from ``pos`` up to ``limit`` (or the array's end), decoded one by one;
    and where decoding stopped."""
    n = len(text)
    objs = []
    while pos < limit:
        try:
            obj, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            raise _Unusual from None
        objs.append(obj)
        pos = _skip_space(text, pos)
        if pos < n and text[pos] == ",":
            pos = _skip_space(text, pos + 1)
            if pos < n and text[pos] == "]":  # a trailing comma: the caller's loop ends the array
                break
        elif pos < n and text[pos] == "]":
            break
        else:
            raise _Unusual
    return objs, pos
