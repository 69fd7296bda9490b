"""The viewer's model: loading, indexing, filtering, search, diff and cost roll-up.

Pure Python on top of Stroma's public loaders; nothing here imports Textual, so every piece is
unit-tested without a terminal and reused by the headless ``--summary`` / ``--diff`` output.
"""

from viewer.model.cost import CostReport, cost_report
from viewer.model.diff import DiffView
from viewer.model.folder import RunEntry, scan_folder
from viewer.model.index import Attempt, Node, RunIndex
from viewer.model.listing import Listing, Query, Row, parse_query
from viewer.model.loading import LoadedRun, ViewerInputError, load, peek
from viewer.model.report import diff_report, summary_report

__all__ = [
    "Attempt",
    "CostReport",
    "DiffView",
    "Listing",
    "LoadedRun",
    "Node",
    "Query",
    "Row",
    "RunEntry",
    "RunIndex",
    "ViewerInputError",
    "cost_report",
    "diff_report",
    "load",
    "parse_query",
    "peek",
    "scan_folder",
    "summary_report",
]
