"""The lifecycle event stream: the one seam every listener uses.

The engine is the only place that decides anything; it publishes one frozen, slotted event per
thing that happened. The in-process trace, run files, user hooks, OpenTelemetry and the viewer
all read this stream and re-derive nothing.

Every event has ``run_id`` and ``ts`` (wall-clock seconds since the epoch, from the run's clock).
Durations are milliseconds measured on the run's monotonic clock. Events never carry a live
exception object into a run file: ``AttemptFailed.exception`` is in-process only.

Example::

    from stroma import NodeHooks, StromaRunner
    from stroma.events import RetryScheduled

    def on_event(event):
        if isinstance(event, RetryScheduled):
            print(f"{event.node_id}: retry in {event.delay_s:.2f}s")

    runner = StromaRunner.quick().with_hooks(NodeHooks(on_event=on_event))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MemberDescriptorType
from typing import Any, ClassVar, Literal

__all__ = [
    "EVENT_TYPES",
    "AttemptFailed",
    "AttemptStarted",
    "AttemptSucceeded",
    "BudgetChecked",
    "BudgetDecision",
    "CheckpointLoaded",
    "CheckpointSaved",
    "ContractViolated",
    "FailureClassified",
    "LifecycleEvent",
    "ModelFallback",
    "NodeFinished",
    "NodeRestored",
    "NodeStarted",
    "RetriesExhausted",
    "RetryScheduled",
    "RunFinished",
    "RunStarted",
    "event_from_dict",
    "event_to_dict",
]

BudgetDecision = Literal["allow", "fallback", "deny"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleEvent:
    """Base of every lifecycle event."""

    kind: ClassVar[str] = "LifecycleEvent"
    run_id: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(LifecycleEvent):
    """A run began. ``carrier`` is a mutable W3C trace-context carrier that listeners may fill
    (the OpenTelemetry hooks inject the run span's ``traceparent``); it is persisted with the run.
    ``parent_carrier`` is the carrier stored by the run this one resumes, for span links."""

    kind: ClassVar[str] = "RunStarted"
    pipeline: tuple[str, ...]
    resumed_from: str | None = None
    pipeline_name: str = "pipeline"
    carrier: dict[str, str] = field(default_factory=dict)
    parent_carrier: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(LifecycleEvent):
    """A run ended with ``status``: a RunStatus value, or "CANCELLED" when the run was cancelled
    or interrupted (the error then propagates to the caller). Totals include spend carried over
    from the runs this one resumed (``carried_tokens`` / ``carried_cost_usd``): budgets hold
    across resumes."""

    kind: ClassVar[str] = "RunFinished"
    status: str
    duration_ms: float
    total_tokens: int
    total_cost_usd: float
    failures: int
    error_type: str | None = None
    failed_node: str | None = None
    carried_tokens: int = 0
    carried_cost_usd: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStarted(LifecycleEvent):
    """A logical node (all of its attempts) began. ``parent`` names the parallel group of a child."""

    kind: ClassVar[str] = "NodeStarted"
    node_id: str
    parent: str | None = None
    max_attempts: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFinished(LifecycleEvent):
    """A logical node ended: ``outcome`` is "succeeded", "failed" or "cancelled"; ``error_type``
    names the final error of a failed node (as on AttemptFailed)."""

    kind: ClassVar[str] = "NodeFinished"
    node_id: str
    outcome: str
    attempts: int
    duration_ms: float
    failure_class: str | None = None
    parent: str | None = None
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRestored(LifecycleEvent):
    """A node skipped on resume; its output (when loaded) came from a checkpoint."""

    kind: ClassVar[str] = "NodeRestored"
    node_id: str
    output_state: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptStarted(LifecycleEvent):
    """One attempt of a node began. ``idempotency_key`` is ``run_id:node_id:attempt``."""

    kind: ClassVar[str] = "AttemptStarted"
    node_id: str
    attempt: int
    max_attempts: int
    input_state: dict[str, Any]
    model: str | None = None
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptSucceeded(LifecycleEvent):
    """One attempt returned output that passed the node's contract."""

    kind: ClassVar[str] = "AttemptSucceeded"
    node_id: str
    attempt: int
    duration_ms: float
    output_state: dict[str, Any]
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFailed(LifecycleEvent):
    """One attempt raised (or its output failed the contract). ``error_type`` is the exception's
    qualified name, or ``timeout`` for a per-node timeout. ``message`` is the exception text: it
    stays in process and in local run files; telemetry leaves it out unless content is captured."""

    kind: ClassVar[str] = "AttemptFailed"
    node_id: str
    attempt: int
    duration_ms: float
    error_type: str
    message: str
    failure_class: str
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None
    output_state: dict[str, Any] | None = None
    """What the node returned when its output failed the contract (None otherwise): the rejected
    output, so it can be looked at. Run files keep it (``save(redact=True)`` strips it); telemetry
    only with content capture."""
    exception: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureClassified(LifecycleEvent):
    """Which classifier (or built-in rule) decided the failure class of an attempt."""

    kind: ClassVar[str] = "FailureClassified"
    node_id: str
    attempt: int
    failure_class: str
    decided_by: str
    error_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(LifecycleEvent):
    """A failed attempt will be retried after ``delay_s`` seconds (the delay actually slept)."""

    kind: ClassVar[str] = "RetryScheduled"
    node_id: str
    attempt: int
    delay_s: float
    error_type: str
    failure_class: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetriesExhausted(LifecycleEvent):
    """The policy for ``failure_class`` allows no further retry."""

    kind: ClassVar[str] = "RetriesExhausted"
    node_id: str
    attempts: int
    failure_class: str
    max_retries: int
    backoff_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetChecked(LifecycleEvent):
    """A budget dimension ("tokens", "cost", "latency") was checked: allow, fallback or deny."""

    kind: ClassVar[str] = "BudgetChecked"
    node_id: str
    dimension: str
    limit: float
    used: float
    decision: BudgetDecision


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFallback(LifecycleEvent):
    """Spend crossed a fallback threshold: the node gets ``to_model`` instead of ``from_model``."""

    kind: ClassVar[str] = "ModelFallback"
    node_id: str
    from_model: str
    to_model: str
    spend_fraction: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointSaved(LifecycleEvent):
    """A node's output was committed to the checkpoint store."""

    kind: ClassVar[str] = "CheckpointSaved"
    node_id: str
    store: str
    size_bytes: int
    duration_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointLoaded(LifecycleEvent):
    """A node's output was loaded from the checkpoint store on resume."""

    kind: ClassVar[str] = "CheckpointLoaded"
    node_id: str
    store: str
    size_bytes: int
    duration_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractViolated(LifecycleEvent):
    """Data failed a node's contract. ``field_paths`` and ``errors`` (path, message) carry no input
    values; the full message with values is on the matching AttemptFailed."""

    kind: ClassVar[str] = "ContractViolated"
    node_id: str
    attempt: int
    direction: str
    field_paths: tuple[str, ...]
    error_count: int
    errors: tuple[tuple[str, str], ...] = ()


EVENT_TYPES: dict[str, type[LifecycleEvent]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        RunFinished,
        NodeStarted,
        NodeFinished,
        NodeRestored,
        AttemptStarted,
        AttemptSucceeded,
        AttemptFailed,
        FailureClassified,
        RetryScheduled,
        RetriesExhausted,
        BudgetChecked,
        ModelFallback,
        CheckpointSaved,
        CheckpointLoaded,
        ContractViolated,
    )
}

