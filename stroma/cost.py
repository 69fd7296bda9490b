"""Token, cost and latency accounting, budgets and model fallback.

A node reports usage by returning a tuple instead of a dict: ``(output, tokens)``,
``(output, input_tokens, output_tokens)`` or ``(output, input_tokens, output_tokens, model)``.
Cost is priced from :data:`KNOWN_MODELS` (USD per million input / output tokens).

Example::

    runner = StromaRunner.quick().with_budget(tokens=5_000, cost_usd=0.50)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from stroma.errors import StromaError

__all__ = [
    "KNOWN_MODELS",
    "BudgetExceeded",
    "CostTracker",
    "ExecutionBudget",
    "FallbackPolicy",
    "ModelHint",
    "NodeUsage",
    "StepUsage",
    "estimate_cost_usd",
    "resolve_model",
    "resolve_model_hint",
]

KNOWN_MODELS: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    # Anthropic
    "claude-opus": (15.00, 75.00),
    "claude-sonnet": (3.00, 15.00),
    "claude-haiku": (0.80, 4.00),
    "claude-3-opus": (15.00, 75.00),
    "claude-3-sonnet": (3.00, 15.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    # Google
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-2.0-flash": (0.10, 0.40),
}


def estimate_cost_usd(model: str | None, input_tokens: int, output_tokens: int = 0) -> float:
    """USD for the given usage of ``model``; 0.0 for a model not in :data:`KNOWN_MODELS`."""
    if model is None:
        return 0.0
    prices = KNOWN_MODELS.get(model)
    if prices is None:
        return 0.0
    return (input_tokens * prices[0] + output_tokens * prices[1]) / 1_000_000


_UNITS = {"tokens": "token", "cost": "USD", "latency": "ms"}


class BudgetExceeded(StromaError):
    """A budget dimension ("tokens", "cost" or "latency") was exceeded at ``node_id``.

    The run stops with status PARTIAL; the node is not retried and completed nodes stay
    checkpointed, so the run can resume with a larger budget.
    """

    def __init__(self, dimension: str, limit: float, actual: float, node_id: str) -> None:
        self.dimension = dimension
        self.limit = limit
        self.actual = actual
        self.node_id = node_id
        unit = _UNITS.get(dimension, dimension)
        if dimension == "cost":
            spent = f"the ${limit:g} cost budget (used ${actual:.6g})"
        else:
            spent = f"the {limit:g}-{unit} {dimension} budget (used {actual:g})"
        super().__init__(
            f"node '{node_id}' exceeded {spent}; the run stops PARTIAL and can resume with a larger budget"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.dimension, self.limit, self.actual, self.node_id))


class ExecutionBudget(BaseModel):
    """Limits for one run; ``None`` means unlimited."""

    model_config = ConfigDict(frozen=True)

    max_tokens_total: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    max_latency_ms: float | None = Field(default=None, ge=0)

    @classmethod
    def unlimited(cls) -> ExecutionBudget:
        """A budget with no limits."""
        return cls()

    @property
    def is_unlimited(self) -> bool:
        """True when no dimension is limited."""
        return self.max_tokens_total is None and self.max_cost_usd is None and self.max_latency_ms is None


class NodeUsage(BaseModel):
    """What one node (or attempt) used."""

    node_id: str
    tokens_used: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    model: str | None = None
    output_tokens: int = 0


StepUsage = NodeUsage


class CostTracker:
    """Running totals of a run's usage, overall and per node (never re-summed)."""

    def __init__(self) -> None:
        # Per node: [tokens, cost_usd, latency_ms, model, output_tokens]; NodeUsage is built on read.
        self._nodes: dict[str, list[Any]] = {}
        # Latency of nodes that used nothing else, not yet added to their node's totals (the
        # engine's fast path appends here; folded in order on the next add or read).
        self._later_ids: list[str] = []
        self._later_ms: list[float] = []
        self.total_tokens = 0
        self.total_cost_usd = 0.0
        self.total_latency_ms = 0.0

    def record(self, usage: NodeUsage) -> None:
        """Add ``usage`` to its node's totals and to the run's totals."""
        self.add(
            usage.node_id,
            usage.tokens_used,
            usage.cost_usd,
            usage.latency_ms,
            usage.model,
            usage.output_tokens,
        )

    def add(
        self,
        node_id: str,
        tokens: int,
        cost_usd: float,
        latency_ms: float,
        model: str | None = None,
        output_tokens: int = 0,
    ) -> None:
        """:meth:`record` without building a NodeUsage first (the engine's hot path)."""
        if self._later_ids:
            self._fold()
        self.total_tokens += tokens
        self.total_cost_usd += cost_usd
        self.total_latency_ms += latency_ms
        node = self._nodes.get(node_id)
        if node is None:
            self._nodes[node_id] = [tokens, cost_usd, latency_ms, model, output_tokens]
        else:
            node[0] += tokens
            node[1] += cost_usd
            node[2] += latency_ms
            node[4] += output_tokens
            if model is not None:
                node[3] = model

    def check_budget(self, budget: ExecutionBudget, node_id: str) -> None:
        """Raise BudgetExceeded for the first dimension whose total exceeds its limit."""
        for dimension, limit, used in self.budget_status(budget):
            if used > limit:
                raise BudgetExceeded(dimension, limit, used, node_id)

    def budget_status(self, budget: ExecutionBudget) -> list[tuple[str, float, float]]:
        """(dimension, limit, used) for every limited dimension."""
        out: list[tuple[str, float, float]] = []
        if budget.max_tokens_total is not None:
            out.append(("tokens", budget.max_tokens_total, self.total_tokens))
        if budget.max_cost_usd is not None:
            out.append(("cost", budget.max_cost_usd, self.total_cost_usd))
        if budget.max_latency_ms is not None:
            out.append(("latency", budget.max_latency_ms, self.total_latency_ms))
        return out

    @staticmethod
    def _usage(node_id: str, raw: list[Any]) -> NodeUsage:
        return NodeUsage(
            node_id=node_id,
            tokens_used=raw[0],
            cost_usd=raw[1],
            latency_ms=raw[2],
            model=raw[3],
            output_tokens=raw[4],
        )

    def _fold(self) -> None:
        nodes = self._nodes
        for node_id, latency_ms in zip(self._later_ids, self._later_ms, strict=True):
            entry = nodes.get(node_id)
            if entry is None:
                nodes[node_id] = [0, 0.0, latency_ms, None, 0]
            else:
                entry[2] += latency_ms
        self._later_ids.clear()
        self._later_ms.clear()

    def usage_for(self, node_id: str) -> NodeUsage | None:
        """Accumulated usage of one node."""
        self._fold()
        raw = self._nodes.get(node_id)
        return None if raw is None else self._usage(node_id, raw)

    @property
    def by_node(self) -> dict[str, NodeUsage]:
        """Accumulated usage per node, in first-seen order."""
        self._fold()
        return {k: self._usage(k, v) for k, v in self._nodes.items()}

    def summary(self) -> dict[str, Any]:
        """Totals and per-node usage as plain data."""
        return {
            "total_tokens": self.total_tokens,
            "total_cost_usd": self.total_cost_usd,
            "total_latency_ms": self.total_latency_ms,
            "nodes": {k: v.model_dump() for k, v in self.by_node.items()},
        }


