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

from .bok_head import coverage_roots
from .streaming import exp_affine, scaled_logsumexp


def bok_topm_probs(
    z: torch.Tensor,
    tau_scores: torch.Tensor,
    tau_reference: torch.Tensor,
    lam: torch.Tensor,
    b_head_of: callable,
    k: torch.Tensor,
    top_m: int,
    outer: int,
    inner: int,
) -> torch.Tensor:
    """q for logits z ([..., V], CUDA); per-row parameters broadcast as [..., 1] or scalars.

    `b_head_of(head)` maps the head indices ([rows, M]) to b = βKw on them.
    """
    shape = z.shape
    vocab = shape[-1]
    flat = z.reshape(-1, vocab).float().contiguous()
    rows = flat.shape[0]

    def per_row(value: torch.Tensor) -> torch.Tensor:
        return torch.broadcast_to(value.to(flat), (*shape[:-1], 1)).reshape(rows).contiguous()

    c = per_row(1.0 / tau_reference + 1.0 / (lam * tau_scores))
    # A_v = log p_v + s_v/λ − 1 = c·z_v + (a row constant). Row constants only move t, so
    # A is taken as c·(z_v − max z): no large numbers cancel in float32.
    z_max, lse_a = scaled_logsumexp(flat, c)
    m = min(top_m, vocab)
    z_head, head = torch.topk(flat, m, dim=-1)
    a_head = c[:, None] * (z_head - z_max)
    head_lse = torch.logsumexp(a_head, -1, keepdim=True)
    # The tail's mass is the total minus the head's; it is tiny whenever the head dominates,
    # and its rounding error then moves no probability by more than float32 resolution.
    tail_lse = lse_a + torch.log1p(-torch.exp(torch.clamp(head_lse - lse_a, max=0.0)))
    k_rows = torch.broadcast_to(k.to(flat), (*shape[:-1], 1)).reshape(rows, 1)
    u, t, log_z = coverage_roots(a_head, b_head_of(head), k_rows, tail_lse, outer, inner)
    q = exp_affine(flat, c, z_max, t + log_z)
    q.scatter_(-1, head, torch.exp(u - log_z))
    return q.reshape(shape)
