"""A contract violation keeps what the node returned, so the Output tab can show the rejected data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stroma import RunStatus, StromaRunner, load_run
from stroma.events import AttemptFailed
from stroma.summary import RunSummary
from viewer.model.detail import output_text
from viewer.model.index import RunIndex
from viewer.model.listing import Row


class Doc(BaseModel):
    """Input."""

    text: str


class Summary(BaseModel):
    """Output."""

    summary: str
    words: int


async def test_the_rejected_output_is_on_the_attempt_and_in_the_output_tab(tmp_path: Path) -> None:
    """AttemptFailed carries the output the contract rejected; the run file keeps it, redact strips
    it, and the viewer's Output tab shows it marked as rejected."""
    runner = StromaRunner.quick()

    @runner.node("summarize", input=Doc, output=Summary)
    async def summarize(state: Doc) -> dict[str, Any]:
        return {"summary": "ok", "words": "many"}

    result = await runner.run([summarize], Doc(text="x"))
    assert result.status is RunStatus.FAILED
    (failed,) = [e for e in result.trace.log if isinstance(e, AttemptFailed)]
    assert failed.output_state == {"summary": "ok", "words": "many"}
    record = load_run(result.save(tmp_path / "run.json"))
    summary = RunSummary(list(record.events))
    attempt = summary.by_id["summarize"].attempts[0]
    assert summary.output_of(attempt) == {"summary": "ok", "words": "many"}
    index = RunIndex(record)
    node = index.by_id["summarize"]
    text = output_text(Row(node, node.attempts[0]), index)
    assert text.startswith("(rejected: it failed its output contract)")
    assert '"many"' in text
    redacted = load_run(result.save(tmp_path / "redacted.json", redact=True))
    (shared,) = [e for e in redacted.events if isinstance(e, AttemptFailed)]
    assert not shared.output_state
