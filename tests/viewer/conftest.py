"""Shared fixtures of the viewer tests: the committed run files and a way to write bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    """The folder of committed fixture runs (made by fixtures/make_fixtures.py)."""
    return FIXTURES


@pytest.fixture
def failed_lines() -> list[str]:
    """The failed run as .jsonl lines (header line first), built from the committed run.json."""
    return jsonl_lines(FIXTURES / "failed.json")


def jsonl_lines(path: Path) -> list[str]:
    """A run.json as .jsonl lines (header line first)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    head = {"format": doc["format"], "version": doc["version"], "header": doc["header"]}
    return [json.dumps(head)] + [json.dumps(e) for e in doc["events"]]
