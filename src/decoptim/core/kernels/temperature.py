"""Temperature sampling, q ∝ exp(z/τ), from the closed form.

One pass finds each row's max z and Σ exp((z − max z)/τ) per split (`row_stats`).
`softmax_probs` then writes q = exp((z − max z)/τ − log Σ) in a second pass.
`softmax_sample` instead runs the exponential race over exp((z − max z)/τ) computed in
registers (`race.affine_race`): the logits are read twice and nothing of size [rows, V]
is written. The race needs no normalisation (argmax q_v/E_v is unchanged by a common
factor), so it makes the race's draw over the written q, up to float32 rounding of q.
"""

from __future__ import annotations

import torch

from .race import affine_race, race_seed, race_targets
from .streaming import exp_affine, row_stats


def softmax_probs(z: torch.Tensor, inv_tau: torch.Tensor) -> torch.Tensor:
    """softmax(z·inv_tau) per row of z ([..., V] on CUDA; inv_tau the float32 [rows]
    vector of 1/τ, see `checks.kernel_rows`), as float32."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    stats = row_stats(flat, inv_tau)
    z_max = stats.maxes.amax(-1)
    # Each split's sum is relative to its own max: rescale to the row's (empty splits add 0).
    rescale = torch.exp(inv_tau[:, None] * (stats.maxes - z_max[:, None]))
    total = (stats.sums * torch.where(stats.maxes > -torch.inf, rescale, 0.0)).sum(-1)
    return exp_affine(flat, inv_tau, z_max, torch.log(total)).reshape(z.shape)


def softmax_sample(
    z: torch.Tensor, inv_tau: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row of z ([..., V] on CUDA) drawn from softmax(z·inv_tau), without
    writing q."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    seed = race_seed(z.device, generator)
    tokens, arrivals = race_targets(flat.shape[0], z.device)
    arrivals.zero_()
    z_max = row_stats(flat, inv_tau).maxes.amax(-1)
    tokens = affine_race(flat, inv_tau, z_max, torch.zeros_like(z_max), seed, (tokens, arrivals))
    return tokens.reshape(z.shape[:-1])
