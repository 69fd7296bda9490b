"""Reading run files for the viewer, through Stroma's one reader (:mod:`stroma.runfile`): the
header peek, the streamed load and the follower of a live ``.jsonl`` all live there; this module
adds the viewer's error messages, a cache shared by the screens and the collector pause.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stroma import RunFileError, RunRecord
from stroma import events as ev
from stroma.runfile import RunHeader, RunStream, peek_header

__all__ = [
    "LoadedRun",
    "RunCache",
    "ViewerInputError",
    "collector_paused",
    "explain",
    "load",
    "loaded",
    "peek",
    "read",
]

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


def explain(exc: RunFileError) -> ViewerInputError:
    """Turn a RunFileError into the viewer's one-paragraph message (file, line, what to do)."""
    return ViewerInputError(f"stroma-view: cannot open {exc}")


def peek(path: str | Path) -> RunHeader:
    """The run's header from the first bytes of its file; raises ViewerInputError."""
    try:
        return peek_header(path)
    except RunFileError as exc:
        raise explain(exc) from None


@dataclass
class LoadedRun:
    """A run file loaded in full, and the stream that follows it while it grows."""

    record: RunRecord
    path: Path
    size_bytes: int
    stream: RunStream

    @property
    def can_follow(self) -> bool:
        """True for a ``.jsonl`` whose writer may still add to it."""
        return self.path.suffix == ".jsonl" and not self.record.finished and not self.record.interrupted


def read(stream: RunStream) -> Iterator[list[ev.LifecycleEvent]]:
    """The stream's batches, its RunFileError turned into the viewer's message."""
    try:
        yield from stream.batches()
    except RunFileError as exc:
        raise explain(exc) from None
    except (MemoryError, RecursionError) as exc:
        raise ViewerInputError(
            f"stroma-view: cannot open {stream.path}: the file is too large or too deeply nested "
            f"to read ({type(exc).__name__})"
        ) from None


def loaded(stream: RunStream) -> LoadedRun:
    """The LoadedRun of a stream whose batches were all read."""
    assert stream.record is not None
    path = stream.path
    return LoadedRun(stream.record, path, path.stat().st_size if path.exists() else 0, stream)


def load(path: str | Path) -> LoadedRun:
    """Load a run file in full; raises :class:`ViewerInputError` with a one-paragraph message."""
    stream = RunStream(path)
    with collector_paused():
        for _ in read(stream):
            pass
    return loaded(stream)


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
