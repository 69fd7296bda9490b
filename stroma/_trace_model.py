"""The published run models every layer shares: how a run ended (:class:`RunStatus`) and one
attempt of one node (:class:`TraceEvent`, the peer-compatible trace entry).

They live below both ``stroma.trace`` (which records runs) and ``stroma.runfile`` (which reads and
writes them), so neither imports the other's module to use them; ``stroma.trace`` re-exports both.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from stroma.failures import FailureClass

__all__ = ["RunStatus", "TraceEvent"]


class RunStatus(StrEnum):
    """How a run ended.

    COMPLETED: every node succeeded. RESUMED: completed after a resume. FAILED: a terminal (or
    ambiguous) failure stopped the run. PARTIAL: retries ran out on a recoverable failure, or a
    budget stopped the run; completed nodes are checkpointed and the run can resume.
    """

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    PARTIAL = "PARTIAL"
    RESUMED = "RESUMED"

    def __str__(self) -> str:
        return self.value


class TraceEvent(BaseModel):
    """One attempt of one node."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    node_id: str
    run_id: str
    attempt: int
    timestamp_utc: datetime
    input_state: dict[str, Any]
    output_state: dict[str, Any] | None = None
    duration_ms: float
    failure: FailureClass | None = None
    failure_message: str | None = None

    @property
    def step_id(self) -> str:
        """Alias of ``node_id`` for step-flavoured code."""
        return self.node_id
