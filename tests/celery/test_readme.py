"""The README's "Many workers" snippet works as written (Celery in eager mode, the real Redis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stroma import load_run

pytest.importorskip("celery")

ROOT = Path(__file__).resolve().parents[2]
README_REDIS = "redis://127.0.0.1:6379/0"


def test_readme_many_workers_snippet_runs_a_task_and_writes_its_run_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, unique: str
) -> None:
    """The snippet's task runs a document, and sending the run id again returns the stored result."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Many workers", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert README_REDIS in code
    monkeypatch.chdir(tmp_path)  # the snippet's run files go to ./runs
    namespace: dict[str, Any] = {"__name__": "tasks"}
    exec(compile(code.replace(README_REDIS, redis_url), "README.md", "exec"), namespace)
    namespace["app"].conf.task_always_eager = True
    doc = namespace["Doc"](text="Stroma runs pipelines on Celery workers")
    first = namespace["summarize_doc"].start(doc, run_id=f"doc-{unique}")
    again = namespace["summarize_doc"].start(doc, run_id=f"doc-{unique}")
    assert first.result["status"] == again.result["status"] == "COMPLETED"
    files = sorted((tmp_path / "runs").glob("*.jsonl"))
    assert [load_run(p).header.status for p in files] == ["COMPLETED", "COMPLETED"]
