"""Hostile checkpoint data planted straight into each store's storage is refused with a typed
error, and an audit hook in a fresh interpreter sees no import while it is refused."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from stroma import (
    CheckpointDataError,
    CheckpointManager,
    ContractRegistry,
    NodeContract,
    RunConfig,
    SchemaResolutionError,
    StromaRunner,
    stroma_node,
)
from stroma._schemas import schema_ref
from stroma.checkpoint import _resolve_schema
from tests.stroma.stores.conftest import DURABLE_KINDS, StoreKit


class Doc(BaseModel):
    """A checkpointed state."""

    text: str


DEEP = "[" * (512 * 1024) + "]" * (512 * 1024)


def hostile_cases(kind: str) -> list[tuple[str, str | bytes, str, type[Exception]]]:
    """(label, payload, ref, expected error) — pickle as bytes where the storage holds bytes."""
    ref = schema_ref(Doc)
    pickled: str | bytes = pickle.dumps(Doc(text="x"), protocol=5)
    if kind == "postgres":  # a text column cannot hold raw bytes; pickle protocol 0 is text
        pickled = pickle.dumps({"text": "x"}, protocol=0).decode("ascii")
    return [
        ("os:system", '{"text": "ls"}', "os:system", SchemaResolutionError),
        ("builtins:eval", '{"text": "1+1"}', "builtins:eval", SchemaResolutionError),
        ("pickle", pickled, ref, CheckpointDataError),
        ("deep json 1MiB", DEEP, ref, CheckpointDataError),
    ]


def test_resolve_schema_refuses_unregistered_names_as_type_errors() -> None:
    """_resolve_schema raises SchemaResolutionError (a TypeError) for names not registered."""
    for ref in ("os:system", "builtins:eval", "builtins:dict", "subprocess:Popen", "nocolon"):
        with pytest.raises(SchemaResolutionError) as info:
            _resolve_schema(ref)
        assert isinstance(info.value, TypeError)
        assert "never imports" in str(info.value) or "module:qualname" in str(info.value)
    assert _resolve_schema(schema_ref(Doc)) is Doc


@pytest.mark.parametrize("kind", DURABLE_KINDS)
async def test_hostile_payloads_in_storage_are_refused(
    kind: str, make_store: Callable[[str], Awaitable[StoreKit]]
) -> None:
    """Payloads naming os:system / builtins:eval, pickle, and 1 MiB deep JSON written into the
    store's own storage make load() raise a typed error."""
    kit = await make_store(kind)
    assert kit.write_raw is not None
    for label, payload, ref, expected in hostile_cases(kind):
        result = kit.write_raw("hostile-run", label, payload, ref)
        if hasattr(result, "__await__"):
            await result
        with pytest.raises(expected):
            await kit.store.load("hostile-run", label)
    await kit.store.delete("hostile-run")


@pytest.mark.parametrize("kind", DURABLE_KINDS)
async def test_resume_over_a_tampered_checkpoint_fails_typed(
    kind: str, make_store: Callable[[str], Awaitable[StoreKit]], unique: str
) -> None:
    """A resume whose committed checkpoint was replaced by pickle data stops with
    CheckpointDataError instead of running on (or unpickling) it."""
    kit = await make_store(kind)
    registry = ContractRegistry()
    nodes = []
    for node_id in ("a", "b"):
        contract = NodeContract(node_id=node_id, input_schema=Doc, output_schema=Doc)
        registry.register(contract)

        async def node(state: Doc) -> dict[str, str]:
            return {"text": state.text + "!"}

        nodes.append(stroma_node(node_id, contract)(node))
    run_id = f"{unique}-tamper"
    runner = StromaRunner(registry, CheckpointManager(kit.store), RunConfig(run_id=run_id))
    first = await runner.run(nodes[:1], Doc(text="hi"))
    assert first.final_state == Doc(text="hi!")
    payload = hostile_cases(kind)[2][1]
    assert kit.write_raw is not None
    result = kit.write_raw(run_id, "a", payload, schema_ref(Doc))
    if hasattr(result, "__await__"):
        await result
    with pytest.raises(CheckpointDataError, match=r"pickle|not valid JSON"):
        await runner.resume(nodes, Doc(text="hi"))


AUDIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, pickle, sqlite3, sys
    from pydantic import BaseModel
    from stroma import SqliteStore, SchemaResolutionError, CheckpointDataError
    from stroma._schemas import schema_ref
    from stroma.checkpoint import _resolve_schema

    class Doc(BaseModel):
        text: str

    path = sys.argv[1]
    store = SqliteStore(path)
    rows = [
        ("os", '{"text": "x"}', "os:system"),
        ("eval", '{"text": "x"}', "builtins:eval"),
        ("anti", '{"text": "x"}', "antigravity:fly"),
        ("pickle", pickle.dumps(Doc(text="x")), schema_ref(Doc)),
        ("deep", "[" * 600000 + "]" * 600000, schema_ref(Doc)),
        ("good", '{"text": "ok"}', schema_ref(Doc)),
    ]

    async def main():
        await store.load("warm-up", "nothing")  # the store's own lazy imports happen here
        conn = sqlite3.connect(path)
        with conn:
            for node, payload, ref in rows:
                conn.execute("INSERT INTO stroma_checkpoints VALUES ('run', ?, ?, ?, 0)",
                             (node, payload, ref))
        conn.close()
        imports = []
        sys.addaudithook(lambda event, args: imports.append(str(args[0]))
                         if event == "import" else None)
        outcomes = {}
        for ref in ("os:system", "builtins:eval", "antigravity:fly", "this:s",
                    "xml.dom.minidom:parseString"):
            try:
                _resolve_schema(ref)
                outcomes[ref] = "resolved"
            except SchemaResolutionError as exc:
                outcomes[ref] = type(exc).__name__ + ("+TypeError" if isinstance(exc, TypeError) else "")
        for node, _, _ in rows:
            try:
                got = await store.load("run", node)
                outcomes[node] = "loaded " + got.model_dump_json()
            except (SchemaResolutionError, CheckpointDataError) as exc:
                outcomes[node] = type(exc).__name__
        await store.aclose()
        leaked = [m for m in ("antigravity", "this", "xml.dom.minidom") if m in sys.modules]
        seen = list(imports)
        import colorsys  # control: the hook does see a real import
        control = "colorsys" in imports
        print(json.dumps({"imports": seen, "outcomes": outcomes, "leaked": leaked,
                          "control": control}))

    asyncio.run(main())
    """
)


def test_audit_hook_sees_no_import_while_hostile_data_is_refused(tmp_path: Path) -> None:
    """In a fresh interpreter, resolving os:system / builtins:eval / unimported module names and
    loading hostile rows raise typed errors while an audit hook records zero import events."""
    script = tmp_path / "audit.py"
    script.write_text(AUDIT_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "audit.db")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["control"] is True  # the hook works: it saw the control import
    assert report["imports"] == []
    assert report["leaked"] == []
    outcomes = report["outcomes"]
    for ref in ("os:system", "builtins:eval", "antigravity:fly", "this:s",
                "xml.dom.minidom:parseString"):
        assert outcomes[ref] == "SchemaResolutionError+TypeError"
    assert outcomes["os"] == outcomes["eval"] == outcomes["anti"] == "SchemaResolutionError"
    assert outcomes["pickle"] == outcomes["deep"] == "CheckpointDataError"
    assert outcomes["good"] == 'loaded {"text":"ok"}'  # the same path does load honest data
