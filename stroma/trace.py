"""What happened in a run: one TraceEvent per attempt, the full lifecycle log, and the result.

Example::

    result = await runner.run([extract, summarize], Document(text="..."))
    for event in result.trace.failures():
        print(event.node_id, event.attempt, event.failure_message)
    result.save("run.json")          # open it with: stroma-view run.json
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stroma import events as ev
from stroma._trace_model import RunStatus, TraceEvent
from stroma.events import LifecycleEvent
from stroma.failures import FailureClass
from stroma.runfile import RunRecord, save_run

__all__ = [
    "ExecutionResult",
    "ExecutionTrace",
    "RunStatus",
    "TraceEvent",
]


_COMPARED = ("input_state", "output_state", "failure", "failure_message")


# While a run goes, the engine records each attempt as one AttemptRecord (filled in as the attempt
# goes) and every other event as its typed object. A state is kept as the JSON text already written
# for the checkpoint. The lifecycle events of an attempt are built from its record by the two
# functions below, in one place, whether a listener needs them live or the trace is read later.


def decode_state(text: str) -> dict[str, Any]:
    """A state recorded as its checkpoint JSON, as the dict an event carries."""
    decoded = json.loads(text)
    return decoded if isinstance(decoded, dict) else {"value": decoded}


State = str | dict[str, Any]
"""A state as recorded: the JSON text of a checkpoint, or a dict."""


class StateDecoder:
    """Decodes recorded states, once per text: a node's output is the next node's input, so both
    events share one dict."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, tuple[str, dict[str, Any]]] = {}

    def __call__(self, value: State | None) -> dict[str, Any] | None:
        if type(value) is not str:
            return value  # type: ignore[return-value]
        hit = self._cache.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        decoded = decode_state(value)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[id(value)] = (value, decoded)
        return decoded


@dataclass(slots=True, eq=False)
class AttemptRecord:
    """One attempt of one node, as the engine records it (the fields after ``node_t0`` are filled
    in when the attempt ends). :func:`attempt_opened` and :func:`attempt_closed` build its events."""

    node_id: str
    run_id: str
    attempt: int
    max_attempts: int
    started: float
    """Wall-clock time the attempt started."""
    input_state: State
    model: str | None
    node_t0: float
    """Wall-clock time the node (its first attempt) started."""
    ended: float = 0.0
    duration_ms: float = 0.0
    output_state: State | None = None
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    used_model: str | None = None
    store: str | None = None
    """The checkpoint store the output was committed to (None: not committed)."""
    saved: float = 0.0
    checkpoint_ms: float = 0.0
    failure: str | None = None
    message: str | None = None

    @property
    def idempotency_key(self) -> str:
        """``run_id:node_id``: the same for every attempt of the node and across resumes."""
        return f"{self.run_id}:{self.node_id}"


def attempt_opened(rec: AttemptRecord, decode: StateDecoder) -> list[LifecycleEvent]:
    """The events that open an attempt: NodeStarted (first attempt only) and AttemptStarted."""
    opened: list[LifecycleEvent] = []
    if rec.attempt == 1:
        opened.append(
            ev.NodeStarted(
                run_id=rec.run_id, ts=rec.node_t0, node_id=rec.node_id, max_attempts=rec.max_attempts
            )
        )
    opened.append(
        ev.AttemptStarted(
            run_id=rec.run_id,
            ts=rec.started,
            node_id=rec.node_id,
            attempt=rec.attempt,
            max_attempts=rec.max_attempts,
            input_state=decode(rec.input_state) or {},
            model=rec.model,
            idempotency_key=rec.idempotency_key,
        )
    )
    return opened


