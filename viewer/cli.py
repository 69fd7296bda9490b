"""``stroma-view``: open one run, two runs (diff) or a folder; or print a summary / diff headless.

    stroma-view run.json                     browse a run (.json or .jsonl, live or truncated)
    stroma-view failed.json resumed.json     what the resume changed
    stroma-view runs/                        every run in a folder
    stroma-view --summary run.json [--format text|markdown|json]
    stroma-view --diff a.json b.json [--format text|markdown|json]

Exit status: 0 fine; 1 the run did not complete (``--summary``) or the newer run is worse
(``--diff``); 2 bad input (missing file, not a run file, invalid JSON, newer format, an event that
does not validate), reported as one paragraph naming the file and line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from viewer.model.diff import DiffView
from viewer.model.index import RunIndex
from viewer.model.loading import LoadedRun, ViewerInputError, load, peek
from viewer.model.report import FORMATS, diff_report, run_is_bad, summary_report, terminal_safe

__all__ = ["main"]

EXIT_OK, EXIT_WORSE, EXIT_BAD_INPUT = 0, 1, 2
# Files up to this size are parsed before the terminal is taken over, so their errors print
# as plain messages; bigger ones are parsed in a worker while the header is already shown.
PRELOAD_BYTES = 16 * 1024 * 1024


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stroma-view",
        description="Browse Stroma run files, filter failures, diff a failed run against its resume.",
    )
    p.add_argument("paths", nargs="*", type=Path, help="a run file, two run files, or a folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--summary", action="store_true", help="print the run's summary and exit")
    mode.add_argument("--diff", action="store_true", help="print the diff of two runs and exit")
    p.add_argument("--format", choices=FORMATS, default="text", help="headless output format")
    return p


def _fail(message: str) -> int:
    print("\n".join(map(terminal_safe, message.split("\n"))), file=sys.stderr)
    return EXIT_BAD_INPUT


def _check_exists(path: Path, *, folder_ok: bool) -> None:
    if not path.exists():
        raise ViewerInputError(f"stroma-view: cannot open {path}: no such file; check the path")
    if path.is_dir() and not folder_ok:
        raise ViewerInputError(
            f"stroma-view: cannot open {path}: is a folder; open it alone to list its runs"
        )


def _preflight(path: Path) -> LoadedRun | None:
    """Load a small file now (its errors print before the TUI starts); peek a big one."""
    if path.stat().st_size <= PRELOAD_BYTES:
        return load(path)
    try:
        peek(path)
    except ViewerInputError:
        return load(path)  # raises the precise error (cost: one parse, only for a bad file)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stroma-view``; returns the exit status."""
    args = _parser().parse_args(argv)
    paths: list[Path] = args.paths
    try:
        if args.summary:
            if len(paths) != 1:
                return _fail("stroma-view: --summary takes one run file")
            _check_exists(paths[0], folder_ok=False)
            index = RunIndex(load(paths[0]).record)
            print(summary_report(index, args.format))
            return EXIT_WORSE if run_is_bad(index) else EXIT_OK
        if args.diff:
            if len(paths) != 2:
                return _fail(
                    "stroma-view: --diff takes two run files (in any order: they are compared oldest first)"
                )
            for p in paths:
                _check_exists(p, folder_ok=False)
            a, b = load(paths[0]), load(paths[1])
            view = DiffView(a.record, b.record)
            print(diff_report(view.comparison, args.format))
            return EXIT_WORSE if view.comparison.worse else EXIT_OK
        if not paths or len(paths) > 2:
            return _fail(
                "stroma-view: give one run file, two run files (to diff them) or one folder; "
                "see stroma-view --help"
            )
        for p in paths:
            _check_exists(p, folder_ok=len(paths) == 1)
        preloaded = [] if paths[0].is_dir() else [x for p in paths if (x := _preflight(p))]
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return _fail(
                "stroma-view: the viewer needs a terminal (stdin and stdout are not one); for "
                "output without a terminal use stroma-view --summary RUN or --diff OLD NEW"
            )
    except ViewerInputError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (stroma-view --summary run.json | head): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK

    from viewer.app import StromaViewApp  # noqa: PLC0415 - headless mode never imports Textual

    app = StromaViewApp(paths, preloaded)
    app.run()
    return app.return_code or EXIT_OK
