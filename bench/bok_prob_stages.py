"""Best-of-K w = p's sample, replayed as a CUDA graph, with its gather's loads pipelined over
1, 2 and 3 stages (`bok_prob.GATHER_STAGES`), at B = 8, 64, 256 and V = 151,936: the sweep
behind that constant (docs/performance.md, "Stop 43", call 5).

    python bench/bok_prob_stages.py
"""

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as d
from decoptim.core.kernels import bok_prob

V = 151936


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
                t = gpu.replay_ms(lambda x, dec=dec: dec.sample(x), [z], 60)
                row[stages] = min(row.get(stages, 9.0), t)
        bok_prob.GATHER_STAGES = 2
        timings = " ".join(f"stages {s}: {t:.4f}" for s, t in row.items())
        print(f"B={batch:4d} {name:9s} {timings}", flush=True)
