"""Temperature sampling, q ∝ exp(z/τ), from the closed form.

`softmax_probs`: one pass finds each row's max z and Σ exp((z − max z)/τ) per split
(`row_stats`), a second writes q = exp((z − max z)/τ − log Σ).
`softmax_sample` draws from exp(z/τ) in one read of z (`draw.draw_from_logits`): each block's
mass is taken relative to the block's own max z, so neither the row's max nor its
normaliser is needed first.
"""

from __future__ import annotations

import torch

from .draw import Randomness, draw_from_logits
from .streaming import exp_affine, row_stats


def softmax_probs(z: torch.Tensor, inv_tau: torch.Tensor) -> torch.Tensor:
    """softmax(z·inv_tau) per row of z ([..., V] on CUDA; inv_tau the float32 [rows]
    vector of 1/τ, see `checks.kernel_rows`), as float32."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    stats = row_stats(flat, inv_tau, finish=True)
    return exp_affine(flat, inv_tau, stats.z_max, stats.log_sum).reshape(z.shape)


def softmax_sample(
    z: torch.Tensor, inv_tau: torch.Tensor, randomness: Randomness = None
) -> torch.Tensor:
    """One token per row of z ([..., V] on CUDA) drawn from softmax(z·inv_tau), in one read
    of z and without writing q (`draw.draw_from_logits`)."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    return draw_from_logits(flat, inv_tau, randomness).reshape(z.shape[:-1])
