"""SearchBar: the ``/`` search input (node id, error type, message text, ``key=value``)."""

from __future__ import annotations

from textual.widgets import Input

__all__ = ["SearchBar"]


class SearchBar(Input):
    """A one-line search box, hidden until ``/`` is pressed."""

    DEFAULT_CSS = """
    SearchBar {
        dock: bottom;
        display: none;
        height: 3;
    }
    SearchBar.-open {
        display: block;
    }
    """

    def open(self) -> None:
        """Show and focus the box."""
        self.add_class("-open")
        self.focus()

    def close(self) -> None:
        """Hide the box."""
        self.remove_class("-open")
