"""Sort-free top-p (nucleus) and locally typical sets on CUDA.

The nucleus edge x* (the largest x = z/τ whose upper set holds mass ≥ p) is bracketed, the
bracket narrowed by passes that profile the mass above 8 or 32 thresholds (up to ~2400×; a
row's later passes run only while its bracket may hold more of a split's tokens than the
gather's slot), the tokens left inside it gathered, and x* found by bisection over their
order-preserving int32 codes (ties at the edge kept exactly as on the CPU, the gathered
terms summed in fixed point); a row whose bracket overflows the slots is bisected over the
whole row. A streaming pass writes q; a sample is drawn from q's closed
form in the solve, without writing it: the split from the slots and each split's mass above
the bracket, then the block and the token over one split.

A plain (Philox) top-p sample rarely needs the edge: tokens drawn from the whole softmax
are kept only inside the nucleus, which a token x is in exactly when the mass above it,
Σ_{x' > x} e^{x'}, is below p·Σ (`top_p_sample`). Two reads of z, where finding the edge
takes five (two profile passes) to seven (four).

The same kernels find typical's set: the tokens nearest c = E_p[x] (|−log p − H| = |x − c|)
that reach the mass are those whose key −|x − c| is at least an edge found exactly as x* is
(the key in place of x). That set is an interval of z, so it is q's floor on x and a ceiling
on z (the draw's head edge, which excludes the tokens above it).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..coordinated import PROPOSALS
from ..supports import ordered_codes
from .candidates import (
    CAP,
    ROW_WARPS,
    Candidates,
    append_to_slot,
    gather_splits,
    load_candidates,
)
from .draw import BLOCK as DRAW_BLOCK
from .draw import (
    CodedDraw,
    Randomness,
    draw_many_from_logits,
    draw_seed,
    randomness_args,
)
from .launch import dependent_launch, kernel, wait_for_the_kernel_before
from .streaming import BLOCK as STREAM_BLOCK
from .streaming import (
    SCALED_FLOOR,
    RowStats,
    affine_q,
    chunk_for,
    code_of,
    exp_affine,
    finite_or_zero,
    float_of_code,
    load_logits,
    pow2_at_least,
    program_position,
    row_lse,
    row_stats,
    sm_count,
    split_bounds,
    splits_for,
)
from .uniforms import REFILL, TWO_POW_M52, next_code, philox_uniforms, pick

BLOCK = 4096


class ProfilePasses(NamedTuple):
    """How the edge's bracket is narrowed: `levels` passes that each take the mass above
    `thresholds` points of the bracket (a power of 2), `block` tokens per program step. They
    narrow it (thresholds − 1)^levels times, leaving a few hundred tokens to gather at most
    on LM-like rows."""

    levels: int
    thresholds: int
    block: int


# A pass costs one comparison per token and threshold: with 32 thresholds it is bound by them,
# not by its read of z. On an H200 (`.gpu` sweeps of stop 39, replayed, V = 151,936), 4 passes
# of 8 over 1024-token blocks (≈ 2400×) took the coordinated top-p step from 0.080/0.217/
# 0.756 ms to 0.071/0.178/0.607 at B = 8/64/256, against 2 passes of 32 over 256 (≈ 1000×).
# These are the most passes a row takes: a level profiles a row only where its bracket may
# still hold more of a split's tokens than the gather's slot (CAP; `_narrow`).
EDGE_PASSES = ProfilePasses(levels=4, thresholds=8, block=1024)
# Where the passes fill the GPU (at least WIDE_GRID programs per SM), half the block: on an
# H200 (`.gpu` A/B of stop 42, replayed, three rounds, the same tokens and q), 512-token
# blocks made coordinated top-p 5% faster at B = 256 (0.560 → 0.529 ms) and 1–2% at
# B = 64, but 1% slower at B = 32 (3.9 programs per SM) and 8–10% at B = 16.
# Stop 45 (`bench/top_p_edge_sweep.py`, replayed, best of two rounds): 512-token blocks and 4
# warps stayed the fastest of 256/512/1024 × 4/8 at B = 64 and 256, and loading the next block
# ahead took B = 256 from 0.4630 to 0.4503 ms (B = 64: 0.1368 and 0.1367).
WIDE_GRID = 6
WIDE_GRID_BLOCK = 512
PROFILE_WARPS = 4
# Programs per SM above which the gather places its tokens by atomics (`_edge_terms`).
ATOMIC_GATHER_PER_SM = 2


class GatherLaunch(NamedTuple):
    """The edge gather's launch: tokens per block, warps, and blocks whose loads are in
    flight at once (`tl.range(num_stages=)`; 1 is none)."""

    block: int
    warps: int
    stages: int


# Where the grid is wide (WIDE_GRID programs per SM, and not the rows a rejection sample
# leaves), 1024-token blocks with 3 stages: on an H200 (`bench/top_p_edge_sweep.py
# --launch-sweep`, stop 51: 18 settings at B = 8, 64, 256, then 5 of them at B = 8–256, best
# of four replays each, the same tokens under every setting) they made the coordinated
# top-p step 5–6% faster at B = 64, 128 and 256 (0.1053 → 0.0994, 0.1696 → 0.1600,
# 0.2914 → 0.2735 ms) and typical's 2–3% at B = 128 and 256 (0.4277 → 0.4163; within 1% at
# B = 64), but slower at B ≤ 32 (top-p 0.0544 → 0.0710 at B = 8), where 2048 tokens
# without stages stay.
GATHER = GatherLaunch(block=STREAM_BLOCK, warps=4, stages=1)
WIDE_GATHER = GatherLaunch(block=1024, warps=4, stages=3)
# Warps of the edge's solve, one program per row (4, 8 and 16 in the same sweep: 4 was
# slower at every B, 16 within 2% of 8 but 5% slower for top-p at B = 256).
SOLVE_WARPS = ROW_WARPS
# Programs of the edge's passes per SM up to which the edge's launches, and the row stats
# before them, overlap the end of the kernel before each (`dependent_launch`). On an H200
# (`.gpu` A/B of stop 50, replayed, coordinated top-p and typical, randn·3 and "with a
# head" rows, against the same code without it): 0.90–1.00× at B = 1 and 8 and 0.94–1.00×
# at B = 16 (256 programs), but top-p 1.05–1.06× at B = 32 and 1.02–1.03× at B = 64
# (typical 0.98–1.03×), and 0.97–1.01× at B = 128 and 256.
DEPENDENT_LAUNCH_PER_SM = 2


def _dependent(flat: torch.Tensor) -> bool:
    # Whether the edge's chain of launches over flat [rows, V] (and the row stats before
    # it) overlap.
    (rows, vocab), device = flat.shape, flat.device
    programs = rows * gather_splits(vocab)
    return dependent_launch(device) and programs <= DEPENDENT_LAUNCH_PER_SM * sm_count(device)


# The rows a rejection sample leaves (`top_p_sample`) are rare, and every other row's programs
# exit at once; there a pass's launch costs more than its comparisons: with 4 passes plain
# top-p took 0.171–0.174 ms at B = 256 against 0.163–0.164 with these 2.
PENDING_EDGE_PASSES = ProfilePasses(levels=2, thresholds=32, block=256)
# Top-p's sample by rejection (`top_p_sample`): tokens proposed per row (PROPOSALS, shared
# with the torch path's coordinated draw by rejection, whose picks the kernels reproduce),
# and the accept pass's launch. On an H200 at p = 0.9 (`bench/top_p_proposals.py`), 4
# proposals replayed fastest at B = 1 and 256 and 2 at B = 8 and 64; at p = 0.5, 2, 4, 8
# and 4 at B = 1, 8, 64 and 256.
# Each one more costs the draw's last program a block reload and pick and the accept pass
# a comparison per token; each one fewer leaves more rows to the edge's passes. A scratch
# sweep of the accept pass's block, warps and programs per SM moved it by up to 9% (B = 8).
ACCEPT_BLOCK = 1024
ACCEPT_PER_SM = 8
ACCEPT_WARPS = 4

# What the edge is found on (the KEY argument of the kernels below); each keeps the tokens
# whose key is at least the edge, the largest key value whose upper set holds mass ≥ p·Σ.
NUCLEUS = tl.constexpr(0)  # x = z·(1/τ): top-p
RAW = tl.constexpr(1)  # z itself: top-p among the gathered top k
TYPICAL = tl.constexpr(2)  # −|x − c|, c = E_p[x]: the locally typical set


@triton.jit
def _key(z, inv_tau, centre, KEY: tl.constexpr):
    if KEY == RAW:
        return z
    x = z * inv_tau
    if KEY == TYPICAL:
        return -tl.abs(x - centre)
    return x


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
def _least_term(lo, x_max, centre, KEY: tl.constexpr):
    # A lower bound on e^{x − max x} over the tokens whose key is ≥ lo: x ≥ lo for top-p,
    # x ≥ c + lo for typical (−|x − c| ≥ lo).
    if KEY == TYPICAL:
        return tl.exp(centre + lo - x_max)
    return tl.exp(lo - x_max)


@triton.jit
def _narrow(lo, hi, profile_ptr, row, SPLITS, target, x_max, centre, KEY: tl.constexpr,
            PROFILE: tl.constexpr, SPLIT_BLOCK: tl.constexpr, CAP: tl.constexpr):  # fmt: skip
    # The edge x* (the largest x whose upper set holds mass ≥ target) lies in [lo, hi]:
    # mass(x ≥ lo) ≥ target > mass(x > hi). Given the masses at or above each threshold of
    # [lo, hi] (per split), returns the two neighbouring thresholds around x*, new_lo ≤ x* <
    # new_hi, and what the gather of the tokens between them needs: the mass at or above
    # new_hi, and new_hi as the gather's strict upper bound. Where even hi holds the mass
    # (only where hi is the largest key: the next level profiles hi again, and the same sums
    # in the same order give the same mass, below target), there is nothing above: the
    # bracket is [hi, hi], the gather takes every key ≥ hi and the mass above is 0.
    # Then whether a split's slot of CAP might not hold the gather's tokens: each of them
    # has a term ≥ `_least_term(new_lo)`, so a split holds at most its mass inside the
    # bracket over that (with room for the float32 sums' rounding); where it cannot
    # overflow, the passes stop narrowing. Last, each split's own mass at or above
    # `upper` ([SPLIT_BLOCK]; 0 where upper is +inf): a coordinated draw's part of the set
    # that the gather need not hold (`_split_of_draw`).
    split = tl.arange(0, SPLIT_BLOCK)[:, None]
    j = tl.arange(0, PROFILE)
    parts = tl.load(
        profile_ptr + (row * SPLITS + split) * PROFILE + j[None, :], mask=split < SPLITS, other=0.0
    )
    totals = tl.sum(parts, axis=0)
    first = tl.min(tl.where(totals >= target, j, PROFILE - 1), axis=0)
    theta = _thresholds(lo, hi, j, PROFILE)
    new_lo = tl.sum(tl.where(j == first, theta, 0.0), axis=0)
    new_hi = tl.sum(tl.where(j == first - 1, theta, 0.0), axis=0)
    above = tl.sum(tl.where(j == first - 1, totals, 0.0), axis=0)
    upper = tl.where(first == 0, float("inf"), new_hi)
    at_lo = tl.sum(tl.where(j[None, :] == first, parts, 0.0), axis=1)
    at_upper = tl.sum(tl.where(j[None, :] == first - 1, parts, 0.0), axis=1)
    inside = at_lo - at_upper
    most = tl.max(inside, axis=0) * 1.001 + 1e-5 * tl.max(at_lo, axis=0)
    least = _least_term(new_lo, x_max, centre, KEY)
    # Below 1e-30 a term may underflow to 0 and count for nothing in the masses.
    crowded = (least < 1e-30) | (most > CAP * least)
    return new_lo, tl.where(first == 0, hi, new_hi), above, upper, crowded, at_upper


@triton.jit
def _pending(tokens_ptr, row, PENDING: tl.constexpr):
    # Whether this row still needs the edge: with PENDING, only rows whose token is −1 (the
    # rows the rejection sampler left); their programs alone do any work.
    if PENDING:
        return tl.load(tokens_ptr + row) < 0
    return True


@triton.jit
def _profiled_before(last_ptr, row, LEVEL: tl.constexpr):
    # Past the first level, whether the level before profiled this row: `last` is LEVEL − 1
    # then, or LEVEL once this level's split 0 has stored it. A row that stopped earlier
    # reads nothing more (its programs exit before the row's stats and the profile).
    if LEVEL == 0:
        return True
    return tl.load(last_ptr + row) >= LEVEL - 1


@kernel
def _top_p_profile_kernel(
    z_ptr,
    inv_tau_ptr,
    p_ptr,
    max_ptr,
    sum_ptr,
    STAT_SPLITS,
    centre_ptr,
    tokens_ptr,
    bracket_ptr,
    profile_ptr,
    last_ptr,
    V,
    CHUNK,
    LEVEL: tl.constexpr,
    KEY: tl.constexpr,
    PENDING: tl.constexpr,
    PROFILE: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
    LOAD_2D: tl.constexpr,
    CAP: tl.constexpr,
    DEPENDENT: tl.constexpr,
):
    # Per (row, split): Σ e^{x − max x} over key ≥ θ_j for PROFILE thresholds θ_j of the
    # bracket. The first pass's bracket for top-p is [max x + log((1 − p)Σ/V), max x]:
    # below its lower end each of at most V tokens has mass < (1 − p)Σ/V, so x* is not
    # there. For typical (key −|x − c|, c ≤ max x) it is [min(c − max x, max x − c +
    # log((1 − p)Σ/V)), 0]: no token above c has a key below c − max x, and one below c
    # with a key under the second bound has mass < (1 − p)Σ/V. A later pass narrows the
    # bracket of the pass before; split 0 records the bracket it profiled.
    # Brackets [LEVELS, rows, 2] and profiles [LEVELS, rows, splits, PROFILE]: one buffer
    # each, indexed here rather than by a view per pass on the host. A level profiles a row
    # only where the level before did and its bracket may still hold more of a split's
    # tokens than the gather's slot (`_narrow`); split 0 records the row's last profiled
    # level (`last`), where the gather narrows from. With PENDING, a row whose token is
    # drawn already (tokens[row] ≥ 0) does nothing.
    wait_for_the_kernel_before(DEPENDENT)
    row, split, splits = program_position()
    if _pending(tokens_ptr, row, PENDING) & _profiled_before(last_ptr, row, LEVEL):
        rows = tl.num_programs(0)
        bracket_ptr += row * 2
        inv_tau = tl.load(inv_tau_ptr + row)
        p = tl.load(p_ptr + row)
        z_max, target = _nucleus_terms(max_ptr, sum_ptr, row, STAT_SPLITS, inv_tau, p, SPLIT_BLOCK)
        x_max = z_max * inv_tau
        centre = tl.load(centre_ptr + row)
        if LEVEL == 0:
            # p = 1 keeps everything (the profile is then unused): any finite bracket will do.
            tail = tl.maximum(tl.log((1.0 - p) / p * target / V), -200.0)
            if KEY == TYPICAL:
                lo = tl.minimum(centre - x_max, x_max - centre + tail)
                hi = tl.zeros((), tl.float32)
            else:
                lo = x_max + tail
                hi = x_max
            go = True
        else:
            previous = (LEVEL - 1) * rows
            lo = tl.load(bracket_ptr + previous * 2)
            hi = tl.load(bracket_ptr + previous * 2 + 1)
            previous_profile = profile_ptr + previous * splits * PROFILE
            lo, hi, _, _, crowded, _ = _narrow(
                lo, hi, previous_profile, row, splits, target, x_max, centre, KEY, PROFILE,
                SPLIT_BLOCK, CAP,
            )  # fmt: skip
            go = crowded
        if go:
            _profile_level(z_ptr, inv_tau, centre, z_max, lo, hi, bracket_ptr, profile_ptr,
                           last_ptr, row, rows, split, splits, V, CHUNK, LEVEL, KEY, PROFILE,
                           BLOCK, LOAD_2D)  # fmt: skip


@triton.jit
def _profile_level(z_ptr, inv_tau, centre, z_max, lo, hi, bracket_ptr, profile_ptr, last_ptr,
                   row, rows, split, splits, V, CHUNK, LEVEL: tl.constexpr, KEY: tl.constexpr,
                   PROFILE: tl.constexpr, BLOCK: tl.constexpr, LOAD_2D: tl.constexpr):  # fmt: skip
    # One split's masses at or above PROFILE thresholds of [lo, hi], and from split 0 the
    # bracket and the row's last profiled level.
    j = tl.arange(0, PROFILE)
    theta = _thresholds(lo, hi, j, PROFILE)
    # Sums stay per lane and are reduced once at the end: a reduction across the program's
    # threads per block costs more than the block's comparisons. With LOAD_2D the block
    # is loaded as [1, BLOCK], in the layout of the [PROFILE, BLOCK] sums (a [BLOCK] load
    # is moved to it through shared memory, with barriers), and each threshold costs two
    # instructions per token: its 0/1 factor (a float compare) and a fused multiply-add
    # into its sum, the sum the masked add gives, bit for bit. Each threshold's sum is
    # the whole mass at or above it (the gather takes the mass above its bracket from
    # here). The next block is loaded before this one is summed, so that a load is in
    # flight while the comparisons run. sm_90 SASS of the loop over 512-token blocks
    # (Triton 3.9, `bench/kernel_sass.py`): 116 instructions per 4 tokens a thread,
    # against 144 when the mass above the bracket was summed apart from the sums inside it.
    mass = tl.zeros((PROFILE, BLOCK), tl.float32)
    base = row.to(tl.int64) * V
    begin, end = split_bounds(split, CHUNK, V)
    lanes = tl.arange(0, BLOCK)
    if LOAD_2D:
        lanes = lanes[None, :]
    z_next = load_logits(z_ptr + base + begin + lanes, begin + lanes < end)
    for start in range(begin, end, BLOCK):
        z = z_next
        offs = start + BLOCK + lanes
        z_next = load_logits(z_ptr + base + offs, offs < end)
        key = _key(z, inv_tau, centre, KEY)
        e = tl.exp(inv_tau * (z - z_max))
        if LOAD_2D:
            mass += e * (key >= theta[:, None]).to(tl.float32)
        else:
            mass += tl.where(key[None, :] >= theta[:, None], e[None, :], 0.0)
    profile = tl.sum(mass, axis=1)
    tl.store(profile_ptr + ((LEVEL * rows + row) * splits + split) * PROFILE + j, profile)
    if split == 0:
        tl.store(bracket_ptr + LEVEL * rows * 2, lo)
        tl.store(bracket_ptr + LEVEL * rows * 2 + 1, hi)
        tl.store(last_ptr + row, LEVEL)


@kernel
def _top_p_gather_kernel(
    z_ptr,
    inv_tau_ptr,
    p_ptr,
    max_ptr,
    sum_ptr,
    STAT_SPLITS,
    centre_ptr,
    tokens_ptr,
    bracket_ptr,
    profile_ptr,
    last_ptr,
    x_out_ptr,
    index_out_ptr,
    count_ptr,
    above_ptr,
    split_above_ptr,
    extremes_ptr,
    V,
    CHUNK,
    KEY: tl.constexpr,
    PENDING: tl.constexpr,
    PROFILE: tl.constexpr,
    CAP: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
    STAGES: tl.constexpr,
    ATOMIC: tl.constexpr,
    DEPENDENT: tl.constexpr,
):
    # Per (row, split): the tokens whose key lies inside the bracket around the edge that the
    # row's last profile narrows to, lo ≤ key < upper; split 0 also stores the mass at or
    # above `upper`, which that profile has summed already (the other splits store 0), and
    # each split its own part of it (`split_above`, for a draw in the solve); for
    # typical also the largest z and the smallest x of those above (they are in the set,
    # and may be its extremes: `_top_p_solve_kernel`). With ATOMIC, a token's place in its
    # slot comes from an atomic count, not a scan of its block: a bracket left after two
    # passes holds tens of tokens a block, and a scan per block cost the gather twice its
    # read where the grid fills the GPU (an H200, stop 48); a program alone on its SM waits
    # for each block's count instead. The slot's order is then the order the atomics ran in,
    # so the solve sums its terms in fixed point, where the order does not change the sum.
    wait_for_the_kernel_before(DEPENDENT)
    row, split, splits = program_position()
    if _pending(tokens_ptr, row, PENDING):
        rows = tl.num_programs(0)
        level = tl.load(last_ptr + row)
        bracket_ptr += level * rows * 2
        profile_ptr += level * rows * splits * PROFILE
        inv_tau = tl.load(inv_tau_ptr + row)
        p = tl.load(p_ptr + row)
        z_max, target = _nucleus_terms(max_ptr, sum_ptr, row, STAT_SPLITS, inv_tau, p,
                                       SPLIT_BLOCK)  # fmt: skip
        centre = tl.load(centre_ptr + row)
        lo = tl.load(bracket_ptr + row * 2)
        hi = tl.load(bracket_ptr + row * 2 + 1)
        lo, _, above, upper, _, split_above = _narrow(
            lo, hi, profile_ptr, row, splits, target, z_max * inv_tau, centre, KEY, PROFILE,
            SPLIT_BLOCK, CAP,
        )  # fmt: skip
        base = row.to(tl.int64) * V
        slot = (row * splits + split).to(tl.int64) * CAP
        count = count_ptr + row * splits + split
        if ATOMIC:
            tl.store(count, 0)
            tl.debug_barrier()  # the zero before any thread's first count
        found = tl.zeros((), tl.int32)
        begin, end = split_bounds(split, CHUNK, V)
        z_high = -float("inf")
        x_low = float("inf")
        for start in tl.range(begin, end, BLOCK, num_stages=STAGES):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < end
            z = load_logits(z_ptr + base + offs, inside)
            key = _key(z, inv_tau, centre, KEY)
            keep = inside & (key >= lo) & (key < upper)
            if ATOMIC:
                place = tl.atomic_add(count + tl.zeros_like(offs), 1, mask=keep, sem="relaxed")
                tl.store(x_out_ptr + slot + place, z, mask=keep & (place < CAP))
                tl.store(index_out_ptr + slot + place, offs, mask=keep & (place < CAP))
            else:
                found = append_to_slot(z, offs, keep, found, x_out_ptr, index_out_ptr, slot, CAP)
            if KEY == TYPICAL:
                high = key >= upper
                z_high = tl.maximum(z_high, tl.max(tl.where(high, z, -float("inf")), axis=0))
                x_low = tl.minimum(x_low, tl.min(tl.where(high, z * inv_tau, float("inf")), 0))
        if not ATOMIC:
            tl.store(count, found)
        tl.store(above_ptr + row * splits + split, tl.where(split == 0, above, 0.0))
        in_split = tl.arange(0, SPLIT_BLOCK) == split
        tl.store(split_above_ptr + row * splits + split,
                 tl.sum(tl.where(in_split, split_above, 0.0), axis=0))  # fmt: skip
        if KEY == TYPICAL:
            tl.store(extremes_ptr + (row * splits + split) * 2, z_high)
            tl.store(extremes_ptr + (row * splits + split) * 2 + 1, x_low)


@triton.jit
def _row_mass(z_ptr, V, inv_tau, z_max, centre, code, KEY: tl.constexpr, BLOCK: tl.constexpr):
    # Σ e^{(z − max z)/τ} over the row's finite z whose key's code is ≥ code.
    mass = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        keep = (code_of(_key(z, inv_tau, centre, KEY)) >= code) & (z > -float("inf"))
        mass += tl.sum(tl.where(keep, tl.exp(inv_tau * (z - z_max)), 0.0), axis=0)
    return mass


@triton.jit
def _edge_from_row(z_ptr, V, inv_tau, z_max, centre, target, KEY: tl.constexpr,
                   BLOCK: tl.constexpr):  # fmt: skip
    # The edge's code by bisection over the int32 codes of the finite keys, re-reading the
    # whole row on each step: mass(code ≥ lo) ≥ target always, mass(code ≥ hi) < target
    # always.
    low = tl.zeros((), tl.int64) + (1 << 40)
    top = tl.zeros((), tl.int64) - (1 << 40)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        codes = code_of(_key(z, inv_tau, centre, KEY))
        finite = z > -float("inf")
        low = tl.minimum(low, tl.min(tl.where(finite, codes, 1 << 40), axis=0))
        top = tl.maximum(top, tl.max(tl.where(finite, codes, -(1 << 40)), axis=0))
    lo = low
    hi = top + 1
    while hi - lo > 1:  # at most 33 steps; fewer where the finite codes span less
        mid = lo + (hi - lo) // 2
        reached = _row_mass(z_ptr, V, inv_tau, z_max, centre, mid, KEY, BLOCK) >= target
        lo = tl.where(reached, mid, lo)
        hi = tl.where(reached, hi, mid)
    return lo


@triton.jit
def _extremes_of_row(z_ptr, V, inv_tau, centre, edge, BLOCK: tl.constexpr):
    # The largest z and the smallest x = z·(1/τ) of the finite tokens whose typical key's
    # code is ≥ edge: the set is an interval of z, and these are its ends.
    z_high = -float("inf")
    x_low = float("inf")
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        kept = (code_of(_key(z, inv_tau, centre, TYPICAL)) >= edge) & (z > -float("inf"))
        z_high = tl.maximum(z_high, tl.max(tl.where(kept, z, -float("inf")), axis=0))
        x_low = tl.minimum(x_low, tl.min(tl.where(kept, z * inv_tau, float("inf")), axis=0))
    return z_high, x_low


# Where the gather placed its tokens by atomics (FIXED), the slots are in the order the
# atomics ran, and the terms e^{x − max x} ≤ 1 are summed as integers in units of 2⁻⁵⁰:
# exact and independent of their order; 4,096 of them stay below 2⁶² (int64). Slots in
# index order are summed in float32, which costs a program alone on its SM less (an
# H200, stop 48).
FIXED_POINT = tl.constexpr(2.0**50)


@triton.jit
def _mass_among(e, kept, FIXED: tl.constexpr):
    # Σ e over the kept gathered terms, as float32.
    if FIXED:
        fixed = (e * FIXED_POINT).to(tl.int64)
        return tl.sum(tl.where(kept, fixed, 0), axis=0).to(tl.float32) * (1.0 / FIXED_POINT)
    return tl.sum(tl.where(kept, e, 0.0), axis=0)


@triton.jit
def _edge_among(codes, e, valid, above, target, FIXED: tl.constexpr):
    # The same bisection on gathered values held in registers: the largest code c with
    # above + Σ_{codes ≥ c} e ≥ target, given that the smallest valid code reaches it. It
    # stops once [lo, hi) holds one code: the keys of a bracket narrowed by the profile
    # passes span far fewer codes than the 2³³ that a fixed 33 steps allowed for, and each
    # step is a sum across the program.
    lo = tl.min(tl.where(valid, codes, 1 << 40), axis=0)
    hi = tl.max(tl.where(valid, codes, lo - 1), axis=0) + 1
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        reached = above + _mass_among(e, codes >= mid, FIXED) >= target
        lo = tl.where(reached, mid, lo)
        hi = tl.where(reached, hi, mid)
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


# A draw in the solve sums each slot's gathered terms (≤ CAP of them, each ≤ 1) as integers
# in units of 2⁻⁵⁴, below the codes' grain of 2⁻⁵³ and exact in any order (the atomic
# gather's slots are in the order its atomics ran), 256 terms below 2⁶² (int64).
SLOT_FIXED_POINT = tl.constexpr(2.0**54)


@triton.jit
def _split_of_draw(z, z_max, inv_tau, in_set, split_above_ptr, row, SPLITS, position,
                   CHUNK, V, CAP: tl.constexpr, SLOTS: tl.constexpr):  # fmt: skip
    # The first stage of a draw over the set's terms e^{x − max x} in vocabulary order,
    # given the gather's slots and a row's `position` in [0, 1): the split (CHUNK tokens,
    # [begin, end)) whose bucket holds position·Σ, that target's place inside the bucket,
    # and Σ. A split's mass is its part above the bracket (summed by the profile pass)
    # plus its slot's gathered terms inside the set.
    terms = tl.where(in_set, tl.exp(inv_tau * (z - z_max)), 0.0)
    fixed = tl.reshape((terms * SLOT_FIXED_POINT).to(tl.int64), (SLOTS, CAP))
    slots = tl.arange(0, SLOTS)
    masses = tl.sum(fixed, axis=1).to(tl.float64) * (1.0 / SLOT_FIXED_POINT)
    above = tl.load(split_above_ptr + row * SPLITS + slots, mask=slots < SPLITS, other=0.0)
    masses += above.to(tl.float64)
    total = tl.sum(masses, axis=0)
    split, before, _ = pick(masses, slots, position * total)
    begin = split * CHUNK
    return begin, tl.minimum(begin + CHUNK, V), position * total - before, total


@triton.jit
def _draw_in_range(z_row, begin, end, aim, total, inv_tau, z_max, floor, ceiling, fresh,
                   group_ptr, index_ptr, step_ptr, next_code_ptr, tokens_ptr, row, pending,
                   CODED: tl.constexpr, HEAD: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    # Where `pending`, tokens[row]: the token of [begin, end) whose bucket among the set's
    # terms e^{x − max x} (x ≥ floor; with HEAD also z ≤ ceiling) holds `aim`, `draw.py`'s
    # two stages in one program. Blocks are summed in order until their running sum passes
    # aim (a range summed to its end without passing it, where its sums and the caller's
    # differ by rounding, takes its last block with mass), and the last one summed is the
    # token's: about half a split's blocks on average, and no reread. Inside it the token
    # is at aim's place for a code (its next code to next_code[row], refilled below 2⁻⁵² of
    # `total`, the row's mass) and at the `fresh` uniform's for Philox.
    if pending:
        lane = tl.arange(0, BLOCK)
        head_code = code_of(ceiling)
        running = tl.zeros((), tl.float64)
        before = running
        block_mass = running
        start = begin
        chosen = begin
        q = tl.zeros((BLOCK,), tl.float32)
        while (start < end) & (running <= aim):
            q_here = affine_q(z_row, start + lane, end, inv_tau, z_max, 0.0, floor, head_code,
                              -1, SCALED_FLOOR, HEAD)  # fmt: skip
            mass = tl.sum(q_here.to(tl.float64), axis=0)
            # A block of no mass is never the one drawn (as `uniforms.pick`'s cap).
            q = tl.where(mass > 0, q_here, q)
            chosen = tl.where(mass > 0, start, chosen)
            before = tl.where(mass > 0, running, before)
            block_mass = tl.where(mass > 0, mass, block_mass)
            running += mass
            start += BLOCK
        place = tl.minimum(aim - before, block_mass) if CODED else fresh * block_mass
        token, low, width = pick(q, lane, place)
        tl.store(tokens_ptr + row, (chosen + token).to(tl.int64))
        if CODED:
            grain = TWO_POW_M52 * total / width
            tl.store(next_code_ptr + row, next_code(place, low, width, grain, group_ptr,
                                                    index_ptr, step_ptr, row, REFILL))  # fmt: skip


@kernel
def _top_p_solve_kernel(
    z_ptr,
    inv_tau_ptr,
    p_ptr,
    max_ptr,
    sum_ptr,
    STAT_SPLITS,
    centre_ptr,
    tokens_ptr,
    cand_x_ptr,
    cand_index_ptr,
    cand_count_ptr,
    above_ptr,
    split_above_ptr,
    extremes_ptr,
    floor_ptr,
    ceiling_ptr,
    shift_ptr,
    zmax_ptr,
    philox_ptr,
    code_ptr,
    group_ptr,
    index_ptr,
    step_ptr,
    next_code_ptr,
    V,
    CHUNK,
    CAND_SPLITS,
    KEY: tl.constexpr,
    PENDING: tl.constexpr,
    CAP: tl.constexpr,
    SLOTS: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    ROW_BLOCK: tl.constexpr,
    DRAW_BLOCK: tl.constexpr,
    DRAW: tl.constexpr,
    CODED: tl.constexpr,
    FIXED: tl.constexpr,
    DEPENDENT: tl.constexpr,
):
    # The edge from the gathered bracket (the same code bisection, on a few hundred values in
    # registers), or from the whole row when a slot overflowed; the kept tokens are those
    # whose key is ≥ the edge, and q = e^{x − max x − shift} on them. Top-p's set is
    # {x ≥ floor}. Typical's is an interval of z, stored as {x ≥ floor} (its smallest x) and
    # a ceiling, its largest z. With DRAW, also the row's token, drawn from q's closed form
    # here (nothing written): the split from the gathered slots and the split parts above
    # the bracket, then that split's blocks summed in order up to the block that holds the
    # code's place (the whole row's, where the edge came from it or p = 1), and the token
    # in it. A code (CODED) or Philox's two uniforms (the second seed, philox_ptr) pick as
    # `draw.py`'s draw does, over its blocks (DRAW_BLOCK, which divides a split); this saves
    # a launch and a read of the row. With PENDING, rows whose token is drawn already solve
    # nothing.
    wait_for_the_kernel_before(DEPENDENT)
    row = tl.program_id(0)
    inv_tau, p, z_max, target, z, valid, overflow = _row_solve_inputs(
        inv_tau_ptr, p_ptr, max_ptr, sum_ptr, STAT_SPLITS, cand_x_ptr, cand_index_ptr,
        cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS, SPLIT_BLOCK,
    )  # fmt: skip
    centre = tl.load(centre_ptr + row)
    split_offs = tl.arange(0, SPLIT_BLOCK)
    in_row = split_offs < CAND_SPLITS
    aboves = tl.load(above_ptr + row * CAND_SPLITS + split_offs, mask=in_row, other=0.0)
    above = tl.sum(aboves, axis=0)
    floor = -float("inf")
    z_high = float("inf")
    kept = target / p  # Σ: p = 1 keeps every token
    pending = _pending(tokens_ptr, row, PENDING)
    # The draw's randomness (read only with DRAW), and its range: the whole row unless the
    # gathered bracket gives the split.
    position = tl.zeros((), tl.float64)
    fresh = position
    if DRAW:
        if CODED:
            position = tl.load(code_ptr + row)
        else:
            position, fresh = philox_uniforms(philox_ptr, row)
    begin = tl.zeros((), tl.int32)
    end = tl.zeros((), tl.int32) + V
    aim = tl.zeros((), tl.float64)
    total = aim
    in_a_split = tl.zeros((), tl.int1)
    if (p < 1.0) & pending:
        # An empty bracket can only come from rounding between the passes' sums: take the
        # whole row then too.
        if overflow | (tl.sum(valid.to(tl.int32), axis=0) == 0):
            z_row = z_ptr + row.to(tl.int64) * V
            edge = _edge_from_row(z_row, V, inv_tau, z_max, centre, target, KEY, ROW_BLOCK)
            kept = _row_mass(z_row, V, inv_tau, z_max, centre, edge, KEY, ROW_BLOCK)
            if KEY == TYPICAL:
                z_high, floor = _extremes_of_row(z_row, V, inv_tau, centre, edge, ROW_BLOCK)
            else:
                floor = float_of_code(edge)
        else:
            codes = code_of(_key(z, inv_tau, centre, KEY))
            e = tl.where(valid, tl.exp(inv_tau * (z - z_max)), 0.0)
            edge = _edge_among(codes, e, valid, above, target, FIXED)
            kept = above + _mass_among(e, codes >= edge, FIXED)
            inside = valid & (codes >= edge)
            if KEY == TYPICAL:
                # The set's ends: among the gathered tokens at or above the edge, and those
                # above the bracket (the gather's extremes).
                ends = extremes_ptr + (row * CAND_SPLITS + split_offs) * 2
                z_high = tl.maximum(
                    tl.max(tl.where(inside, z, -float("inf")), axis=0),
                    tl.max(tl.load(ends, mask=in_row, other=-float("inf")), axis=0),
                )
                floor = tl.minimum(
                    tl.min(tl.where(inside, z * inv_tau, float("inf")), axis=0),
                    tl.min(tl.load(ends + 1, mask=in_row, other=float("inf")), axis=0),
                )
            else:
                floor = float_of_code(edge)
            if DRAW:
                begin, end, aim, total = _split_of_draw(
                    z, z_max, inv_tau, inside, split_above_ptr, row, CAND_SPLITS, position,
                    CHUNK, V, CAP, SLOTS,
                )  # fmt: skip
                in_a_split = tl.full((), 1, tl.int1)
    tl.store(floor_ptr + row, floor)
    if KEY == TYPICAL:
        tl.store(ceiling_ptr + row, z_high)
    tl.store(shift_ptr + row, tl.log(kept))
    tl.store(zmax_ptr + row, z_max)
    if DRAW:
        # Elsewhere the draw takes the whole row, its mass the kept mass.
        total = tl.where(in_a_split, total, kept.to(tl.float64))
        aim = tl.where(in_a_split, aim, position * total)
        _draw_in_range(
            z_ptr + row.to(tl.int64) * V, begin, end, aim, total, inv_tau, z_max, floor,
            z_high, fresh, group_ptr, index_ptr, step_ptr, next_code_ptr, tokens_ptr, row,
            pending, CODED, KEY == TYPICAL, DRAW_BLOCK,
        )  # fmt: skip


@kernel
def _accept_proposals_kernel(
    z_ptr,
    inv_tau_ptr,
    p_ptr,
    centre_ptr,
    drawn_ptr,
    tops_ptr,
    above_ptr,
    max_ptr,
    sum_ptr,
    arrivals_ptr,
    tokens_ptr,
    picked_codes_ptr,
    redraw_code_ptr,
    next_code_ptr,
    V,
    CHUNK,
    BLOCKS,
    KEY: tl.constexpr,
    DRAWS: tl.constexpr,
    CODED: tl.constexpr,
    BLOCKS_POW2: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Per (row, split): for each of the row's DRAWS tokens drawn from softmax(x), the mass
    # Σ e^{x − max x} of the split's tokens with a larger key (x for top-p, −|x − c| for
    # typical), and the split's whole mass Σ, in `row_stats`' layout (the row's max z, the
    # sum relative to it) so that the edge's kernels can take them as the row's stats. The
    # row's last program to arrive keeps the first drawn token inside the set,
    # {key : mass(key' > key) < p·Σ} (key ≥ the edge, ties at the edge kept), or writes −1
    # when none is. With CODED (picks chained from a code, `draw_many_from_logits`) it also
    # writes the kept pick's next code, or for a row with none the code its last pick passed
    # on, to draw with at the edge.
    row, split, splits = program_position()
    inv_tau = tl.load(inv_tau_ptr + row)
    centre = tl.load(centre_ptr + row)
    blocks = tl.arange(0, BLOCKS_POW2)
    tops = tl.load(tops_ptr + row * BLOCKS + blocks, mask=blocks < BLOCKS, other=-float("inf"))
    z_max = finite_or_zero(tl.max(tops, axis=0))
    base = z_ptr + row.to(tl.int64) * V
    draw = tl.arange(0, DRAWS)
    drawn = tl.load(drawn_ptr + row * DRAWS + draw)
    key_drawn = _key(load_logits(base + drawn, drawn < V), inv_tau, centre, KEY)
    above = tl.zeros((DRAWS, BLOCK), tl.float32)
    total = tl.zeros((BLOCK,), tl.float32)
    begin, end = split_bounds(split, CHUNK, V)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(base + offs, offs < end)
        e = tl.exp(inv_tau * (z - z_max))
        total += e
        key = _key(z, inv_tau, centre, KEY)
        above += tl.where(key[None, :] > key_drawn[:, None], e[None, :], 0.0)
    slot = row * splits + split
    tl.store(above_ptr + slot * DRAWS + draw, tl.sum(above, axis=1))
    tl.store(sum_ptr + slot, tl.sum(total, axis=0))
    tl.store(max_ptr + slot, z_max)
    # As in the draw: the barrier and the release order this program's stores before its
    # arrival, the last program's acquire its loads after every arrival.
    tl.debug_barrier()
    if tl.atomic_add(arrivals_ptr + row, 1, sem="acq_rel", scope="gpu") == splits - 1:
        parts = tl.arange(0, SPLIT_BLOCK)
        present = parts < splits
        slots = row * splits + parts
        aboves = tl.load(above_ptr + slots[:, None] * DRAWS + draw[None, :],
                         mask=present[:, None], other=0.0, cache_modifier=".cg")  # fmt: skip
        sums = tl.load(sum_ptr + slots, mask=present, other=0.0, cache_modifier=".cg")
        p = tl.load(p_ptr + row)
        # p = 1 keeps every token drawn (its upper mass may round up to Σ).
        target = tl.where(p >= 1.0, float("inf"), p * tl.sum(sums, axis=0))
        inside = tl.sum(aboves, axis=0) < target
        first = tl.min(tl.where(inside, draw, DRAWS), axis=0)
        token = tl.sum(tl.where(draw == first, drawn, 0), axis=0)
        tl.store(tokens_ptr + row, tl.where(first < DRAWS, token, -1))
        if CODED:
            codes = tl.load(picked_codes_ptr + row * (DRAWS + 1) + draw)
            if first < DRAWS:
                tl.store(next_code_ptr + row, tl.sum(tl.where(draw == first, codes, 0.0), axis=0))
            else:
                tl.store(
                    redraw_code_ptr + row, tl.load(picked_codes_ptr + row * (DRAWS + 1) + DRAWS)
                )


@kernel
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
            top_k_mass = _row_mass(z_row, V, inv_tau, z_max, 0.0, code_of(kth), RAW, ROW_BLOCK)
            if top_k_mass >= target:
                edge = _edge_from_row(z_row, V, inv_tau, z_max, 0.0, target, RAW, ROW_BLOCK)
                floor = float_of_code(edge)
        else:
            codes = code_of(z)
            e = tl.where(valid, tl.exp(inv_tau * (z - z_max)), 0.0)
            if tl.sum(tl.where(codes >= code_of(kth), e, 0.0), axis=0) >= target:
                floor = float_of_code(_edge_among(codes, e, valid, 0.0, target, False))
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


def _edge_terms(flat: torch.Tensor, inv_tau: torch.Tensor, p: torch.Tensor, stats: RowStats,
                centre: torch.Tensor, key: int,
                draw: tuple[torch.Tensor | CodedDraw, torch.Tensor] | None = None,
                pending: bool = False) -> tuple[torch.Tensor, ...]:  # fmt: skip
    # Per row of flat [rows, V]: the floor on x = z·(1/τ), the shift and max z of
    # q = exp((z − max z)/τ − shift) on the kept set, and for typical the set's largest z.
    # With `draw` (`draw_seed`'s source, tokens int64 [rows]), also a token per row drawn
    # from q into tokens. With `pending`, only the rows whose token is −1 read z; the
    # others' terms are left unsolved.
    rows, vocab = flat.shape
    device = flat.device
    splits = gather_splits(vocab)
    chunk = chunk_for(vocab, splits, STREAM_BLOCK)
    split_block = pow2_at_least(max(stats.splits, splits), 16)
    source, tokens = (None, stats.sums) if draw is None else draw
    passes = PENDING_EDGE_PASSES if pending else EDGE_PASSES
    dependent = _dependent(flat)
    common = dict(KEY=key, PENDING=pending, PROFILE=passes.thresholds, SPLIT_BLOCK=split_block,
                  DEPENDENT=dependent, launch_pdl=dependent)  # fmt: skip
    # The profile's load in its sums' layout (`_top_p_profile_kernel`) where the passes
    # take more than one program per SM: on an H200 (`.gpu` A/B of stop 40, replayed,
    # medians of three) it made the coordinated top-p step 10% and 9% faster at B = 64 and
    # 256 (0.182 → 0.164 and 0.605 → 0.553 ms) but 12–15% slower at B = 1 and 8 (0.066 →
    # 0.075, 0.072 → 0.083), where one program per SM is bound by latency.
    programs, sms = rows * splits, sm_count(device)
    load_2d = programs > sms
    # The gather's places by atomics where more than two programs share an SM: on an H200
    # (`.gpu` A/B of stop 48, replayed, coordinated top-p), its block scans were faster at
    # B = 16 (256 programs) and slower from B = 32.
    atomic = programs > ATOMIC_GATHER_PER_SM * sms
    wide = not pending and programs >= WIDE_GRID * sms
    block = WIDE_GRID_BLOCK if wide else passes.block
    gather = WIDE_GATHER if wide else GATHER
    brackets = torch.empty(passes.levels, rows, 2, device=device, dtype=torch.float32)
    profiles = torch.empty(
        passes.levels, rows, splits, passes.thresholds, device=device, dtype=torch.float32
    )
    last = torch.empty(rows, device=device, dtype=torch.int32)  # each row's last level
    for level in range(passes.levels):
        _top_p_profile_kernel[(rows, splits)](
            flat, inv_tau, p, stats.maxes, stats.sums, stats.splits, centre, tokens, brackets,
            profiles, last, vocab, chunk, LEVEL=level, BLOCK=block, LOAD_2D=load_2d, CAP=CAP,
            num_warps=PROFILE_WARPS, **common,
        )  # fmt: skip
    candidates = Candidates.empty(rows, splits, device)
    above, split_above = torch.empty(2, rows, splits, device=device, dtype=torch.float32)
    extremes = torch.empty(rows, splits, 2, device=device, dtype=torch.float32)
    _top_p_gather_kernel[(rows, splits)](
        flat, inv_tau, p, stats.maxes, stats.sums, stats.splits, centre, tokens, brackets,
        profiles, last, candidates.x, candidates.index, candidates.count, above, split_above,
        extremes, vocab, chunk, CAP=CAP, BLOCK=gather.block, STAGES=gather.stages,
        ATOMIC=atomic, num_warps=gather.warps, **common,
    )  # fmt: skip
    floor, ceiling, shift, z_max = torch.empty(4, rows, device=device, dtype=torch.float32)
    _top_p_solve_kernel[(rows,)](
        flat, inv_tau, p, stats.maxes, stats.sums, stats.splits, centre, tokens, candidates.x,
        candidates.index, candidates.count, above, split_above, extremes, floor, ceiling,
        shift, z_max, *randomness_args(source, floor), vocab, chunk, splits, KEY=key,
        PENDING=pending, CAP=CAP, SLOTS=pow2_at_least(splits), SPLIT_BLOCK=split_block,
        ROW_BLOCK=BLOCK, DRAW_BLOCK=DRAW_BLOCK, DRAW=draw is not None,
        CODED=isinstance(source, CodedDraw), FIXED=atomic, DEPENDENT=dependent,
        launch_pdl=dependent, num_warps=SOLVE_WARPS,
    )  # fmt: skip
    return floor, shift, z_max, ceiling


def top_p_probs(z: torch.Tensor, inv_tau: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Top-p of softmax(z/τ) per row (z [..., V] float32 CUDA; 1/τ and p float32 [rows])."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    stats = row_stats(flat, inv_tau, dependent=_dependent(flat))
    floor, shift, z_max, _ = _edge_terms(flat, inv_tau, p, stats, inv_tau, NUCLEUS.value)
    return exp_affine(flat, inv_tau, z_max, shift, floor).reshape(z.shape)


def _propose_and_accept(
    flat: torch.Tensor,
    inv_tau: torch.Tensor,
    p: torch.Tensor,
    source: torch.Tensor | CodedDraw,
    arrivals: torch.Tensor,
    centre: torch.Tensor | None = None,
    key: int = NUCLEUS.value,
) -> tuple[torch.Tensor, RowStats, torch.Tensor, CodedDraw | None]:
    # PROPOSALS tokens per row from softmax(x), then per row the first of them inside the set
    # on `key` (top-p's nucleus; typical's set around `centre`) that holds mass p
    # (`_edge_terms`), or −1; the row's stats, as `row_stats` gives them, for the edge of
    # the rows left; the proposals [rows, PROPOSALS]. They are independent with a Philox
    # `source` (`draw_seed`'s, the first seed), or picks chained from the codes of a
    # `CodedDraw` (its next_value gets the kept pick's next code); then the fourth result is
    # the codes the rows left draw with at the edge (None for Philox). `arrivals`: zeroed
    # int32 [2, rows].
    rows, vocab = flat.shape
    device = flat.device
    centre = inv_tau if centre is None else centre
    coded = isinstance(source, CodedDraw)
    redraw = None
    if coded:
        picks = torch.empty(rows, PROPOSALS + 1, device=device, dtype=torch.float64)
        redraw = source._replace(value=torch.empty_like(source.value))
        source = source._replace(next_value=picks)
    drawn, tops = draw_many_from_logits(flat, inv_tau, source, arrivals[0], PROPOSALS)
    splits = splits_for(rows, vocab, device, per_sm=ACCEPT_PER_SM, block=ACCEPT_BLOCK)
    stats = RowStats(*torch.empty(2, rows, splits, device=device), None, None)
    above = torch.empty(rows, splits, PROPOSALS, device=device, dtype=torch.float32)
    tokens = torch.empty(rows, device=device, dtype=torch.int64)
    blocks = tops.shape[1]
    code_args = (picks, redraw.value, redraw.next_value) if coded else (above,) * 3
    _accept_proposals_kernel[(rows, splits)](
        flat, inv_tau, p, centre, drawn, tops, above, stats.maxes, stats.sums, arrivals[1],
        tokens, *code_args, vocab, chunk_for(vocab, splits, ACCEPT_BLOCK), blocks, KEY=key,
        DRAWS=PROPOSALS, CODED=coded, BLOCKS_POW2=pow2_at_least(blocks, 16),
        SPLIT_BLOCK=pow2_at_least(splits, 16), BLOCK=ACCEPT_BLOCK, num_warps=ACCEPT_WARPS,
    )  # fmt: skip
    return tokens, stats, drawn, redraw


def _head_edge(ceiling: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Typical's ceiling on z as `exp_affine`'s head edge (code, id): the tokens above it are
    # excluded (`streaming.affine_q`).
    no_id = torch.full(ceiling.shape, -1, device=ceiling.device, dtype=torch.int32)
    return ordered_codes(ceiling) - 2**31, no_id


def sample_at_the_edge(flat: torch.Tensor, inv_tau: torch.Tensor, p: torch.Tensor,
                       stats: RowStats, source: torch.Tensor | CodedDraw, tokens: torch.Tensor,
                       pending: bool = False, centre: torch.Tensor | None = None,
                       key: int = NUCLEUS.value) -> torch.Tensor:  # fmt: skip
    """A token per row of flat [rows, V] from top-p's q (or with `key` TYPICAL and its
    `centre`, typical's) by finding the edge and drawing from q's closed form in the edge's
    solve (nothing written), from the row's `stats` (`row_stats`' layout) and `draw_seed`'s
    `source`, into `tokens` (int64 [rows]), which it returns. With `pending`, only the rows
    whose token is −1 (the others read nothing)."""
    centre = inv_tau if centre is None else centre
    _edge_terms(flat, inv_tau, p, stats, centre, key, (source, tokens), pending)
    return tokens


def _sample(flat: torch.Tensor, inv_tau: torch.Tensor, p: torch.Tensor, stats: RowStats | None,
            centre: torch.Tensor, key: int, randomness: Randomness) -> torch.Tensor:  # fmt: skip
    # The sample of top-p (key NUCLEUS) or typical (TYPICAL): by rejection for Philox
    # randomness and codes `by_rejection`, the rows left at the edge; other coordinated
    # draws at the edge, over q's own buckets (`top_p_sample`). `stats`: the row's where
    # already taken (typical's, for its centre), else None: then a coordinated draw at the
    # edge takes them here and the rows left use the accept pass's.
    rows = flat.shape[0]
    coded = isinstance(randomness, CodedDraw)
    if coded and not randomness.by_rejection:
        stats = row_stats(flat, inv_tau, dependent=_dependent(flat)) if stats is None else stats
        tokens = torch.empty(rows, device=flat.device, dtype=torch.int64)
        return sample_at_the_edge(flat, inv_tau, p, stats, randomness, tokens, False, centre,
                                  key)  # fmt: skip
    arrivals = torch.empty(2, rows, device=flat.device, dtype=torch.int32)
    if coded:
        arrivals.zero_()
        source = randomness
    else:
        source = draw_seed(flat.device, randomness, clear=arrivals)
    tokens, accept_stats, _, redraw = _propose_and_accept(flat, inv_tau, p, source, arrivals,
                                                          centre, key)  # fmt: skip
    sample_at_the_edge(flat, inv_tau, p, accept_stats if stats is None else stats,
                       source[1:] if redraw is None else redraw, tokens, True, centre,
                       key)  # fmt: skip
    return tokens


def top_p_sample(
    z: torch.Tensor, inv_tau: torch.Tensor, p: torch.Tensor, randomness: Randomness
) -> torch.Tensor:
    """One token per row of z, distributed as `top_p_probs`' q, without writing q.

    With Philox randomness, by rejection: PROPOSALS tokens drawn from softmax(z/τ) in one
    read, and the first inside the nucleus kept (a second read measures the mass above
    each). A token drawn from p and kept only inside the nucleus N is distributed as p on
    N, that is as q, whatever came before; each proposal lands in N with probability
    p(N) ≥ p. Rows where none did (at most (1 − p)⁴ of them: 10⁻⁴ at p = 0.9) take
    `sample_at_the_edge` with the second seed; the other rows skip its passes. Coordinated
    draws (codes) need q's own order, so they take `sample_at_the_edge`; codes
    `by_rejection` do as Philox's uniforms do, with picks chained from each code as the
    torch path's `coordinated.coordinated_sample_in_set` chains them (the rows left draw at
    the edge with the code their last pick passed on)."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    tokens = _sample(flat, inv_tau, p, None, inv_tau, NUCLEUS.value, randomness)
    return tokens.reshape(z.shape[:-1])