_SKIP = frozenset({"exception"})
_FIELDS: dict[type[LifecycleEvent], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name not in _SKIP) for cls in EVENT_TYPES.values()
}
_TUPLE_FIELDS = frozenset({"pipeline", "field_paths"})
_NONE = type(None)
_ANNOTATION_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "str | None": (str, _NONE),
    "dict[str, Any]": (dict,),
    "dict[str, Any] | None": (dict, _NONE),
    "dict[str, str]": (dict,),
    "tuple[str, ...]": (list, tuple),
    "tuple[tuple[str, str], ...]": (list, tuple),
    "BudgetDecision": (str,),
}
_CHECKS: dict[type[LifecycleEvent], tuple[tuple[str, tuple[type, ...]], ...]] = {
    cls: tuple(
        (f.name, _ANNOTATION_TYPES[str(f.type)]) for f in dataclasses.fields(cls) if f.name not in _SKIP
    )
    for cls in EVENT_TYPES.values()
}


def event_to_dict(event: LifecycleEvent) -> dict[str, Any]:
    """Encode an event as a JSON-ready dict with a ``type`` key (the event class name)."""
    out: dict[str, Any] = {"type": event.kind}
    for name in _FIELDS[type(event)]:
        value = getattr(event, name)
        if type(value) is tuple:
            value = [list(v) if type(v) is tuple else v for v in value]
        out[name] = value
    return out


