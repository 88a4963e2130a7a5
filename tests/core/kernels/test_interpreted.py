"""The Triton kernels on CPU-only machines: their logic through Triton's interpreter, and
every launch the interpreter saw compiled for Hopper (launches.py says why both)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}


CHECKS_FILE = ROOT / "tests" / "core" / "kernels" / "interpreted_checks.py"
# Processes the checks are shared among: the interpreter runs a check on one core, and the
# whole module takes over 10 minutes in one process on a 2-core CI machine (632 s in stop 43).
WORKERS = max(1, min(4, os.cpu_count() or 1))
# The limit for all of them: well above a share, and a hang still ends the run.
TIMEOUT = 1200


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> tuple[str, list[Path]]:
    """One run of interpreted_checks.py, its checks dealt round-robin to WORKERS processes
    run at once: their reports, and the launches each recorded."""
    names = re.findall(r"^def (check_\w+)\(", CHECKS_FILE.read_text(), flags=re.MULTILINE)
    folder = tmp_path_factory.mktemp("kernels")
    shares = [names[worker::WORKERS] for worker in range(WORKERS) if names[worker::WORKERS]]
    launches = [folder / f"launches-{worker}.json" for worker in range(len(shares))]
    # Output to files, not pipes: a process that fills an unread pipe would wait for it.
    logs = [folder / f"report-{worker}.txt" for worker in range(len(shares))]
    workers = []
    for share, path, log in zip(shares, launches, logs, strict=True):
        with log.open("w") as out:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.core.kernels.interpreted_checks", *share],
                    cwd=ROOT,
                    env={**ENV, "TRITON_INTERPRET": "1", "DECOPTIM_KERNEL_LAUNCHES": str(path)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + TIMEOUT
    failed = False
    for process in workers:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        failed |= process.returncode != 0
    report = "\n".join(log.read_text()[-20000:] for log in logs)
    assert not failed, report
    return report, launches


def test_kernels_equal_the_reference_in_the_interpreter(interpreted):
    report, _ = interpreted
    # Every check the module defines reported ok (none skipped or silently dropped).
    assert report.count("ok check_") == CHECKS_FILE.read_text().count("\ndef check_"), report


def test_every_kernel_compiles_for_hopper_as_the_checks_launch_it(interpreted):
    _, launches = interpreted
    done = subprocess.run(
        [sys.executable, "-m", "tests.core.kernels.launches", *map(str, launches)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = done.stdout + done.stderr[-4000:]
    assert done.returncode == 0, report
    from tests.core.kernels.launches import kernels

    compiled = [line for line in report.splitlines() if line.startswith("ok decoptim.")]
    assert len(compiled) == len(kernels()), report


@triton.jit
def _sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, FLOAT_START: tl.constexpr):
    # A loop-carried value whose type changes: the interpreter runs it, the compiler refuses.
    total = 0.0 if FLOAT_START else 0
    for start in range(0, n, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        total += tl.sum(tl.load(x_ptr + offsets, mask=offsets < n, other=0.0), 0)
    tl.store(out_ptr, total)


def test_the_compile_check_catches_what_only_the_compiler_refuses():
    from tests.core.kernels.launches import compile_for_target

    signature = {"x_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32"}
    signature |= {"BLOCK": "constexpr", "FLOAT_START": "constexpr"}
    compiled = compile_for_target(
        _sum_kernel, signature, {"BLOCK": 128, "FLOAT_START": True}, {"num_warps": 4}
    )
    assert ".target sm_90" in compiled.asm["ptx"]
    with pytest.raises(Exception, match="Loop-carried variable total"):
        compile_for_target(
            _sum_kernel, signature, {"BLOCK": 128, "FLOAT_START": False}, {"num_warps": 4}
        )
