"""stroma-view: a terminal viewer for Stroma run files.

``stroma-view run.json`` browses a run, ``stroma-view failed.json resumed.json`` shows what a
resume changed, ``stroma-view runs/`` lists a folder; ``--summary`` / ``--diff`` print the same
model headless. The model layer (``viewer.model``) has no Textual import; Textual is imported
only when the TUI starts.
"""

__all__: list[str] = []
