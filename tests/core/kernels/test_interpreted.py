"""The Triton kernels on CPU-only machines: their logic through Triton's interpreter, and
every launch the interpreter saw compiled for Hopper (launches.py says why both)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> tuple[str, Path]:
    """One run of interpreted_checks.py: its report, and the launches it recorded."""
    launches = tmp_path_factory.mktemp("kernels") / "launches.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.core.kernels.interpreted_checks"],
        cwd=ROOT,
        env={**ENV, "TRITON_INTERPRET": "1", "DECOPTIM_KERNEL_LAUNCHES": str(launches)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = done.stdout + done.stderr[-4000:]
    assert done.returncode == 0, report
    return report, launches


def test_kernels_equal_the_reference_in_the_interpreter(interpreted):
    report, _ = interpreted
    # Every check the module defines reported ok (none skipped or silently dropped).
    checks = (ROOT / "tests" / "core" / "kernels" / "interpreted_checks.py").read_text()
    assert report.count("ok check_") == checks.count("\ndef check_"), report


def test_every_kernel_compiles_for_hopper_as_the_checks_launch_it(interpreted):
    _, launches = interpreted
    done = subprocess.run(
        [sys.executable, "-m", "tests.core.kernels.launches", str(launches)],
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
