"""Best-of-K's exact solve on the top-M tokens of each row, as one Triton program per row.

The same algorithm as `decoptim.core.bok._coverage_roots` (monotone inflection-aware inner
Newton nested in a bracketed outer Newton, fixed budgets), with every iterate in
registers: one launch instead of thousands of small ones. The solve itself is
`bok_newton.solve_row`, and the draw between the head and the tail `head_or_tail`, both
shared with the w = p path (`bok_prob`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .bok_newton import solve_row
from .candidates import (
    CAP,
    COMPACT,
    ROW_WARPS,
    compact,
    compact_scratch,
    count_at_least,
    kth_largest_code,
    kth_largest_code_of_row,
    kth_largest_packed_code,
    load_candidates,
)
from .draw import CodedDraw, draw_targets, randomness_args
from .launch import kernel
from .streaming import code_of, load_logits, pow2_at_least, row_lse
from .uniforms import REFILL, TWO_POW_M52, next_code, pick


class HeadSolution(NamedTuple):
    """Per row: the head's token ids and q [rows, M], max z and the tail's shift [rows]: the
    tail's q_v = exp(c·(z_v − max z) − shift)."""

    index: torch.Tensor
    q: torch.Tensor
    z_max: torch.Tensor
    shift: torch.Tensor


# Warps of the head's solve: its sums run over M values, which fewer warps reduce with
# fewer exchanges through shared memory.
SOLVE_WARPS = 1


class HeadDraw(NamedTuple):
    """Per row: the head's edge (v is in the head iff code(z_v) > code, or = code and
    v ≤ id); the sampled head token, or −1 where the sample comes from the tail; and the
    tail draw's arrival counters, zeroed. A coordinated draw also has, per row, the code
    remapped onto the tail and Σ q / Σ_tail q (see `draw.draw_affine`'s `code_scale`)."""

    code: torch.Tensor
    id: torch.Tensor
    token: torch.Tensor
    arrivals: torch.Tensor
    tail_code: torch.Tensor | None = None
    code_scale: torch.Tensor | None = None


# 2⁻³² and 2⁻⁶⁴: the cells of uniforms made of one and of two 32-bit words.
TWO_POW_M32 = tl.constexpr(2.3283064365386963e-10)
TWO_POW_M64 = tl.constexpr(5.421010862427522e-20)


@triton.jit
def exponential(word, fine):
    """E ~ Exp(1) from the 32-bit random `word` (the independent word `fine` is read only
    where word = 0), to float32 rounding over its whole range.

    E = −log(1 − v) with v = (w + ½)·2⁻³² in (0, 1). Small E decides the head race's
    winners. A float32 1 − v is 1 for v < 2⁻²⁵ (E = 0: a token that wins whatever its
    probability), so below ½
    E = −log(y) + ((y − 1) + v) with y = fl(1 − v): the second term is y's rounding error,
    exact by Sterbenz's lemma, which makes this log1p(−v) to float32 rounding. The smallest
    cell, w = 0, is split again by `fine`, v = (f + ½)·2⁻⁶⁴, so that no token can win more
    often than its probability allows down to q ≈ 2⁻⁶⁴ of the leader's. Above ½,
    1 − v = (¬w + ½)·2⁻³² exactly, and E = −log of it (at most 22.9, never +inf).
    """
    w = word.to(tl.uint32, bitcast=True)
    f = fine.to(tl.uint32, bitcast=True)
    v = tl.where(
        w == 0,
        (f.to(tl.float32) + 0.5) * TWO_POW_M64,
        (w.to(tl.float32) + 0.5) * TWO_POW_M32,
    )
    y = 1.0 - v
    low = w < 2147483648
    complement = ((~w).to(tl.float32) + 0.5) * TWO_POW_M32
    return -tl.log(tl.where(low, y, complement)) + tl.where(low, (y - 1.0) + v, 0.0)