def attempt_closed(rec: AttemptRecord, decode: StateDecoder) -> list[LifecycleEvent]:
    """The events that close a successful attempt: CheckpointSaved (when committed),
    AttemptSucceeded and NodeFinished."""
    closed: list[LifecycleEvent] = []
    output = rec.output_state
    if rec.store is not None:
        closed.append(
            ev.CheckpointSaved(
                run_id=rec.run_id,
                ts=rec.saved,
                node_id=rec.node_id,
                store=rec.store,
                size_bytes=len(output) if type(output) is str else 0,
                duration_ms=rec.checkpoint_ms,
            )
        )
    closed.append(
        ev.AttemptSucceeded(
            run_id=rec.run_id,
            ts=rec.ended,
            node_id=rec.node_id,
            attempt=rec.attempt,
            duration_ms=rec.duration_ms,
            output_state=decode(output) or {},
            tokens=rec.tokens,
            input_tokens=rec.input_tokens,
            output_tokens=rec.output_tokens,
            cost_usd=rec.cost_usd,
            model=rec.used_model,
        )
    )
    closed.append(
        ev.NodeFinished(
            run_id=rec.run_id,
            ts=rec.ended,
            node_id=rec.node_id,
            outcome="succeeded",
            attempts=rec.attempt,
            duration_ms=(rec.ended - rec.node_t0) * 1000.0,
        )
    )
    return closed


@dataclass(slots=True, frozen=True)
class Opened:
    """A log entry: the opening events of an attempt whose end was logged separately
    (something happened in between: a group's children, a budget check, a failure)."""

    record: AttemptRecord


@dataclass(slots=True, frozen=True)
class Closed:
    """A log entry: the closing events of an attempt logged earlier as :class:`Opened`."""

    record: AttemptRecord


LogEntry = LifecycleEvent | AttemptRecord | Opened | Closed
"""What the trace's log holds while a run goes: an AttemptRecord stands for its opening and
closing events together."""


def expand(entry: LogEntry, decode: StateDecoder) -> list[LifecycleEvent]:
    """The lifecycle events a log entry stands for."""
    if isinstance(entry, AttemptRecord):
        return [*attempt_opened(entry, decode), *attempt_closed(entry, decode)]
    if isinstance(entry, Opened):
        return attempt_opened(entry.record, decode)
    if isinstance(entry, Closed):
        return attempt_closed(entry.record, decode)
    return [entry]


def trace_event(rec: AttemptRecord, decode: StateDecoder) -> TraceEvent:
    """The published per-attempt TraceEvent of a record."""
    return TraceEvent.model_construct(
        node_id=rec.node_id,
        run_id=rec.run_id,
        attempt=rec.attempt,
        timestamp_utc=datetime.fromtimestamp(rec.started, UTC),
        input_state=decode(rec.input_state),
        output_state=decode(rec.output_state),
        duration_ms=rec.duration_ms,
        failure=FailureClass(rec.failure) if rec.failure is not None else None,
        failure_message=rec.message,
    )


