"""Sort-free top-p (nucleus) on CUDA.

The nucleus edge x* (the largest x = z/τ whose upper set holds mass ≥ p) is bracketed, the
bracket narrowed ~1000× by two passes that profile the mass above 32 thresholds, the few
tokens left inside it gathered, and x* found by bisection over their order-preserving int32
codes (ties at the edge kept exactly as on the CPU); a row whose bracket overflows the slots
is bisected over the whole row. A streaming pass writes q, or for a sample races over q's
closed form without writing it (`race.affine_race`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .candidates import (
    CAP,
    ROW_WARPS,
    Candidates,
    append_to_slot,
    gather_splits,
    load_candidates,
)
from .race import affine_race, race_seed, race_targets
from .streaming import BLOCK as STREAM_BLOCK
from .streaming import (
    RowStats,
    chunk_for,
    code_of,
    exp_affine,
    float_of_code,
    load_logits,
    pow2_at_least,
    program_position,
    row_lse,
    row_stats,
    split_bounds,
)

BLOCK = 4096
# Thresholds per profile pass: LEVELS = 2 passes narrow the bracket of the nucleus's edge
# by (PROFILE − 1)² ≈ 1000×, leaving a few hundred tokens to gather at most on LM-like rows.
LEVELS = 2
PROFILE = 32
PROFILE_BLOCK = 256


@triton.jit
def _nucleus_terms(max_ptr, sum_ptr, row, SPLITS, inv_tau, p, SPLIT_BLOCK: tl.constexpr):
    # max z and the target mass p·Σ_v e^{(z_v − max z)/τ}. Every mass below is a sum of the
    # same e^{(z − max z)/τ} terms as Σ, so the comparisons with p·Σ are consistent.
    z_max, lse = row_lse(max_ptr, sum_ptr, row, SPLITS, inv_tau, SPLIT_BLOCK)
    return z_max, p * tl.exp(lse)


@triton.jit
def _thresholds(lo, hi, j, PROFILE: tl.constexpr):
    # PROFILE points from hi down to lo (lo itself exactly at the end).
    return tl.where(j == PROFILE - 1, lo, hi - j * ((hi - lo) / (PROFILE - 1)))


@triton.jit
def _narrow(lo, hi, profile_ptr, row, SPLITS, target, PROFILE: tl.constexpr,
            SPLIT_BLOCK: tl.constexpr):  # fmt: skip
    # The edge x* (the largest x whose upper set holds mass ≥ target) lies in [lo, hi]:
    # mass(x ≥ lo) ≥ target > mass(x > hi). Given the masses above each threshold of
    # [lo, hi] (per split), returns the two neighbouring thresholds around x*.
    split = tl.arange(0, SPLIT_BLOCK)[:, None]
    j = tl.arange(0, PROFILE)
    parts = tl.load(
        profile_ptr + (row * SPLITS + split) * PROFILE + j[None, :], mask=split < SPLITS, other=0.0
    )
    reached = tl.sum(parts, axis=0) >= target
    first = tl.min(tl.where(reached, j, PROFILE - 1), axis=0)
    theta = _thresholds(lo, hi, j, PROFILE)
    new_lo = tl.sum(tl.where(j == first, theta, 0.0), axis=0)
    new_hi = tl.sum(tl.where(j == first - 1, theta, 0.0), axis=0)
    return new_lo, tl.where(first == 0, hi, new_hi)


@triton.jit
def _top_p_profile_kernel(
    z_ptr,
    inv_tau_ptr,
    p_ptr,
    max_ptr,
    sum_ptr,
    STAT_SPLITS,
    bracket_ptr,
    profile_ptr,
    V,
    CHUNK,
    LEVEL: tl.constexpr,
    PROFILE: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Per (row, split): Σ e^{x − max x} over x ≥ θ_j for PROFILE thresholds θ_j of the
    # bracket. The first pass's bracket is [max x + log((1 − p)Σ/V), max x]: below its lower
    # end each of at most V tokens has mass < (1 − p)Σ/V, so x* is not there. A later pass
    # narrows the bracket of the pass before; split 0 records the bracket it profiled.
    # Brackets [LEVELS, rows, 2] and profiles [LEVELS, rows, splits, PROFILE]: one buffer
    # each, indexed here rather than by a view per pass on the host.
    row, split, splits = program_position()
    rows = tl.num_programs(0)
    bracket_ptr += row * 2
    inv_tau = tl.load(inv_tau_ptr + row)
    p = tl.load(p_ptr + row)
    z_max, target = _nucleus_terms(max_ptr, sum_ptr, row, STAT_SPLITS, inv_tau, p, SPLIT_BLOCK)
    x_max = z_max * inv_tau
    if LEVEL == 0:
        # p = 1 keeps everything (the profile is then unused): any finite bracket will do.
        lo = x_max + tl.maximum(tl.log((1.0 - p) / p * target / V), -200.0)
        hi = x_max
    else:
        previous = (LEVEL - 1) * rows
        lo = tl.load(bracket_ptr + previous * 2)
        hi = tl.load(bracket_ptr + previous * 2 + 1)
        previous_profile = profile_ptr + previous * splits * PROFILE
        lo, hi = _narrow(lo, hi, previous_profile, row, splits, target, PROFILE, SPLIT_BLOCK)
    j = tl.arange(0, PROFILE)
    theta = _thresholds(lo, hi, j, PROFILE)
    # Sums stay per lane and are reduced once at the end: a reduction across the program's
    # threads per block costs more than the block's comparisons.
    mass = tl.zeros((PROFILE, BLOCK), tl.float32)
    above = tl.zeros((BLOCK,), tl.float32)
    base = row.to(tl.int64) * V
    begin, end = split_bounds(split, CHUNK, V)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + base + offs, offs < end)
        x = z * inv_tau
        e = tl.exp(inv_tau * (z - z_max))
        above += tl.where(x > hi, e, 0.0)
        hit = (x[None, :] >= lo) & (x[None, :] <= hi) & (x[None, :] >= theta[:, None])
        mass += tl.where(hit, e[None, :], 0.0)
    profile = tl.sum(mass, axis=1) + tl.sum(above, axis=0)
    tl.store(profile_ptr + ((LEVEL * rows + row) * splits + split) * PROFILE + j, profile)
    if split == 0:
        tl.store(bracket_ptr + LEVEL * rows * 2, lo)
        tl.store(bracket_ptr + LEVEL * rows * 2 + 1, hi)


@triton.jit
def _top_p_gather_kernel(
    z_ptr,
    inv_tau_ptr,
    p_ptr,
    max_ptr,
    sum_ptr,
    STAT_SPLITS,
    bracket_ptr,
    profile_ptr,
    x_out_ptr,
    index_out_ptr,
    count_ptr,
    above_ptr,
    V,
    CHUNK,
    LEVELS: tl.constexpr,
    PROFILE: tl.constexpr,
    CAP: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Per (row, split): the tokens inside the last profile's bracket [lo, hi] around x*, and
    # the mass strictly above it, Σ_{x > hi} e^{x − max x}.
    row, split, splits = program_position()
    last = (LEVELS - 1) * tl.num_programs(0)
    bracket_ptr += last * 2
    profile_ptr += last * splits * PROFILE
    inv_tau = tl.load(inv_tau_ptr + row)
    p = tl.load(p_ptr + row)
    z_max, target = _nucleus_terms(max_ptr, sum_ptr, row, STAT_SPLITS, inv_tau, p, SPLIT_BLOCK)
    lo = tl.load(bracket_ptr + row * 2)
    hi = tl.load(bracket_ptr + row * 2 + 1)
    lo, hi = _narrow(lo, hi, profile_ptr, row, splits, target, PROFILE, SPLIT_BLOCK)
    base = row.to(tl.int64) * V
    slot = (row * splits + split).to(tl.int64) * CAP
    begin, end = split_bounds(split, CHUNK, V)
    found = tl.zeros((), tl.int32)
    above = 0.0
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < end
        z = load_logits(z_ptr + base + offs, inside)
        x = z * inv_tau
        keep = inside & (x >= lo) & (x <= hi)
        found = append_to_slot(z, offs, keep, found, x_out_ptr, index_out_ptr, slot, CAP)
        above += tl.sum(tl.where(x > hi, tl.exp(inv_tau * (z - z_max)), 0.0), axis=0)
    tl.store(count_ptr + row * splits + split, found)
    tl.store(above_ptr + row * splits + split, above)


@triton.jit
def _row_mass(z_ptr, V, code_scale, inv_tau, z_max, code, BLOCK: tl.constexpr):
    # Σ e^{(z − max z)/τ} over the row's finite z with code(code_scale·z) ≥ code: the codes
    # of x = z/τ for top-p, of z itself (code_scale = 1) for top-p inside top-k.
    mass = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        keep = (code_of(z * code_scale) >= code) & (z > -float("inf"))
        mass += tl.sum(tl.where(keep, tl.exp(inv_tau * (z - z_max)), 0.0), axis=0)
    return mass


@triton.jit
def _edge_from_row(z_ptr, V, code_scale, inv_tau, z_max, target, BLOCK: tl.constexpr):
    # The edge's code by bisection over the int32 codes of code_scale·z, re-reading the
    # whole row on each of 33 steps: mass(code ≥ lo) ≥ target always, mass(code ≥ hi) <
    # target always.
    top = code_of(z_max * code_scale)
    low = top
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = load_logits(z_ptr + offs, offs < V) * code_scale
        low = tl.minimum(low, tl.min(tl.where(x > -float("inf"), code_of(x), low), axis=0))
    lo = low
    hi = top + 1
    for _ in range(33):
        mid = lo + (hi - lo) // 2
        reached = _row_mass(z_ptr, V, code_scale, inv_tau, z_max, mid, BLOCK) >= target
        lo = tl.where(reached & (hi - lo > 1), mid, lo)
        hi = tl.where(reached | (hi - lo <= 1), hi, mid)
    return lo


@triton.jit
def _edge_among(codes, e, valid, above, target):
    # The same bisection on gathered values held in registers: the largest code c with
    # above + Σ_{codes ≥ c} e ≥ target, given that the smallest valid code reaches it.
    lo = tl.min(tl.where(valid, codes, 1 << 40), axis=0)
    hi = tl.max(tl.where(valid, codes, lo - 1), axis=0) + 1
    for _ in range(33):
        mid = lo + (hi - lo) // 2
        reached = above + tl.sum(tl.where(codes >= mid, e, 0.0), axis=0) >= target
        lo = tl.where(reached & (hi - lo > 1), mid, lo)
        hi = tl.where(reached | (hi - lo <= 1), hi, mid)
    return lo


@triton.jit
def _row_solve_inputs(inv_tau_ptr, p_ptr, max_ptr, sum_ptr, STAT_SPLITS, cand_x_ptr,
                      cand_index_ptr, cand_count_ptr, row, CAND_SPLITS, CAP: tl.constexpr,
                      SLOTS: tl.constexpr, SPLIT_BLOCK: tl.constexpr):  # fmt: skip
    # What a per-row solve of top-p's edge reads: 1/τ, p, max z, p·Σ, and the row's gathered
    # z (values, validity, whether a slot overflowed).
    inv_tau = tl.load(inv_tau_ptr + row)
    p = tl.load(p_ptr + row)
    z_max, target = _nucleus_terms(max_ptr, sum_ptr, row, STAT_SPLITS, inv_tau, p, SPLIT_BLOCK)
    z, _ids, valid, overflow = load_candidates(
        cand_x_ptr, cand_index_ptr, cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS
    )
    return inv_tau, p, z_max, target, z, valid, overflow


@triton.jit
def _top_p_solve_kernel(
    z_ptr,
    inv_tau_ptr,
    p_ptr,
    max_ptr,
    sum_ptr,
    STAT_SPLITS,
    cand_x_ptr,
    cand_index_ptr,
    cand_count_ptr,
    above_ptr,
    floor_ptr,
    shift_ptr,
    zmax_ptr,
    arrivals_ptr,
    V,
    CAND_SPLITS,
    CAP: tl.constexpr,
    SLOTS: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    ROW_BLOCK: tl.constexpr,
    SAMPLE: tl.constexpr,
):
    # x* from the gathered bracket (the same code bisection, on a few hundred values in
    # registers), or from the whole row when a slot overflowed; then the kept tokens are
    # those with x ≥ x*, and q = e^{x − max x − shift} on them. With SAMPLE, also zero the
    # arrival counters of the race that follows.
    row = tl.program_id(0)
    inv_tau, p, z_max, target, z, valid, overflow = _row_solve_inputs(
        inv_tau_ptr, p_ptr, max_ptr, sum_ptr, STAT_SPLITS, cand_x_ptr, cand_index_ptr,
        cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS, SPLIT_BLOCK,
    )  # fmt: skip
    split_offs = tl.arange(0, SPLIT_BLOCK)
    aboves = tl.load(above_ptr + row * CAND_SPLITS + split_offs, mask=split_offs < CAND_SPLITS,
                     other=0.0)  # fmt: skip
    above = tl.sum(aboves, axis=0)
    floor = -float("inf")
    kept = target / p  # Σ: p = 1 keeps every token
    if p < 1.0:
        # An empty bracket can only come from rounding between the passes' sums: take the
        # whole row then too.
        if overflow | (tl.sum(valid.to(tl.int32), axis=0) == 0):
            z_row = z_ptr + row.to(tl.int64) * V
            edge = _edge_from_row(z_row, V, inv_tau, inv_tau, z_max, target, ROW_BLOCK)
            kept = _row_mass(z_row, V, inv_tau, inv_tau, z_max, edge, ROW_BLOCK)
            floor = float_of_code(edge)
        else:
            codes = code_of(z * inv_tau)
            e = tl.where(valid, tl.exp(inv_tau * (z - z_max)), 0.0)
            edge = _edge_among(codes, e, valid, above, target)
            kept = above + tl.sum(tl.where(codes >= edge, e, 0.0), axis=0)
            floor = float_of_code(edge)
    tl.store(floor_ptr + row, floor)
    tl.store(shift_ptr + row, tl.log(kept))
    tl.store(zmax_ptr + row, z_max)
    if SAMPLE:
        tl.store(arrivals_ptr + row, 0)


@triton.jit
def _top_p_in_top_k_kernel(
    z_ptr,
    inv_tau_ptr,
    p_ptr,
    max_ptr,
    sum_ptr,
    STAT_SPLITS,
    cand_x_ptr,
    cand_index_ptr,
    cand_count_ptr,
    kth_ptr,
    floor_ptr,
    V,
    CAND_SPLITS,
    CAP: tl.constexpr,
    SLOTS: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    ROW_BLOCK: tl.constexpr,
):
    # Top-k ∩ top-p's floor on z: the k-th largest z, raised to top-p's edge where the top k
    # already hold mass ≥ p·Σ (else top-k binds). The top k are among the candidates that
    # found the k-th largest (x = z there), so the edge is bisected over their codes; a row
    # whose slots overflowed is bisected over the whole row.
    row = tl.program_id(0)
    inv_tau, p, z_max, target, z, valid, overflow = _row_solve_inputs(
        inv_tau_ptr, p_ptr, max_ptr, sum_ptr, STAT_SPLITS, cand_x_ptr, cand_index_ptr,
        cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS, SPLIT_BLOCK,
    )  # fmt: skip
    kth = tl.load(kth_ptr + row)
    floor = kth
    if p < 1.0:
        if overflow:
            z_row = z_ptr + row.to(tl.int64) * V
            top_k_mass = _row_mass(z_row, V, 1.0, inv_tau, z_max, code_of(kth), ROW_BLOCK)
            if top_k_mass >= target:
                edge = _edge_from_row(z_row, V, 1.0, inv_tau, z_max, target, ROW_BLOCK)
                floor = float_of_code(edge)
        else:
            codes = code_of(z)
            e = tl.where(valid, tl.exp(inv_tau * (z - z_max)), 0.0)
            if tl.sum(tl.where(codes >= code_of(kth), e, 0.0), axis=0) >= target:
                floor = float_of_code(_edge_among(codes, e, valid, 0.0, target))
    tl.store(floor_ptr + row, floor)


def top_p_in_top_k(
    flat: torch.Tensor,
    inv_tau: torch.Tensor,
    p: torch.Tensor,
    stats: RowStats,
    candidates: Candidates,
    kth: torch.Tensor,
) -> torch.Tensor:
    """Per row of flat [rows, V]: the floor on z of top-k ∩ top-p, max(k-th largest z, top-p's
    edge), from `row_stats`' split sums (`stats`, as top-p's own route: mass ≥ p·Σ compared
    in float32) and the `candidates` and k-th largest z (`kth`) of `candidates.kth_largest`.
    1/τ and p: float32 [rows]."""
    rows, vocab = flat.shape
    floor = torch.empty(rows, device=flat.device, dtype=torch.float32)
    _top_p_in_top_k_kernel[(rows,)](
        flat, inv_tau, p, stats.maxes, stats.sums, stats.splits, candidates.x, candidates.index,
        candidates.count, kth, floor, vocab, candidates.splits, CAP=CAP,
        SLOTS=pow2_at_least(candidates.splits), SPLIT_BLOCK=pow2_at_least(stats.splits, 16),
        ROW_BLOCK=BLOCK, num_warps=ROW_WARPS,
    )  # fmt: skip
    return floor


def _top_p_terms(flat: torch.Tensor, inv_tau: torch.Tensor, p: torch.Tensor,
                 arrivals: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:  # fmt: skip
    # Per row of flat [rows, V]: the floor on x = z/τ, the shift and max z of
    # q = exp((z − max z)/τ − shift) on x ≥ floor; with `arrivals`, zeroes them too.
    rows, vocab = flat.shape
    device = flat.device
    stats = row_stats(flat, inv_tau)
    splits = gather_splits(vocab)
    chunk = chunk_for(vocab, splits, STREAM_BLOCK)
    split_block = pow2_at_least(max(stats.splits, splits), 16)
    common = dict(PROFILE=PROFILE, SPLIT_BLOCK=split_block)
    brackets = torch.empty(LEVELS, rows, 2, device=device, dtype=torch.float32)
    profiles = torch.empty(LEVELS, rows, splits, PROFILE, device=device, dtype=torch.float32)
    for level in range(LEVELS):
        _top_p_profile_kernel[(rows, splits)](
            flat, inv_tau, p, stats.maxes, stats.sums, stats.splits, brackets, profiles,
            vocab, chunk, LEVEL=level, BLOCK=PROFILE_BLOCK, num_warps=4, **common,
        )  # fmt: skip
    candidates = Candidates.empty(rows, splits, device)
    above = torch.empty(rows, splits, device=device, dtype=torch.float32)
    _top_p_gather_kernel[(rows, splits)](
        flat, inv_tau, p, stats.maxes, stats.sums, stats.splits, brackets, profiles,
        candidates.x, candidates.index, candidates.count, above, vocab, chunk,
        LEVELS=LEVELS, CAP=CAP, BLOCK=STREAM_BLOCK, num_warps=4, **common,
    )  # fmt: skip
    floor, shift, z_max = torch.empty(3, rows, device=device, dtype=torch.float32)
    _top_p_solve_kernel[(rows,)](
        flat, inv_tau, p, stats.maxes, stats.sums, stats.splits, candidates.x,
        candidates.index, candidates.count, above, floor, shift, z_max,
        floor if arrivals is None else arrivals, vocab, splits,
        CAP=CAP, SLOTS=pow2_at_least(splits), SPLIT_BLOCK=split_block,
        ROW_BLOCK=BLOCK, SAMPLE=arrivals is not None, num_warps=ROW_WARPS,
    )  # fmt: skip
    return floor, shift, z_max


def top_p_probs(z: torch.Tensor, inv_tau: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Top-p of softmax(z/τ) per row (z [..., V] float32 CUDA; 1/τ and p float32 [rows])."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    floor, shift, z_max = _top_p_terms(flat, inv_tau, p)
    return exp_affine(flat, inv_tau, z_max, shift, floor).reshape(z.shape)


def top_p_sample(
    z: torch.Tensor, inv_tau: torch.Tensor, p: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per row of z, drawn from `top_p_probs`' q without writing q."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    seed = race_seed(z.device, generator)
    targets = race_targets(flat.shape[0], z.device)
    floor, shift, z_max = _top_p_terms(flat, inv_tau, p, arrivals=targets[1])
    tokens = affine_race(flat, inv_tau, z_max, shift, seed, targets, floor=floor)
    return tokens.reshape(z.shape[:-1])