@triton.jit
def _select_from_block(x, index, valid, c_m, M, head_x_ptr, head_index_ptr):
    # The top M of the gathered block, ties toward the lower id, written in id order, given
    # c_M, the M-th largest code. Returns the head's edge: token v is in the head iff
    # code(z_v) > c_M, or = c_M and v ≤ the returned id.
    codes = code_of(x)
    above = valid & (codes > c_m)
    tied = valid & (codes == c_m)
    need = M - tl.sum(above.to(tl.int32), axis=0)
    # The smallest id i* with `need` tied ids ≤ i*: the largest tied id when every tied one
    # is needed (no ties at c_M, on most rows), else by bisection.
    lo = tl.min(tl.where(tied, index, 1 << 30), axis=0) - 1
    hi = tl.max(tl.where(tied, index, -1), axis=0)
    steps = tl.where(tl.sum(tied.to(tl.int32), axis=0) > need, 32, 0)
    for _ in range(steps):
        mid = lo + (hi - lo) // 2
        enough = tl.sum((tied & (index <= mid)).to(tl.int32), axis=0) >= need
        hi = tl.where(enough, mid, hi)
        lo = tl.where(enough | (hi - lo <= 1), lo, mid)
    chosen = above | (tied & (index <= hi))
    pos = tl.cumsum(chosen.to(tl.int32), axis=0) - 1
    tl.store(head_x_ptr + pos, x, mask=chosen)
    tl.store(head_index_ptr + pos, index, mask=chosen)
    return c_m, hi


