"""What one pass over z costs for each way Triton offers to narrow top-p's edge, on an H100/H200.

    python bench/edge_primitives.py [--batches 64 256] [--sigmas 3 1]

Coordinated top-p and typical draw over q's own buckets, so every row needs its set's edge
first (`core/kernels/top_p.py`): the row's stats, four profile passes of 8 thresholds
(narrowing the bracket ≈ 2400×), the gather, the draw. This script times, on randn·σ rows
at V = 151,936 (fp32, replayed as CUDA graphs, `triton.testing.do_bench_cudagraph`), one
pass of each primitive over the first bracket, [max x + log((1 − p)Σ/(pV)), max x] at p = 0.9:

- read: Σ e^z per split, the floor of any pass;
- profile 8: the mass at or above 8 thresholds (the shipped pass's loop: a compare and a
  fused multiply-add per threshold and token): narrows 7×, masses exact;
- tl.histogram NB: Triton's count histogram of NB bins across the bracket. Counts only,
  so a bin's mass is known to a factor e^{width}, and the edge's bracket after it is as wide
  as the bins whose mass bounds straddle p·Σ;
- atomics NB: the mass of each of NB bins summed by global atomic adds in int64 fixed point
  (2⁻⁴⁰ of the row max's mass; integer adds make the sums independent of their order), the
  zeroing included: narrows NB×, masses exact to the fixed point, but each token in the
  bracket is one atomic, and rows whose tokens crowd a few bins contend.

Also prints the share of each row's tokens inside the first bracket, and checks that the
histogram equals `torch.bincount` and that two atomic passes give equal sums.
"""

from __future__ import annotations

import argparse
import functools
import platform
import subprocess
import sys
from datetime import date

import torch
import triton
import triton.language as tl

from decoptim.core.kernels.streaming import chunk_for, program_position, split_bounds

V = 151_936
P = 0.9
SPLITS = 16  # the gather's splits per row at this V (`candidates.gather_splits`)
FIXED_POINT = 2.0**40


@triton.jit
def _load(z_ptr, row, V, offs, end):
    # The row's tokens at offs, −inf past the split's end.
    return tl.load(z_ptr + row.to(tl.int64) * V + offs, mask=offs < end, other=-float("inf"))


@triton.jit
def _read_kernel(z_ptr, out_ptr, V, CHUNK, BLOCK: tl.constexpr):
    row, split, splits = program_position()
    begin, end = split_bounds(split, CHUNK, V)
    total = tl.zeros((BLOCK,), tl.float32)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = _load(z_ptr, row, V, offs, end)
        total += tl.exp(z)
    tl.store(out_ptr + row * splits + split, tl.sum(total, axis=0))


@triton.jit
def _profile_kernel(z_ptr, lo_ptr, hi_ptr, out_ptr, V, CHUNK, PROFILE: tl.constexpr,
                    BLOCK: tl.constexpr):  # fmt: skip
    row, split, splits = program_position()
    begin, end = split_bounds(split, CHUNK, V)
    lo, hi = tl.load(lo_ptr + row), tl.load(hi_ptr + row)
    j = tl.arange(0, PROFILE)
    theta = hi - j * ((hi - lo) / (PROFILE - 1))
    mass = tl.zeros((PROFILE, BLOCK), tl.float32)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)[None, :]
        z = _load(z_ptr, row, V, offs, end)
        mass += tl.exp(z - hi) * (z >= theta[:, None]).to(tl.float32)
    tl.store(out_ptr + (row * splits + split) * PROFILE + j, tl.sum(mass, axis=1))


@triton.jit
def _bins(z, hi, scale, BINS: tl.constexpr):
    # A token's bin across [lo, hi] (0 at hi; scale = BINS / (hi − lo), from the host so that
    # torch's check bins with the same float32 operations) and whether it is inside.
    t = (hi - z) * scale
    return t.to(tl.int32), (t >= 0) & (t < BINS)


@triton.jit
def _count_histogram_kernel(z_ptr, hi_ptr, scale_ptr, out_ptr, V, CHUNK, BINS: tl.constexpr,
                            BLOCK: tl.constexpr):  # fmt: skip
    row, split, splits = program_position()
    begin, end = split_bounds(split, CHUNK, V)
    hi, scale = tl.load(hi_ptr + row), tl.load(scale_ptr + row)
    counts = tl.zeros((BINS,), tl.int32)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = _load(z_ptr, row, V, offs, end)
        b, inside = _bins(z, hi, scale, BINS)
        counts += tl.histogram(b, BINS, mask=inside)
    tl.store(out_ptr + (row * splits + split) * BINS + tl.arange(0, BINS), counts)


