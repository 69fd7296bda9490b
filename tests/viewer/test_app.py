"""The TUI driven by Textual's Pilot: keys pressed, selection and shown content asserted."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from viewer.app import StromaViewApp, binding_help
from viewer.model.index import RunIndex
from viewer.screens.cost import CostScreen
from viewer.screens.diff import DiffScreen
from viewer.screens.help import HelpScreen
from viewer.screens.run import RunScreen
from viewer.screens.runs import RunsScreen
from viewer.widgets.detail_tabs import DetailTabs
from viewer.widgets.virtual_list import VirtualList

SIZE = (140, 40)


async def ready(pilot: Pilot[None]) -> None:
    """Wait for the loading workers and the resulting refresh."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def shown(widget: Static) -> str:
    """The text a Static shows."""
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


def visible_lines(lst: VirtualList) -> list[str]:
    """The list's lines as drawn on screen."""
    return [lst.render_line(y).text.rstrip() for y in range(lst.size.height)]


def selection(screen: RunScreen) -> tuple[str, int | None]:
    """(node id, attempt number or None) of the selected row."""
    row = screen.selected
    assert row is not None
    return row.node.node_id, row.attempt.number if row.attempt else None


def detail(screen: RunScreen, tab: str) -> str:
    """The text shown in a detail tab's body."""
    return shown(screen.query_one(f"#body-{tab}", Static))


async def test_run_screen_shows_header_nodes_and_attempts(fixtures: Path) -> None:
    """The Run screen shows the header line and nodes with nested ✔ ✖ attempts."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        header = shown(screen.query_one("#header", Static))
        assert "FAILED" in header
        assert "7 attempts" in header
        assert "(4 failed)" in header
        lines = visible_lines(screen.query_one("#rows", VirtualList))
        assert lines[0].startswith("▾ ✔ fetch")
        assert any("✖ #1" in line and "TimeoutError" in line for line in lines)
        assert any("publish" in line and "not reached" in line for line in lines)


async def test_moving_with_j_k_g_G_and_pages(fixtures: Path) -> None:
    """j/k move one row, G/g jump to the ends, PgDn/PgUp move a page, and detail follows."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        assert selection(screen) == ("fetch", None)
        await pilot.press("j", "j")
        assert selection(screen) == ("summarize", None)
        await pilot.press("down")
        assert selection(screen) == ("summarize", 1)
        assert "attempt    1 of 3" in detail(screen, "attempt")
        await pilot.press("k")
        assert selection(screen) == ("summarize", None)
        await pilot.press("G")
        assert selection(screen) == ("publish", None)
        await pilot.press("g")
        assert selection(screen) == ("fetch", None)
        await pilot.press("pagedown")
        assert selection(screen) == ("publish", None)
        await pilot.press("pageup")
        assert selection(screen) == ("fetch", None)


async def test_next_and_previous_failure_with_e_and_E(fixtures: Path) -> None:
    """e walks forward through failed rows, E backwards, wrapping, and Failure tab explains."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await pilot.press("e")
        assert selection(screen) == ("summarize", 1)
        await pilot.press("e", "e")
        assert selection(screen) == ("tag", 1)
        await pilot.press("e", "e")
        assert selection(screen) == ("classify", 1)
        await pilot.press("4")
        await pilot.pause()
        text = detail(screen, "failure")
        assert "ContractViolation" in text
        assert "category: Field required" in text
        await pilot.press("E")
        assert selection(screen) == ("classify", None)
        await pilot.press("E")
        assert selection(screen) == ("tag", 1)


async def test_failures_only_and_class_filter(fixtures: Path) -> None:
    """f keeps only failures; c cycles the class filter and the filter line says which."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        rows = screen.query_one("#rows", VirtualList)
        assert rows.row_count == 12
        await pilot.press("f")
        assert rows.row_count == 7
        attempt_lines = [line for line in visible_lines(rows)[:7] if "#" in line]
        assert len(attempt_lines) == 4
        assert all("✖" in line for line in attempt_lines)
        assert "failures only" in shown(screen.query_one("#filters", Static))
        await pilot.press("f", "c")
        assert "class: RECOVERABLE" in shown(screen.query_one("#filters", Static))
        assert {r.node.node_id for r in screen.listing.rows} == {"summarize"}  # type: ignore[union-attr]
        await pilot.press("c")
        assert {r.node.node_id for r in screen.listing.rows} == {"classify"}  # type: ignore[union-attr]
        await pilot.press("c")
        assert {r.node.node_id for r in screen.listing.rows} == {"tag"}  # type: ignore[union-attr]
        await pilot.press("c")
        assert rows.row_count == 12


