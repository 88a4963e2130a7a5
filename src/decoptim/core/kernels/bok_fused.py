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

Sampling never writes q: step 3 also draws whether the token is in the head (probability
Σ_head q) and which one; only rows whose draw falls in the tail run step 4 as an
exponential race over the tail's closed form, reading z once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..checks import kernel_rows
from .bok_head import topm_head
from .candidates import code_of, gather_candidates
from .streaming import (
    RACE_BLOCK,
    exp_affine,
    race_buffers,
    race_grid,
    race_seed,
    race_store,
    race_update,
    race_winner,
    row_stats,
    segment_size,
)


def _head(z, c, beta_k, k, top_m, rank, outer, inner, seed=None):
    # A_v = log p_v + s_v/λ − 1 = c·z_v + (a row constant). Row constants only move t, so
    # A is taken as c·(z_v − max z): no large numbers cancel in float32.
    m = min(top_m, z.shape[-1])
    stats = row_stats(z, c, segment=segment_size(z.shape[-1], m))
    candidates = gather_candidates(z, kernel_rows(1.0, z), segmax=stats.segmax, k=m)
    return topm_head(z, candidates, stats, c, beta_k, k, m, rank, outer, inner, seed)


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
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    head, _ = _head(flat, c, beta_k, k, top_m, rank, outer, inner)
    q = exp_affine(flat, c, head.z_max, head.shift)
    q.scatter_(-1, head.index, head.q)
    return q.reshape(z.shape)


@triton.jit
def _tail_q(z_ptr, offs, end, c, z_max, shift, edge_code, edge_id):
    # The tail's q_v = exp(c·(z_v − max z) − shift); 0 on the head and outside [.., end).
    z = tl.load(z_ptr + offs, mask=offs < end, other=-float("inf"))
    codes = code_of(z)
    in_head = (codes > edge_code) | ((codes == edge_code) & (offs <= edge_id))
    return tl.where(in_head, 0.0, tl.exp(c * (z - z_max) - shift))


@triton.jit
def _tail_race_kernel(z_ptr, c_ptr, zmax_ptr, shift_ptr, edge_code_ptr, edge_id_ptr,
                      choice_ptr, seed_ptr, key_ptr, index_ptr, V, CHUNK,
                      BLOCK: tl.constexpr):  # fmt: skip
    # Per (row, split): the race over the tail's tokens, for rows whose head draw fell in the
    # tail; a row that drew a head token reports it from split 0 with an unbeatable key.
    row = tl.program_id(0)
    split = tl.program_id(1)
    splits = tl.num_programs(1)
    choice = tl.load(choice_ptr + row)
    lane = tl.arange(0, BLOCK)
    best_key = tl.where(lane == 0, tl.where(split == 0, float("inf"), -1.0), -1.0)
    best_index = tl.zeros((BLOCK,), tl.int64) + choice
    if choice < 0:
        best_key = tl.zeros((BLOCK,), tl.float32) - 1.0
        seed = tl.load(seed_ptr)
        c = tl.load(c_ptr + row)
        z_max = tl.load(zmax_ptr + row)
        shift = tl.load(shift_ptr + row)
        edge_code = tl.load(edge_code_ptr + row)
        edge_id = tl.load(edge_id_ptr + row)
        base = z_ptr + row.to(tl.int64) * V
        end = tl.minimum((split + 1) * CHUNK, V)
        for start in range(split * CHUNK, end, 4 * BLOCK):
            # The same counters as `race_sample`'s: one Philox call per four tokens.
            u0, u1, u2, u3 = tl.rand4x(seed, row * V + start + lane)
            offs = start + lane
            q = _tail_q(base, offs, end, c, z_max, shift, edge_code, edge_id)
            best_key, best_index = race_update(q, offs, u0, best_key, best_index)
            offs += BLOCK
            q = _tail_q(base, offs, end, c, z_max, shift, edge_code, edge_id)
            best_key, best_index = race_update(q, offs, u1, best_key, best_index)
            offs += BLOCK
            q = _tail_q(base, offs, end, c, z_max, shift, edge_code, edge_id)
            best_key, best_index = race_update(q, offs, u2, best_key, best_index)
            offs += BLOCK
            q = _tail_q(base, offs, end, c, z_max, shift, edge_code, edge_id)
            best_key, best_index = race_update(q, offs, u3, best_key, best_index)
    race_store(key_ptr, index_ptr, row, split, splits, best_key, best_index)


def bok_topm_sample(
    z: torch.Tensor,
    c: torch.Tensor,
    beta_k: torch.Tensor,
    k: torch.Tensor,
    top_m: int,
    rank: bool,
    outer: int,
    inner: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of z ([..., V], float32 CUDA), drawn from `bok_topm_probs`' q
    without writing q."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    rows, vocab = flat.shape
    seed = race_seed(z.device, generator)
    head, draw = _head(flat, c, beta_k, k, top_m, rank, outer, inner, seed)
    splits, chunk = race_grid(rows, vocab, z.device)
    keys, indices = race_buffers(rows, splits, z.device)
    _tail_race_kernel[(rows, splits)](
        flat, c, head.z_max, head.shift, draw.code, draw.id, draw.choice, seed, keys, indices,
        vocab, chunk, BLOCK=RACE_BLOCK, num_warps=8,
    )  # fmt: skip
    return race_winner(keys, indices).reshape(z.shape[:-1])
