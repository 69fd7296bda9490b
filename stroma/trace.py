"""What happened in a run: one TraceEvent per attempt, the full lifecycle log, and the result.

Example::

    result = await runner.run([extract, summarize], Document(text="..."))
    for event in result.trace.failures():
        print(event.node_id, event.attempt, event.failure_message)
    result.save("run.json")          # open it with: stroma-view run.json
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stroma import events as ev
from stroma._trace_model import RunStatus, TraceEvent
from stroma.events import EVENT_TYPES, LifecycleEvent, build_event
from stroma.failures import FailureClass
from stroma.runfile import RunRecord, save_run

__all__ = [
    "ExecutionResult",
    "ExecutionTrace",
    "RunStatus",
    "TraceEvent",
]


_COMPARED = ("input_state", "output_state", "failure", "failure_message")


# While a run goes, the engine records compactly: an event as the dict of its fields plus "type",
# an attempt as a tuple, and a state as the JSON text it already wrote for the checkpoint. Such
# records hold only atoms, so the garbage collector stops tracking them, and nothing is dumped or
# built twice on the hot path. Objects are built on first read.


def decode_state(text: str) -> dict[str, Any]:
    """A state recorded as its checkpoint JSON, as the dict an event carries."""
    decoded = json.loads(text)
    return decoded if isinstance(decoded, dict) else {"value": decoded}


def _state(value: Any, cache: dict[int, Any]) -> Any:
    if type(value) is not str:
        return value
    key = id(value)
    decoded = cache.get(key)
    if decoded is None:
        decoded = cache[key] = decode_state(value)
    return decoded


def materialize_event(item: Any, cache: dict[int, Any] | None = None) -> LifecycleEvent:
    """Build the event object of a raw record (a dict of fields with ``type``)."""
    if type(item) is not dict:
        return item  # type: ignore[no-any-return]
    if "input_state" in item or "output_state" in item:
        cache = {} if cache is None else cache
        item = dict(item)
        for key in ("input_state", "output_state"):
            if key in item:
                item[key] = _state(item[key], cache)
    return build_event(EVENT_TYPES[item["type"]], item)


# A node that succeeded on its first attempt, with no listener watching, is recorded as one
# tuple that stands for both its attempt and its lifecycle events (see ``_expand_success``):
# its first nine fields are the attempt's, in the order of the attempt tuple.
SUCCESS_RECORD_LEN = 21


def _expand_success(item: tuple[Any, ...], cache: dict[int, Any]) -> list[LifecycleEvent]:
    """The events of a compact success record, as the engine would have published them."""
    (
        node_id,
        run_id,
        attempt,
        started_ts,
        input_state,
        output_state,
        duration_ms,
        _failure,
        _message,
        node_ms,
        max_attempts,
        key,
        store,
        saved_ts,
        checkpoint_ms,
        end_ts,
        tokens,
        input_tokens,
        output_tokens,
        cost_usd,
        model,
    ) = item
    out = _state(output_state, cache)
    events: list[LifecycleEvent] = [
        ev.NodeStarted(run_id=run_id, ts=started_ts, node_id=node_id, max_attempts=max_attempts),
        ev.AttemptStarted(
            run_id=run_id,
            ts=started_ts,
            node_id=node_id,
            attempt=attempt,
            max_attempts=max_attempts,
            input_state=_state(input_state, cache),
            model=None,
            idempotency_key=key,
        ),
    ]
    if store is not None:
        events.append(
            ev.CheckpointSaved(
                run_id=run_id,
                ts=saved_ts,
                node_id=node_id,
                store=store,
                size_bytes=len(output_state) if type(output_state) is str else 0,
                duration_ms=checkpoint_ms,
            )
        )
    events.append(
        ev.AttemptSucceeded(
            run_id=run_id,
            ts=end_ts,
            node_id=node_id,
            attempt=attempt,
            duration_ms=duration_ms,
            output_state=out,
            tokens=tokens,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            model=model,
        )
    )
    events.append(
        ev.NodeFinished(
            run_id=run_id,
            ts=end_ts,
            node_id=node_id,
            outcome="succeeded",
            attempts=attempt,
            duration_ms=node_ms,
        )
    )
    return events


def _materialize_attempt(item: Any, cache: dict[int, Any]) -> TraceEvent:
    if type(item) is not tuple:
        return item  # type: ignore[no-any-return]
    node_id, run_id, attempt, ts, input_state, output_state, duration_ms, failure, message = item[:9]
    return TraceEvent.model_construct(
        node_id=node_id,
        run_id=run_id,
        attempt=attempt,
        timestamp_utc=datetime.fromtimestamp(ts, UTC),
        input_state=_state(input_state, cache),
        output_state=_state(output_state, cache),
        duration_ms=duration_ms,
        failure=FailureClass(failure) if failure is not None else None,
        failure_message=message,
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
        self._attempts: list[Any] = list(events) if events is not None else []
        self._log: list[Any] = list(log) if log is not None else []
        self._attempts_done = len(self._attempts)
        self._log_done = len(self._log)

    @property
    def events(self) -> list[TraceEvent]:
        """One TraceEvent per attempt, in order."""
        items = self._attempts
        cache: dict[int, Any] = {}
        for i in range(self._attempts_done, len(items)):
            items[i] = _materialize_attempt(items[i], cache)
        self._attempts_done = len(items)
        return items

    @property
    def log(self) -> list[LifecycleEvent]:
        """Every lifecycle event of the run, in order."""
        items = self._log
        done = self._log_done
        if done == len(items):
            return items
        cache: dict[int, Any] = {}
        built: list[LifecycleEvent] = []
        for item in items[done:]:
            if type(item) is tuple:
                built.extend(_expand_success(item, cache))
            else:
                built.append(materialize_event(item, cache))
        items[done:] = built  # in place: the engine appends to this very list
        self._log_done = len(items)
        return items

    def _record(self, item: LifecycleEvent | dict[str, Any]) -> None:
        self._log.append(item)

    def _record_attempt(self, item: tuple[Any, ...]) -> None:
        self._attempts.append(item)

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