@triton.jit
def _select_from_row(z_ptr, V, M, head_x_ptr, head_index_ptr, BLOCK: tl.constexpr):
    # The same selection over the whole row, re-read per bisection step: the fallback when
    # the gathered candidates overflowed.
    lo = kth_largest_code_of_row(z_ptr, V, M, BLOCK)
    need = M - count_at_least(z_ptr, V, lo + 1, BLOCK)
    tie_lo = tl.zeros((), tl.int32) - 1
    tie_hi = tl.zeros((), tl.int32) + V - 1
    for _ in range(32):
        mid = tie_lo + (tie_hi - tie_lo) // 2
        n = tl.zeros((), tl.int32)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            z = load_logits(z_ptr + offs, offs < V)
            tie = (offs < V) & (code_of(z) == lo) & (offs <= mid)
            n += tl.sum(tie.to(tl.int32), axis=0)
        enough = n >= need
        tie_hi = tl.where(enough, mid, tie_hi)
        tie_lo = tl.where(enough | (tie_hi - tie_lo <= 1), tie_lo, mid)
    found = tl.zeros((), tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        codes = code_of(z)
        chosen = (offs < V) & ((codes > lo) | ((codes == lo) & (offs <= tie_hi)))
        pos = found + tl.cumsum(chosen.to(tl.int32), axis=0) - 1
        tl.store(head_x_ptr + pos, z, mask=chosen)
        tl.store(head_index_ptr + pos, offs, mask=chosen)
        found += tl.sum(chosen.to(tl.int32), axis=0)
    return lo, tie_hi


@kernel
def _bok_topm_select_kernel(z_ptr, cand_x_ptr, cand_index_ptr, cand_count_ptr, head_x_ptr,
                            head_index_ptr, scratch_x_ptr, scratch_index_ptr, edge_code_ptr,
                            edge_id_ptr, V, M, CAND_SPLITS, CAP: tl.constexpr,
                            SLOTS: tl.constexpr, ROW_BLOCK: tl.constexpr,
                            SAMPLE: tl.constexpr):  # fmt: skip
    # The head (top M) of a row from its gathered candidates, or from the whole row when they
    # overflowed, with its edge (code, id) for the tail's draw. A kernel of its own: its
    # sums run over thousands of candidates with ROW_WARPS, the solve's over M values with
    # fewer warps (`SOLVE_WARPS`).
    row = tl.program_id(0)
    head_x = head_x_ptr + row * M
    head_index = head_index_ptr + row * M
    x, index, valid, overflow = load_candidates(
        cand_x_ptr, cand_index_ptr, cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS
    )
    if overflow:
        edge_code, edge_id = _select_from_row(
            z_ptr + row.to(tl.int64) * V, V, M, head_x, head_index, ROW_BLOCK
        )
    elif tl.sum(valid.to(tl.int32), axis=0) <= COMPACT:
        packed_x, packed_index, packed = compact(
            x, index, valid, scratch_x_ptr, scratch_index_ptr, row, SLOTS * CAP, COMPACT
        )
        c_m = kth_largest_packed_code(packed_x, packed, scratch_x_ptr, row, SLOTS * CAP, M)
        edge_code, edge_id = _select_from_block(
            packed_x, packed_index, packed, c_m, M, head_x, head_index
        )
    else:
        c_m = kth_largest_code(code_of(x), valid, M)
        edge_code, edge_id = _select_from_block(x, index, valid, c_m, M, head_x, head_index)
    if SAMPLE:
        tl.store(edge_code_ptr + row, edge_code)
        tl.store(edge_id_ptr + row, edge_id)


@triton.jit
def head_or_tail(q, ids, live, tail_mass, lanes, row, WIDTH: tl.constexpr, seed_ptr, code_ptr,
                 group_ptr, index_ptr, step_ptr, next_code_ptr, tail_code_ptr, code_scale_ptr,
                 CODED: tl.constexpr):  # fmt: skip
    """The row's sample if it is a head token (q on the `live` lanes, token ids `ids`), else
    −1: the tail, of mass `tail_mass` (Σ q + tail_mass = 1), is then drawn on its own.

    Philox: an exponential race between the head's tokens and the whole tail as one entrant
    of weight tail_mass, on counters row·WIDTH + lane of the seed's second word. CODED: an
    inverse transform with the row's code over the head's tokens in lane order, then the
    tail as one bucket; a head token's next code goes to next_code, and each row gets the
    code remapped onto the tail and Σ / tail_mass, for the tail's draw over its own sums
    (`draw.draw_affine`'s `code_scale`)."""
    q = tl.where(live, q, 0.0)
    if CODED:
        q64 = q.to(tl.float64)
        head_total = tl.sum(q64, axis=0)
        total = head_total + tail_mass.to(tl.float64)
        target = tl.load(code_ptr + row) * total
        best, low, width = pick(q64, lanes, target)
        in_head = (target < head_total) | (tail_mass <= 0.0)
        if in_head:
            code = next_code(target, low, width, TWO_POW_M52 * total / width, group_ptr,
                             index_ptr, step_ptr, row, REFILL)  # fmt: skip
            tl.store(next_code_ptr + row, code)
        safe_tail = tl.where(tail_mass > 0.0, tail_mass, 1.0).to(tl.float64)
        remapped = tl.minimum(tl.maximum((target - head_total) / safe_tail, 0.0), 1.0)
        tl.store(tail_code_ptr + row, remapped)
        tl.store(code_scale_ptr + row, total / safe_tail)
    else:
        head_word, tail_word, head_fine, tail_fine = tl.randint4x(
            tl.load(seed_ptr + 1), row.to(tl.int64) * WIDTH + lanes
        )
        e_head = exponential(head_word, head_fine)
        e_tail = exponential(tail_word, tail_fine)
        keys = tl.where(q > 0, q / e_head, -1.0)
        best = tl.argmax(keys, axis=0)
        tail_key = tl.sum(tl.where(lanes == 0, tail_mass / e_tail, 0.0), axis=0)
        in_head = tl.max(keys, axis=0) >= tail_key
    token = tl.sum(tl.where(lanes == best, ids, 0), axis=0)
    return tl.where(in_head, token, -1)


@kernel
def _bok_topm_head_kernel(
    maxes_ptr,
    sums_ptr,
    c_ptr,
    betak_ptr,
    k_ptr,
    head_x_ptr,
    head_index_ptr,
    qhead_ptr,
    zmax_ptr,
    shift_ptr,
    token_ptr,
    arrivals_ptr,
    seed_ptr,
    code_ptr,
    group_ptr,
    index_ptr,
    step_ptr,
    next_code_ptr,
    tail_code_ptr,
    code_scale_ptr,
    M,
    SPLITS,
    BLOCK: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    RANK: tl.constexpr,
    OUTER: tl.constexpr,
    INNER: tl.constexpr,
    SAMPLE: tl.constexpr,
    CODED: tl.constexpr,
):
    # For the head `_bok_topm_select_kernel` picked: combine the split partials of
    # LSE(c·(z − max z)), form the head's a and the tail's log-mass, solve, and write q on
    # the head and the tail's exponent shift. With SAMPLE, also draw whether the row's
    # sample is in the head (probability Σ_head q) and, if so, which head token. With
    # CODED, by the row's code instead of a race (see `topm_head`).
    row = tl.program_id(0)
    head_x = head_x_ptr + row * M
    head_index = head_index_ptr + row * M
    c = tl.load(c_ptr + row)
    z_max, lse_all = row_lse(maxes_ptr, sums_ptr, row, SPLITS, c, SPLIT_BLOCK)
    offs = tl.arange(0, BLOCK)
    mask = offs < M
    z_head = tl.load(head_x + offs, mask=mask, other=-float("inf"))
    a = c * (z_head - z_max)
    head_max = tl.max(a, axis=0)
    head_lse = head_max + tl.log(tl.sum(tl.exp(a - head_max), axis=0))
    # The tail's mass is the total minus the head's: tiny whenever the head dominates, and
    # its rounding error then moves no probability by more than float32 resolution.
    gap = tl.minimum(head_lse - lse_all, 0.0)
    tail = lse_all + tl.log(tl.maximum(-tl.exp(gap) + 1.0, 0.0))
    if RANK:
        # Rank of each head token: how many head tokens come before it (higher z, or equal
        # z and a lower id).
        ids = tl.load(head_index + offs, mask=mask, other=0)
        codes = code_of(z_head)
        before = (codes[None, :] > codes[:, None]) | (
            (codes[None, :] == codes[:, None]) & (ids[None, :] < ids[:, None])
        )
        rank = tl.sum((before & mask[None, :]).to(tl.int32), axis=1)
        weight = 1.0 - rank.to(tl.float32) / M
    else:
        weight = tl.where(mask, 1.0, 0.0)
    b = tl.load(betak_ptr + row) * weight
    k = tl.load(k_ptr + row)
    u, t, log_z = solve_row(a, b, k, tail, OUTER, INNER)
    q = tl.where(mask, tl.exp(u - log_z), 0.0)
    tl.store(qhead_ptr + row * M + offs, q, mask=mask)
    tl.store(zmax_ptr + row, z_max)
    tl.store(shift_ptr + row, t + log_z)
    if SAMPLE:
        # Only rows whose sample is in the tail draw from the tail's tokens
        # (`draw.draw_affine`; token −1 until then).
        ids = tl.load(head_index + offs, mask=mask, other=0)
        token = head_or_tail(q, ids, mask, tl.exp(tail - t - log_z), offs, row, BLOCK,
                             seed_ptr, code_ptr, group_ptr, index_ptr, step_ptr, next_code_ptr,
                             tail_code_ptr, code_scale_ptr, CODED)  # fmt: skip
        tl.store(token_ptr + row, token)
        tl.store(arrivals_ptr + row, 0)


def topm_head(z, candidates, stats, c, beta_k, k, m: int, rank: bool, outer: int,
              inner: int, seed: torch.Tensor | CodedDraw | None = None):  # fmt: skip
    """The head's ids and q, max z and the tail shift, per row of z [rows, V]; with `seed`
    (see `draw.draw_seed`) also the head draw (else None).

    A coordinated draw (`seed` a `CodedDraw`) is an inverse transform with the row's code
    over the head's tokens in the head's order, then the tail as one bucket: each token
    still comes up with probability q_v, but the code-to-token map is not the vocabulary
    order that `coordinated.coordinated_sample` uses. Head rows get their next code here;
    tail rows get the code remapped onto the tail, which their draw finishes."""
    rows, vocab = z.shape
    splits = stats.splits
    device = z.device
    head_x = torch.empty(rows, m, device=device, dtype=torch.float32)
    head_index = torch.empty(rows, m, device=device, dtype=torch.int64)
    q_head = torch.empty_like(head_x)
    z_max = torch.empty(rows, device=device, dtype=torch.float32)
    shift = torch.empty_like(z_max)
    draw = None
    coded = isinstance(seed, CodedDraw)
    if seed is not None:
        draw = HeadDraw(
            torch.empty(rows, device=device, dtype=torch.int64),
            torch.empty(rows, device=device, dtype=torch.int32),
            *draw_targets(rows, device),
            *((torch.empty_like(seed.value), torch.empty_like(seed.value)) if coded else ()),
        )
    # The draw's randomness, and where a coded head writes the tail's codes and scales.
    tail = (draw.tail_code, draw.code_scale) if coded else (shift, shift)
    slots = pow2_at_least(candidates.splits)
    _bok_topm_select_kernel[(rows,)](
        z, candidates.x, candidates.index, candidates.count, head_x, head_index,
        *compact_scratch(rows, slots * CAP, device), *(draw[:2] if draw else [shift] * 2),
        vocab, m, candidates.splits, CAP=CAP, SLOTS=slots, ROW_BLOCK=2048,
        SAMPLE=draw is not None, num_warps=ROW_WARPS,
    )  # fmt: skip
    _bok_topm_head_kernel[(rows,)](
        stats.maxes, stats.sums, c, beta_k, k, head_x, head_index, q_head, z_max, shift,
        *(draw[2:4] if draw else [shift] * 2), *randomness_args(seed, shift), *tail, m, splits,
        BLOCK=pow2_at_least(m, 16), SPLIT_BLOCK=pow2_at_least(splits, 16), RANK=rank,
        OUTER=outer, INNER=inner, SAMPLE=draw is not None, CODED=coded, num_warps=SOLVE_WARPS,
    )  # fmt: skip
    return HeadSolution(head_index, q_head, z_max, shift), draw
