"""Against a real third-party OTLP backend on loopback: Arize Phoenix from PyPI.

Phoenix lives in its own virtualenv (its dependencies are many and would clash with ours) under
``~/.cache/stroma/phoenix-venv`` (``STROMA_PHOENIX_VENV`` overrides it). The session fixture
installs it there with pip when it is missing (several minutes the first time; later runs reuse
it), starts ``phoenix serve`` on free loopback ports with a throwaway working directory, and
stops it at the end. The tests skip, saying why, only when Phoenix cannot be installed or started.

Each test runs examples/otel_jaeger.py exactly as its docstring tells a user to, over OTLP/HTTP or
OTLP/gRPC, and reads the spans back through Phoenix's REST API.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _free_port
from tests.stroma_otel.conftest import EXAMPLE, EXAMPLE_TREE, otel_env, run_program

VENV = Path(os.environ.get("STROMA_PHOENIX_VENV", Path.home() / ".cache" / "stroma" / "phoenix-venv"))
INSTALL_TIMEOUT_S = 1200
START_TIMEOUT_S = 180

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT_S + START_TIMEOUT_S + 120)


def _phoenix_binary() -> Path:
    """``phoenix`` in the cached virtualenv, installed there first if it is missing."""
    binary = VENV / "bin" / "phoenix"
    if binary.exists():
        return binary
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "arize-phoenix"],
            check=True,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        pytest.skip(f"Arize Phoenix could not be installed into {VENV}: {str(detail)[-500:]}")
    return binary


@dataclass
class Phoenix:
    """A running Phoenix: its HTTP (UI, REST API, OTLP/HTTP) and OTLP/gRPC endpoints."""

    http: str
    grpc: str

    def get(self, path: str) -> Any:
        """GET a REST API path; the decoded JSON."""
        with urllib.request.urlopen(f"{self.http}{path}", timeout=10) as response:
            return json.load(response)

    def spans(self, project: str, want: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """The project's spans once at least ``want`` arrived and no more came for a moment."""
        deadline = time.monotonic() + timeout_s
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                seen = self.get(f"/v1/projects/{project}/spans?limit=1000")["data"]
            except urllib.error.HTTPError as exc:  # the project appears with its first span
                if exc.code != 404:
                    raise
            if len(seen) >= want:
                time.sleep(1.0)  # anything late (a duplicate tree) would show up now
                return list(self.get(f"/v1/projects/{project}/spans?limit=1000")["data"])
            time.sleep(0.5)
        return seen


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """Phoenix serving on loopback for the session."""
    binary = _phoenix_binary()
    http_port, grpc_port = _free_port(), _free_port()
    workdir = tmp_path_factory.mktemp("phoenix")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(http_port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_TELEMETRY_ENABLED="false",
    )
    log = (workdir / "serve.log").open("w")
    proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Phoenix(http=f"http://127.0.0.1:{http_port}", grpc=f"http://127.0.0.1:{grpc_port}")
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.skip(f"phoenix serve exited with {proc.returncode}; see {workdir / 'serve.log'}")
            try:
                server.get("/v1/projects")
                with socket.create_connection(("127.0.0.1", grpc_port), timeout=1):
                    break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.skip(f"phoenix serve did not answer within {START_TIMEOUT_S} s")
                time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run_example(phoenix: Phoenix, protocol: str, project: str) -> subprocess.CompletedProcess[str]:
    """examples/otel_jaeger.py with the documented variables pointing at Phoenix."""
    env = otel_env(
        OTEL_SERVICE_NAME="stroma-example",
        OTEL_EXPORTER_OTLP_ENDPOINT=phoenix.grpc if protocol == "grpc" else phoenix.http,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={project}",
    )
    return run_program([sys.executable, str(EXAMPLE)], env)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_phoenix_receives_one_tree_per_run(phoenix: Phoenix, protocol: str) -> None:
    """Over OTLP/HTTP and gRPC Phoenix gets one root, the node/attempt tree, retry and classification
    events and the statuses; the program prints no error, though Phoenix takes traces only."""
    project = "stroma-" + protocol.replace("/", "-")
    proc = run_example(phoenix, protocol, project)
    assert proc.stderr == ""  # no "Failed to export metrics", no retry warnings
    spans = phoenix.spans(project, want=8)
    names = [s["name"] for s in spans]
    assert len(names) == len(set(names)) == 8, names
    by_name = {s["name"]: s for s in spans}
    by_id = {s["context"]["span_id"]: s["name"] for s in spans}
    roots = [s["name"] for s in spans if s["parent_id"] is None]
    assert roots == ["invoke_workflow summarize-docs"]
    assert {s["name"]: by_id.get(s["parent_id"]) for s in spans} == EXAMPLE_TREE
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    run = by_name["invoke_workflow summarize-docs"]
    assert run["attributes"]["stroma.run.status"] == "COMPLETED"
    assert run["status_code"] == "UNSET"
    failed = by_name["attempt summarize #1"]
    assert failed["status_code"] == "ERROR"
    assert failed["attributes"]["error.type"] == "ConnectionError"
    assert [e["name"] for e in failed["events"]] == ["stroma.failure.classified", "exception"]
    assert failed["events"][0]["attributes"]["stroma.failure.class"] == "RECOVERABLE"
    assert not failed["events"][1]["attributes"].get("exception.message")  # Phoenix shows '' for none
    assert by_name["attempt summarize #2"]["status_code"] == "UNSET"
    node = by_name["node summarize"]
    assert [e["name"] for e in node["events"]] == ["stroma.retry.scheduled"]
    assert node["attributes"]["stroma.node.attempts"] == 2
