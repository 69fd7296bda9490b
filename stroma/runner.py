"""StromaRunner: run a sequence of async nodes with every reliability primitive at each boundary.

Example::

    runner = StromaRunner.quick()

    @runner.node("double", input=InputState, output=OutputState)
    async def double(state: InputState) -> dict:
        return {"result": state.value * 2}

    result = await runner.run([double], InputState(value=5))
    print(result.status, result.final_state)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stroma._clock import current_clock
from stroma._config import RunConfig, check_node_id, new_run_id
from stroma._engine import ReliabilityContext, fan_out, status_for, takes_context
from stroma.checkpoint import (
    AsyncInMemoryStore,
    CheckpointManager,
    Lease,
    RedisStore,
    RunManifest,
    RunProgress,
)
from stroma.contracts import ContractRegistry, NodeContract, UntypedState
from stroma.cost import ExecutionBudget, FallbackPolicy
from stroma.errors import (
    CheckpointMissingError,
    ConfigurationError,
    ResumeMismatchError,
    RunLeasedError,
    StoreUnavailableError,
    UnknownNodeError,
)
from stroma.failures import Classifier, PolicyMap, default_policy_map
from stroma.hooks import NodeHooks, StepHooks, compose_hooks
from stroma.trace import ExecutionResult, RunStatus

__all__ = [
    "NodeHooks",
    "RunConfig",
    "StepHooks",
    "StromaRunner",
    "parallel",
    "stroma_node",
    "stroma_step",
]

logger = logging.getLogger("stroma")

NodeFunction = Callable[..., Awaitable[Any]]
_Step = tuple[str, NodeFunction, NodeContract | None]


def stroma_node(node_id: str, contract: NodeContract) -> Callable[[NodeFunction], NodeFunction]:
    """Mark an async function as the pipeline node ``node_id`` with ``contract``.

    Sets ``_stroma_node_id`` and ``_stroma_contract`` on the function and returns it unchanged.
    """
    check_node_id(node_id)
    if not isinstance(contract, NodeContract):
        raise ConfigurationError(
            f"stroma_node({node_id!r}, ...) needs a NodeContract, got {type(contract).__name__}; "
            f"use NodeContract(node_id={node_id!r}, input_schema=..., output_schema=...)"
        )

    def decorate(func: NodeFunction) -> NodeFunction:
        func._stroma_node_id = node_id  # type: ignore[attr-defined]
        func._stroma_contract = contract  # type: ignore[attr-defined]
        func._stroma_takes_ctx = takes_context(func)  # type: ignore[attr-defined]
        return func

    return decorate


def stroma_step(step_id: str, contract: NodeContract) -> Callable[[NodeFunction], NodeFunction]:
    """:func:`stroma_node` under its step name (the published ``stroma_step(step_id, contract)``)."""
    return stroma_node(step_id, contract)


def parallel(*nodes: NodeFunction) -> NodeFunction:
    """A pseudo-node that runs ``nodes`` concurrently on the same input.

    Each child's output is validated against its contract, then the dicts are merged (last
    write wins). Usage tuples are summed and returned as ``(merged, input_tokens, output_tokens,
    model)``. When a child fails, its siblings are cancelled and the error propagates.
    """
    if not nodes:
        raise ConfigurationError("parallel() needs at least one node")
    ids = []
    for node in nodes:
        node_id = getattr(node, "_stroma_node_id", None)
        if node_id is None:
            name = getattr(node, "__name__", repr(node))
            raise ConfigurationError(
                f"parallel() child {name} is not a Stroma node; decorate it with "
                f"@runner.node('{name}', input=..., output=...) or @stroma_node(...)"
            )
        ids.append(node_id)
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"parallel() children must be distinct nodes, got {ids}")
    children = tuple(nodes)

    async def group(state: Any, ctx: Any = None) -> tuple[dict[str, Any], int, int, str | None]:
        return await fan_out(children, state, ctx)

    group.__name__ = group.__qualname__ = "parallel_" + "_".join(ids)
    group._stroma_node_id = "parallel(" + ",".join(ids) + ")"  # type: ignore[attr-defined]
    group._stroma_contract = None  # type: ignore[attr-defined]
    group._stroma_children = children  # type: ignore[attr-defined]
    return group


def _all_ids(steps: Sequence[_Step]) -> list[str]:
    """Every node id that can run: the steps and the children of their parallel groups."""
    ids = []
    for node_id, func, _ in steps:
        ids.append(node_id)
        ids.extend(c._stroma_node_id for c in getattr(func, "_stroma_children", ()))
    return ids


def _name(func: Any) -> str:
    name = getattr(func, "__name__", None)
    return name if isinstance(name, str) else repr(func)


class StromaRunner:
    """Orchestrates sequential node execution with reliability primitives.

    Needs a ContractRegistry, a CheckpointManager and a RunConfig; :meth:`quick` builds all three
    with sensible defaults.
    """

    def __init__(
        self,
        registry: ContractRegistry,
        checkpoint_manager: CheckpointManager,
        config: RunConfig | None = None,
    ) -> None:
        self.registry = registry
        if not isinstance(checkpoint_manager, CheckpointManager):
            checkpoint_manager = CheckpointManager(checkpoint_manager)
        self.checkpoint_manager = checkpoint_manager
        self.config = config if config is not None else RunConfig()
        # pipelines already checked whose nodes all carry their contracts (nothing in them can
        # change with the registry): a runner reused for many runs checks each pipeline once
        self._checked: dict[tuple[NodeFunction, ...], list[_Step]] = {}

    def __repr__(self) -> str:
        return f"StromaRunner(run_id={self.config.run_id!r}, store={self.checkpoint_manager.kind!r})"

    @classmethod
    def quick(
        cls,
        *,
        store: Any = None,
        budget: ExecutionBudget | None = None,
        policy_map: PolicyMap | None = None,
        classifiers: list[Classifier] | None = None,
        hooks: NodeHooks | None = None,
        **config_kwargs: Any,
    ) -> StromaRunner:
        """A runner with an AsyncInMemoryStore, an unlimited budget and ``default_policy_map()``.

        Pass ``store``, ``budget``, ``policy_map``, ``classifiers`` or ``hooks`` to override;
        other keyword arguments go to RunConfig.
        """
        config = RunConfig(
            budget=budget if budget is not None else ExecutionBudget.unlimited(),
            policy_map=policy_map if policy_map is not None else default_policy_map(),
            classifiers=classifiers if classifiers is not None else [],
            hooks=hooks if hooks is not None else NodeHooks(),
            **config_kwargs,
        )
        manager = (
            store
            if isinstance(store, CheckpointManager)
            else CheckpointManager(store if store is not None else AsyncInMemoryStore())
        )
        return cls(ContractRegistry(), manager, config)

    # -- fluent builders --------------------------------------------------------------------

    def with_store(self, store: Any) -> StromaRunner:
        """Use ``store`` (any sync or async checkpoint store) for checkpoints."""
        self.checkpoint_manager = CheckpointManager(store)
        return self

    def with_redis(self, redis_url: str, ttl_seconds: int = 3600) -> StromaRunner:
        """Checkpoint to Redis (needs the ``redis`` extra: ``pip install 'stroma[redis]'``)."""
        return self.with_store(RedisStore(redis_url, ttl_seconds=ttl_seconds))

    def _set(self, field: str, value: Any) -> StromaRunner:
        # Every builder's argument goes through RunConfig's own checks (ConfigurationError
        # naming the field and value), then replaces that one field.
        setattr(self.config, field, getattr(RunConfig(**{field: value}), field))
        return self

    def with_budget(
        self,
        *,
        tokens: int | None = None,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
    ) -> StromaRunner:
        """Limit the run's total tokens, cost (USD) and latency (ms)."""
        self.config.budget = ExecutionBudget(
            max_tokens_total=tokens, max_cost_usd=cost_usd, max_latency_ms=latency_ms
        )
        return self

    def with_model_fallback(self, model: str, *, to: str, at_budget_pct: float = 0.8) -> StromaRunner:
        """Once spend reaches ``at_budget_pct`` of the cost budget, every node that runs gets
        ``to`` in ``ctx["_stroma_model"]``, and usage reported as ``model`` is priced at ``to``."""
        self.config.model_fallbacks = [
            *self.config.model_fallbacks,
            FallbackPolicy(preferred_model=model, fallback_model=to, at_budget_pct=at_budget_pct),
        ]
        return self

    def with_classifiers(self, classifiers: Sequence[Classifier]) -> StromaRunner:
        """Use ``classifiers`` (first non-None wins) before the built-in rules."""
        return self._set("classifiers", classifiers)

    def with_hooks(self, hooks: NodeHooks) -> StromaRunner:
        """Add lifecycle hooks; hooks added earlier (and process-wide ones) still fire.

        ``runner.config.hooks`` is then one NodeHooks calling each in order."""
        earlier = self.config.hook_list()
        self.config.hooks = compose_hooks([*earlier, RunConfig(hooks=hooks).hooks])
        return self

    def with_context(self, context: dict[str, Any]) -> StromaRunner:
        """The shared dict passed to nodes that take ``(state, ctx)`` (kept as given, not copied)."""
        if not isinstance(context, dict):
            raise ConfigurationError(
                f"with_context() needs a dict, got {type(context).__name__}; e.g. {{'client': client}}"
            )
        self.config.context = context
        return self

    def with_policy_map(self, policy_map: PolicyMap) -> StromaRunner:
        """Retry policy per failure class."""
        return self._set("policy_map", policy_map)

    def with_node_policies(self, node_policies: dict[str, PolicyMap]) -> StromaRunner:
        """Per-node policy overrides, merged over the global map."""
        return self._set("node_policies", node_policies)

    def with_node_timeouts(self, node_timeouts: dict[str, float]) -> StromaRunner:
        """Per-node timeouts in milliseconds (TimeoutError: RECOVERABLE by default)."""
        return self._set("node_timeouts", node_timeouts)

    def with_trace_dir(self, directory: str | Path) -> StromaRunner:
        """Stream every run to ``<directory>/<run>.jsonl`` as it goes (``stroma-view`` opens it)."""
        return self._set("trace_dir", directory)

    def node(
        self,
        node_id: str,
        *,
        input: type[BaseModel],
        output: type[BaseModel],
    ) -> Callable[[NodeFunction], NodeFunction]:
        """Decorator: create the contract, register it and mark the function as a node."""
        contract = NodeContract(node_id=node_id, input_schema=input, output_schema=output)
        self.registry.register(contract)
        return stroma_node(node_id, contract)

    # -- running ----------------------------------------------------------------------------

    def next_run_id(self) -> str:
        # An explicit run_id names one run (and is what resume continues); without one,
        # every run() is a new run with a fresh id.
        config = self.config
        return config.run_id if "run_id" in config.model_fields_set else new_run_id()

    def check_pipeline(self, node_sequence: Sequence[NodeFunction]) -> list[_Step]:
        """The pipeline as ``run`` sees it, (node id, function, contract) per node, after the
        checks ``run`` makes (every node has a contract, no id twice); ConfigurationError else.
        A pipeline whose nodes all carry their contracts is checked once per runner."""
        key = tuple(node_sequence) if type(node_sequence) in (list, tuple) else None
        cached = self._checked.get(key) if key is not None else None
        if cached is not None:
            return cached
        steps = self._check_steps(node_sequence)
        if key is not None and all(
            getattr(f, "_stroma_contract", None) is not None or hasattr(f, "_stroma_children") for f in key
        ):
            if len(self._checked) >= 32:
                self._checked.clear()
            self._checked[key] = steps
        return steps

    def _check_steps(self, node_sequence: Sequence[NodeFunction]) -> list[_Step]:
        if type(node_sequence) not in (list, tuple) and (
            isinstance(node_sequence, str | bytes) or not isinstance(node_sequence, Sequence)
        ):
            raise ConfigurationError(
                f"node_sequence must be a list of nodes, got {type(node_sequence).__name__}"
            )
        steps: list[_Step] = []
        seen: set[str] = set()
        for func in node_sequence:
            node_id = getattr(func, "_stroma_node_id", None)
            if node_id is None:
                name = _name(func)
                raise ConfigurationError(
                    f"{name} has no contract, so Stroma cannot check its boundaries. Decorate it "
                    f"with @runner.node('{name}', input=InputModel, output=OutputModel) or "
                    f"@stroma_node('{name}', NodeContract(node_id='{name}', input_schema=..., "
                    "output_schema=...))"
                )
            contract: NodeContract | None = getattr(func, "_stroma_contract", None)
            if contract is None and getattr(func, "_stroma_children", None) is None:
                if node_id not in self.registry:
                    raise ConfigurationError(
                        f"node '{node_id}' ({_name(func)}) has no contract and none is registered; "
                        f"register one with registry.register(NodeContract(node_id='{node_id}', "
                        "...)) or decorate it with @runner.node(...)"
                    )
                contract = self.registry.get(node_id)
            if node_id in seen:
                raise ConfigurationError(
                    f"node '{node_id}' appears twice in the pipeline; node ids key checkpoints, "
                    "so each must be unique (give the second one another id)"
                )
            seen.add(node_id)
            steps.append((node_id, func, contract))
        return steps

    async def run(self, node_sequence: Sequence[NodeFunction], initial_state: Any) -> ExecutionResult:
        """Execute the nodes in order from ``initial_state``; checkpoint after every success.

        With ``resume_from`` set, the nodes before it are skipped (never run again) and the
        checkpoint of the node just before it is loaded as the state.
        """
        config = self.config
        run_id = self.next_run_id()
        steps = self.check_pipeline(node_sequence)
        if config.node_timeouts:
            config.check_node_ids(_all_ids(steps))
        manager = self.checkpoint_manager
        async with self._lease(run_id) as lease:  # one worker per run: a second run() is refused
            if lease is not None and config.resume_from is None and "run_id" in config.model_fields_set:
                progress = await manager.load_progress(run_id)
                if progress is not None and progress.status != "running":
                    logger.warning(
                        "run %s already finished (%s); run() starts it afresh and overwrites its "
                        "checkpoints. To continue a run where it stopped, call resume()",
                        run_id,
                        progress.status,
                    )
            return await self._execute(
                steps, initial_state, config.resume_from, config, run_id=run_id, lease=lease
            )

    async def resume(self, node_sequence: Sequence[NodeFunction], initial_state: Any) -> ExecutionResult:
        """Continue run ``config.run_id`` after its last committed checkpoint.

        Runs from the start when nothing was committed; returns the stored final result (status
        as recorded) when the run had already completed. Takes the run's lease, so a second
        worker resuming the same run at the same time gets RunLeasedError.
        """
        steps = self.check_pipeline(node_sequence)
        if self.config.node_timeouts:
            self.config.check_node_ids(_all_ids(steps))
        async with self._lease(self.config.run_id) as lease:
            progress = await self.checkpoint_manager.load_progress(self.config.run_id)
            return await self._resume_leased(steps, initial_state, progress, lease)

    async def _resume_leased(
        self, steps: list[_Step], initial_state: Any, progress: RunProgress | None, lease: Lease | None
    ) -> ExecutionResult:
        """:meth:`resume` once the run's lease is held and its progress record read."""
        config = self.config
        ids = [s[0] for s in steps]
        manifest = await self.checkpoint_manager.load_manifest(config.run_id)
        if progress is None or progress.last_node is None:  # nothing committed: from the start,
            fresh = config.model_copy(update={"resume_from": None})  # with the spend it had
            return await self._execute(steps, initial_state, None, fresh, progress=progress, lease=lease)
        last = progress.last_node
        if last not in ids:
            raise ResumeMismatchError(
                f"run '{config.run_id}' last committed node '{last}', which is not in this "
                f"pipeline (nodes: {', '.join(ids)}); it was renamed or removed since the run "
                "was checkpointed. Resume with the pipeline the run started with, or start a "
                "new run_id"
            )
        position = ids.index(last)
        if manifest is not None and last in manifest.pipeline:
            before = manifest.pipeline[: manifest.pipeline.index(last) + 1]
            now = ids[: position + 1]
            if before != now:
                raise ResumeMismatchError(
                    f"run '{config.run_id}' was checkpointed with nodes {before} up to "
                    f"'{last}', but this pipeline has {now}; resuming would skip or reorder "
                    "nodes. Resume with the original pipeline, or start a new run_id"
                )
        if position + 1 == len(ids):
            return await self._finished(steps, progress, manifest, config)
        return await self._execute(
            steps,
            initial_state,
            ids[position + 1],
            config,
            progress=progress,
            manifest=manifest,
            lease=lease,
        )

    async def recover(
        self, node_sequence: Sequence[NodeFunction], *, concurrency: int = 8, limit: int = 1_000
    ) -> list[ExecutionResult]:
        """Resume every run of this runner's pipeline whose worker is gone; return their results.

        A run qualifies when its store lists it as still running (``pipeline_name`` of this
        runner's config) and nobody holds its lease: its worker was killed, crashed or lost its
        machine, and its lease lapsed (at most 30 s later). Each is resumed from its last
        checkpoint with the initial state its manifest kept, ``concurrency`` at a time. Safe to
        call from several processes at once: each run is resumed by exactly one of them (the
        lease decides; the others skip it). Call it when a service starts, or on a timer.
        """
        if concurrency < 1:
            raise ConfigurationError(f"recover(concurrency={concurrency!r}) needs at least 1")
        steps = self.check_pipeline(node_sequence)
        manager = self.checkpoint_manager
        listed = await manager.list_runs(status="running", pipeline=self.config.pipeline_name, limit=limit)
        schema = self.input_schema(steps)
        gate = asyncio.Semaphore(concurrency)

        async def one(run_id: str) -> ExecutionResult | None:
            async with gate:
                runner = StromaRunner(
                    self.registry, manager, self.config.model_copy(update={"run_id": run_id})
                )
                try:
                    async with manager.lease(run_id) as lease:
                        progress = await manager.load_progress(run_id)
                        if progress is not None and progress.status != "running":
                            return None  # another process recovered it between listing and lease
                        initial = await manager.load_initial_input(run_id, schema)
                        if initial is None:
                            logger.warning(
                                "run %s cannot be recovered: its manifest keeps no initial state "
                                "(it started before this version); resume it by hand",
                                run_id,
                            )
                            return None
                        return await runner._resume_leased(steps, initial, progress, lease)
                except RunLeasedError:
                    return None  # another process is recovering it

        # every listed run is tried: its lease decides (held by a live worker: skipped; lapsed,
        # or on one machine held by a process that is gone: taken)
        results = await asyncio.gather(*(one(r.run_id) for r in listed))
        return [r for r in results if r is not None]

    def input_schema(self, steps: Sequence[_Step]) -> type[BaseModel] | None:
        """The schema a pipeline's initial state must have: its first node's input (a parallel
        group's first child's); None for an empty pipeline."""
        if not steps:
            return None
        node_id, func, contract = steps[0]
        if contract is None:  # a parallel group: its children all take the group's input
            child: Any = getattr(func, "_stroma_children", (func,))[0]
            node_id = child._stroma_node_id
            contract = getattr(child, "_stroma_contract", None) or self.registry.get(node_id)
        return contract.input_schema

    @contextlib.asynccontextmanager
    async def _lease(self, run_id: str) -> AsyncIterator[Lease | None]:
        """The run's lease; None while the store is unreachable (the run then goes ahead and its
        first commit meets the outage as a classified, retried failure: an outage ends a run
        PARTIAL, it does not crash it)."""
        lease = self.checkpoint_manager.lease(run_id)
        try:
            held = await lease.__aenter__()
        except StoreUnavailableError as exc:
            logger.warning("run %s: could not take its lease (%s); running without it", run_id, exc)
            yield None
            return
        try:
            yield held
        except BaseException as exc:
            if not await lease.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await lease.__aexit__(None, None, None)

    async def _load_checkpoint(
        self, run_id: str, step: _Step, resume_from: str
    ) -> tuple[BaseModel, int, float]:
        node_id, _, contract = step
        schema = contract.output_schema if contract is not None else UntypedState
        clock = current_clock()
        t0 = clock.monotonic()
        loaded = await self.checkpoint_manager.resume(run_id, node_id, schema)
        if loaded is None:
            raise CheckpointMissingError(
                f"run '{run_id}' has no checkpoint for node '{node_id}', which "
                f"resume_from='{resume_from}' needs (checkpoints are kept per run_id in "
                f"{self.checkpoint_manager.kind} store {self.checkpoint_manager.store!r}); resume "
                "from an earlier node, or run the pipeline from the start"
            )
        size = len(loaded.model_dump_json())
        return loaded, size, (clock.monotonic() - t0) * 1000.0

    async def _finished(
        self,
        steps: list[_Step],
        progress: RunProgress,
        manifest: RunManifest | None,
        config: RunConfig,
    ) -> ExecutionResult:
        """The stored result of a run whose every node is committed."""
        ids = [s[0] for s in steps]
        loaded, size, ms = await self._load_checkpoint(config.run_id, steps[-1], ids[-1])
        try:
            status = RunStatus(progress.status)
        except ValueError:
            status = RunStatus.RESUMED  # crashed after the last commit, before recording the end
        if status not in (RunStatus.COMPLETED, RunStatus.RESUMED):
            status = RunStatus.RESUMED
        rc = ReliabilityContext(config, self.registry, self.checkpoint_manager)
        rc.seed_progress(progress)
        await rc.start_run(ids, resumed_from=None, parent_carrier=manifest.carrier if manifest else None)
        for i, node_id in enumerate(ids):
            last = i == len(ids) - 1
            await rc.restore(node_id, loaded if last else None, size, ms if last else 0.0)
        return await rc.finish_run(status, loaded)

    async def _execute(
        self,
        steps: list[_Step],
        initial_state: Any,
        resume_from: str | None,
        config: RunConfig,
        *,
        progress: RunProgress | None = None,
        manifest: RunManifest | None = None,
        run_id: str | None = None,
        lease: Lease | None = None,
    ) -> ExecutionResult:
        ids = [s[0] for s in steps]
        manager = self.checkpoint_manager
        run_id = run_id or config.run_id
        rc = ReliabilityContext(config, self.registry, manager, run_id=run_id)
        rc.lease = lease
        start = 0
        state: Any = initial_state
        restored: tuple[BaseModel, int, float] | None = None
        parent_carrier: dict[str, str] | None = None
        if resume_from is not None:
            if resume_from not in ids:
                raise UnknownNodeError(
                    f"resume_from={resume_from!r} is not a node of this pipeline (nodes: {', '.join(ids)})"
                )
            start = ids.index(resume_from)
            if progress is None:
                progress = await manager.load_progress(run_id)
            if manifest is None:
                manifest = await manager.load_manifest(run_id)
            if start > 0:
                restored = await self._load_checkpoint(run_id, steps[start - 1], resume_from)
                state = restored[0]
            parent_carrier = manifest.carrier if manifest is not None else None
        if progress is not None:  # budgets hold across resumes, whatever was committed
            rc.seed_progress(progress)
        await rc.start_run(
            ids, resumed_from=resume_from, parent_carrier=parent_carrier, initial_state=initial_state
        )
        try:
            for i in range(start):
                last = i == start - 1
                await rc.restore(
                    ids[i],
                    restored[0] if (last and restored) else None,
                    restored[1] if (last and restored) else 0,
                    restored[2] if (last and restored) else 0.0,
                )
            status = RunStatus.RESUMED if resume_from is not None else RunStatus.COMPLETED
            try:
                state = await rc.run_chain(steps[start:] if start else steps, state)
            except Exception as exc:
                failure = rc.last_failure
                status = status_for(exc, failure[1] if failure else None)
                state = rc.last_output
        except BaseException as exc:
            rc.abort()  # cancelled or interrupted: close the run file, keep what it has
            interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
            await rc.record_ended("INTERRUPTED" if interrupted else "CANCELLED")
            raise
        final = state if isinstance(state, BaseModel) or not steps else None  # [] completes at once
        return await rc.finish_run(status, final)
