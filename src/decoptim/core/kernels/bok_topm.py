"""Best-of-K with top-M or rank weights on CUDA: sort-free, three streaming passes over z.

s = z/τ_s and p = softmax(z/τ_p) are z scaled by per-row constants, so the closed-form
tail of the exact solution is q_v ∝ exp(c·z_v) with c = 1/τ_p + 1/(λτ_s).
1. Per row: max z, LSE(c·(z − max z)), the max of each short segment, and (in the row's last
   program) a bound a little below the M-th largest segment max.
2. Gather the candidates: tokens at or above that bound (about M of them on untied logits,
   never fewer than M, always including the top M).
3. One program per row picks the exact top M among them (ties toward the lower token id, as
   on the CPU), and solves the head in registers. If a row had too many candidates, the
   program selects from the whole row instead.
4. Write q = exp(c·(z − max z) − shift) and put the head's values in place.

Sampling never writes q: step 3 also races the head's tokens against the tail taken as one
entrant of weight Σ_tail q (a coordinated draw: picks by its code, head first); only rows
whose sample is in the tail run step 4 as a draw from the tail's closed form
(`draw.draw_affine`), reading z once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bok_head import topm_head
from .candidates import gather_candidates
from .draw import CodedDraw, Randomness, draw_affine, draw_seed
from .streaming import exp_affine, row_stats, segment_size


@dataclass(frozen=True)
class TopMProblem:
    """Best-of-K's problem on the top-M head, per flat row: c = 1/τ_p + 1/(λτ_s), βK and K
    (float32 [rows]); M; rank weights (else top-M); the Newton solve's outer and inner
    iteration budgets."""

    c: torch.Tensor
    beta_k: torch.Tensor
    k: torch.Tensor
    top_m: int
    rank: bool
    outer: int
    inner: int


def _head(
    z: torch.Tensor,
    problem: TopMProblem,
    seed: torch.Tensor | CodedDraw | None = None,
    arrivals: torch.Tensor | None = None,
):
    # A_v = log p_v + s_v/λ − 1 = c·z_v + (a row constant). Row constants only move t, so
    # A is taken as c·(z_v − max z): no large numbers cancel in float32. `arrivals`: the row
    # stats' counters, zero (else zeroed there).
    p = problem
    m = min(p.top_m, z.shape[-1])
    segment = segment_size(z.shape[-1], m)
    stats = row_stats(z, p.c, segment, finish=True, bound_k=m, arrivals=arrivals)
    candidates = gather_candidates(z, segments=stats)
    return topm_head(
        z, candidates, stats, p.c, p.beta_k, p.k, m, p.rank, p.outer, p.inner, seed
    )  # fmt: skip


def bok_topm_probs(z: torch.Tensor, problem: TopMProblem) -> torch.Tensor:
    """q for logits z ([..., V], float32 CUDA), the problem's rows those of z's flat rows."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    head, _ = _head(flat, problem)
    q = exp_affine(flat, problem.c, head.z_max, head.shift)
    q.scatter_(-1, head.index, head.q)
    return q.reshape(z.shape)


def bok_topm_sample(
    z: torch.Tensor, problem: TopMProblem, randomness: Randomness = None
) -> torch.Tensor:
    """One token per row of z ([..., V], float32 CUDA), drawn from `bok_topm_probs`' q
    without writing q. `randomness`: a generator (or None) for Philox seeds, or a
    `draw.CodedDraw` (the head's order first, then the tail's: see `bok_head.topm_head`)."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    # The row stats' counters are zeroed with the seeds: in a graph, by the same launch.
    arrivals = torch.empty(flat.shape[0], device=z.device, dtype=torch.int32)
    seed = draw_seed(z.device, randomness, clear=arrivals)
    head, draw = _head(flat, problem, seed, arrivals)
    coded = isinstance(seed, CodedDraw)
    tokens = draw_affine(
        flat, problem.c, head.z_max, head.shift,
        seed._replace(value=draw.tail_code) if coded else seed, (draw.token, draw.arrivals),
        head_edge=(draw.code, draw.id), code_scale=draw.code_scale,
    )  # fmt: skip
    return tokens.reshape(z.shape[:-1])
