"""How many outer Newton steps Best-of-K's exact solve needs: the torch path's q in float32
with 1, 2, … outer steps against its full budget, on randn·3 rows at V = 151,936 (the max
|q − q_full| and the same relative to the row's largest q). Where a budget reaches the full
budget's q to rounding, the steps after it only move t by rounding, which is when the GPU's
solve stops (`kernels/bok_newton.solve_row`; docs/performance.md, "Stop 45"). Runs on a CPU.

    python bench/bok_newton_steps.py
"""

import torch

import decoptim as d

V = 151_936
SETTINGS = {
    "w = p, K = 8, β = 0.02, λ = 0.2": dict(k=8, beta=0.02, lam=0.2, weights="prob"),
    "top-64, K = 8, β = 0.02, λ = 0.2": dict(k=8, beta=0.02, lam=0.2, weights="topm", top_m=64),
    "w = p, K = 4, β = 0.05, λ = 10": dict(k=4, beta=0.05, lam=10.0, weights="prob"),
}


def main() -> None:
    z = torch.randn(16, V, generator=torch.Generator().manual_seed(0)) * 3
    for label, setting in SETTINGS.items():
        full = d.BestOfK(**setting)
        q_full = full.probs(z)
        errors = []
        for outer in range(1, full.outer_iterations + 1):
            q = d.BestOfK(**setting, outer_iterations=outer).probs(z)
            gap = (q - q_full).abs().amax(-1)
            errors.append(
                f"{outer}: {float(gap.max()):.1e} ({float((gap / q_full.amax(-1)).max()):.0e})"
            )
        print(f"{label} (budget {full.outer_iterations} × {full.inner_iterations}): "
              + ", ".join(errors), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
