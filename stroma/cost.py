"""Token, cost and latency accounting, budgets and model fallback.

A node reports usage by returning a tuple instead of a dict: ``(output, tokens)``,
``(output, input_tokens, output_tokens)`` or ``(output, input_tokens, output_tokens, model)``.
Cost is priced from :data:`KNOWN_MODELS` (USD per million input / output tokens).

Example::

    runner = StromaRunner.quick().with_budget(tokens=5_000, cost_usd=0.50)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field

from stroma._checked import CheckedModel, shown
from stroma.errors import ConfigurationError, InvalidUsageError, StromaError

__all__ = [
    "KNOWN_MODELS",
    "BudgetExceeded",
    "CostTracker",
    "ExecutionBudget",
    "FallbackPolicy",
    "ModelHint",
    "NodeUsage",
    "StepUsage",
    "active_fallback",
    "estimate_cost_usd",
    "resolve_model",
    "spend_fraction",
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


class ExecutionBudget(CheckedModel):
    """Limits for one run; ``None`` means unlimited. Negative or NaN limits raise
    ConfigurationError."""

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


@dataclass
class NodeUsage:
    """What one node (or attempt) used: ``NodeUsage(node_id, tokens_used, cost_usd, latency_ms,
    model=None, output_tokens=0)``, positional in that order as in the published API."""

    node_id: str
    tokens_used: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    model: str | None = None
    output_tokens: int = 0


StepUsage = NodeUsage


def _bad_usage(node_id: str, tokens: int, cost_usd: float, latency_ms: float, output_tokens: int) -> None:
    for name, value in (
        ("tokens", tokens),
        ("output_tokens", output_tokens),
        ("cost_usd", cost_usd),
        ("latency_ms", latency_ms),
    ):
        if not value >= 0:
            raise InvalidUsageError(
                f"node '{node_id}' reported {name} = {shown(value)}; usage is never negative "
                "(or NaN). Report the counts your model API returned, or 0 when unknown"
            )


class CostTracker:
    """Running totals of a run's usage, overall and per node (never re-summed).

    ``record(NodeUsage(...))`` is the published call; :meth:`add` is the same without building
    a NodeUsage first (the engine records every attempt with it). Negative usage raises
    :class:`~stroma.errors.InvalidUsageError`.
    """

    def __init__(self) -> None:
        # Per node: [tokens, cost_usd, latency_ms, model, output_tokens]; NodeUsage is built on read.
        self._nodes: dict[str, list[Any]] = {}
        # Latency of attempts that used nothing else, not yet added to their node's totals
        # (folded in order on the next full add or read: the cheap path of add()).
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
        """Record one attempt's usage (:meth:`record` without a NodeUsage; cheap enough to call
        for every attempt). A node keeps the first model any of its records named."""
        if not (tokens or cost_usd or output_tokens or model is not None):
            if not latency_ms >= 0:
                _bad_usage(node_id, tokens, cost_usd, latency_ms, output_tokens)
            self.total_latency_ms += latency_ms
            self._later_ids.append(node_id)
            self._later_ms.append(latency_ms)
            return
        if tokens < 0 or output_tokens < 0 or not (cost_usd >= 0 and latency_ms >= 0):
            _bad_usage(node_id, tokens, cost_usd, latency_ms, output_tokens)
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
            if node[3] is None:
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
        return None if raw is None else NodeUsage(node_id, *raw)

    def summary(self) -> dict[str, NodeUsage]:
        """Accumulated usage per node id, in first-seen order (the published API)."""
        self._fold()
        return {k: NodeUsage(k, *v) for k, v in self._nodes.items()}

    @property
    def by_node(self) -> dict[str, NodeUsage]:
        """Same as :meth:`summary`."""
        return self.summary()


@dataclass
class FallbackPolicy:
    """Use ``fallback_model`` instead of ``preferred_model`` once spend reaches ``at_budget_pct``
    of the cost budget: ``FallbackPolicy(preferred_model, fallback_model, at_budget_pct=0.8)``."""

    preferred_model: str
    fallback_model: str
    at_budget_pct: float = 0.8

    def __post_init__(self) -> None:
        for name in ("preferred_model", "fallback_model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigurationError(
                    f"FallbackPolicy.{name} = {shown(value)}: name a model, e.g. 'gpt-4o-mini'"
                )
        pct = self.at_budget_pct
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0.0 < pct <= 1.0:
            raise ConfigurationError(
                f"FallbackPolicy.at_budget_pct = {shown(pct)}: a fraction of the cost budget in "
                "(0, 1], e.g. 0.8 for 80%"
            )


@dataclass
class ModelHint:
    """A node's model preference: ``ModelHint(node_id, preferred_model, fallback_model=None,
    max_tokens=None)`` (the published API; Stroma does not read it)."""

    node_id: str
    preferred_model: str
    fallback_model: str | None = None
    max_tokens: int | None = None


def spend_fraction(tracker: CostTracker, budget: ExecutionBudget) -> float | None:
    """Spend as a fraction of the cost budget (None without one)."""
    limit = budget.max_cost_usd
    return tracker.total_cost_usd / limit if limit else None


def active_fallback(
    tracker: CostTracker, budget: ExecutionBudget, fallbacks: Sequence[FallbackPolicy]
) -> FallbackPolicy | None:
    """The fallback every node runs with now, or None.

    The first policy (in order) whose ``at_budget_pct`` of ``max_cost_usd`` the run's spend has
    reached. While one is active, every attempt that starts sees its ``fallback_model`` in
    ``ctx["_stroma_model"]``, whatever model the node declared or reports; below every threshold
    (or without a cost budget) the key is removed.
    """
    if not fallbacks:
        return None
    fraction = spend_fraction(tracker, budget)
    if fraction is None:
        return None
    for policy in fallbacks:
        if fraction >= policy.at_budget_pct:
            return policy
    return None


def resolve_model(
    declared_model: str | None,
    tracker: CostTracker,
    budget: ExecutionBudget,
    fallbacks: Sequence[FallbackPolicy],
) -> str | None:
    """The model to price ``declared_model``'s usage at: the ``fallback_model`` of the first
    policy for ``declared_model`` whose threshold spend has reached, else ``declared_model``."""
    if declared_model is None or not fallbacks:
        return declared_model
    fraction = spend_fraction(tracker, budget)
    if fraction is None:
        return declared_model
    for policy in fallbacks:
        if policy.preferred_model == declared_model and fraction >= policy.at_budget_pct:
            return policy.fallback_model
    return declared_model