def event_from_dict(data: dict[str, Any]) -> LifecycleEvent:
    """Decode a dict made by :func:`event_to_dict`.

    Raises ``KeyError`` naming a missing field or an unknown ``type``, and ``TypeError`` for a field
    of the wrong shape; :func:`stroma.load_run` turns both into a RunFileError with file and line.
    """
    kind = data.get("type")
    if type(kind) is str and type(data) is dict:
        decode = _FAST_DECODERS.get(kind)
        if decode is not None:
            event = decode(data)
            if event is not None:
                return event
    return _decode_checked(data)


def _decode_checked(data: dict[str, Any]) -> LifecycleEvent:
    """The careful decoder: every field checked in order, the first problem raised by name."""
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise KeyError(f"type: unknown event type {kind!r}")
    kwargs: dict[str, Any] = {}
    for name, types in _CHECKS[cls]:
        if name in data:
            value = data[name]
            if not isinstance(value, types) or (type(value) is bool and bool not in types):
                expected = " or ".join("null" if t is _NONE else t.__name__ for t in types)
                raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")
            if name in _TUPLE_FIELDS:
                if not isinstance(value, list):
                    raise TypeError(f"{name}: expected a list, got {type(value).__name__}")
                value = tuple(value)
            elif name == "errors":
                if not isinstance(value, list):
                    raise TypeError(f"{name}: expected a list, got {type(value).__name__}")
                for k, item in enumerate(value):
                    if not isinstance(item, list) or len(item) != 2:
                        raise TypeError(f"{name}[{k}]: expected a [path, message] pair")
                value = tuple((str(p), str(m)) for p, m in value)
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise KeyError(f"{missing[0]}: required field missing from {kind}") from exc
        raise


# -- the fast decoders -------------------------------------------------------------------------
#
# Decoding a big run file is mostly this function, and the careful path above spends its time in
# isinstance checks, a kwargs dict and the frozen dataclass __init__ (one object.__setattr__ per
# field). Each event class therefore also gets a generated decoder that, in one pass, reads every
# field, accepts only the exact JSON types the careful path accepts (``type(v) is int`` rejects bool
# as the careful path does), and fills the new instance's slots through their member descriptors.
# It never raises for bad input: on anything unusual (a missing required field, a subclass, a
# value of the wrong shape) it returns None and the careful path decides and explains. So the fast
# path produces the very object the careful path would, and errors keep their messages.

_FastDecoder = Callable[[dict[str, Any]], LifecycleEvent | None]
_ABSENT: Any = object()


def _pairs(value: list[Any]) -> tuple[tuple[str, str], ...] | None:
    """``errors`` as the careful path converts it, or None when an item is not a 2-item list."""
    out = []
    for item in value:
        if type(item) is not list or len(item) != 2:
            return None
        out.append((str(item[0]), str(item[1])))
    return tuple(out)


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None] | None:
    for klass in cls.__mro__:
        found = klass.__dict__.get(name)
        if found is not None:
            return found.__set__ if isinstance(found, MemberDescriptorType) else None
    return None


# -- fast keyword construction ------------------------------------------------------------------
#
# The engine builds events with their keyword constructors (so a misspelt field is a type error),
# for every listener on the hot path. The frozen dataclass ``__init__`` costs one
# ``object.__setattr__`` per field; each class's ``__init__`` is therefore replaced by a generated
# one with the very same keyword-only signature that fills the slots through their member
# descriptors.


def _install_fast_init(cls: type[LifecycleEvent]) -> None:
    env: dict[str, Any] = {"_M": _ABSENT}
    params: list[str] = []
    body: list[str] = []
    for i, f in enumerate(dataclasses.fields(cls)):
        setter = _slot_setter(cls, f.name)
        if setter is None or not f.init:
            return  # not a plain slotted dataclass: keep the generated __init__
        env[f"_s{i}"] = setter
        if f.default is not dataclasses.MISSING:
            env[f"_d{i}"] = f.default
            params.append(f"{f.name}=_d{i}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_f{i}"] = f.default_factory
            params.append(f"{f.name}=_M")
            body.append(f"    if {f.name} is _M:")
            body.append(f"        {f.name} = _f{i}()")
        else:
            params.append(f.name)
        body.append(f"    _s{i}(self, {f.name})")
    source = "def __init__(self, *, " + ", ".join(params) + "):\n" + "\n".join(body) + "\n"
    namespace = dict(env)
    exec(compile(source, f"<stroma.events __init__ of {cls.__name__}>", "exec"), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]


