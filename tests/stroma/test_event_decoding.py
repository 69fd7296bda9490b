"""event_from_dict's fast decoders build exactly what the careful decoder builds, and bad input
still gets the careful decoder's errors (same exception type, same message)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stroma import events as ev
from stroma.events import EVENT_TYPES, event_from_dict, event_to_dict

# Runs written by the engine (tests/viewer/fixtures/make_fixtures.py): between them, every event type.
RUNS = Path(__file__).resolve().parents[1] / "viewer" / "fixtures"


class StrSub(str):
    """A str subclass: the fast path leaves anything but exact JSON types to the careful one."""


class IntSub(int):
    """An int subclass."""


class FloatSub(float):
    """A float subclass."""


class DictSub(dict[str, Any]):
    """A dict subclass."""


class ListSub(list[Any]):
    """A list subclass."""


class HidingDict(dict[str, Any]):
    """A mapping whose ``in`` hides the optional fields: the careful path asks ``in`` first."""

    def __contains__(self, key: object) -> bool:
        return key in ("type", "run_id", "ts") or (super().__contains__(key) and key not in OPTIONAL)


OPTIONAL = {
    f.name
    for cls in EVENT_TYPES.values()
    for f in dataclasses.fields(cls)
    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
}


def real_event_dicts() -> list[dict[str, Any]]:
    """Every event of the committed runs, as decoded JSON (a fresh copy each call)."""
    out: list[dict[str, Any]] = []
    for text in _run_texts():
        out.extend(json.loads(text)["events"])
    return out


@functools.cache
def _run_texts() -> tuple[str, ...]:
    return tuple(path.read_text(encoding="utf-8") for path in sorted(RUNS.glob("*.json")))


def full_samples() -> list[dict[str, Any]]:
    """One dict per event type with every field set to a non-default value (event_to_dict output)."""
    out = []
    for kind, cls in EVENT_TYPES.items():
        values: dict[str, Any] = {"run_id": "r", "ts": 1.5}
        for f in dataclasses.fields(cls):
            if f.name in values or f.name == "exception":
                continue
            annotation = str(f.type)
            if annotation.startswith("tuple[tuple"):
                values[f.name] = (("a.b", "Field required"), ("c", "too long"))
            elif annotation.startswith("tuple"):
                values[f.name] = ("a", "b")
            elif annotation.startswith("dict"):
                values[f.name] = {"k": "v", "n": [1, {"x": None}]}
            elif annotation.startswith("int"):
                values[f.name] = 3
            elif annotation.startswith("float"):
                values[f.name] = 2.5
            elif annotation == "BudgetDecision":
                values[f.name] = "allow"
            else:
                values[f.name] = f"{kind}-{f.name}"
        out.append(event_to_dict(cls(**values)))
    return out


def one_per_type() -> list[dict[str, Any]]:
    """The first real event of each type, then the full samples."""
    return copy.deepcopy(_one_per_type())


@functools.cache
def _one_per_type() -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for data in real_event_dicts():
        seen.setdefault(data["type"], data)
    return list(seen.values()) + full_samples()


def typed(value: Any) -> Any:
    """``value`` with the exact type of everything in it, so ``1 == 1.0`` or a str subclass shows."""
    if isinstance(value, tuple | list):
        return (type(value), tuple(typed(v) for v in value))
    if isinstance(value, dict):
        return (type(value), tuple((typed(k), typed(v)) for k, v in value.items()))
    return (type(value), value)


def shape(event: ev.LifecycleEvent, data: Any = None) -> Any:
    """Type, field values (typed), and which values are the very objects of the input dict."""
    fields = []
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        shared = isinstance(data, dict) and f.name in data and value is data[f.name]
        fields.append((f.name, typed(value), shared))
    return (type(event), tuple(fields))


def outcome(decode: Any, data: Any) -> Any:
    """What ``decode(data)`` does: the event's shape, or the exception's type and message."""
    try:
        event = decode(data)
    except Exception as exc:  # the point is to compare whatever is raised
        return ("raised", type(exc), str(exc))
    return ("decoded", shape(event, data))


def test_every_event_type_has_a_fast_decoder() -> None:
    """The fast path covers every event class (otherwise the tests below prove little)."""
    assert set(ev._FAST_DECODERS) == set(EVENT_TYPES)


def test_the_committed_runs_cover_every_event_type() -> None:
    """The real runs used below hold every event type."""
    assert {d["type"] for d in real_event_dicts()} == set(EVENT_TYPES)


@pytest.mark.parametrize("source", ["real runs", "full samples"])
def test_fast_decoder_builds_the_careful_object(source: str) -> None:
    """Each event of the real runs (and a sample of each type with every field set) decodes on the
    fast path to the very object the careful path builds: type, values, value types, equality."""
    dicts = real_event_dicts() if source == "real runs" else full_samples()
    for data in dicts:
        fast = ev._FAST_DECODERS[data["type"]](data)
        assert fast is not None, data  # the fast path itself decoded it
        careful = ev._decode_checked(data)
        assert shape(fast, data) == shape(careful, data)
        assert fast == careful
        assert repr(fast) == repr(careful)
        assert shape(event_from_dict(data), data) == shape(careful, data)
        assert event_to_dict(fast) == event_to_dict(careful)


def test_fast_objects_behave_like_constructed_ones() -> None:
    """Frozen, slotted, hashable when the class is, copyable and picklable like the careful object."""
    for data in one_per_type():
        fast = event_from_dict(data)
        careful = ev._decode_checked(data)
        assert not hasattr(fast, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.run_id = "other"  # type: ignore[misc]
        try:
            expected_hash: int | None = hash(careful)
        except TypeError:
            expected_hash = None
        if expected_hash is not None:
            assert hash(fast) == expected_hash
        assert copy.copy(fast) == careful
        assert pickle.loads(pickle.dumps(fast)) == careful
        if isinstance(fast, ev.AttemptFailed):
            assert fast.exception is None


def test_absent_fields_take_their_defaults_or_raise_the_careful_key_error() -> None:
    """Dropping a field with a default gives the default (a fresh dict for a carrier); dropping a
    required one raises the careful KeyError naming it."""
    for data in one_per_type():
        cls = EVENT_TYPES[data["type"]]
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            partial = {k: v for k, v in data.items() if k != f.name}
            assert outcome(event_from_dict, partial) == outcome(ev._decode_checked, partial), f.name
            optional = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if optional:
                assert ev._FAST_DECODERS[data["type"]](partial) is not None
            else:
                with pytest.raises(KeyError, match=f"{f.name}: required field missing"):
                    event_from_dict(partial)
    first = event_from_dict({"type": "RunStarted", "run_id": "r", "ts": 0, "pipeline": []})
    second = event_from_dict({"type": "RunStarted", "run_id": "r", "ts": 0, "pipeline": []})
    assert isinstance(first, ev.RunStarted)
    assert isinstance(second, ev.RunStarted)
    assert first.carrier == {}
    assert first.carrier is not second.carrier


BAD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    7,
    -1.5,
    "x",
    "",
    [],
    ["a", "b"],
    [1, 2],
    [["p", "m"]],
    [["p", 1], [None, True]],
    [["p"]],
    [["p", "m", "x"]],
    [("p", "m")],
    ["ab"],
    [None],
    {},
    {"k": "v"},
    ("a", "b"),
    StrSub("x"),
    IntSub(3),
    FloatSub(1.5),
    DictSub(k="v"),
    ListSub(["a"]),
    float("nan"),
    2**80,
]


def test_wrong_shapes_raise_the_careful_errors() -> None:
    """Every field set to every kind of value: the fast path either builds the careful object or
    leaves the input to the careful path, so errors keep their type and message."""
    for data in one_per_type():
        for name in [k for k in data if k != "type"]:
            for bad in BAD_VALUES:
                changed = {**data, name: bad}
                assert outcome(event_from_dict, changed) == outcome(ev._decode_checked, changed), (
                    data["type"],
                    name,
                    bad,
                )


def test_wrong_shapes_name_the_field() -> None:
    """The messages stroma.load_run turns into RunFileError still name the field."""
    data = next(d for d in real_event_dicts() if d["type"] == "AttemptFailed")
    with pytest.raises(TypeError, match=r"^attempt: expected int, got bool$"):
        event_from_dict({**data, "attempt": True})
    with pytest.raises(TypeError, match=r"^ts: expected int or float, got str$"):
        event_from_dict({**data, "ts": "soon"})
    with pytest.raises(TypeError, match=r"^model: expected str or null, got int$"):
        event_from_dict({**data, "model": 4})
    started = next(d for d in real_event_dicts() if d["type"] == "RunStarted")
    with pytest.raises(TypeError, match=r"^pipeline: expected a list, got tuple$"):
        event_from_dict({**started, "pipeline": ("a",)})


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"type": "Nope", "run_id": "r", "ts": 1.0},
        {"type": 3},
        {"type": None},
        {"type": ["RunStarted"]},
        {"type": StrSub("RunFinished"), "run_id": "r", "ts": 1.0},
        {"type": "LifecycleEvent", "run_id": "r", "ts": 1.0},
    ],
)
def test_unknown_types_raise_the_careful_errors(data: dict[str, Any]) -> None:
    """A missing, unknown or odd ``type`` is the careful path's error."""
    assert outcome(event_from_dict, data) == outcome(ev._decode_checked, data)
    assert outcome(event_from_dict, data)[0] == "raised"


