"""Where the time of a replayed decode step goes: each step captured as a CUDA graph, its
replay timed, and the GPU time of every kernel inside the replays (torch.profiler).

    python bench/replay_profile.py [--batches 8 64 256] [--vocab 151936]

The steps include the coordinated top-p and typical steps (groups of 8 codes), whose edge
passes bound them. Besides whole steps it times pieces that isolate the fixed costs of a
replayed sampling step: the draw kernel with a seed tensor made once (no seed launch in the
graph), and graphs holding only torch's `randint` (what a capture used for seeds before
decoptim's own stream on the device), only the arrival counters' memset, or only the launch
that takes the seeds from that stream and zeroes the counters.
"""

from __future__ import annotations

import argparse

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as d
from decoptim.core.kernels.draw import (
    LOGITS,
    _launch,
    draw_targets,
    graph_seed_stream,
    next_graph_seeds,
)

PROFILED = ("softmax", "top-k 50", "sparsemax", "BoK exact top-64", "draw, seed made once",
            "top-p 0.9", "top-p 0.9, coordinated", "typical 0.9, coordinated", "BoK exact prob",
            "BoK mirror 5")  # fmt: skip


def graph_of(step, static: torch.Tensor) -> torch.cuda.CUDAGraph:
    step(static)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(static)
    return graph


def kernel_times(graph: torch.cuda.CUDAGraph, replays: int = 30) -> list[tuple[str, float]]:
    """(kernel, µs of GPU time per replay), largest first."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    rows = [(event.key, event.self_device_time_total / replays) for event in prof.key_averages()]
    return sorted(((key, us) for key, us in rows if us > 0), key=lambda row: -row[1])


def _zeroed(targets: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return targets[0], targets[1].zero_()


def steps(batch: int) -> dict:
    every = gpu.every_decoder(1.0)
    inv_tau = torch.ones(batch, device="cuda")
    codes = d.group_codes(max(1, batch // 8), min(8, batch), seed=1, device="cuda")
    seed = torch.randint(0, 2**31 - 1, (2,), device="cuda")
    return {
        "copy": lambda z: z.clone(),
        "softmax": every["softmax"].sample,
        "draw, seed made once": lambda z: _launch(
            z, (inv_tau,) * 6, seed, _zeroed(draw_targets(batch, z.device)), LOGITS.value
        ),
        "randint only": lambda z: torch.randint(0, 2**31 - 1, (2,), device="cuda"),
        "memset only": lambda z: torch.zeros(batch, device="cuda", dtype=torch.int32),
        "graph seeds and counters only": lambda z: next_graph_seeds(
            graph_seed_stream(z.device), torch.empty(batch, device="cuda", dtype=torch.int32)
        ),
        "top-k 50": every["top-k 50"].sample,
        "sparsemax": every["sparsemax"].sample,
        "entmax 1.5": every["entmax 1.5"].sample,
        "BoK exact top-64": every["BoK exact top-64"].sample,
        "BoK exact prob": every["BoK exact prob"].sample,
        "BoK mirror 5": every["BoK mirror 5"].sample,
        "top-p 0.9": every["top-p 0.9"].sample,
        # groups of 8 samples, as bench/coordinated.py
        "top-p 0.9, coordinated": lambda z: every["top-p 0.9"].sample_coordinated(z, codes),
        "typical 0.9, coordinated": lambda z: every["typical 0.9"].sample_coordinated(z, codes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--vocab", type=int, default=151_936)
    args = parser.parse_args()
    print(f"# {torch.cuda.get_device_name()}, V = {args.vocab}, fp32, torch {torch.__version__}")
    for batch in args.batches:
        inputs = gpu.make_inputs(batch, args.vocab, 4, seed=7)
        print(f"\n## B = {batch}: ms per replay; µs of GPU time per kernel inside it\n")
        for name, step in steps(batch).items():
            graph = graph_of(step, inputs[0].clone())
            replay = gpu.time_ms(lambda _z, graph=graph: graph.replay(), inputs, 100)
            print(f"{name:24s} {replay:.4f} ms")
            if name in PROFILED:
                for kernel, us in kernel_times(graph):
                    print(f"    {us:8.2f} µs  {kernel[:70]}")


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit("replay_profile.py needs a CUDA device")
    main()
