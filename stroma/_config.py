"""RunConfig: everything one run is configured with (re-exported from ``stroma.runner``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stroma.cost import ExecutionBudget, FallbackPolicy
from stroma.errors import ConfigurationError
from stroma.failures import Classifier, FailureClass, PolicyMap
from stroma.hooks import NodeHooks

__all__ = ["RunConfig"]

_RESERVED_PREFIX = "__stroma"


def new_run_id() -> str:
    """A random run id: the hex of a version-4 UUID (``uuid.uuid4().hex``), built without the
    UUID object (it is made for every run)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class RunConfig(BaseModel):
    """Configuration for a single pipeline run.

    A ``run_id`` is generated when omitted. ``policy_map`` is empty by default (no retries) as
    in the published API; ``StromaRunner.quick()`` installs ``default_policy_map()``.
    ``trace_dir`` streams the run to ``<trace_dir>/<run>.jsonl`` as it goes.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, validate_assignment=False)

    run_id: str = Field(default_factory=new_run_id)
    budget: ExecutionBudget = Field(default_factory=ExecutionBudget.unlimited)
    policy_map: PolicyMap = Field(default_factory=dict)
    node_policies: dict[str, PolicyMap] = Field(default_factory=dict)
    hooks: NodeHooks | list[NodeHooks] | None = None
    classifiers: list[Classifier] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)
    node_timeouts: dict[str, float] = Field(default_factory=dict)
    resume_from: str | None = None
    model_fallbacks: list[FallbackPolicy] = Field(default_factory=list)
    trace_dir: Path | None = None
    pipeline_name: str = "pipeline"

    @field_validator("run_id")
    @classmethod
    def _run_id_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("run_id must be a non-empty string")
        return value

    @field_validator("node_timeouts")
    @classmethod
    def _positive_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        for node_id, ms in value.items():
            if ms <= 0:
                raise ValueError(
                    f"node_timeouts['{node_id}'] = {ms!r}: a timeout is a positive number of milliseconds"
                )
        return value

    def hook_list(self) -> list[NodeHooks]:
        """``hooks`` as a list."""
        if self.hooks is None:
            return []
        if isinstance(self.hooks, NodeHooks):
            return [self.hooks]
        return list(self.hooks)

    def policy_for(self, node_id: str) -> PolicyMap:
        """The node's policies: ``node_policies[node_id]`` merged over ``policy_map``."""
        override = self.node_policies.get(node_id)
        if not override:
            return self.policy_map
        return {**self.policy_map, **override}


def check_node_id(node_id: object) -> str:
    """Refuse node ids Stroma cannot store (empty, non-str, or reserved)."""
    if not isinstance(node_id, str) or not node_id:
        raise ConfigurationError(f"node id {node_id!r} must be a non-empty string")
    if node_id.startswith(_RESERVED_PREFIX):
        raise ConfigurationError(
            f"node id {node_id!r} starts with '{_RESERVED_PREFIX}', which Stroma reserves for "
            "its own run records; choose another name"
        )
    return node_id


RunConfig.model_rebuild(_types_namespace={"FailureClass": FailureClass})