class FallbackPolicy(BaseModel):
    """Use ``fallback_model`` instead of ``preferred_model`` once spend reaches
    ``at_budget_pct`` of the cost budget."""

    model_config = ConfigDict(frozen=True)

    preferred_model: str
    fallback_model: str
    at_budget_pct: float = Field(default=0.8, gt=0.0, le=1.0)


class ModelHint(NamedTuple):
    """The model a node should use: ``fallback_from`` is set when a fallback is active."""

    model: str | None
    fallback_from: str | None = None
    spend_fraction: float = 0.0


def resolve_model_hint(
    declared_model: str | None,
    tracker: CostTracker,
    budget: ExecutionBudget,
    fallbacks: Sequence[FallbackPolicy],
) -> ModelHint:
    """Which model to use, following fallbacks (chained: a → b → c) as spend rises."""
    if declared_model is None or not fallbacks or not budget.max_cost_usd:
        return ModelHint(declared_model)
    fraction = tracker.total_cost_usd / budget.max_cost_usd
    model = declared_model
    seen = {model}
    changed = True
    while changed:
        changed = False
        for policy in fallbacks:
            if policy.preferred_model == model and fraction >= policy.at_budget_pct:
                if policy.fallback_model in seen:
                    break
                model = policy.fallback_model
                seen.add(model)
                changed = True
                break
    if model == declared_model:
        return ModelHint(declared_model, None, fraction)
    return ModelHint(model, declared_model, fraction)


def resolve_model(
    declared_model: str | None,
    tracker: CostTracker,
    budget: ExecutionBudget,
    fallbacks: Sequence[FallbackPolicy],
) -> str | None:
    """The fallback model once spend reaches ``at_budget_pct`` of ``max_cost_usd``, else the
    declared one."""
    return resolve_model_hint(declared_model, tracker, budget, fallbacks).model
