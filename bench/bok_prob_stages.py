"""Best-of-K w = p's sample, replayed as a CUDA graph, with its gather's loads pipelined over
1, 2 and 3 stages (`bok_prob.GATHER_STAGES`), at B = 8, 64, 256 and V = 151,936: the sweep
behind that constant (docs/performance.md, "Stop 43", call 5).

    python bench/bok_prob_stages.py
"""

import statistics

import torch

import decoptim as d
from decoptim.core.kernels import bok_prob

V = 151936


def time_ms(fn, repeats=60):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def replayed(step, z):
    static = z.clone()
    step(static)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(static)
    return time_ms(graph.replay)


v = {"validate": False}
decoders = {
    "exact": d.BestOfK(8, 0.02, 0.2, **v),
    "mirror 5": d.BestOfK(8, 0.02, 0.2, solver="mirror", **v),
}
for batch in (8, 64, 256):
    generator = torch.Generator("cuda").manual_seed(batch)
    z = torch.randn(batch, V, device="cuda", generator=generator) * 3
    for name, dec in decoders.items():
        row = {}
        for _round in range(2):
            for stages in (1, 2, 3):
                bok_prob.GATHER_STAGES = stages
                t = replayed(lambda x, dec=dec: dec.sample(x), z)
                row[stages] = min(row.get(stages, 9.0), t)
        bok_prob.GATHER_STAGES = 2
        timings = " ".join(f"stages {s}: {t:.4f}" for s, t in row.items())
        print(f"B={batch:4d} {name:9s} {timings}", flush=True)
