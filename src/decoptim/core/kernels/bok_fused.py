"""Best-of-K with top-M or rank weights on CUDA: two streaming passes over the logits.

s = z/τ_s and p = softmax(z/τ_p) are z scaled by per-row constants, so the closed-form
tail of the exact solution is q_v ∝ exp(c·z_v) with c = 1/τ_p + 1/(λτ_s). Pass 1 computes
max z and LSE(c·(z − max z)) per row; torch.topk picks the M head tokens; the head kernel
solves them; pass 2 writes q.

Ties at the M-th place follow torch.topk here (the CPU path breaks them toward the lower
token id); on untied logits both paths pick the same tokens.
"""

from __future__ import annotations

import torch

from .bok_head import topm_head
from .streaming import exp_affine, scaled_logsumexp_partials


def bok_topm_probs(
    z: torch.Tensor,
    c: torch.Tensor,
    beta_k: torch.Tensor,
    k: torch.Tensor,
    top_m: int,
    rank: bool,
    outer: int,
    inner: int,
) -> torch.Tensor:
    """q for logits z ([..., V], CUDA); c, βK and K are per row ([...] or 0-d)."""
    shape = z.shape
    vocab = shape[-1]
    flat = z.reshape(-1, vocab).float().contiguous()
    rows = flat.shape[0]

    def per_row(value: torch.Tensor) -> torch.Tensor:
        return torch.broadcast_to(value.to(flat), shape[:-1]).reshape(rows).contiguous()

    c, beta_k, k = per_row(c), per_row(beta_k), per_row(k)
    # A_v = log p_v + s_v/λ − 1 = c·z_v + (a row constant). Row constants only move t, so
    # A is taken as c·(z_v − max z): no large numbers cancel in float32.
    maxes, sums = scaled_logsumexp_partials(flat, c)
    z_head, head = torch.topk(flat, min(top_m, vocab), dim=-1)
    q_head, z_max, shift = topm_head(z_head, maxes, sums, c, beta_k, k, rank, outer, inner)
    q = exp_affine(flat, c, z_max, shift)
    q.scatter_(-1, head, q_head)
    return q.reshape(shape)