class _DecoderSource:
    """The lines of a generated decoder, filled field by field (see :func:`_compile_decoder`)."""

    def __init__(self, cls: type[LifecycleEvent]) -> None:
        self.env: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_M": _ABSENT, "_tuple": tuple}
        self.env["_pairs"] = _pairs
        self.env["_list"] = list
        self.full: list[str] = []  # reads, by subscript (a missing field raises KeyError)
        self.full_checks: list[str] = []  # then checks and conversions
        self.partial: list[str] = []  # reads with get, defaults, checks and conversions
        self.build: list[str] = []

    def default_of(self, i: int, f: dataclasses.Field[Any]) -> str | None:
        """The expression of the field's default, or None when it has none."""
        if f.default_factory is not dataclasses.MISSING:
            self.env[f"_d{i}"] = f.default_factory
            return f"_d{i}()"
        if f.default is not dataclasses.MISSING:
            self.env[f"_d{i}"] = f.default
            return f"_d{i}"
        return None

    def check_of(self, i: int, name: str, allowed: tuple[type, ...]) -> tuple[str, list[str]] | None:
        """The type test of a field's value and its conversion lines (None: not decodable here)."""
        if name in _TUPLE_FIELDS or name == "errors":
            if list not in allowed:
                return None
            if name in _TUPLE_FIELDS:
                return f"type(v{i}) is _list", [f"v{i} = _tuple(v{i})"]
            return f"type(v{i}) is _list", [f"v{i} = _pairs(v{i})", f"if v{i} is None:", "    return None"]
        tests = []
        for k, t in enumerate(allowed):
            if t is _NONE:
                tests.append(f"v{i} is None")
            else:
                self.env[f"_t{i}_{k}"] = t
                tests.append(f"type(v{i}) is _t{i}_{k}")
        return " or ".join(tests), []

    def add(self, i: int, f: dataclasses.Field[Any], allowed: tuple[type, ...] | None) -> bool:
        """Add one field; False when the class cannot have a generated decoder."""
        default = self.default_of(i, f)
        self.build.append(f"    _s{i}(o, v{i})")
        if allowed is None:  # never read from the dict (the exception): always its default
            if default is None:
                return False
            self.full_checks.append(f"    v{i} = {default}")
            self.partial.append(f"    v{i} = {default}")
            return True
        found = self.check_of(i, f.name, allowed)
        if found is None:
            return False
        check, convert = found
        self.full.append(f"        v{i} = data[{f.name!r}]")
        self.full_checks += [f"    if not ({check}):", "        return None", *(f"    {c}" for c in convert)]
        self.partial.append(f"    v{i} = get({f.name!r}, _M)")
        if default is None:  # a missing required field reads as _M, which no check accepts
            self.partial += [f"    if not ({check}):", "        return None", *(f"    {c}" for c in convert)]
            return True
        self.partial += [f"    if v{i} is _M:", f"        v{i} = {default}", f"    elif not ({check}):"]
        self.partial.append("        return None")
        if convert:
            self.partial += ["    else:", *(f"        {c}" for c in convert)]
        return True


def _compile_decoder(cls: type[LifecycleEvent]) -> _FastDecoder | None:
    """A generated decoder for ``cls``, or None when the class is not a plain slotted dataclass.

    Two functions are generated: one for a dict that has every field (what event_to_dict writes:
    the fields are read by subscript, the fastest way) and one, used when a field is absent, that
    reads each with ``get`` and fills in the defaults.
    """
    if cls.__new__ is not object.__new__ or hasattr(cls, "__post_init__"):
        return None
    checked = dict(_CHECKS[cls])
    src = _DecoderSource(cls)
    for i, f in enumerate(dataclasses.fields(cls)):
        setter = _slot_setter(cls, f.name)
        if setter is None or not f.init:
            return None
        src.env[f"_s{i}"] = setter
        if not src.add(i, f, checked.get(f.name)):
            return None
    name = cls.__name__
    body = [
        f"def decode_{name}_partial(data):",
        "    get = data.get",
        *src.partial,
        "    o = _new(_cls)",
        *src.build,
        "    return o",
        f"def decode_{name}(data):",
        "    try:",
        *src.full,
        "    except KeyError:",
        f"        return decode_{name}_partial(data)",
        *src.full_checks,
        "    o = _new(_cls)",
        *src.build,
        "    return o",
        f"return decode_{name}",
    ]
    env = src.env
    source = "def _factory(" + ", ".join(env) + "):\n" + "\n".join(f"    {line}" for line in body)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<stroma.events decoder for {name}>", "exec"), namespace)
    decoder: _FastDecoder = namespace["_factory"](**env)
    return decoder


_FAST_DECODERS: dict[str, _FastDecoder] = {
    kind: decoder for kind, cls in EVENT_TYPES.items() if (decoder := _compile_decoder(cls)) is not None
}