async def test_search_next_previous_and_clear(fixtures: Path) -> None:
    """/ searches (free text and key=value), n/N step through matches, esc clears."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await pilot.press("slash", *"timed out", "enter")
        await pilot.pause()
        assert selection(screen) == ("summarize", 1)
        assert "match 1/2" in shown(screen.query_one("#filters", Static))
        await pilot.press("n")
        assert selection(screen) == ("summarize", 2)
        assert "match 2/2" in shown(screen.query_one("#filters", Static))
        await pilot.press("n")
        assert selection(screen) == ("summarize", 1)
        await pilot.press("N")
        assert selection(screen) == ("summarize", 2)
        await pilot.press("escape")
        assert screen.listing is not None
        assert screen.listing.matches == []
        await pilot.press("slash", *"model=gpt-4o", "enter")
        await pilot.pause()
        assert selection(screen) == ("summarize", 3)


async def test_attempt_stepping_tabs_and_collapse(fixtures: Path) -> None:
    """] and [ step through a node's attempts; 1-6 switch tabs; h collapses, l expands."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await pilot.press("j", "j", "right_square_bracket")
        assert selection(screen) == ("summarize", 1)
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert selection(screen) == ("summarize", 3)
        await pilot.press("left_square_bracket")
        assert selection(screen) == ("summarize", 2)
        tabs = screen.query_one(DetailTabs)
        for key, tab, needle in [
            ("2", "input", '"text"'),
            ("3", "output", "the attempt failed"),
            ("5", "events", "RetryScheduled"),
            ("6", "json", '"AttemptFailed"'),
            ("1", "attempt", "retry      after"),
        ]:
            await pilot.press(key)
            await pilot.pause()
            assert tabs.active_tab == tab
            assert needle in detail(screen, tab)
        await pilot.press("h")
        assert selection(screen) == ("summarize", None)
        rows = screen.query_one("#rows", VirtualList)
        assert rows.row_count == 9
        assert visible_lines(rows)[2].startswith("▸ ✔ summarize")
        await pilot.press("l")
        assert rows.row_count == 12


async def test_copy_puts_the_selected_record_on_the_clipboard(fixtures: Path) -> None:
    """y copies the selected attempt's events as JSON."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("e", "y")
        assert '"type": "AttemptFailed"' in app.clipboard
        assert '"node_id": "summarize"' in app.clipboard


async def test_diff_without_a_second_run_says_how(fixtures: Path) -> None:
    """d with one run open stays on the Run screen and tells how to get a diff."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)
        assert any("diff needs two runs" in str(n.message) for n in app._notifications)


async def test_diff_screen_labels_jump_toggle_and_field_diff(fixtures: Path) -> None:
    """Two runs open the Diff screen; n jumps to the divergence, x hides unchanged, d goes back."""
    app = StromaViewApp([fixtures / "failed.json", fixtures / "resumed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, DiffScreen)
        strip = shown(screen.query_one("#delta", Static))
        assert "Δ status FAILED → RESUMED" in strip
        assert "Δ failed nodes −1" in strip
        assert "Δ failed attempts −4" in strip
        lines = visible_lines(screen.query_one("#diff-rows", VirtualList))
        assert "restored from checkpoint" in lines[0]
        assert "≠ tag" in lines[2]
        assert lines[2].startswith("◀ ")
        assert "first divergence" in lines[2]
        await pilot.press("n")
        assert screen.selected is not None
        assert screen.selected.node_id == "tag"
        body = shown(screen.query_one("#field-diff", Static))
        assert '- tags: ["reliability", "agents"]' in body
        assert '+ tags: ["reliability", "agents", "async"]' in body
        await pilot.press("x")
        rows = screen.query_one("#diff-rows", VirtualList)
        assert rows.row_count == 3
        assert screen.selected is not None
        assert screen.selected.node_id == "tag"
        await pilot.press("j")
        assert screen.selected is not None
        assert screen.selected.node_id == "classify"
        assert "classify: fixed" in shown(screen.query_one("#field-diff", Static))
        await pilot.press("x")
        assert rows.row_count == 5
        await pilot.press("d")
        await ready(pilot)
        assert isinstance(app.screen, RunScreen)
        assert app.screen.path.name == "resumed.json"
        await pilot.press("d")
        assert isinstance(app.screen, DiffScreen)


async def test_cost_screen_ranks_nodes_and_lists_budget_decisions(fixtures: Path) -> None:
    """$ opens the Cost screen: nodes by cost, failed share, and allow/fallback/deny decisions."""
    app = StromaViewApp([fixtures / "budget.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("dollar_sign")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CostScreen)
        title = shown(screen.query_one("#cost-title", Static))
        assert "22% spent on failed attempts" in title
        ranking = visible_lines(screen.query_one("#cost-nodes", VirtualList))
        assert "refine_1" in ranking[0]
        assert "refine_3" in ranking[2]
        assert "100% on failures" in ranking[2]
        budget = visible_lines(screen.query_one("#cost-budget", VirtualList))
        assert any("fallback" in line and "gpt-4o → gpt-4o-mini" in line for line in budget)
        assert any("deny" in line and "used 0.0223 of 0.02" in line for line in budget)
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)


async def test_folder_mode_marks_two_runs_and_diffs_them(fixtures: Path) -> None:
    """The Runs screen lists the folder, the resume under its run; two marked runs diff."""
    app = StromaViewApp([fixtures])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        lines = visible_lines(screen.query_one("#runs", VirtualList))
        at = next(i for i, line in enumerate(lines) if "failed.json" in line)
        assert "↳ resumed.json" in lines[at + 1]
        assert "resumes failed.json" in lines[at + 1]
        for _ in range(at):
            await pilot.press("j")
        await pilot.press("space", "j", "space")
        assert [p.name for p in screen.marked] == ["failed.json", "resumed.json"]
        await pilot.press("d")
        await ready(pilot)
        diff = app.screen
        assert isinstance(diff, DiffScreen)
        assert (diff.a.name, diff.b.name) == ("failed.json", "resumed.json")
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("enter")
        await ready(pilot)
        assert isinstance(app.screen, RunScreen)
        assert app.screen.path.name == "resumed.json"


async def test_help_lists_every_binding_of_the_screen(fixtures: Path) -> None:
    """? opens a help modal generated from the screen's bindings; esc closes it."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        run_screen = app.screen
        await pilot.press("question_mark")
        await pilot.pause()
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        descriptions = {d for _, d in help_screen.keys}
        for binding in RunScreen.BINDINGS:
            assert binding.description in descriptions  # type: ignore[union-attr]
        assert ("j ↓", "Down") in [(k, d) for k, d in help_screen.keys] or any(
            d == "Down" and "j" in k for k, d in help_screen.keys
        )
        await pilot.press("escape")
        assert app.screen is run_screen


async def test_command_palette_offers_the_same_bindings(fixtures: Path) -> None:
    """The palette's commands are the screen's described bindings, and running one acts."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        commands = {c.title: c for c in app.get_system_commands(screen)}
        help_descriptions = {d for _, d in binding_help(app, screen)}
        assert help_descriptions <= set(commands)
        await commands["Failures only"].callback()  # type: ignore[misc]
        await pilot.pause()
        assert screen.listing is not None
        assert screen.listing.failures_only


def live_run(path: Path, lines: list[str], writer_pid: int) -> StromaViewApp:
    """``lines`` written as a .jsonl whose header names ``writer_pid`` on this host; the app on it."""
    head = json.loads(lines[0])
    head["header"] |= {"writer_host": socket.gethostname(), "writer_pid": writer_pid}
    path.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n", encoding="utf-8")
    return StromaViewApp([path])


async def live_screen(pilot: Pilot[None]) -> RunScreen:
    """The Run screen of a live run, once loaded (it says RUNNING and that it follows the file)."""
    await ready(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, RunScreen)
    assert "live: following" in shown(screen.query_one("#banner", Static))
    assert "RUNNING" in shown(screen.query_one("#header", Static))
    return screen


async def test_live_jsonl_is_followed(tmp_path: Path, failed_lines: list[str]) -> None:
    """A .jsonl still being written (its writer, this process, is alive) shows a live banner and
    picks up appended events."""
    live = tmp_path / "live.jsonl"
    app = live_run(live, failed_lines[:6], os.getpid())
    async with app.run_test(size=SIZE) as pilot:
        screen = await live_screen(pilot)
        with live.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(failed_lines[6:]) + "\n")
        assert screen.poll_follow() == len(failed_lines) - 6
        await pilot.pause()
        assert "FAILED" in shown(screen.query_one("#header", Static))
        assert screen.query_one("#rows", VirtualList).row_count == 12
        assert not screen.query_one("#banner", Static).has_class("-shown")


async def test_truncated_jsonl_shows_a_banner(fixtures: Path) -> None:
    """A .jsonl cut by a kill shows its valid prefix under a truncated banner."""
    app = StromaViewApp([fixtures / "truncated.jsonl"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        banner = shown(screen.query_one("#banner", Static))
        assert "truncated" in banner
        assert "line 24" in banner
        assert "interrupted" in banner
        assert "INTERRUPTED" in shown(screen.query_one("#header", Static))


async def test_big_run_scrolls_and_renders_only_visible_rows(fixtures: Path) -> None:
    """The big run lists thousands of rows; G reaches the last, drawing only what is visible."""
    app = StromaViewApp([fixtures / "big.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        rows = screen.query_one("#rows", VirtualList)
        assert rows.row_count > 3000
        drawn: list[int] = []
        original = rows.renderer
        rows.renderer = lambda i: (drawn.append(i), original(i))[1]
        await pilot.press("G")
        await pilot.pause()
        assert selection(screen)[0] == "step_1099"
        assert drawn
        assert max(drawn) == rows.row_count - 1
        assert len(set(drawn)) <= rows.size.height * 2


async def test_error_while_loading_exits_with_the_message(tmp_path: Path) -> None:
    """A file that fails to parse in the worker ends the app with code 2 and the message."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "stroma.run", "version": 1, "header": {"run_id": "x"}, "events": [1]}')
    app = StromaViewApp([bad])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
    assert app.return_code == 2


async def test_q_quits(fixtures: Path) -> None:
    """q quits the app from the Run screen."""
    app = StromaViewApp([fixtures / "failed.json"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_every_screen_and_the_headless_output_show_the_summarys_numbers(fixtures: Path) -> None:
    """Run, Diff, Cost and Runs screens and --summary / --diff show each node's wall time, tokens and
    cost exactly as the one node summary (stroma.summary) defines them."""
    from stroma import compare_runs, load_run
    from viewer.model.detail import fmt_cost, node_figures
    from viewer.model.report import diff_report, node_line, summary_report

    failed, resumed = load_run(fixtures / "failed.json"), load_run(fixtures / "resumed.json")
    summaries = {"failed.json": failed.summary(), "resumed.json": resumed.summary()}
    b = summaries["resumed.json"]
    app = StromaViewApp([fixtures / "failed.json", fixtures / "resumed.json"])
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot)
        diff = app.screen
        assert isinstance(diff, DiffScreen)
        rows = diff.query_one("#diff-rows", VirtualList)
        for i, row in enumerate(diff.view.rows if diff.view else []):
            rows.cursor = i
            await pilot.pause()
            body = shown(diff.query_one("#field-diff", Static))
            for side, name in (("a", "failed.json"), ("b", "resumed.json")):
                node = summaries[name].by_id[row.node_id]
                assert f"{side}: " in body
                assert "  ".join(node_figures(node)) in body, (row.node_id, side, body)
        await pilot.press("dollar_sign")
        await pilot.pause()
        cost = app.screen
        assert isinstance(cost, CostScreen)
        ranking = visible_lines(cost.query_one("#cost-nodes", VirtualList))
        for node in b.nodes:
            if node.attempts:
                line = next(x for x in ranking if f" {node.node_id} " in x)
                assert fmt_cost(node.cost_usd) in line
        await pilot.press("escape", "escape")
        await pilot.pause()
        run = app.screen
        assert isinstance(run, RunScreen)
        lines = visible_lines(run.query_one("#rows", VirtualList))
        for node in b.nodes:
            line = next(x for x in lines if f" {node.node_id} " in x)
            if node.status != "restored":
                attempts, wall, _, tokens, cost_text = node_figures(node)
                assert all(part in line for part in (attempts, wall, tokens, cost_text)), line
    text = summary_report(RunIndex(resumed), "text")
    data = json.loads(summary_report(RunIndex(resumed), "json"))
    for node, entry in zip(b.ordered(), data["node_list"], strict=True):
        assert node_line(node) in text
        assert (entry["wall_ms"], entry["attempt_ms"], entry["tokens"], entry["cost_usd"]) == (
            node.wall_ms,
            node.attempt_ms,
            node.tokens,
            node.cost_usd,
        )
    compared = json.loads(diff_report(compare_runs(failed, resumed), "json"))
    for entry in compared["nodes"]:
        node = b.by_id[entry["node_id"]]
        assert (entry["b"]["wall_ms"], entry["b"]["tokens"], entry["b"]["cost_usd"]) == (
            node.wall_ms,
            node.tokens,
            node.cost_usd,
        )


async def test_esc_and_backspace_go_back_from_a_run_opened_in_folder_mode(
    fixtures: Path, tmp_path: Path
) -> None:
    """Enter opens a run from the folder, Esc and Backspace come back, a bad file too; q quits."""
    (tmp_path / "a.json").write_bytes((fixtures / "failed.json").read_bytes())
    (tmp_path / "b.json").write_text("{not json", encoding="utf-8")
    app = StromaViewApp([tmp_path])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        runs = app.screen
        assert isinstance(runs, RunsScreen)
        for back in ("escape", "backspace"):
            await pilot.press("g", "enter")
            await ready(pilot)
            assert isinstance(app.screen, RunScreen)
            await pilot.press(back)
            await pilot.pause()
            assert app.screen is runs
        await pilot.press("G", "enter")  # the bad file: its error, then back
        await ready(pilot)
        assert isinstance(app.screen, RunScreen)
        assert "not valid JSON" in shown(app.screen.query_one("#banner", Static))
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is runs
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code in (0, None)


async def test_an_empty_folder_says_so(tmp_path: Path) -> None:
    """A folder without run files shows how to get some, not a blank screen."""
    app = StromaViewApp([tmp_path])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "no run files here" in visible_lines(app.screen.query_one("#runs", VirtualList))[0]


async def test_the_footer_never_cuts_quit_and_help(fixtures: Path) -> None:
    """At 80 and 160 columns, every screen's footer shows q and ? inside the screen."""
    from textual.widgets import Footer

    for width in (80, 160):
        app = StromaViewApp([fixtures / "failed.json", fixtures / "resumed.json"])
        async with app.run_test(size=(width, 24)) as pilot:
            await ready(pilot)
            for key in ("", "dollar_sign", "escape"):  # Diff, Cost, back to Diff... then Run
                if key:
                    await pilot.press(key)
                    await ready(pilot)
                keys = {str(k.key): k.region for k in app.screen.query_one(Footer).query("FooterKey")}
                for needed in ("q", "question_mark"):
                    assert needed in keys, (width, type(app.screen).__name__, list(keys))
                    region = keys[needed]
                    assert region.width > 0, (width, needed)
                    assert region.right <= width, (width, needed, region)


@pytest.fixture
def writer() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for a run's writer (the test kills it; killed afterwards anyway)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


async def test_a_followed_run_whose_writer_dies_turns_interrupted(
    tmp_path: Path, failed_lines: list[str], writer: subprocess.Popen[bytes]
) -> None:
    """Live while its writer's pid runs (banner says how long since the last event); once the
    writer is gone, the next poll marks the run and its running node interrupted and stops."""
    live = tmp_path / "live.jsonl"
    started = next(i for i, x in enumerate(failed_lines) if '"AttemptStarted"' in x)
    app = live_run(live, failed_lines[: started + 1], writer.pid)
    async with app.run_test(size=SIZE) as pilot:
        screen = await live_screen(pilot)
        assert "live: following live.jsonl; last event" in shown(screen.query_one("#banner", Static))
        writer.kill()
        writer.wait()
        assert screen.poll_follow() == 0
        await pilot.pause()
        assert "INTERRUPTED" in shown(screen.query_one("#header", Static))
        assert "interrupted: its writer" in shown(screen.query_one("#banner", Static))
        assert screen.follower is None
        assert screen.index is not None
        assert "interrupted" in {n.status for n in screen.index.nodes}
