"""Banner: a one-line notice above the lists (truncated file, live run, errors); hidden when empty."""

from __future__ import annotations

from textual.widgets import Static

__all__ = ["Banner"]


class Banner(Static):
    """A notice line; ``say("")`` hides it."""

    DEFAULT_CSS = """
    Banner {
        height: auto;
        padding: 0 1;
        display: none;
    }
    Banner.-shown {
        display: block;
    }
    Banner.-warning {
        background: $warning 30%;
        color: $text;
    }
    Banner.-info {
        background: $primary 30%;
        color: $text;
    }
    Banner.-error {
        background: $error 40%;
        color: $text;
    }
    """

    def say(self, text: str, level: str = "info") -> None:
        """Show ``text`` styled as ``level`` (info, warning, error); empty text hides it."""
        self.remove_class("-info", "-warning", "-error")
        self.set_class(bool(text), "-shown")
        if text:
            self.add_class(f"-{level}")
        self.update(text)
