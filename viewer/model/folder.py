"""Folder mode: every run file in a folder, with a resumed run placed next to the run it resumed.

Only headers are peeked (first bytes of each file, last line of a ``.jsonl``), so a folder of big
runs lists at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from viewer.model.loading import HeaderPeek, peek_header

__all__ = ["RunEntry", "scan_folder"]


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One run file in the folder; ``resumes`` is the path of the run it resumed, if found."""

    peek: HeaderPeek
    resumes: Path | None = None

    @property
    def path(self) -> Path:
        """The run file."""
        return self.peek.path


def scan_folder(folder: str | Path) -> list[RunEntry]:
    """Run files of ``folder`` (``*.json``, ``*.jsonl``), oldest first, each resume right after
    the run it resumed (same run id, started earlier)."""
    root = Path(folder)
    peeks = [
        peek_header(p)
        for p in sorted(root.iterdir())
        if p.is_file() and p.suffix in (".json", ".jsonl") and not p.name.startswith(".")
    ]
    peeks.sort(key=lambda h: (h.started_at if h.started_at is not None else float("inf"), h.path))
    by_run: dict[str, list[HeaderPeek]] = {}
    for h in peeks:
        if h.run_id:
            by_run.setdefault(h.run_id, []).append(h)
    out: list[RunEntry] = []
    placed: set[Path] = set()
    for h in peeks:
        if h.path in placed:
            continue
        group = by_run.get(h.run_id, [h]) if h.run_id else [h]
        previous: Path | None = None
        for member in group:
            if member.path in placed:
                continue
            placed.add(member.path)
            resumes = previous if member.resumed_from is not None else None
            out.append(RunEntry(member, resumes))
            previous = member.path
    return out
