"""StromaViewApp: the ``stroma-view`` Textual application.

One run opens the Run screen; two runs open the Diff screen over the newer run's Run screen; a
folder opens the Runs screen. Every key is a binding with a description, and the help modal and
the command palette are generated from the active bindings, so they agree with the footer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from viewer.messages import GoBack, OpenCost, OpenDiff, OpenRun
from viewer.model.loading import LoadedRun, RunCache
from viewer.screens.cost import CostScreen
from viewer.screens.diff import DiffScreen
from viewer.screens.help import HelpScreen
from viewer.screens.run import RunScreen
from viewer.screens.runs import RunsScreen

__all__ = ["StromaViewApp", "binding_help"]


def binding_help(app: App[Any], screen: Screen[Any]) -> list[tuple[str, str]]:
    """(keys, description) for every active binding of ``screen``, keys of one action joined."""
    grouped: dict[tuple[int, str], tuple[list[str], str]] = {}
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if not binding.description:
            continue
        slot = grouped.setdefault((id(active.node), binding.action), ([], binding.description))
        display = app.get_key_display(Binding(key, binding.action))
        if display not in slot[0]:
            slot[0].append(display)
    # The screen's own keys first, then the focused widget's, then the app's.
    rank = {id(screen): 0, id(app): 2}
    ordered = sorted(grouped.items(), key=lambda item: rank.get(item[0][0], 1))
    return [(" ".join(keys), description) for _, (keys, description) in ordered]


class StromaViewApp(App[None]):
    """Browse runs, filter failures, diff a failed run against its resume."""

    CSS_PATH = "app.tcss"
    TITLE = "stroma-view"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, paths: Sequence[Path], preloaded: Iterable[LoadedRun] = ()) -> None:
        super().__init__()
        self.paths = [Path(p) for p in paths]
        self.runs = RunCache()
        for loaded in preloaded:
            self.runs.put(loaded)
        self.pair: tuple[Path, Path] | None = (self.paths[0], self.paths[1]) if len(self.paths) == 2 else None

    def on_mount(self) -> None:
        """Open the first screen for what was given on the command line."""
        if len(self.paths) == 1 and self.paths[0].is_dir():
            self.push_screen(RunsScreen(self.paths[0]))
        elif self.pair is not None:
            self.push_screen(RunScreen(self.pair[1], self.runs))
            self.push_screen(DiffScreen(*self.pair, self.runs))
        elif self.paths:
            self.push_screen(RunScreen(self.paths[0], self.runs))

    # -- navigation: what the screens ask for, by message ----------------------------------

    def on_open_run(self, message: OpenRun) -> None:
        """Open a run's Run screen."""
        self.push_screen(
            RunScreen(message.path, self.runs, exit_on_error=message.exit_on_error, node_id=message.node_id)
        )

    def on_open_diff(self, message: OpenDiff) -> None:
        """Open the Diff screen of two runs (default: the two runs on the command line)."""
        a, b = message.a, message.b
        if a is None or b is None:
            if self.pair is None:
                self.notify(
                    "diff needs two runs: stroma-view failed.json resumed.json, or mark two "
                    "runs in folder mode",
                    severity="warning",
                )
                return
            a, b = self.pair
        for screen in reversed(self.screen_stack):
            if isinstance(screen, DiffScreen) and {screen.a, screen.b} == {a, b}:
                while self.screen is not screen:
                    self.pop_screen()
                return
        self.push_screen(DiffScreen(a, b, self.runs))

    def on_open_cost(self, message: OpenCost) -> None:
        """Open the Cost screen of a run."""
        self.push_screen(CostScreen(message.index, message.file_name))

    def on_go_back(self, _message: GoBack) -> None:
        """Back to the previous screen (never past the first one)."""
        if len(self.screen_stack) > 2:
            self.pop_screen()

    # -- help and palette ------------------------------------------------------------------

    def action_help(self) -> None:
        """Show the keys of the current screen."""
        if isinstance(self.screen, HelpScreen):
            return
        name = type(self.screen).__name__.removesuffix("Screen")
        self.push_screen(HelpScreen(f"{name} keys", binding_help(self, self.screen)))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The palette offers every described binding of the screen, plus Textual's commands."""
        for keys, description in binding_help(self, screen):
            action = self._action_for(screen, description)
            if action is not None:
                yield SystemCommand(description, f"keys: {keys}", action)
        yield from super().get_system_commands(screen)

    def _action_for(self, screen: Screen[Any], description: str) -> Callable[[], Awaitable[bool]] | None:
        for active in screen.active_bindings.values():
            if active.binding.description == description:
                return partial(self.run_action, active.binding.action, active.node)
        return None
