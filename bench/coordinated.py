"""Cost of a coordinated decode step against the plain sampling step of the same decoder.

    python bench/coordinated.py [--vocab 151936] [--batches 8 64 256] [--device cuda]

For each decoder and batch: milliseconds per step of `decoder.sample(z)` and of
`decoder.sample_coordinated(z, codes)` on the same logits (median of timed calls; CUDA
events on a GPU, a wall clock on the CPU), and their ratio; on a GPU also the same steps
replayed as CUDA graphs (the GPU's own time, without the host's launches) and the
coordinated step called through `GraphedStep` (logits and codes copied in, the graph
replayed, tokens and codes copied out: what a loop pays that graphs its step). Top-p and
typical are also drawn `by_rejection` (rows of their own: over softmax's buckets). The
issue's goal is a ratio of at most 1.5 on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as d
from decoptim.integrations.graphs import GraphedStep

# gpu.py's decoders whose plain sampling step has its own kernels, by their rows there
COORDINATED = ["softmax", "top-k 50", "top-p 0.9", "min-p 0.1", "top-k 50 & top-p 0.9",
               "typical 0.9", "epsilon 3e-4", "eta 3e-4", "sparsemax", "entmax 1.5",
               "BoK exact top-64", "BoK exact prob", "BoK mirror 5"]  # fmt: skip
BY_REJECTION = ["top-p 0.9", "typical 0.9"]  # also drawn by rejection, as "<row>, by rejection"


def decoders() -> dict[str, tuple[d.Decoder, dict]]:
    """Rows: (decoder, options of its coordinated step)."""
    every = gpu.every_decoder(0.8)
    rows = {name: (every[name], {}) for name in COORDINATED}
    for name in BY_REJECTION:
        rows[f"{name}, by rejection"] = (every[name], {"by_rejection": True})
    return rows


def time_ms(fn, device: str, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - began))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# coordinated step vs plain sampling, V = {args.vocab}, {name}, {date.today()}")
    replayed = args.device == "cuda"
    print(
        "| decoder | B | plain ms | coordinated ms | ratio |"
        + (" plain replay | coordinated replay | ratio | coordinated via GraphedStep |"
           if replayed else "")
    )  # fmt: skip
    print("|---|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if replayed else ""))
    for batch in args.batches:
        generator = torch.Generator(device=args.device).manual_seed(0)
        z = torch.randn(batch, args.vocab, device=args.device, generator=generator) * 3
        codes = d.group_codes(max(1, batch // 8), min(8, batch), seed=1, device=args.device)
        for label, (decoder, options) in decoders().items():
            steps = {
                "plain": lambda dec=decoder, z=z, g=generator: dec.sample(z, generator=g),
                "joint": lambda dec=decoder, z=z, c=codes, o=options: dec.sample_coordinated(
                    z, c, **o
                ),
            }
            plain, joint = (time_ms(step, args.device, args.repeats) for step in steps.values())
            row = f"| {label} | {batch} | {plain:.3f} | {joint:.3f} | {joint / plain:.2f} |"
            if replayed:  # without the generator: the graph draws from the default one
                plain = gpu.graph_replay_ms(decoder.sample, [z])
                joint = gpu.graph_replay_ms(
                    lambda x, dec=decoder, c=codes, o=options: dec.sample_coordinated(x, c, **o),
                    [z],
                )
                row += f" {plain} | {joint} | {gpu._ratio(joint, gpu._number(plain))} |"
                graphed = GraphedStep(
                    lambda x, c, dec=decoder, o=options: dec.sample_coordinated(x, c, **o)
                )
                call = time_ms(lambda g=graphed, z=z, c=codes: g(z, c), args.device, args.repeats)
                row += " n/a (ran eagerly) |" if graphed.eager else f" {call:.4f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
