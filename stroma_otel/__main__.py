"""``python -m stroma_otel export run.json``: replay a run file as spans (see ``_export``)."""

from __future__ import annotations

import sys

from stroma_otel._export import main

if __name__ == "__main__":
    sys.exit(main())
