"""The viewer's screens: Run, Diff, Cost, Runs (folder mode) and Help."""
