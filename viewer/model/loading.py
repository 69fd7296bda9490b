"""Reading run files for the viewer: a cheap header peek, the full load, and following a live
``.jsonl``.

Everything here goes through Stroma's public loader (:func:`stroma.load_run`) so the viewer and the
library agree on what a valid run file is; what this module adds is speed (the header is peeked
from the first bytes of the file before the full parse) and following (new lines appended to a
``.jsonl`` that is still being written are decoded and handed over as events).
"""

from __future__ import annotations

import gc
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stroma import RunFileError, RunRecord, load_run
from stroma import events as ev
from stroma.runfile import FORMAT, FORMAT_VERSION

__all__ = [
    "HeaderPeek",
    "JsonlFollower",
    "LoadedRun",
    "RunCache",
    "StreamFallback",
    "ViewerInputError",
    "collector_paused",
    "load",
    "peek_header",
    "record_from_stream",
    "stream_events",
]

_PEEK_BYTES = 64 * 1024
_TAIL_BYTES = 64 * 1024


_pause_lock = threading.Lock()
_pauses = 0
_resume_collector = False


@contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a run is decoded and indexed.

    A big run is millions of new objects that all stay alive; every automatic collection during
    the load would walk all of them again (on a 100k-attempt run that doubles the load time).
    Reference counting still frees whatever is dropped. With ``freeze``, a block that ends without
    an error first moves everything alive to the collector's permanent generation (``gc.freeze``,
    as the Run screen does once a run is shown), so the resumed collector does not walk the run
    either. Pauses may nest and overlap (two screens loading): the collector resumes, if it was
    on, when the last one ends.
    """
    global _pauses, _resume_collector  # noqa: PLW0603 - one collector per process
    with _pause_lock:
        if _pauses == 0:
            _resume_collector = gc.isenabled()
            gc.disable()
        _pauses += 1
    ok = False
    try:
        yield
        ok = True
    finally:
        if ok and freeze:
            gc.freeze()
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume_collector:
                gc.enable()


class ViewerInputError(Exception):
    """A file the viewer cannot open; ``str()`` is a one-paragraph message naming file and line."""


def explain(exc: RunFileError, path: str | Path) -> ViewerInputError:
    """Turn a RunFileError into the viewer's one-paragraph message (file, line, what to do)."""
    text = str(exc)
    if exc.line is None and exc.path:
        # A run.json written by Stroma is one compact line: name it, so every message has one.
        line = _single_line(Path(path))
        if line is not None:
            prefix = exc.path
            text = f"{prefix}, line {line}{text[len(prefix) :]}"
    return ViewerInputError(f"stroma-view: cannot open {text}")


def _single_line(path: Path) -> int | None:
    try:
        with path.open("rb") as fh:
            head = fh.read(_PEEK_BYTES)
    except OSError:
        return None
    body = head.rstrip(b"\n")
    if not body or b"\n" in body:
        return None
    return 1


@dataclass(frozen=True, slots=True)
class HeaderPeek:
    """What the first (and last) bytes of a run file say, read without parsing the events."""

    path: Path
    run_id: str = ""
    pipeline: tuple[str, ...] = ()
    started_at: float | None = None
    status: str | None = None
    duration_ms: float | None = None
    total_tokens: int = 0
    total_cost_usd: float = 0.0
    failures: int = 0
    resumed_from: str | None = None
    size_bytes: int = 0
    error: str | None = None


def _json_header(text: str) -> dict[str, Any] | None:
    """The ``header`` object of a run.json, decoded from its text without touching the events."""
    at = text.find('"header"')
    if at < 0:
        return None
    colon = text.find(":", at + len('"header"'))
    if colon < 0:
        return None
    start = colon + 1
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _read_head(path: Path, until: bytes | None) -> bytes:
    """The file's first bytes: 64 KiB, doubled while ``until`` (or a decodable header) is not
    in them, up to 64 MiB (a header lists every pipeline node, so it can be large)."""
    size = _PEEK_BYTES
    with path.open("rb") as fh:
        while True:
            fh.seek(0)
            head = fh.read(size)
            if len(head) < size or size >= 64 * 1024 * 1024:
                return head
            if until is not None and until in head:
                return head
            if until is None and _json_header(head.decode("utf-8", errors="ignore")) is not None:
                return head
            size *= 4