def test_odd_containers_and_extra_keys_decode_as_before() -> None:
    """Dict subclasses go the careful way, extra keys (and a stray exception) are ignored, and a
    non-dict fails as it always did."""
    for data in one_per_type():
        for variant in (
            OrderedDict(data),
            DictSub(data),
            HidingDict(data),
            {**data, "extra": 1, "exception": "boom"},
            dict(reversed(list(data.items()))),
        ):
            assert outcome(event_from_dict, variant) == outcome(ev._decode_checked, variant)
    for not_a_dict in ([], "RunStarted", None, 3):
        assert outcome(event_from_dict, not_a_dict) == outcome(ev._decode_checked, not_a_dict)


JSONISH: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def event_like(draw: st.DrawFn) -> dict[str, Any]:
    """A dict shaped like an event: each field kept, dropped, or replaced by random JSON."""
    base = dict(draw(st.sampled_from(one_per_type())))
    for name in [k for k in base if k != "type"]:
        action = draw(st.sampled_from(["keep", "keep", "drop", "random"]))
        if action == "drop":
            del base[name]
        elif action == "random":
            base[name] = draw(JSONISH)
    return base


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_like())
def test_random_event_dicts_decode_the_same_both_ways(data: dict[str, Any]) -> None:
    """Property: for any event-shaped JSON, fast and careful paths agree on the object or the error."""
    assert outcome(event_from_dict, data) == outcome(ev._decode_checked, data)
