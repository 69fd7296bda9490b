"""HelpScreen: a modal listing the keys of the screen below, generated from its bindings (so the
footer, this help and the command palette never disagree)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen"]


class HelpScreen(ModalScreen[None]):
    """The keys of the current screen, with their descriptions."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss_help", "Close help"),
    ]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 64;
        max-height: 90%;
        height: auto;
        border: thick $primary;
        background: $panel;
        padding: 0 1;
    }
    """

    def __init__(self, title: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.keys = keys

    def compose(self) -> ComposeResult:
        """A two-column table: keys, what they do."""
        table = Table(title=self.title_text, show_header=True, expand=True, box=None)
        table.add_column("keys", style="bold cyan", no_wrap=True)
        table.add_column("action")
        for keys, description in self.keys:
            table.add_row(keys, description)
        with VerticalScroll():
            yield Static(table, id="help-table")

    def action_dismiss_help(self) -> None:
        """Close the help."""
        self.dismiss(None)
