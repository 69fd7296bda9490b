"""Every example of the user's documents (shared/seeds) runs unchanged and prints what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "seed_examples"

EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        "FAILED",
        "bad_summarize: Contract violation for 'bad_summarize' (output): "
        "summary: Field required; word_count: Field required",
        "COMPLETED",
        "3",
        "FAILED",
        "1",
        "RESUMED",
        "summary='Stroma adds reliability to async agent pipelines...' word_count=7",
        "1",
        "Missing event in other trace: summarize attempt 1",
        "Difference for validate attempt 1: output_state None != {'summary': 'Stroma adds reliability "
        "to async agent pipelines...', 'word_count': 7}; failure <FailureClass.AMBIGUOUS: 'AMBIGUOUS'> "
        "!= None; failure_message 'downstream service down' != None",
        "COMPLETED",
        "summary='Stroma adds reliability to async agent pipelines...' word_count=7",
    ],
    "checkpointing.py": [
        "Running step1",
        "First run: PARTIAL",
        "Running step2",
        "Resumed: RESUMED",
        "total=51",
    ],
    "runner_quick.py": [
        "COMPLETED result=10",
        "COMPLETED 150 ['entities', 'language']",
        "extract Out",
    ],
    "middleware.py": ["text='...'", "COMPLETED 1"],
    "extending.py": [
        "COMPLETED ['RECOVERABLE'] a='HI'",
        "FAILED ['TERMINAL']",
        "RedisStore 100000",
    ],
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_seed_example_prints_what_the_docs_say(script: str) -> None:
    """The seed example runs in a fresh interpreter and prints exactly the documented lines."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(
        [sys.executable, str(HERE / script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == EXPECTED[script]


def test_every_seed_example_is_checked() -> None:
    """No example file sits in seed_examples/ without expected output."""
    assert {p.name for p in HERE.glob("*.py")} == set(EXPECTED)
