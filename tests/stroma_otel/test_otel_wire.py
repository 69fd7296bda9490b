"""Over the wire: a real OTLP receiver (gRPC and HTTP) decodes what configure(),
opentelemetry-instrument and ``python -m stroma_otel export`` send."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stroma import FailureClass, NodeContext, StromaRunner
from stroma.testing import FakeClock
from stroma_otel import attributes as a
from tests.stroma_otel.conftest import (
    EXAMPLE,
    EXAMPLE_TREE,
    ONE_NODE_APP,
    ROOT,
    Doc,
    Otel,
    Out,
    otel_env,
    run_program,
)
from tests.stroma_otel.otlp_receiver import OtlpReceiver, ReceivedSpan

BIN = Path(sys.executable).parent


def env_for(receiver: OtlpReceiver, protocol: str, **extra: str) -> dict[str, str]:
    """Environment that points the OTLP exporters at ``receiver``."""
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    return otel_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_SERVICE_NAME="wire-test",
        **extra,
    )


def run_instrumented(bin_dir: Path, python: str, app_dir: Path, env: dict[str, str]) -> None:
    """``opentelemetry-instrument python app.py`` (ONE_NODE_APP) from ``bin_dir``; it completes."""
    app = app_dir / "app.py"
    app.write_text(textwrap.dedent(ONE_NODE_APP))
    run_program([str(bin_dir / "opentelemetry-instrument"), python, str(app)], env, cwd=app_dir)


def zero_code_tree(receiver: OtlpReceiver) -> dict[str, str | None]:
    """Span name -> parent name of what ONE_NODE_APP sent (waits for its three spans)."""
    assert receiver.wait_for(lambda r: len(r.spans()) >= 3)
    spans = by_name(receiver.spans())
    return {name: parent_of(spans, name) for name in spans}


ZERO_CODE_TREE = {
    "invoke_workflow zero-code": None,
    "node only": "invoke_workflow zero-code",
    "attempt only #1": "node only",
}


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    """Spans keyed by name (names are unique in these runs)."""
    out = {s.name: s for s in spans}
    assert len(out) == len(spans), [s.name for s in spans]
    return out


def parent_of(spans: dict[str, ReceivedSpan], name: str) -> str | None:
    """The name of the span's parent, or None for a root."""
    parent = spans[name].parent_span_id
    for other in spans.values():
        if other.span_id == parent:
            return other.name
    return None


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_example_exports_through_configure(receiver: OtlpReceiver, protocol: str) -> None:
    """examples/otel_jaeger.py, run as documented, delivers the span tree and (asked for) metrics."""
    run_program([sys.executable, str(EXAMPLE)], env_for(receiver, protocol, OTEL_METRICS_EXPORTER="otlp"))
    assert receiver.wait_for(lambda r: len(r.spans()) >= 8 and r.metrics())
    spans = by_name(receiver.spans())
    transport = "grpc" if protocol == "grpc" else "http"
    assert {s.transport for s in spans.values()} == {transport}
    assert {name: parent_of(spans, name) for name in spans} == EXAMPLE_TREE
    run = spans["invoke_workflow summarize-docs"]
    assert run.resource["service.name"] == "wire-test"
    assert run.scope == "stroma"
    assert run.schema_url == a.SCHEMA_URL
    assert run.attributes[a.RUN_STATUS] == "COMPLETED"
    assert spans["attempt summarize #1"].status_code == 2  # STATUS_CODE_ERROR
    assert spans["attempt summarize #1"].attributes[a.ERROR_TYPE] == "ConnectionError"
    assert spans["attempt summarize #2"].attributes[a.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert [n for n, _ in spans["node summarize"].events] == [a.EVENT_RETRY_SCHEDULED]
    assert b"connection reset" not in receiver.raw_bytes()  # exception text stays home
    metrics = receiver.metrics()
    assert a.METRIC_NODE_DURATION in metrics
    assert a.METRIC_FAILURES in metrics




@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_opentelemetry_instrument_traces_stroma_with_no_code_change(
    receiver: OtlpReceiver, tmp_path: Path, protocol: str
) -> None:
    """``opentelemetry-instrument python app.py`` finds the entry point and exports the run's spans."""
    env = env_for(
        receiver,
        protocol,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
    )
    run_instrumented(BIN, sys.executable, tmp_path, env)
    assert zero_code_tree(receiver) == ZERO_CODE_TREE
    assert by_name(receiver.spans())["invoke_workflow zero-code"].resource["service.name"] == "wire-test"


def terminal(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    """Every error is TERMINAL."""
    return FailureClass.TERMINAL


async def test_export_replays_a_run_file_with_original_timestamps_and_ids(
    otel: Otel, clock: FakeClock, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """``python -m stroma_otel export run.json`` sends the live tree again, same ids and timestamps."""
    runner = (
        StromaRunner.quick(run_id="run-export", pipeline_name="docs")
        .with_classifiers([terminal])
        .with_hooks(otel.hooks())
    )

    @runner.node("fetch", input=Doc, output=Out)
    async def fetch(state: Doc) -> dict[str, Any]:
        clock.advance(1.5)
        return {"text": state.text}

    @runner.node("store", input=Out, output=Out)
    async def store(state: Out) -> dict[str, Any]:
        clock.advance(0.5)
        raise PermissionError("read-only bucket")

    result = await runner.run([fetch, store], Doc(text="x"))
    assert str(result.status) == "FAILED"
    path = result.save(tmp_path / "run.json")
    live = {s.name: s for s in otel.spans()}

    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "stroma_otel", "export", str(path)],
        env=env_for(receiver, "grpc"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "exported 5 spans of run run-export" in proc.stdout
    spans = by_name(receiver.spans())
    assert set(spans) == set(live)
    for name, span in spans.items():
        assert span.start_ns == live[name].start_time, name
        assert span.end_ns == live[name].end_time, name
        assert span.attributes == dict(live[name].attributes or {}), name
    run = spans["invoke_workflow docs"]
    live_run = live["invoke_workflow docs"].context
    assert (run.trace_id, run.span_id) == (f"{live_run.trace_id:032x}", f"{live_run.span_id:016x}")
    assert spans["node store"].status_code == 2
    assert parent_of(spans, "attempt store #1") == "node store"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "not a Stroma run file"),
    ],
)
def test_export_rejects_bad_input_cleanly(tmp_path: Path, content: str | None, expected: str) -> None:
    """A missing or malformed run file is one error line and exit status 2, never a traceback."""
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "stroma_otel", "export", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("python -m stroma_otel export: error:")


@pytest.mark.timeout(300)
def test_the_otel_extra_alone_is_enough_for_opentelemetry_instrument(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """``pip install '.[otel]'`` in a fresh virtualenv, then ``opentelemetry-instrument`` exports spans."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    src = tmp_path / "src"  # a copy: building in the source tree would leave build/ there
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("stroma", "stroma_otel", "viewer"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{src}[otel]"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = env_for(receiver, "grpc")
    del env["PYTHONPATH"]  # the installed package, not the source tree
    run_instrumented(venv / "bin", str(venv / "bin" / "python"), tmp_path, env)
    assert zero_code_tree(receiver) == ZERO_CODE_TREE