def _typical_centre(flat: torch.Tensor, inv_tau: torch.Tensor) -> tuple[RowStats, torch.Tensor]:
    # Typical keeps the fewest tokens nearest c = E_p[x] in x = z·(1/τ) (|−log p − H| =
    # |x − c|) that reach the mass: the edge on the key −|x − c|. The row's stats (with the
    # entropy's sum) and c.
    stats = row_stats(flat, inv_tau, moment=True, finish=True, dependent=_dependent(flat))
    # log Σ − H = E_p[x − max x]
    return stats, stats.z_max * inv_tau + (stats.log_sum - stats.entropy)


def typical_probs(z: torch.Tensor, inv_tau: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """The locally typical set of softmax(z/τ) per row (z [..., V] float32 CUDA; 1/τ and
    mass float32 [rows]), q renormalised on it: q's floor on x and the set's ceiling on z
    (a head edge, the tokens above it excluded)."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    stats, centre = _typical_centre(flat, inv_tau)
    floor, shift, z_max, ceiling = _edge_terms(flat, inv_tau, mass, stats, centre, TYPICAL.value)
    q = exp_affine(flat, inv_tau, z_max, shift, floor, head_edge=_head_edge(ceiling))
    return q.reshape(z.shape)


def typical_sample(
    z: torch.Tensor, inv_tau: torch.Tensor, mass: torch.Tensor, randomness: Randomness
) -> torch.Tensor:
    """One token per row of z, distributed as `typical_probs`' q, without writing q: as
    `top_p_sample`, on the key −|x − E_p[x]| (one more read first, for the centre)."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    stats, centre = _typical_centre(flat, inv_tau)
    tokens = _sample(flat, inv_tau, mass, stats, centre, TYPICAL.value, randomness)
    return tokens.reshape(z.shape[:-1])
