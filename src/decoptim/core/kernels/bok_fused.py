"""Best-of-K with top-M or rank weights on CUDA: sort-free, three streaming passes over z.

s = z/τ_s and p = softmax(z/τ_p) are z scaled by per-row constants, so the closed-form
tail of the exact solution is q_v ∝ exp(c·z_v) with c = 1/τ_p + 1/(λτ_s).
1. Per row: max z, LSE(c·(z − max z)), and the max of each short segment.
2. Gather the candidates: tokens at or above the M-th largest segment max (about M of them
   on untied logits, never fewer than M, always including the top M).
3. One program per row picks the exact top M among them (ties toward the lower token id, as
   on the CPU), and solves the head in registers. If a row had too many candidates, the
   program selects from the whole row instead.
4. Write q = exp(c·(z − max z) − shift) and put the head's values in place.
"""

from __future__ import annotations

import torch

from ..checks import kernel_rows
from .bok_head import topm_head
from .candidates import gather_candidates
from .streaming import exp_affine, row_stats, segment_size


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
    """q for logits z ([..., V], float32 CUDA); c, βK and K: float32 [rows] (flat)."""
    shape = z.shape
    vocab = shape[-1]
    flat = z.reshape(-1, vocab).contiguous()
    m = min(top_m, vocab)
    # A_v = log p_v + s_v/λ − 1 = c·z_v + (a row constant). Row constants only move t, so
    # A is taken as c·(z_v − max z): no large numbers cancel in float32.
    stats = row_stats(flat, c, segment=segment_size(vocab, m))
    candidates = gather_candidates(flat, kernel_rows(1.0, flat), segmax=stats.segmax, k=m)
    head, q_head, z_max, shift = topm_head(
        flat, candidates, stats, c, beta_k, k, m, rank, outer, inner
    )
    q = exp_affine(flat, c, z_max, shift)
    q.scatter_(-1, head, q_head)
    return q.reshape(shape)
