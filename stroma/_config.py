"""RunConfig: everything one run is configured with (re-exported from ``stroma.runner``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from stroma._checked import CheckedModel, check_id, check_positive_ms, shown
from stroma.cost import ExecutionBudget, FallbackPolicy
from stroma.errors import ConfigurationError
from stroma.failures import Classifier, FailureClass, PolicyMap
from stroma.hooks import NodeHooks, compose_hooks, hook_parts

__all__ = ["RunConfig"]

_RESERVED_PREFIX = "__stroma"


def new_run_id() -> str:
    """A random run id: the hex of a version-4 UUID (``uuid.uuid4().hex``), built without the
    UUID object (it is made for every run)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class RunConfig(CheckedModel):
    """Configuration for a single pipeline run.

    A ``run_id`` is generated when omitted. ``policy_map`` is empty by default (no retries) as
    in the published API; ``StromaRunner.quick()`` installs ``default_policy_map()``.
    ``hooks`` is the NodeHooks object given (a list of them becomes one that calls each in
    order). ``trace_dir`` streams the run to ``<trace_dir>/<run>.jsonl`` as it goes. A bad value
    raises ConfigurationError naming the field and the value.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, validate_assignment=False)

    run_id: str = Field(default_factory=new_run_id)
    budget: ExecutionBudget = Field(default_factory=ExecutionBudget.unlimited)
    policy_map: PolicyMap = Field(default_factory=dict)
    node_policies: dict[str, PolicyMap] = Field(default_factory=dict)
    hooks: NodeHooks = Field(default_factory=NodeHooks)
    classifiers: list[Classifier] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)
    node_timeouts: dict[str, float] = Field(default_factory=dict)
    resume_from: str | None = None
    model_fallbacks: list[FallbackPolicy] = Field(default_factory=list)
    trace_dir: Path | None = None
    pipeline_name: str = "pipeline"

    @field_validator("run_id", mode="before")
    @classmethod
    def _valid_run_id(cls, value: object) -> str:
        return check_id("run_id", value)

    @field_validator("resume_from", mode="before")
    @classmethod
    def _valid_resume_from(cls, value: object) -> str | None:
        return None if value is None else check_id("resume_from", value)

    @field_validator("node_timeouts", mode="before")
    @classmethod
    def _valid_timeouts(cls, value: object) -> dict[str, float]:
        if not isinstance(value, dict):
            raise ConfigurationError(
                f"node_timeouts must be a dict of node id to milliseconds, got {type(value).__name__}"
            )
        return {
            check_id("node_timeouts key", node_id): check_positive_ms(f"node_timeouts[{node_id!r}]", ms)
            for node_id, ms in value.items()
        }

    @field_validator("hooks", mode="before")
    @classmethod
    def _one_hooks_object(cls, value: object) -> NodeHooks:
        if value is None:
            return NodeHooks()
        if isinstance(value, NodeHooks):
            return value
        if isinstance(value, list | tuple):
            return compose_hooks(value)
        raise ConfigurationError(
            f"hooks = {shown(value)}: pass a NodeHooks (or a list of them), e.g. NodeHooks(on_node_start=...)"
        )

    @field_validator("classifiers", mode="before")
    @classmethod
    def _callable_classifiers(cls, value: object) -> list[Classifier]:
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise ConfigurationError(
                f"classifiers = {type(value).__name__}: pass a list of functions (exc, ctx) -> "
                "FailureClass | None"
            )
        classifiers = list(value)
        for i, classifier in enumerate(classifiers):
            if not callable(classifier):
                raise ConfigurationError(
                    f"classifiers[{i}] = {shown(classifier)} is not callable; a classifier is a "
                    "function (exc, ctx) -> FailureClass | None"
                )
        return classifiers

    def hook_list(self) -> list[NodeHooks]:
        """The NodeHooks a run dispatches: the parts of ``hooks``, without empty ones."""
        return hook_parts(self.hooks)

    def check_node_ids(self, node_ids: Iterable[str]) -> None:
        """Raise ConfigurationError when ``node_timeouts`` names a node not in ``node_ids``.

        Pass every node id that can run in the pipeline (children of ``parallel()`` groups too).
        """
        known = set(node_ids)
        unknown = sorted(set(self.node_timeouts) - known)
        if unknown:
            raise ConfigurationError(
                f"node_timeouts names {', '.join(map(repr, unknown))}, which the pipeline does not "
                f"contain (nodes: {', '.join(sorted(known)) or 'none'}); fix the id or remove the "
                "entry"
            )

    def policy_for(self, node_id: str) -> PolicyMap:
        """The node's policies: ``node_policies[node_id]`` merged over ``policy_map``."""
        override = self.node_policies.get(node_id)
        if not override:
            return self.policy_map
        return {**self.policy_map, **override}


def check_node_id(node_id: object) -> str:
    """Refuse node ids Stroma cannot store (see :func:`~stroma._checked.check_id`) or reserved."""
    node_id = check_id("node id", node_id)
    if node_id.startswith(_RESERVED_PREFIX):
        raise ConfigurationError(
            f"node id {node_id!r} starts with '{_RESERVED_PREFIX}', which Stroma reserves for "
            "its own run records; choose another name"
        )
    return node_id


RunConfig.model_rebuild(_types_namespace={"FailureClass": FailureClass})
