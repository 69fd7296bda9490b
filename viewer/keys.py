"""Keys every screen lists first, so a narrow footer never cuts them."""

from __future__ import annotations

from textual.binding import Binding, BindingType

__all__ = ["ALWAYS"]

ALWAYS: list[BindingType] = [
    Binding("q", "app.quit", "Quit"),
    Binding("question_mark", "app.help", "Help"),
]
