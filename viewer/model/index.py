"""The run index: the run's one node summary (:class:`stroma.summary.RunSummary`) with its record.

The viewer's lists, filters, search, detail tabs, cost roll-up and headless output all read this;
none of them folds the events again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from stroma import RunHeader, RunRecord
from stroma import events as ev
from stroma.summary import ICONS, AttemptSummary, NodeSummary, RunSummary

__all__ = ["ICONS", "Attempt", "Node", "RunIndex"]

Attempt = AttemptSummary
Node = NodeSummary


class RunIndex(RunSummary):
    """The summary of one run file's record (the header follows the record as events arrive)."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        super().__init__(record.events, record.header.pipeline)
        if record.interrupted:
            self.interrupt()

    def append(self, events: Iterable[ev.LifecycleEvent]) -> list[ev.LifecycleEvent]:
        """Add events that arrived after the index was built (a followed ``.jsonl``)."""
        new = super().append(events)
        record = self.record
        if self.finished is not None and not record.finished:
            record.refresh()  # once, when the run's end arrives (no fold: RunFinished has the totals)
        elif new:
            record.header = replace(record.header, last_event_at=self.last_ts)
        return new

    @property
    def header(self) -> RunHeader:
        """The run's header."""
        return self.record.header
