"""The candidates gather's time by its launch settings: block size, warps, splits per row
and pipelined stages (`tl.range(num_stages=)`, 1 for none), for both of its bounds
(Tsallis' offset below the row max; the top-64 segment bound).

    python bench/gather_sweep.py [--batches 8 64 256] [--vocab 151936]

Times eager calls of the gather kernel alone (CUDA events, median of 60): the figures
include the host's launch; compare settings within one batch size.
"""

from __future__ import annotations

import argparse
import itertools

import gpu  # bench/, the script's folder, is on sys.path
import torch

from decoptim.core.checks import kernel_rows
from decoptim.core.kernels import candidates
from decoptim.core.kernels.streaming import chunk_for, pow2_at_least, row_stats, segment_size


def gather_ms(inputs, ones, stats, offset: float, block: int, warps: int, splits: int,
              stages: int) -> float:  # fmt: skip
    # `stats`: row stats with the segment bound (made before the gather, not timed), or
    # without, for the offset bound on their per-split maxima.
    batch, vocab = inputs[0].shape
    x, index, count = candidates.Candidates.empty(batch, splits, inputs[0].device)
    chunk = chunk_for(vocab, splits, block)
    stat_block = pow2_at_least(stats.splits, 16)
    kth = stats.segment > 0
    bound = stats.bound if kth else ones
    segmax = stats.segmax if kth else ones

    def gather(z: torch.Tensor) -> None:
        candidates._gather_kernel[(batch, splits)](
            z, ones, stats.maxes, bound, segmax, x, index, count, vocab, vocab, chunk,
            stats.splits, segmax.shape[-1], offset, KTH_SEGMENT=kth, SEG=max(stats.segment, 1),
            SKIP=kth and candidates._skips_segments(batch, splits, stats, z.device),
            CAP=candidates.CAP,
            STAT_BLOCK=stat_block, BLOCK=block, STAGES=stages, num_warps=warps,
        )  # fmt: skip

    return gpu.time_ms(gather, inputs, 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--vocab", type=int, default=151_936)
    args = parser.parse_args()
    vocab = args.vocab
    print(f"# {torch.cuda.get_device_name()}, V = {vocab}, fp32; ms per eager gather")
    for batch in args.batches:
        inputs = gpu.make_inputs(batch, vocab, 4, seed=7)
        ones = kernel_rows(1.0, inputs[0])
        top64 = row_stats(inputs[0], ones, segment_size(vocab, 64), finish=True, bound_k=64)
        bounds = {"tsallis": (row_stats(inputs[0], ones), 1.0), "top-64": (top64, 0.0)}
        print(f"\n## B = {batch}\n")
        print("| bound | block | warps | splits | stages | ms |\n|---|---:|---:|---:|---:|---:|")
        for name, bound in bounds.items():
            for block, warps, splits, stages in itertools.product(
                (1024, 2048, 4096), (4, 8), (8, 16, 32, 64), (1, 2, 3)
            ):
                ms = gather_ms(inputs, ones, *bound, block, warps, splits, stages)
                print(f"| {name} | {block} | {warps} | {splits} | {stages} | {ms:.4f} |",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit("gather_sweep.py needs a CUDA device")
    main()
