"""Best-of-K w = p's sample, replayed as a CUDA graph at B = 64 and 256, V = 151,936, randn·3
rows: the sweeps behind two constants of `bok_prob` (docs/performance.md, "Stop 44"):

- the small-head kernel's warps, `SMALL_HEAD_WARPS` (1, 2, 4);
- the gather's block and pipelining, `GATHER_BLOCK` × `GATHER_STAGES`.

    python bench/bok_prob_sweep.py

Each figure is the lower of two rounds; the copy is a replayed copy of the same logits.
"""

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as d
from decoptim.core.kernels import bok_prob

V = 151936
GATHERS = [(1024, 2), (2048, 2), (1024, 3), (2048, 3), (2048, 1)]  # (block, stages)

v = {"validate": False}
decoders = {
    "exact": d.BestOfK(8, 0.02, 0.2, weights="prob", **v),
    "mirror 5": d.BestOfK(8, 0.02, 0.2, solver="mirror", **v),
}
defaults = (bok_prob.SMALL_HEAD_WARPS, bok_prob.GATHER_BLOCK, bok_prob.GATHER_STAGES)


def lower_of_two_rounds(settings, apply, step, z) -> dict:
    times = {}
    for _round in range(2):
        for setting in settings:
            apply(setting)
            t = gpu.replay_ms(step, [z], 60)
            times[setting] = min(times.get(setting, 9.0), t)
    return times


def set_warps(warps):
    bok_prob.SMALL_HEAD_WARPS = warps


def set_gather(block_and_stages):
    bok_prob.GATHER_BLOCK, bok_prob.GATHER_STAGES = block_and_stages


for batch in (64, 256):
    generator = torch.Generator("cuda").manual_seed(batch)
    z = torch.randn(batch, V, device="cuda", generator=generator) * 3
    copy = min(gpu.replay_ms(lambda x: x.clone(), [z], 60) for _ in range(2))
    for name, dec in decoders.items():
        step = lambda x, dec=dec: dec.sample(x)  # noqa: E731
        warps = lower_of_two_rounds((1, 2, 4), set_warps, step, z)
        set_warps(defaults[0])
        gathers = lower_of_two_rounds(GATHERS, set_gather, step, z)
        set_gather(defaults[1:])
        print(
            f"B={batch:4d} {name:9s} copy {copy:.4f} | small-head warps "
            + " ".join(f"{w}: {t:.4f}" for w, t in warps.items())
            + " | gather block/stages "
            + " ".join(f"{b}/{s}: {t:.4f}" for (b, s), t in gathers.items()),
            flush=True,
        )
