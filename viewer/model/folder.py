"""Folder mode: every run in a folder, one row per run, a resumed run right after the run it
resumed.

Only headers are peeked (first bytes of each file, last line of a ``.jsonl``), so a folder of big
runs lists at once. Files that are the same run (same run id and start time: the ``.jsonl`` a trace
dir wrote and the ``.json`` that ``save()`` wrote) make one row, showing the complete file and
offering the others as copies. Lineage comes from run ids and start times, never file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stroma.runfile import RunHeader
from viewer.model.loading import ViewerInputError, peek

__all__ = ["RunEntry", "run_state", "scan_folder"]


def run_state(header: RunHeader, path: Path | str | None) -> str:
    """How the run ended, or RUNNING (its writer is live) / INTERRUPTED (its writer is gone)."""
    if header.status:
        return header.status
    return "RUNNING" if header.writer_alive(path) else "INTERRUPTED"


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One run of the folder: the file shown, the other files of the same run, and the run it
    resumed (``resumes``), if that run is in the folder."""

    path: Path
    header: RunHeader | None = None
    error: str | None = None
    copies: tuple[Path, ...] = ()
    resumes: Path | None = None

    @property
    def state(self) -> str:
        """The run's status (see :func:`run_state`); ERROR for a file that is not a run."""
        return run_state(self.header, self.path) if self.header else "ERROR"


def _peek(path: Path) -> RunEntry:
    try:
        return RunEntry(path, peek(path))
    except ViewerInputError as exc:
        return RunEntry(path, error=str(exc).split(": ", 2)[-1])


def _preference(entry: RunEntry) -> tuple[bool, bool, str]:
    """The file a run's row shows: a finished one, then a saved .json, then by name."""
    h = entry.header
    return (not (h and h.status), entry.path.suffix != ".json", entry.path.name)


def scan_folder(folder: str | Path) -> list[RunEntry]:
    """Runs in ``folder`` (``*.json``, ``*.jsonl``), oldest first, one row per run, each resume
    right after the run it resumed (same run id, started earlier)."""
    files = sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.suffix in (".json", ".jsonl") and not p.name.startswith(".")
    )
    groups: dict[tuple[str, float | None] | Path, list[RunEntry]] = {}
    for entry in map(_peek, files):
        h = entry.header
        key = (h.run_id, h.started_at) if h and h.run_id and h.started_at is not None else entry.path
        groups.setdefault(key, []).append(entry)
    runs: list[RunEntry] = []
    for members in groups.values():
        members.sort(key=_preference)
        first = members[0]
        runs.append(RunEntry(first.path, first.header, first.error, tuple(m.path for m in members[1:])))

    def start(e: RunEntry) -> tuple[float, str]:
        s = e.header.started_at if e.header else None
        return (s if s is not None else float("inf"), e.path.name)

    runs.sort(key=start)
    by_run: dict[str, list[RunEntry]] = {}
    for entry in runs:
        if entry.header:
            by_run.setdefault(entry.header.run_id, []).append(entry)
    out: list[RunEntry] = []
    placed: set[Path] = set()
    for entry in runs:
        if entry.path in placed:
            continue
        lineage = by_run[entry.header.run_id] if entry.header else [entry]
        previous: Path | None = None
        for member in lineage:
            if member.path in placed:
                continue
            placed.add(member.path)
            resumes = previous if member.header and member.header.resumed_from is not None else None
            out.append(RunEntry(member.path, member.header, member.error, member.copies, resumes))
            previous = member.path
    return out
