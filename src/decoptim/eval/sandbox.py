"""Run untrusted Python (model-written code) in a contained subprocess.

Each run gets its own temporary directory (removed afterwards), an isolated interpreter
(`python -I`), a scrubbed environment, CPU-time, memory and file-size limits, a wall-clock
timeout that kills its whole process group, and an audit hook installed before the code
runs that refuses network sockets, new processes (fork, exec, spawn, subprocess, system)
and any write, delete or rename outside its directory. A refused action raises inside the
child, so the sample fails; the harness only reads the exit status.

This contains mistakes and careless code from a model; it is not a security boundary
against a determined attacker (use a container or VM for that).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

GUARD = Path(__file__).with_name("sandbox_guard.py").read_text()


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    detail: str  # the tail of stderr


def run_python(
    code: str, timeout: float = 5.0, memory_mb: int = 1024, max_file_mb: int = 16
) -> ExecResult:
    """Execute `code`; passed means it exited with status 0 within the limits."""
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got timeout={timeout}")

    def limits() -> None:
        cpu = int(timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    with tempfile.TemporaryDirectory(prefix="decoptim-sandbox-") as workdir:
        script = Path(workdir) / "program.py"
        script.write_text(GUARD + "\n" + code)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(script)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=limits,
            start_new_session=True,
        )
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return ExecResult(False, "timeout", f"exceeded {timeout} s")
        finally:
            _kill_group(process)
        tail = stderr.decode("utf-8", "replace")[-2000:]
        if process.returncode == 0:
            return ExecResult(True, "passed", tail)
        return ExecResult(False, "failed", tail or f"exit status {process.returncode}")


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    process.wait()
