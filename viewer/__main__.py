"""``python -m viewer``: the same as ``stroma-view``."""

from viewer.cli import main

raise SystemExit(main())
