"""DetailTabs: Attempt / Input / Output / Failure / Events / JSON of the selected row, and the
run's Timeline.

Only the active tab is rendered, and only for the selected row: payloads are formatted when shown.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static, TabbedContent, TabPane

from viewer.model.detail import TABS

__all__ = ["DetailTabs"]

TextSource = Callable[[str], str]

_TITLES = {
    "attempt": "1 Attempt",
    "input": "2 Input",
    "output": "3 Output",
    "failure": "4 Failure",
    "events": "5 Events",
    "json": "6 JSON",
    "timeline": "7 Timeline",
}


class DetailTabs(Vertical):
    """Tabbed detail of one row; ``show(source)`` gives the text of a tab by name."""

    DEFAULT_CSS = """
    DetailTabs {
        height: 1fr;
    }
    DetailTabs TabbedContent {
        height: 1fr;
    }
    DetailTabs TabPane {
        padding: 0;
    }
    DetailTabs VerticalScroll {
        height: 1fr;
    }
    DetailTabs .detail-body {
        padding: 0 1;
        width: auto;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._source: TextSource | None = None
        self._shown: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        """One pane per tab, each a scrollable text body."""
        with TabbedContent(initial="tab-attempt"):
            for tab in TABS:
                with TabPane(_TITLES[tab], id=f"tab-{tab}"), VerticalScroll():
                    yield Static("", id=f"body-{tab}", classes="detail-body", markup=False)

    @property
    def active_tab(self) -> str:
        """The name of the active tab (attempt, input, ...)."""
        return (self.query_one(TabbedContent).active or "tab-attempt").removeprefix("tab-")

    def show(self, source: TextSource | None) -> None:
        """Use ``source`` for the tabs' text and draw the active tab."""
        self._source = source
        self._shown.clear()
        self._draw()

    def open_tab(self, tab: str) -> None:
        """Activate a tab by name."""
        self.query_one(TabbedContent).active = f"tab-{tab}"
        self._draw()

    def text_of(self, tab: str) -> str:
        """The text a tab shows now (drawn on demand)."""
        if tab not in self._shown:
            self._shown[tab] = self._source(tab) if self._source is not None else ""
        return self._shown[tab]

    def _draw(self) -> None:
        tab = self.active_tab
        self.query_one(f"#body-{tab}", Static).update(self.text_of(tab))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Draw a tab when the user switches to it."""
        self._draw()
