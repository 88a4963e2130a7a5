"""Temperature sampling, q ∝ exp(z/τ), from the closed form.

`softmax_probs`: one pass finds each row's max z and Σ exp((z − max z)/τ) per split
(`row_stats`), a second writes q = exp((z − max z)/τ − log Σ).
`softmax_sample` runs the exponential race over exp(z/τ) in one read of z (`race.logit_race`):
the race needs neither the max nor the normaliser, since each lane compares candidates as
exp((z_v − z_b)/τ)·E_b > E_v. It is the race's draw over the written q, with the same
Philox counters, up to float32 rounding of the keys.
"""

from __future__ import annotations

import torch

from .race import logit_race
from .streaming import exp_affine, row_stats


def softmax_probs(z: torch.Tensor, inv_tau: torch.Tensor) -> torch.Tensor:
    """softmax(z·inv_tau) per row of z ([..., V] on CUDA; inv_tau the float32 [rows]
    vector of 1/τ, see `checks.kernel_rows`), as float32."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    z_max, log_sum = row_stats(flat, inv_tau).max_and_log_sum(inv_tau)
    return exp_affine(flat, inv_tau, z_max, log_sum).reshape(z.shape)


def softmax_sample(
    z: torch.Tensor, inv_tau: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row of z ([..., V] on CUDA) drawn from softmax(z·inv_tau), in one read
    of z and without writing q (`race.logit_race`)."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    return logit_race(flat, inv_tau, generator).reshape(z.shape[:-1])
