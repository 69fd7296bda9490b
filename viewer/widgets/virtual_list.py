"""VirtualList: a cursor list drawn with Textual's line API, so only the visible rows are rendered.

The owner supplies the row count and a function that turns one row into a Rich ``Text``; a list of
100k rows costs the same to draw as a list of 30.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.events import Click
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["VirtualList"]

RowRenderer = Callable[[int], Text]


class VirtualList(ScrollView, can_focus=True):
    """A scrollable list whose rows are rendered on demand, one line each."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "cursor_down", "Down", show=False),
        Binding("k,up", "cursor_up", "Up", show=False),
        Binding("g,home", "cursor_top", "Top", show=False),
        Binding("G,end", "cursor_bottom", "Bottom", show=False),
        Binding("pagedown", "page_down_rows", "Page down", show=False),
        Binding("pageup", "page_up_rows", "Page up", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "virtual-list--cursor",
        "virtual-list--match",
    }

    DEFAULT_CSS = """
    VirtualList {
        height: 1fr;
        background: $surface;
        overflow-x: hidden;
    }
    VirtualList > .virtual-list--cursor {
        background: $block-cursor-blurred-background;
        text-style: $block-cursor-blurred-text-style;
    }
    VirtualList:focus > .virtual-list--cursor {
        background: $block-cursor-background;
        text-style: $block-cursor-text-style;
    }
    VirtualList > .virtual-list--match {
        background: $warning 30%;
    }
    """

    cursor: reactive[int] = reactive(0, always_update=True)

    class Highlighted(Message):
        """The cursor moved to ``index``."""

        def __init__(self, virtual_list: VirtualList, index: int) -> None:
            super().__init__()
            self.virtual_list = virtual_list
            self.index = index

        @property
        def control(self) -> VirtualList:
            """The list that sent the message."""
            return self.virtual_list

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.row_count = 0
        self.renderer: RowRenderer = lambda i: Text("")
        self.marked: set[int] = set()
        self._styles: tuple[Style, Style, Style] | None = None
        self._lines: dict[tuple[int, int, bool, bool], Strip] = {}

    # -- data ------------------------------------------------------------------------------

    def set_rows(self, count: int, renderer: RowRenderer, cursor: int | None = None) -> None:
        """Show ``count`` rows drawn by ``renderer``; keep (or move) the cursor."""
        self.row_count = count
        self.renderer = renderer
        self._lines.clear()
        self.virtual_size = Size(self.size.width or 80, count)
        target = self.cursor if cursor is None else cursor
        self.cursor = max(0, min(target, count - 1)) if count else 0
        self.refresh()

    def validate_cursor(self, value: int) -> int:
        """Keep the cursor on a row."""
        if self.row_count == 0:
            return 0
        return max(0, min(value, self.row_count - 1))

    def watch_cursor(self, old: int, new: int) -> None:
        """Scroll the cursor into view and tell the owner."""
        self.scroll_to_region(Region(0, new, 1, 1), animate=False, force=True, immediate=True)
        self.refresh()
        if self.row_count:
            self.post_message(self.Highlighted(self, new))

    # -- drawing ---------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        """Resolve the styles once per paint, not once per line."""
        self._resolve_styles()
        return super().render_lines(crop)

    def _resolve_styles(self) -> None:
        styles = (
            self.rich_style,
            self.get_component_rich_style("virtual-list--cursor", partial=True),
            self.get_component_rich_style("virtual-list--match", partial=True),
        )
        if styles != self._styles:
            self._styles = styles
            self._lines.clear()

    def render_line(self, y: int) -> Strip:
        """Draw the row at screen line ``y`` (only visible rows are ever asked for)."""
        index = self.scroll_offset.y + y
        width = self.size.width
        if self._styles is None:
            self._resolve_styles()
        assert self._styles is not None
        base, cursor_style, match_style = self._styles
        if index >= self.row_count:
            return Strip([Segment(" " * width, base)], width)
        is_cursor = index == self.cursor
        key = (index, width, is_cursor, index in self.marked)
        cached = self._lines.get(key)
        if cached is not None:
            return cached
        text = self.renderer(index)
        text.no_wrap = True
        text.overflow = "ellipsis"
        if key[3] and not is_cursor:
            text.stylize(match_style)
        segments = list(text.render(self.app.console, end=""))
        # The cursor's background goes under the row's own styles, then the list's base under both
        # (a style applied later only fills what the earlier ones left unset).
        strip = Strip(segments)
        if is_cursor:
            strip = strip.apply_style(cursor_style)
        pad = base + cursor_style if is_cursor else base
        strip = strip.apply_style(base).crop_extend(0, width, pad)
        if len(self._lines) > 4096:
            self._lines.clear()
        self._lines[key] = strip
        return strip

    def _style(self, component: str) -> Style:
        return self.get_component_rich_style(component, partial=True)

    def refresh_rows(self) -> None:
        """Forget drawn lines (the rows' content changed) and repaint."""
        self._lines.clear()
        self.refresh()

    def on_resize(self) -> None:
        """Keep the virtual width in step with the widget."""
        self.virtual_size = Size(self.size.width, self.row_count)
        self._lines.clear()

    def on_focus(self) -> None:
        """The cursor looks different with focus: repaint with the new style."""
        self._styles = None
        self.refresh()

    def on_blur(self) -> None:
        """The cursor looks different without focus: repaint with the new style."""
        self._styles = None
        self.refresh()

    def on_click(self, event: Click) -> None:
        """Click a row to select it."""
        self.cursor = self.scroll_offset.y + event.y

    # -- actions ---------------------------------------------------------------------------

    def action_cursor_down(self) -> None:
        """Move down one row."""
        self.cursor += 1

    def action_cursor_up(self) -> None:
        """Move up one row."""
        self.cursor -= 1

    def action_cursor_top(self) -> None:
        """Go to the first row."""
        self.cursor = 0

    def action_cursor_bottom(self) -> None:
        """Go to the last row."""
        self.cursor = self.row_count - 1

    def action_page_down_rows(self) -> None:
        """Move down one page."""
        self.cursor += max(1, self.size.height - 1)

    def action_page_up_rows(self) -> None:
        """Move up one page."""
        self.cursor -= max(1, self.size.height - 1)
