"""The store conformance suite (stroma.testing) run on every store Stroma ships."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from stroma.testing import CONFORMANCE_CHECKS, ConformanceError, check_store, run_conformance_check
from tests.stroma.stores.conftest import ALL_KINDS, CLUSTER_KINDS, StoreKit


@pytest.mark.parametrize("check", sorted(CONFORMANCE_CHECKS))
@pytest.mark.parametrize("kind", ALL_KINDS + CLUSTER_KINDS)
async def test_store_passes_conformance_check(
    kind: str, check: str, make_store: Callable[[str], Awaitable[StoreKit]]
) -> None:
    """Each shipped store keeps each promise of the conformance suite."""
    kit = await make_store(kind)
    await run_conformance_check(check, kit.store, write_raw=kit.write_raw, ttl_of=kit.ttl_of)


async def test_check_store_runs_every_check_on_a_factory(
    make_store: Callable[[str], Awaitable[StoreKit]],
) -> None:
    """check_store accepts a store factory and runs the whole suite in one call."""
    kit = await make_store("sqlite")
    await check_store(lambda: kit.store, write_raw=kit.write_raw)


async def test_conformance_suite_catches_a_store_that_imports_stored_names() -> None:
    """The suite fails a store that resolves schema refs by importing them (the unsafe docs
    example), so passing it means something."""
    import importlib

    from pydantic import BaseModel

    class ImportingStore:
        def __init__(self) -> None:
            self.data: dict[tuple[str, str], tuple[str, str]] = {}

        async def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
            ref = f"{type(state).__module__}:{type(state).__qualname__}"
            self.data[(run_id, node_id)] = (state.model_dump_json(), ref)

        async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
            self.data[(run_id, node_id)] = (payload, ref)

        async def load(self, run_id: str, node_id: str) -> BaseModel | None:
            item = self.data.get((run_id, node_id))
            if item is None:
                return None
            module, _, name = item[1].partition(":")
            schema = getattr(importlib.import_module(module), name)
            return schema.model_validate_json(item[0])  # type: ignore[no-any-return]

        async def delete(self, run_id: str) -> None:
            for key in [k for k in self.data if k[0] == run_id]:
                del self.data[key]

    with pytest.raises(ConformanceError, match="hostile_payloads_refused"):
        await run_conformance_check("hostile_payloads_refused", ImportingStore())


async def test_conformance_suite_catches_a_store_whose_delete_matches_a_pattern() -> None:
    """The suite fails a store whose delete treats the run id as a glob/prefix."""
    from pydantic import BaseModel

    from stroma._schemas import schema_ref
    from stroma.checkpoint import decode_payload

    class PrefixDeleteStore:
        def __init__(self) -> None:
            self.data: dict[str, tuple[str, str]] = {}

        async def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
            self.data[f"{run_id}:{node_id}"] = (state.model_dump_json(), schema_ref(type(state)))

        async def load(self, run_id: str, node_id: str) -> BaseModel | None:
            item = self.data.get(f"{run_id}:{node_id}")
            return None if item is None else decode_payload(item[0], item[1], None, run_id, node_id)

        async def delete(self, run_id: str) -> None:
            for key in [k for k in self.data if k.startswith(run_id)]:
                del self.data[key]

    with pytest.raises(ConformanceError, match="delete_removes_exactly_one_run"):
        await run_conformance_check("delete_removes_exactly_one_run", PrefixDeleteStore())
