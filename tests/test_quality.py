"""The three packages stay lint-clean (ruff) and type-clean (mypy --strict)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ["stroma", "stroma_otel", "viewer"]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' installs it)")
    return found


def test_ruff_finds_nothing() -> None:
    """ruff check (the rule set in pyproject.toml) passes over the packages, tests and examples."""
    proc = subprocess.run(
        [_tool("ruff"), "check", *PACKAGES, "tests", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_finds_nothing() -> None:
    """mypy --strict (configured in pyproject.toml) passes over the three packages."""
    proc = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
