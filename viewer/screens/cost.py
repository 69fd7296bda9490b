"""CostScreen: nodes ranked by cost and tokens, the share spent on failed attempts, and the budget
decisions (allow / fallback / deny) against their limits."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from viewer.keys import ALWAYS
from viewer.messages import GoBack
from viewer.model.cost import BudgetDecision, CostReport, NodeCost, cost_report
from viewer.model.detail import fmt_cost, fmt_tokens, plural
from viewer.model.index import RunIndex
from viewer.model.report import spend_text
from viewer.widgets.virtual_list import VirtualList

__all__ = ["CostScreen", "render_cost_row", "render_decision_row"]

_DECISION_STYLE = {"allow": "green", "fallback": "yellow", "deny": "bold red"}


def render_cost_row(n: NodeCost, rank: int) -> Text:
    """One node of the cost ranking."""
    bar = "█" * round(n.failed_share * 10)
    text = Text(
        f"{rank:>4}. {n.node_id:<24} {fmt_cost(n.cost_usd):>9} {fmt_tokens(n.tokens):>9} tok "
        f"{plural(n.attempts, 'attempt'):>11} {n.failed_attempts:>3} failed "
    )
    text.append(f"{n.failed_share:>4.0%} on failures ", "red" if n.failed_share else "dim")
    text.append(bar, "red")
    return text


def render_decision_row(d: BudgetDecision) -> Text:
    """One budget decision (or model fallback)."""
    text = Text(f"{d.node_id:<24} ")
    text.append(f"{d.decision:<8}", _DECISION_STYLE.get(d.decision, ""))
    if d.detail:
        text.append(f" {d.dimension:<7} {d.detail}")
    else:
        text.append(f" {d.dimension:<7} used {d.used:g} of {d.limit:g}")
        if d.count > 1:
            text.append(f"  ×{d.count}", "dim")
    return text


class CostScreen(Screen[None]):
    """Where a run's tokens and money went."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *ALWAYS,
        Binding("escape,backspace,dollar_sign", "back", "Back"),
        Binding("tab", "focus_next", "Switch list", show=False),
    ]

    DEFAULT_CSS = """
    CostScreen #cost-title {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    CostScreen .section {
        padding: 0 1;
        color: $text-muted;
        text-style: bold;
    }
    CostScreen #cost-nodes {
        height: 2fr;
    }
    CostScreen #cost-budget {
        height: 1fr;
    }
    """

    def __init__(self, index: RunIndex, file_name: str) -> None:
        super().__init__()
        self.index = index
        self.file_name = file_name
        self.report: CostReport = cost_report(index)

    def compose(self) -> ComposeResult:
        """Totals, node ranking, budget decisions."""
        r = self.report
        title = Text.assemble(
            (f"cost · {self.file_name}", "bold"),
            f"   {spend_text(r.total_tokens, r.total_cost_usd, r.carried_tokens, r.carried_cost_usd)} · ",
            (f"{r.failed_share:.0%} spent on failed attempts", "bold red" if r.failed_share else ""),
            f" ({fmt_cost(r.failed_cost_usd)}, {fmt_tokens(r.failed_tokens)} tokens)",
        )
        yield Static(title, id="cost-title")
        with Vertical():
            yield Static("nodes by cost, then tokens", classes="section")
            yield VirtualList(id="cost-nodes")
            yield Static(f"budget decisions ({len(r.decisions)})", classes="section")
            yield VirtualList(id="cost-budget")
        yield Footer()

    def on_mount(self) -> None:
        """Fill both lists."""
        nodes = self.report.nodes
        decisions = self.report.decisions
        ranking = self.query_one("#cost-nodes", VirtualList)
        ranking.set_rows(len(nodes), lambda i: render_cost_row(nodes[i], i + 1), 0)
        budget = self.query_one("#cost-budget", VirtualList)
        if decisions:
            budget.set_rows(len(decisions), lambda i: render_decision_row(decisions[i]), 0)
        else:
            budget.set_rows(1, lambda i: Text("no budget set for this run", "dim"), 0)
        ranking.focus()

    def action_back(self) -> None:
        """Back to the previous screen."""
        self.post_message(GoBack())
