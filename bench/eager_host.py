"""Host time of eager decode steps: cached kernel launches against Triton's own path.

    python bench/eager_host.py [--batches 1 64 256] [--rounds 20] [--samplers "softmax,top-p 0.9"]
    python bench/eager_host.py --profile [--batches 1] [--samplers "top-p 0.9"]

An eager step on a GPU is bound by the host: each Triton launch binds and specialises its
arguments in Python before the launcher runs (`decoptim/core/kernels/launch.py`). This
times, in one process, the same step with the cached launches on and off, alternating every
round (40 calls each) so that the two see the same host noise, and prints per sampler and B
the minimum and median over rounds of the host µs per call (the calls queue kernels without
waiting for them; the GPU is synchronised between rounds), and the median of the paired
differences. First, the cost of one launch of a 24-argument kernel both ways.

With --profile it instead runs each step CALLS times under cProfile (cached launches on) and
prints, per sampler and B, the functions with the most host time of their own.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from datetime import date

import gpu  # bench/, the script's folder, is on sys.path
import torch
import triton
import triton.language as tl

import decoptim
from decoptim.core.kernels.launch import kernel, set_cached_launches

CALLS = 40


@kernel
def _many_arguments(a, b, c, d, e, f, g, h, i, j, k, l_, m, n, o, p, q, r, s, t, V, M,
                    BLOCK: tl.constexpr, FLAG: tl.constexpr):  # fmt: skip
    tl.store(a + tl.program_id(0), V + M)


def host_us(step) -> float:
    """Host µs per call over one round of CALLS calls, the GPU idle at its start."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(CALLS):
        step()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / CALLS * 1e6


def paired(step, rounds: int) -> tuple[list[float], list[float]]:
    """Host µs per call with cached launches and through Triton's path, alternating."""
    cached, plain = [], []
    for _ in range(3):
        step()  # compiles, and caches each variant
    for _ in range(rounds):
        set_cached_launches(True)
        cached.append(host_us(step))
        set_cached_launches(False)
        plain.append(host_us(step))
    set_cached_launches(True)
    return cached, plain


def profile(step, top: int = 22) -> str:
    """The `top` functions by their own host time over CALLS calls of step, per call."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(CALLS):
        step()
    profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def row(label: str, cached: list[float], plain: list[float]) -> str:
    saved = statistics.median(p - c for c, p in zip(cached, plain, strict=True))
    return (f"| {label} | {min(cached):.1f} / {statistics.median(cached):.1f} | "
            f"{min(plain):.1f} / {statistics.median(plain):.1f} | {saved:.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--samplers", help="comma-separated labels of bench/gpu.py's samplers")
    parser.add_argument("--profile", action="store_true",
                        help="print each step's cProfile table instead of timing it")  # fmt: skip
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device (it times kernel launches)")
    decoders = gpu.every_decoder(1.0)
    if args.samplers:
        names = [name.strip() for name in args.samplers.split(",")]
        unknown = [name for name in names if name not in decoders]
        if unknown:
            parser.error(f"--samplers: unknown {unknown}; known: {', '.join(decoders)}")
        decoders = {name: decoders[name] for name in names}
    print(f"# decoptim {decoptim.__version__}, torch {torch.__version__}, Triton "
          f"{triton.__version__}, {torch.cuda.get_device_name()}, {date.today()}\n")  # fmt: skip
    if args.profile:
        for batch in args.batches:
            z = gpu.make_inputs(batch, 151_936, 1, seed=7)[0]
            for name, decoder in decoders.items():
                print(f"## {name}, B = {batch}, {CALLS} calls\n")
                print(profile(lambda: decoder.sample(z)), flush=True)  # noqa: B023
        return
    print(
        f"host µs per call, min / median over {args.rounds} rounds of {CALLS} calls; "
        "'saved' is the median of the paired differences\n"
    )
    print("| step | cached launches | Triton's path | saved |")
    print("|---|---:|---:|---:|")
    out = torch.zeros(64, device="cuda")
    pointers = [torch.zeros(64, device="cuda") for _ in range(19)]
    one_launch = lambda: _many_arguments[(64,)](out, *pointers, 7, 9, BLOCK=16, FLAG=True)  # noqa: E731
    print(row("one launch, 24 arguments", *paired(one_launch, args.rounds)), flush=True)
    for batch in args.batches:
        z = gpu.make_inputs(batch, 151_936, 1, seed=7)[0]
        for name, decoder in decoders.items():
            cached, plain = paired(lambda: decoder.sample(z), args.rounds)  # noqa: B023
            print(row(f"{name}, B = {batch}", cached, plain), flush=True)


if __name__ == "__main__":
    main()
