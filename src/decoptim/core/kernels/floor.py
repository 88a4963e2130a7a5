"""Min-p and epsilon sampling, q ∝ exp(z/τ) above a floor on the tempered score.

Both supports are a floor on x = (z − max z)/τ: min-p keeps x ≥ log p, epsilon keeps
x − log Σ exp(x) ≥ log ε and the most probable tokens, i.e. x ≥ min(log ε + log Σ exp(x), 0)
(x ≤ 0, with 0 at the row's max). One pass finds max z per split (with Σ exp(x) for
epsilon, `row_stats`); `*_sample` then races over exp(x) on the floor in a second read of z
(`race.affine_race`, tempered), writing nothing of size [rows, V]; `*_probs` writes q.

x is computed as the torch path does, (z − max z) then an IEEE division by τ (see
`streaming.affine_q`), so min-p keeps exactly the tokens the float32 torch path keeps, at
the cut included. Epsilon's floor holds log Σ exp(x) from split sums, which agrees with
torch's log_softmax to float32 rounding: a token within that rounding of the cut may be in
one support and not the other.
"""

from __future__ import annotations

import torch

from .race import affine_race, race_seed
from .streaming import exp_affine, row_stats


def _floor_terms(
    flat: torch.Tensor, tau: torch.Tensor, log_p: torch.Tensor, epsilon: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    # max z per row, and the floor on x: log p (min-p) or min(log ε + log Σ exp(x), 0).
    stats = row_stats(flat, 1.0 / tau)
    z_max = stats.maxes.amax(-1)
    if not epsilon:
        return z_max, log_p
    rescale = torch.exp((stats.maxes - z_max[:, None]) / tau[:, None])
    total = (stats.sums * torch.where(stats.maxes > -torch.inf, rescale, 0.0)).sum(-1)
    return z_max, torch.clamp(log_p + torch.log(total), max=0.0)


def floor_probs(
    z: torch.Tensor, tau: torch.Tensor, log_p: torch.Tensor, epsilon: bool = False
) -> torch.Tensor:
    """q ∝ exp(x) on the floor, per row of z ([..., V] on CUDA; tau and log_p the float32
    [rows] vectors of τ and of log p, or of log ε with `epsilon`), as float32."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    z_max, floor = _floor_terms(flat, tau, log_p, epsilon)
    q = exp_affine(flat, tau, z_max, torch.zeros_like(z_max), floor, tempered=True)
    return (q / q.sum(-1, keepdim=True)).reshape(z.shape)


def floor_sample(
    z: torch.Tensor,
    tau: torch.Tensor,
    log_p: torch.Tensor,
    epsilon: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of z drawn from `floor_probs(z, tau, log_p, epsilon)`, without
    writing q."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    rows = flat.shape[0]
    seed = race_seed(z.device, generator)
    z_max, floor = _floor_terms(flat, tau, log_p, epsilon)
    targets = (
        torch.empty(rows, device=z.device, dtype=torch.int64),
        torch.zeros(rows, device=z.device, dtype=torch.int32),
    )
    shift = torch.zeros_like(z_max)
    tokens = affine_race(flat, tau, z_max, shift, seed, targets, floor=floor, tempered=True)
    return tokens.reshape(z.shape[:-1])