@triton.jit
def _atomic_histogram_kernel(z_ptr, hi_ptr, scale_ptr, out_ptr, V, CHUNK, BINS: tl.constexpr,
                             BLOCK: tl.constexpr, SCALE: tl.constexpr):  # fmt: skip
    row, split, _ = program_position()
    begin, end = split_bounds(split, CHUNK, V)
    hi, scale = tl.load(hi_ptr + row), tl.load(scale_ptr + row)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = _load(z_ptr, row, V, offs, end)
        b, inside = _bins(z, hi, scale, BINS)
        fixed = (tl.exp(z - hi) * SCALE).to(tl.int64)
        tl.atomic_add(out_ptr + row * BINS + b, fixed, mask=inside, sem="relaxed")


def chunk(block: int) -> int:
    return chunk_for(V, SPLITS, block)


def bracket(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The first profile pass's bracket per row (`_top_p_profile_kernel`, level 0) at p = P,
    and the mean share of tokens inside it."""
    hi = z.max(dim=1).values
    sums = torch.exp(z - hi[:, None]).sum(dim=1)
    lo = hi + torch.log((1 - P) / P * sums / V).clamp(min=-200.0)
    share = (z >= lo[:, None]).float().mean().item()
    return lo.contiguous(), hi.contiguous(), share


def rows(batch: int, sigma: float) -> list[tuple[str, float]]:
    generator = torch.Generator("cuda").manual_seed(batch)
    z = torch.randn(batch, V, device="cuda", generator=generator) * sigma
    lo, hi, share = bracket(z)
    grid = (batch, SPLITS)
    scale = {bins: (bins / (hi - lo)).contiguous() for bins in (128, 256, 1024, 4096)}
    floats = torch.empty(batch * SPLITS * 8, device="cuda")
    counts = torch.empty(batch * SPLITS * 256, device="cuda", dtype=torch.int32)

    def read() -> None:
        _read_kernel[grid](z, floats, V, chunk(2048), BLOCK=2048, num_warps=4)

    def profile() -> None:
        _profile_kernel[grid](z, lo, hi, floats, V, chunk(512), PROFILE=8, BLOCK=512,
                              num_warps=4)  # fmt: skip

    def count_histogram(bins: int) -> None:
        _count_histogram_kernel[grid](z, hi, scale[bins], counts, V, chunk(2048), BINS=bins,
                                      BLOCK=2048, num_warps=4)  # fmt: skip

    def atomic_histogram(sums: torch.Tensor, bins: int) -> None:
        sums.zero_()
        _atomic_histogram_kernel[grid](z, hi, scale[bins], sums, V, chunk(2048), BINS=bins,
                                       BLOCK=2048, SCALE=FIXED_POINT, num_warps=4)  # fmt: skip

    bench = triton.testing.do_bench_cudagraph
    timed = [("read", bench(read)), ("profile 8", bench(profile))]
    for bins in (128, 256):
        timed.append((f"tl.histogram {bins}", bench(functools.partial(count_histogram, bins))))
    for bins in (256, 1024, 4096):
        sums = torch.zeros(batch * bins, device="cuda", dtype=torch.int64)
        timed.append((f"atomics {bins}", bench(functools.partial(atomic_histogram, sums, bins))))
        first = sums.clone()
        atomic_histogram(sums, bins)
        print(f"randn·{sigma:g}, B = {batch}, {bins} bins: two atomic passes give equal sums: "
              f"{torch.equal(first, sums)}")  # fmt: skip
    count_histogram(256)
    found = counts.view(batch, SPLITS, 256).sum(dim=1).long()
    t = (hi[:, None] - z) * scale[256][:, None]
    inside = (t >= 0) & (t < 256)
    expected = torch.stack(
        [torch.bincount(r[m].int(), minlength=256) for r, m in zip(t, inside, strict=True)]
    )
    print(f"randn·{sigma:g}, B = {batch}: tl.histogram equals torch.bincount: "
          f"{torch.equal(found, expected)}")  # fmt: skip
    return [("tokens inside the first bracket (%)", 100 * share), *timed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[3.0, 1.0])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("edge_primitives.py times Triton kernels on a CUDA device; none is here.")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    print(f"# {date.today()}, {torch.cuda.get_device_name()}, {platform.node()}, commit "
          f"{commit}, Triton {triton.__version__}, torch {torch.__version__}")  # fmt: skip
    columns = [(b, s) for s in args.sigmas for b in args.batches]
    table = {}
    for batch, sigma in columns:
        for name, value in rows(batch, sigma):
            table.setdefault(name, []).append(value)
    print("\nms per pass, replayed (`do_bench_cudagraph`), V = 151,936, fp32\n")
    print("| pass | " + " | ".join(f"randn·{s:g}, B = {b}" for b, s in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, values in table.items():
        digits = 1 if "%" in name else 4
        print(f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in values) + " |")


if __name__ == "__main__":
    main()