class ExecutionTrace:
    """The attempts of a run (iterable, sized) plus its full lifecycle event log (``log``).

    The engine records compactly while the run goes; ``events`` and ``log`` build their objects
    on first access (read them after the run, not from inside it).
    """

    __slots__ = ("_attempts", "_attempts_done", "_log", "_log_done")

    def __init__(
        self,
        events: list[TraceEvent] | None = None,
        log: list[LifecycleEvent] | None = None,
    ) -> None:
        self._attempts: list[TraceEvent | AttemptRecord] = list(events) if events is not None else []
        self._log: list[LogEntry] = list(log) if log is not None else []
        self._attempts_done = len(self._attempts)
        self._log_done = len(self._log)

    @property
    def events(self) -> list[TraceEvent]:
        """One TraceEvent per attempt, in order."""
        items = self._attempts
        decode = StateDecoder()
        for i in range(self._attempts_done, len(items)):
            item = items[i]
            if isinstance(item, AttemptRecord):
                items[i] = trace_event(item, decode)
        self._attempts_done = len(items)
        return items  # type: ignore[return-value]  # every entry is a TraceEvent now

    @property
    def _events(self) -> list[TraceEvent]:
        """The attempts list by the name stroma 0.3.2 kept it under (code written for 0.3.2
        reads ``trace._events``)."""
        return self.events

    @property
    def log(self) -> list[LifecycleEvent]:
        """Every lifecycle event of the run, in order."""
        items = self._log
        done = self._log_done
        if done != len(items):
            decode = StateDecoder()
            built: list[LogEntry] = []
            for item in items[done:]:
                built.extend(expand(item, decode))
            items[done:] = built  # in place: the engine appends to this very list
            self._log_done = len(items)
        return items  # type: ignore[return-value]  # every entry is an event now

    def record(self, entry: LogEntry) -> None:
        """Add one entry to the log."""
        self._log.append(entry)

    def recorders(self) -> tuple[Callable[[LogEntry], None], Callable[[AttemptRecord], None]]:
        """The functions the engine records with while the run goes: one adds a log entry, the
        other an attempt (when it ends)."""
        return self._log.append, self._attempts.append

    def __repr__(self) -> str:
        return f"ExecutionTrace(attempts={len(self._attempts)}, events={len(self.log)})"

    def append(self, event: TraceEvent) -> None:
        """Add one attempt."""
        self._attempts.append(event)

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self._attempts)

    def __getitem__(self, index: int) -> TraceEvent:
        return self.events[index]

    def events_for(self, node_id: str) -> list[TraceEvent]:
        """Attempts of one node, in order."""
        return [e for e in self.events if e.node_id == node_id]

    def failures(self) -> list[TraceEvent]:
        """Attempts that failed, in order."""
        return [e for e in self.events if e.failure is not None]

    def to_json(self) -> str:
        """The attempts as a JSON list (the published format; ``stroma.load_run`` reads it)."""
        return json.dumps([e.model_dump(mode="json") for e in self.events], default=str)

    def replay(self) -> Iterator[TraceEvent]:
        """The attempts in the order they started (timestamp, then attempt number)."""
        return iter(sorted(self.events, key=lambda e: (e.timestamp_utc, e.attempt)))

    def diff(self, other: ExecutionTrace) -> list[str]:
        """What differs from ``other``, ignoring timestamps and durations; [] when equal.

        Attempts are matched by (node, attempt number). Lines read
        ``Missing event in other trace: <node> attempt <n>``,
        ``Extra event in other trace: <node> attempt <n>`` and
        ``Difference for <node> attempt <n>: <field> ...``.
        For a resume-aware comparison by node, see :func:`stroma.compare_runs`.
        """
        mine = {(e.node_id, e.attempt): e for e in self.events}
        theirs = {(e.node_id, e.attempt): e for e in other.events}
        lines: list[str] = []
        for key, event in mine.items():
            match = theirs.get(key)
            if match is None:
                lines.append(f"Missing event in other trace: {key[0]} attempt {key[1]}")
                continue
            changed = [
                f"{name} {getattr(event, name)!r} != {getattr(match, name)!r}"
                for name in _COMPARED
                if getattr(event, name) != getattr(match, name)
            ]
            if changed:
                lines.append(f"Difference for {key[0]} attempt {key[1]}: " + "; ".join(changed))
        lines.extend(
            f"Extra event in other trace: {key[0]} attempt {key[1]}" for key in theirs if key not in mine
        )
        return lines


@dataclass
class ExecutionResult:
    """The outcome of a run."""

    run_id: str
    status: RunStatus
    final_state: BaseModel | None
    trace: ExecutionTrace
    total_cost_usd: float = 0.0
    total_tokens: int = 0
    hook_errors: int = 0
    header: dict[str, Any] = field(default_factory=dict, repr=False)

    def record(self) -> RunRecord:
        """This run as a run-file model (what ``save`` writes and ``load_run`` returns)."""
        return RunRecord.from_result(self)

    def save(self, path: str | Path, *, redact: bool = False) -> Path:
        """Write the run to ``path`` as ``run.json`` (atomically: temp file, then rename).

        ``redact=True`` strips states and error messages, for sharing. Returns the path.
        """
        return save_run(self.record(), path, redact=redact)
