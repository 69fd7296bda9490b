"""Fixtures for the adapter tests, which run the real frameworks (no doubles).

- ``framework(module)``: the module, or a skip when it is not installed; a failure instead when
  ``STROMA_REQUIRE_FRAMEWORKS`` (comma-separated top-level names, set by ``.ci/run``) lists it,
  so CI cannot pass by skipping.
- ``otel`` / ``clock``: the in-memory OpenTelemetry providers and the fake clock of the
  stroma_otel tests (``UNSET`` / ``ERROR``: span statuses in their tree shapes).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

from tests.stroma_otel.conftest import Otel, clock, otel

__all__ = ["ERROR", "UNSET", "Otel", "clock", "framework", "otel"]

UNSET, ERROR = "UNSET", "ERROR"  # span status codes, as SpanNode.shape() spells them


def framework(module: str) -> ModuleType:
    """Import ``module``, skipping the calling test module when it is missing (unless required)."""
    required = {name.strip() for name in os.environ.get("STROMA_REQUIRE_FRAMEWORKS", "").split(",")}
    if module.split(".", maxsplit=1)[0] in required:
        return importlib.import_module(module)
    return pytest.importorskip(module)
