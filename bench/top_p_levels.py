"""Coordinated top-p with 4 profile levels of 8 thresholds (the setting) against 3 × 8 and
3 × 16, replayed as CUDA graphs at V = 151,936: on randn·3 rows at B = 64 and 256 and on
flatter randn·σ rows at B = 256, where the last bracket may hold more tokens than the
gather's slots and the row is bisected whole; each setting's tokens are compared with the
setting's (docs/performance.md, "Stop 45", call 2, run there as `.gpu/levels.py`, the same
loops).

    python bench/top_p_levels.py
    python bench/top_p_levels.py --kernels

With --kernels it instead takes 4 × 8, 3 × 8, 2 × 8 and 2 × 32 on randn·3 rows at B = 256 and
64 and randn·1 rows at B = 256, and prints each step's replayed time and the GPU time of
each of its kernels (torch.profiler over replays): what a dropped pass moves to the gather
(docs/performance.md, "Stop 47", call 4, run there as `.gpu/levels_profile.py`, the same
loops).
"""

import argparse

import gpu  # bench/, the script's folder, is on sys.path
import torch
from replay_profile import graph_of, kernel_times

import decoptim as d
from decoptim.core.kernels import top_p

V = 151_936


def coordinated_step(batch: int, sigma: float):
    """randn·σ rows of V tokens and coordinated top-p 0.9's step on them (groups of 8)."""
    decoder = d.TopP(0.9, validate=False)
    generator = torch.Generator("cuda").manual_seed(batch)
    z = torch.randn(batch, V, device="cuda", generator=generator) * sigma
    codes = d.group_codes(batch // 8, 8, seed=1, device="cuda")

    def step(x):
        return decoder.sample_coordinated(x, codes)[0]

    return z, step


def levels() -> None:
    settings = [
        top_p.EDGE_PASSES,
        top_p.ProfilePasses(3, 8, 1024),
        top_p.ProfilePasses(3, 16, 1024),
    ]
    for sigma in (3.0, 1.0, 0.5, 0.2, 0.1, 0.05):
        for batch in (64, 256) if sigma == 3.0 else (256,):
            z, step = coordinated_step(batch, sigma)
            found = []
            for passes in settings:
                top_p.EDGE_PASSES = passes
                tokens = step(z)
                ms = min(gpu.replay_ms(step, [z], 60) for _ in range(2))
                found.append((passes, ms, tokens))
            top_p.EDGE_PASSES = settings[0]
            print(f"sigma={sigma} B={batch}: " + ", ".join(
                f"{p.levels}x{p.thresholds} {ms:.4f} ms (same {int((t == found[0][2]).sum())})"
                for p, ms, t in found), flush=True)  # fmt: skip


def kernels() -> None:
    settings = [
        top_p.EDGE_PASSES,
        top_p.ProfilePasses(3, 8, 1024),
        top_p.ProfilePasses(2, 8, 1024),
        top_p.ProfilePasses(2, 32, 256),
    ]
    for sigma, batch in ((3.0, 256), (3.0, 64), (1.0, 256)):
        z, step = coordinated_step(batch, sigma)
        reference = None
        for passes in settings:
            top_p.EDGE_PASSES = passes
            tokens = step(z)
            reference = tokens if reference is None else reference
            ms = min(gpu.replay_ms(step, [z], 60) for _ in range(2))
            times = kernel_times(graph_of(step, z.clone()))
            total = sum(us for _, us in times)
            print(f"sigma={sigma} B={batch} {passes.levels}x{passes.thresholds}: replay "
                  f"{ms:.4f} ms, kernels {total:.1f} us, same tokens "
                  f"{int((tokens == reference).sum())}/{batch}")  # fmt: skip
            print("   " + "; ".join(f"{k[:34]} {us:.1f}" for k, us in times[:8]), flush=True)
        top_p.EDGE_PASSES = settings[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", action="store_true",
                        help="2 to 4 levels, with each kernel's GPU time")  # fmt: skip
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    if args.kernels:
        kernels()
    else:
        levels()


if __name__ == "__main__":
    main()
