"""Coordinated top-p with 4 profile levels of 8 thresholds (the setting) against 3 × 8 and
3 × 16, replayed as CUDA graphs at V = 151,936: on randn·3 rows at B = 64 and 256 and on
flatter randn·σ rows at B = 256, where the last bracket may hold more tokens than the
gather's slots and the row is bisected whole; each setting's tokens are compared with the
setting's (docs/performance.md, "Stop 45", call 2, run there as `.gpu/levels.py`, the same
loops).

    python bench/top_p_levels.py
"""

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as d
from decoptim.core.kernels import top_p

V = 151_936


def main() -> None:
    settings = [
        top_p.EDGE_PASSES,
        top_p.ProfilePasses(3, 8, 1024),
        top_p.ProfilePasses(3, 16, 1024),
    ]
    decoder = d.TopP(0.9, validate=False)
    for sigma in (3.0, 1.0, 0.5, 0.2, 0.1, 0.05):
        for batch in (64, 256) if sigma == 3.0 else (256,):
            generator = torch.Generator("cuda").manual_seed(batch)
            z = torch.randn(batch, V, device="cuda", generator=generator) * sigma
            codes = d.group_codes(batch // 8, 8, seed=1, device="cuda")

            def step(x, codes=codes):
                return decoder.sample_coordinated(x, codes)[0]

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


if __name__ == "__main__":
    main()