def _last_event(path: Path, size: int) -> dict[str, Any] | None:
    with path.open("rb") as fh:
        fh.seek(max(0, size - _TAIL_BYTES))
        tail = fh.read()
    for raw in reversed(tail.split(b"\n")):
        if raw.strip():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            return obj if isinstance(obj, dict) else None
    return None


def peek_header(path: str | Path) -> HeaderPeek:
    """The run's header from the file's first bytes (and, for ``.jsonl``, its last line).

    Never raises: a file that cannot be peeked comes back with ``error`` set.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        head = _read_head(p, b"\n" if p.suffix == ".jsonl" else None)
    except OSError as exc:
        return HeaderPeek(p, error=exc.strerror or "cannot be read")
    header: dict[str, Any] | None
    if p.suffix == ".jsonl":
        first = head.split(b"\n", 1)[0]
        try:
            doc = json.loads(first)
        except ValueError:
            return HeaderPeek(p, size_bytes=size, error="header line is not valid JSON")
        header = doc.get("header") if isinstance(doc, dict) else None
    else:
        header = _json_header(head.decode("utf-8", errors="ignore"))
    if not isinstance(header, dict):
        return HeaderPeek(p, size_bytes=size, error="not a Stroma run file")
    values: dict[str, Any] = {
        "run_id": str(header.get("run_id", "")),
        "pipeline": tuple(str(x) for x in header.get("pipeline") or ()),
        "started_at": _num(header.get("started_at")),
        "status": header.get("status") if isinstance(header.get("status"), str) else None,
        "duration_ms": _num(header.get("duration_ms")),
        "total_tokens": int(_num(header.get("total_tokens")) or 0),
        "total_cost_usd": float(_num(header.get("total_cost_usd")) or 0.0),
        "failures": int(_num(header.get("failures")) or 0),
        "resumed_from": header.get("resumed_from") if isinstance(header.get("resumed_from"), str) else None,
    }
    if p.suffix == ".jsonl":
        last = _last_event(p, size)
        if last is not None and last.get("type") == "RunFinished":
            values["status"] = last.get("status")
            values["duration_ms"] = _num(last.get("duration_ms"))
            values["total_tokens"] = int(_num(last.get("total_tokens")) or 0)
            values["total_cost_usd"] = float(_num(last.get("total_cost_usd")) or 0.0)
            values["failures"] = int(_num(last.get("failures")) or 0)
    return HeaderPeek(p, size_bytes=size, **values)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass
class LoadedRun:
    """A run file loaded in full, plus what following it needs."""

    record: RunRecord
    path: Path
    size_bytes: int
    end_offset: int = 0
    """Bytes of the file consumed (after the last complete line); a follower starts here."""

    @property
    def can_follow(self) -> bool:
        """True for a ``.jsonl`` that has not recorded its end yet (live, or killed)."""
        return self.path.suffix == ".jsonl" and not self.record.finished


def _offset_after_lines(path: Path, lines: int) -> int:
    """Byte offset just after the ``lines``-th non-blank line."""
    with path.open("rb") as fh:
        data = fh.read()
    pos = 0
    seen = 0
    while seen < lines:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return len(data)
        if data[pos:nl].strip():
            seen += 1
        pos = nl + 1
    return pos


def load(path: str | Path) -> LoadedRun:
    """Load a run file in full; raises :class:`ViewerInputError` with a one-paragraph message."""
    p = Path(path)
    try:
        with collector_paused():
            record = load_run(p)
    except RunFileError as exc:
        raise explain(exc, p) from None
    except (MemoryError, RecursionError) as exc:
        raise ViewerInputError(
            f"stroma-view: cannot open {p}: the file is too large or too deeply nested to read "
            f"({type(exc).__name__})"
        ) from None
    size = p.stat().st_size if p.exists() else 0
    end = 0
    if p.suffix == ".jsonl":
        end = _offset_after_lines(p, len(record.events) + 1)
    return LoadedRun(record, p, size, end)


@dataclass
class JsonlFollower:
    """Reads lines appended to a ``.jsonl`` after ``offset``; only complete lines are decoded."""

    path: Path
    offset: int
    line: int = 0
    errors: list[str] = field(default_factory=list)

    def poll(self) -> list[ev.LifecycleEvent]:
        """New events since the last poll (an incomplete last line waits for the next poll)."""
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
                obj = json.loads(raw)
                out.append(ev.event_from_dict(obj))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.errors.append(f"{self.path}, line {self.line}: skipped ({exc})")
        self.offset += end + 1
        return out

    @classmethod
    def after(cls, loaded: LoadedRun) -> JsonlFollower:
        """A follower that continues where ``loaded`` stopped."""
        return cls(loaded.path, loaded.end_offset, line=len(loaded.record.events) + 1)


class RunCache:
    """Loaded runs by path, shared by the screens; each file is parsed once even when two
    screens (or two worker threads) ask for it at the same time."""

    def __init__(self) -> None:
        self._runs: dict[Path, LoadedRun] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()

    def put(self, loaded: LoadedRun) -> None:
        """Remember a run loaded elsewhere (the CLI pre-loads small files)."""
        self._runs[loaded.path.resolve()] = loaded

    def get(self, path: str | Path) -> LoadedRun:
        """The loaded run at ``path`` (loading it on first use); raises ViewerInputError."""
        key = Path(path).resolve()
        found = self._runs.get(key)
        if found is not None:
            return found
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            found = self._runs.get(key)
            if found is None:
                found = self._runs[key] = load(path)
            return found

    def cached(self, path: str | Path) -> LoadedRun | None:
        """The run if it is already loaded."""
        return self._runs.get(Path(path).resolve())


class StreamFallback(Exception):
    """The fast streaming path met something unusual; the full loader decides (and explains)."""


_EVENTS_KEY = re.compile(r'"events"\s*:\s*\[')
# The comma between two events, most likely: a "}" then "," then an object that starts with "type".
_EVENT_CUT = re.compile(r'\}\s*,\s*(?=\{\s*"type"\s*:)')
_CHUNK_CHARS = 256 * 1024
_CHUNK_MISSES = 3
_JSON_SPACE = " \t\r\n"


def _stream_json_events(text: str) -> Iterator[list[Any]]:
    """The elements of a run.json's ``events`` array, a list at a time.

    Most of the array is parsed by ``json.loads`` in pieces of about 256 KiB, each cut at a
    ``},{"type":`` (normally the end of an event) and wrapped in ``[...]``; the tail and any piece that
    does not parse are decoded one element at a time. A cut that is not between two events (inside a
    string, or inside an event's state) leaves its piece unbalanced, so the piece never parses: the
    lists are always exactly the elements, in order.
    """
    m = _EVENTS_KEY.search(text)
    if m is None:
        raise StreamFallback
    decoder = json.JSONDecoder()
    pos = m.end()
    n = len(text)
    misses = 0
    while True:
        while pos < n and text[pos] in _JSON_SPACE:
            pos += 1
        if pos < n and text[pos] == "]":
            return
        limit = n
        if misses < _CHUNK_MISSES:
            cut = _EVENT_CUT.search(text, pos + _CHUNK_CHARS)
            if cut is not None:
                try:
                    objs = json.loads("[" + text[pos : cut.start() + 1] + "]")
                except ValueError:
                    misses += 1
                    limit = cut.end()  # one at a time up to (and past) the cut that missed
                else:
                    yield objs
                    pos = cut.end()
                    continue
        objs = []
        while pos < limit:
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                raise StreamFallback from None
            objs.append(obj)
            while pos < n and text[pos] in _JSON_SPACE:
                pos += 1
            if pos < n and text[pos] == ",":
                pos += 1
                while pos < n and text[pos] in _JSON_SPACE:
                    pos += 1
                if pos < n and text[pos] == "]":  # a trailing comma: the loop above ends the array
                    break
            elif pos < n and text[pos] == "]":
                break
            else:
                raise StreamFallback
        yield objs


def _stream_jsonl_events(lines: list[str], start: int) -> Iterator[list[Any]]:
    """The JSON values of ``lines[start:]`` (blank lines skipped), a list at a time: what
    ``json.loads`` makes of each line, without its per-call overhead."""
    decode = json.JSONDecoder().raw_decode
    for at in range(start, len(lines), 1_000):
        objs = []
        for line in lines[at : at + 1_000]:
            if not line.strip():
                continue
            begin = 0 if line[0] == "{" else len(line) - len(line.lstrip(_JSON_SPACE))
            try:
                obj, end = decode(line, begin)
            except json.JSONDecodeError:
                raise StreamFallback from None
            if end != len(line) and line[end:].strip(_JSON_SPACE):
                raise StreamFallback  # extra data after the value
            objs.append(obj)
        yield objs


def stream_events(path: str | Path, batch_size: int = 20_000) -> Iterator[list[ev.LifecycleEvent]]:
    """Decode a run file's events in batches, so a big run is browsable while it loads.

    The happy path only: anything unusual (bad header, a line that is not JSON, an event that does
    not validate, a truncated last line) raises :class:`StreamFallback`, and the caller uses
    :func:`load`, whose messages name file, line and field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise StreamFallback from None
    if p.suffix == ".jsonl":
        if not text.endswith("\n"):
            raise StreamFallback  # truncated (or still being written): the loader marks it
        lines = text.split("\n")
        del text
        try:
            head = json.loads(lines[0])
        except ValueError:
            raise StreamFallback from None
        _check_version(head)
        raw = _stream_jsonl_events(lines, 1)
    else:
        head = _json_header(text)
        if head is None or not text.lstrip().startswith("{"):
            raise StreamFallback
        # format and version sit next to the header at the top of a run.json.
        start = text[:_PEEK_BYTES]
        fmt = re.search(r'"format"\s*:\s*"stroma\.run"', start)
        version = re.search(r'"version"\s*:\s*(\d+)', start)
        if fmt is None or version is None or int(version.group(1)) > FORMAT_VERSION:
            raise StreamFallback
        raw = _stream_json_events(text)
    decode = ev.event_from_dict
    batch: list[ev.LifecycleEvent] = []
    # A small first batch puts rows on screen at once; later batches grow to ``batch_size``.
    size = min(2_000, batch_size)
    try:
        for objs in raw:
            if any(type(obj) is not dict for obj in objs):
                raise StreamFallback
            batch.extend(map(decode, objs))
            while len(batch) >= size:
                yield batch[:size]
                del batch[:size]
                size = min(size * 2, batch_size)
    except (ValueError, KeyError, TypeError):
        raise StreamFallback from None
    yield batch


def _check_version(head: Any) -> None:
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise StreamFallback
    version = head.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StreamFallback
    if not isinstance(head.get("header"), dict):
        raise StreamFallback


def record_from_stream(path: str | Path, events: list[ev.LifecycleEvent]) -> LoadedRun:
    """The LoadedRun of a fully streamed file (same header rules as the loader: events first)."""
    p = Path(path)
    peek = peek_header(p)
    record = RunRecord.from_events(events, run_id=peek.run_id, path=str(p))
    if not record.header.pipeline and peek.pipeline:
        record.header = replace(record.header, pipeline=peek.pipeline)
    end = _offset_after_lines(p, len(events) + 1) if p.suffix == ".jsonl" else 0
    return LoadedRun(record, p, p.stat().st_size, end)
