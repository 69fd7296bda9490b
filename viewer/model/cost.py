"""Cost roll-up of one run: nodes ranked by cost and tokens, the share spent on failed attempts,
and the budget decisions taken (allow / fallback / deny) against their limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stroma import events as ev
from viewer.model.index import RunIndex

__all__ = ["BudgetDecision", "CostReport", "NodeCost", "cost_report"]


@dataclass(frozen=True, slots=True)
class NodeCost:
    """What one node spent."""

    node_id: str
    attempts: int
    failed_attempts: int
    tokens: int
    cost_usd: float
    failed_tokens: int
    failed_cost_usd: float

    @property
    def failed_share(self) -> float:
        """Share of the node's cost (tokens when it cost nothing) spent on failed attempts."""
        if self.cost_usd > 0:
            return self.failed_cost_usd / self.cost_usd
        if self.tokens > 0:
            return self.failed_tokens / self.tokens
        return 0.0


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """A budget check or a model fallback, grouped by node, dimension and decision."""

    node_id: str
    dimension: str
    decision: str
    limit: float
    used: float
    count: int = 1
    detail: str = ""


@dataclass(slots=True)
class CostReport:
    """The Cost screen's model: this run's spend by node (``total_*``), and what the run carried
    over from the runs it resumed (``carried_*``), kept apart."""

    nodes: list[NodeCost] = field(default_factory=list)
    total_tokens: int = 0
    total_cost_usd: float = 0.0
    failed_tokens: int = 0
    failed_cost_usd: float = 0.0
    carried_tokens: int = 0
    carried_cost_usd: float = 0.0
    decisions: list[BudgetDecision] = field(default_factory=list)

    @property
    def failed_share(self) -> float:
        """Share of the run's cost (or tokens when free) spent on failed attempts."""
        if self.total_cost_usd > 0:
            return self.failed_cost_usd / self.total_cost_usd
        if self.total_tokens > 0:
            return self.failed_tokens / self.total_tokens
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "total_tokens": self.total_tokens,
            "total_cost_usd": self.total_cost_usd,
            "failed_tokens": self.failed_tokens,
            "failed_cost_usd": self.failed_cost_usd,
            "failed_share": self.failed_share,
            "carried_tokens": self.carried_tokens,
            "carried_cost_usd": self.carried_cost_usd,
            "nodes": [
                {
                    "node_id": n.node_id,
                    "attempts": n.attempts,
                    "failed_attempts": n.failed_attempts,
                    "tokens": n.tokens,
                    "cost_usd": n.cost_usd,
                    "failed_cost_usd": n.failed_cost_usd,
                    "failed_share": n.failed_share,
                }
                for n in self.nodes
            ],
            "budget_decisions": [
                {
                    "node_id": d.node_id,
                    "dimension": d.dimension,
                    "decision": d.decision,
                    "limit": d.limit,
                    "used": d.used,
                    "count": d.count,
                    "detail": d.detail,
                }
                for d in self.decisions
            ],
        }


def cost_report(index: RunIndex) -> CostReport:
    """Roll up the run's cost by node and its budget decisions."""
    report = CostReport(
        total_tokens=index.tokens,
        total_cost_usd=index.cost_usd,
        carried_tokens=index.carried_tokens,
        carried_cost_usd=index.carried_cost_usd,
    )
    for node in index.nodes:
        nc = NodeCost(
            node.node_id,
            len(node.attempts),
            node.failures,
            node.tokens,
            node.cost_usd,
            node.failed_tokens,
            node.failed_cost_usd,
        )
        report.failed_tokens += nc.failed_tokens
        report.failed_cost_usd += nc.failed_cost_usd
        if nc.attempts:
            report.nodes.append(nc)
    report.nodes.sort(key=lambda n: (-n.cost_usd, -n.tokens, n.node_id))
    # Consecutive "allow" checks of one node and dimension collapse into one line (the last
    # one, with the count); fallbacks and denials are always listed on their own.
    grouped: dict[tuple[str, str, str], BudgetDecision] = {}
    order: list[tuple[str, str, str] | int] = []
    singles: list[BudgetDecision] = []
    for i in index.budget:
        e = index.event(i)
        if isinstance(e, ev.BudgetChecked):
            if e.decision == "allow":
                key = (e.node_id, e.dimension, e.decision)
                prev = grouped.get(key)
                if prev is None:
                    order.append(key)
                grouped[key] = BudgetDecision(
                    e.node_id,
                    e.dimension,
                    e.decision,
                    e.limit,
                    e.used,
                    (prev.count + 1) if prev else 1,
                )
            else:
                order.append(len(singles))
                singles.append(BudgetDecision(e.node_id, e.dimension, e.decision, e.limit, e.used))
        elif isinstance(e, ev.ModelFallback):
            order.append(len(singles))
            singles.append(
                BudgetDecision(
                    e.node_id,
                    "model",
                    "fallback",
                    0.0,
                    e.spend_fraction,
                    detail=f"{e.from_model} → {e.to_model} at {e.spend_fraction:.0%} of budget",
                )
            )
    report.decisions = [grouped[k] if isinstance(k, tuple) else singles[k] for k in order]
    return report
