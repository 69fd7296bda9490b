"""Bounded exit with no collector, and ``python -m stroma_otel export`` saying what the receiver
answered (connection refused, HTTP 404, gRPC UNIMPLEMENTED) within ``--timeout``."""

from __future__ import annotations

import http.server
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from stroma import StromaRunner
from tests.conftest import _free_port
from tests.stroma_otel.conftest import ONE_NODE_APP, Doc, Out, otel_env

APP = "import stroma_otel\nstroma_otel.configure()\n" + ONE_NODE_APP


def exit_seconds(env: dict[str, str]) -> tuple[float, str, str]:
    """Run APP; seconds from its last output line to its exit, and its stdout and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(APP)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    last_line = time.monotonic()
    out, err = proc.communicate(timeout=60)
    return time.monotonic() - last_line, line + out, err


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exit_is_prompt_with_no_collector(protocol: str) -> None:
    """configure() with nothing listening: the program exits within 3 s of its last line."""
    env = otel_env(
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_free_port()}",
    )
    seconds, out, err = exit_seconds(env)
    assert out.strip() == "COMPLETED", err
    assert seconds <= 3.0, (seconds, err)


def test_exit_bound_follows_otel_exporter_otlp_timeout() -> None:
    """OTEL_EXPORTER_OTLP_TIMEOUT (seconds) sets the shutdown bound instead of Stroma's 2 s."""
    env = otel_env(
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_free_port()}",
        OTEL_EXPORTER_OTLP_TIMEOUT="0.5",
    )
    seconds, out, err = exit_seconds(env)
    assert out.strip() == "COMPLETED", err
    assert seconds <= 1.5, (seconds, err)


@pytest.fixture
async def run_file(tmp_path: Path) -> Path:
    """A persisted run of one node."""
    runner = StromaRunner.quick(run_id="run-answer", pipeline_name="docs")

    @runner.node("only", input=Doc, output=Out)
    async def only(state: Doc) -> dict[str, str]:
        return {"text": state.text}

    result = await runner.run([only], Doc(text="x"))
    return Path(result.save(tmp_path / "run.json"))


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def http_404() -> Iterator[str]:
    """An HTTP server on loopback that answers 404 to everything."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def grpc_without_otlp() -> Iterator[str]:
    """A gRPC server on loopback with no service at all (every call is UNIMPLEMENTED)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(None)


def export(path: Path, protocol: str, endpoint: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -m stroma_otel export --timeout 2``; the process and its duration."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stroma_otel", "export", "--timeout", "2", str(path)],
        env=otel_env(OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc, time.monotonic() - start


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_export_to_nothing_says_connection_refused(run_file: Path, protocol: str) -> None:
    """Nothing listening: one error line saying the connection was refused, within the timeout."""
    proc, seconds = export(run_file, protocol, f"http://127.0.0.1:{_free_port()}")
    assert proc.returncode == 1
    assert "connection refused" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert seconds < 10  # 2 s of export plus interpreter start-up


def test_export_to_a_404_says_http_404(run_file: Path, http_404: str) -> None:
    """An HTTP receiver that answers 404 is reported as such, not as 'nothing listening'."""
    proc, _ = export(run_file, "http/protobuf", http_404)
    assert proc.returncode == 1
    assert "HTTP 404" in proc.stderr, proc.stderr
    assert "refused" not in proc.stderr


def test_export_to_grpc_without_otlp_says_unimplemented(run_file: Path, grpc_without_otlp: str) -> None:
    """A gRPC server without the OTLP trace service is reported as gRPC UNIMPLEMENTED."""
    proc, _ = export(run_file, "grpc", grpc_without_otlp)
    assert proc.returncode == 1
    assert "gRPC UNIMPLEMENTED" in proc.stderr, proc.stderr
