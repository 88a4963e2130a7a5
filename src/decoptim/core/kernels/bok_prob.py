"""Best-of-K with probability weights (w = p) on CUDA: the exact solver and mirror ascent of
step 1/λ, in five launches and three streaming passes over z (q), or for a sample two
and, on the rows whose sample is in the tail, a third.

With A_v = c·(z_v − max z) (log p + s/λ − 1 up to a row constant) and b_v = βK·p_v, the
exact solution is u_v = A_v − t + b_v·(1 − e^{u_v})^{K−1}, and a mirror step of size 1/λ is
log q_v ← A_v + b_v·(1 − q_v)^{K−1} − (normaliser). The coverage factor (1 − q_v)^{K−1}
moves a token's u by at most b_v·(K−1)·q_v, and every iterate obeys
q_v ≤ r_v·e^{b_v}, r = softmax(A) (the β = 0 optimum). So a token with

    ρ_v = βK(K−1) · p_v · r_v · e^{βK·max p} < ε = 2⁻²³   (float32 resolution)

is solved in closed form, u_v = A_v + b_v − t, its relative error below ε. ρ_v grows with z_v,
so these tokens are those below one bound per row, and Σ_v √(p_v r_v) ≤ 1 caps the others
at 1/√(ρ-threshold) (a few dozen on language-model rows).

Mirror's first step starts from q₀ = p, which need not obey that bound: a tail token's
coverage factor (1 − p_v)^{K−1} moves A_v + b_v by δ_v ≤ b_v(K−1)p_v (K is a whole number).
Its q is then off by a factor e^{−δ_v}, but the tail's mass is not: with Z the step's
normaliser, e^{A_v}/Z ≤ r_v, so the tail's mass moves by at most
Σ_tail r_v·e^{b_v}·βK(K−1)·p_v² ≤ Σ_tail ρ_v·p_v < ε of the total. So every step's tail mass
is the one closed form Σ exp(A + b), which the gather sums, and only a token's own q after a
single step (written, or drawn from the tail) takes its factor (`bok_terms`).
1. Per row: max z, LSE(c·(z − max z)) and LSE((z − max z)/τ_p).
2. Gather the tokens above the bound (the head) and sum the tail's closed-form mass.
3. One program per row solves the head in registers, with the tail as one log-mass: the
   same nested Newton as the top-M path, or the mirror steps: heads of at most SMALL_HEAD
   tokens by a two-warp program of a launch of their own, larger ones by an eight-warp
   one, which also solves a row whose head overflows its slots over the whole row, with
   no tail approximation.
4. Write q = exp(A + b − shift) and put the head's values in place.

Sampling never writes q (`bok_prob_sample`): step 3 also draws between the head's tokens
and the tail as one entrant of its mass (`bok_head.head_or_tail`, as the top-M path), and
only rows whose sample is in the tail draw from its closed form (`bok_terms.tail_q`, the
head left out by the gather's own bound), reading z once; a row that overflowed draws
from the q its solve wrote.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .bok_head import head_or_tail
from .bok_newton import inner_roots, log_mass, outer_step, phi_and_slope, solve_row
from .bok_terms import (
    BETA_K,
    GAP,
    INV_TAU_P,
    LSE_P,
    ROW_TERMS,
    SHIFT,
    Z_MAX,
    C,
    K,
    in_prob_head,
    mirror_exponent,
    prob_terms,
    tail_q,
)
from .candidates import (
    CAP,
    COMPACT,
    GATHER_BLOCK,
    ROW_WARPS,
    Candidates,
    append_to_slot,
    candidate_counts,
    compact,
    compact_scratch,
    gather_splits,
    load_candidates,
    load_few_candidates,
)
from .draw import (
    OVERFLOWED,
    CodedDraw,
    Randomness,
    draw_prob_tail,
    draw_seed,
    draw_targets,
    randomness_args,
)
from .launch import kernel
from .streaming import (
    BLOCK,
    chunk_for,
    load_logits,
    pow2_at_least,
    program_position,
    row_lse,
    row_stats,
    split_bounds,
)

# log of float32's machine epsilon, 2⁻²³: the tail's closed form is within it.
LOG_EPS = tl.constexpr(-15.942385152878742)


@triton.jit
def _row_params(c_ptr, inv_tau_p_ptr, betak_ptr, k_ptr, row):
    # The row's problem: c (A_v = c·(z_v − max z)), 1/τ_p, βK and K.
    return (tl.load(c_ptr + row), tl.load(inv_tau_p_ptr + row), tl.load(betak_ptr + row),
            tl.load(k_ptr + row))  # fmt: skip


@triton.jit
def _row_terms(max_ptr, sum_c_ptr, sum_p_ptr, row, SPLITS, c, inv_tau_p, beta_k,
               SPLIT_BLOCK: tl.constexpr):  # fmt: skip
    # max z, LSE(c·(z − max z)), LSE((z − max z)/τ_p), and max_v (A_v + b_v) = βK·max p.
    z_max, lse_c = row_lse(max_ptr, sum_c_ptr, row, SPLITS, c, SPLIT_BLOCK)
    _, lse_p = row_lse(max_ptr, sum_p_ptr, row, SPLITS, inv_tau_p, SPLIT_BLOCK)
    return z_max, lse_c, lse_p, beta_k * tl.exp(-lse_p)


@kernel
def _prob_gather_kernel(
    z_ptr,
    max_ptr,
    sum_c_ptr,
    sum_p_ptr,
    c_ptr,
    inv_tau_p_ptr,
    betak_ptr,
    k_ptr,
    x_out_ptr,
    index_out_ptr,
    count_ptr,
    tail_ptr,
    terms_ptr,
    V,
    CHUNK,
    STAT_SPLITS,
    CAP: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
    STAGES: tl.constexpr,
):
    # Per (row, split): the head tokens (ρ_v ≥ ε) into the split's slot, and the tail's
    # Σ exp(A + b − top), every solver's and step's tail mass (the module's docstring).
    # Split 0 stores the row's gap, by which the later kernels tell the head from the tail.
    row, split, splits = program_position()
    c, inv_tau_p, beta_k, k = _row_params(c_ptr, inv_tau_p_ptr, betak_ptr, k_ptr, row)
    z_max, lse_c, lse_p, top = _row_terms(
        max_ptr, sum_c_ptr, sum_p_ptr, row, STAT_SPLITS, c, inv_tau_p, beta_k, SPLIT_BLOCK
    )
    # Head iff log ρ_v ≥ log ε, i.e. (1/τ_p + c)(z_v − max z) ≥ gap; K = 1 or β = 0 make
    # the gap +inf (no head: the closed form is then exact).
    gap = LOG_EPS - tl.log(beta_k * (k - 1.0)) - top + lse_p + lse_c
    if split == 0:
        tl.store(terms_ptr + row * ROW_TERMS + GAP, gap)
    slope = inv_tau_p + c
    base = row.to(tl.int64) * V
    slot = (row * splits + split).to(tl.int64) * CAP
    begin, end = split_bounds(split, CHUNK, V)
    found = tl.zeros((), tl.int32)
    # The tail's sum is kept per lane and reduced once, after the loop: a reduction per
    # block is an exchange through shared memory and a barrier.
    tail = tl.zeros((BLOCK,), tl.float32)
    for start in tl.range(begin, end, BLOCK, num_stages=STAGES):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < end
        z = load_logits(z_ptr + base + offs, inside)
        keep = inside & in_prob_head(z, z_max, slope, gap)
        found = append_to_slot(z, offs, keep, found, x_out_ptr, index_out_ptr, slot, CAP)
        a, _, b = prob_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
        tail += tl.where(inside & ~keep, tl.exp(a + b - top), 0.0)
    tl.store(count_ptr + row * splits + split, found)
    tl.store(tail_ptr + row * splits + split, tl.sum(tail, axis=0))


@triton.jit
def _solve_full_row(z_ptr, q_ptr, V, z_max, c, inv_tau_p, lse_p, beta_k, k, top,
                    OUTER: tl.constexpr, INNER: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    # The exact solve over every token of the row (no tail), u kept in q's row between
    # passes: `solve_row` with each sum taken block by block. The fallback for overflow.
    s_lo = 0.0
    s_hi = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        a, _, b = prob_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
        s_lo += tl.sum(tl.exp(a), axis=0)
        s_hi += tl.sum(tl.exp(a + b - top), axis=0)
    t_lo = tl.log(s_lo)
    t_hi = tl.log(s_hi) + top
    t = t_lo
    for start in range(0, V, BLOCK):  # the first warm start, u = A − t
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        a, _, _ = prob_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
        tl.store(q_ptr + offs, tl.maximum(a, -1e30) - t, mask=offs < V)
    last_step = t_hi - t_lo
    before_last = last_step
    for _outer in range(OUTER):
        total, moving = _full_row_inner(
            z_ptr, q_ptr, V, t, z_max, c, inv_tau_p, lse_p, beta_k, k, INNER, BLOCK
        )
        g = tl.log(total)
        t, t_lo, t_hi, last_step, before_last = outer_step(
            t, t_lo, t_hi, g, -moving / total, last_step, before_last
        )
    total, _ = _full_row_inner(
        z_ptr, q_ptr, V, t, z_max, c, inv_tau_p, lse_p, beta_k, k, 2 * INNER, BLOCK
    )
    _exp_in_place(q_ptr, V, tl.log(total), BLOCK)


@triton.jit
def _exp_in_place(q_ptr, V, log_total, BLOCK: tl.constexpr):
    # The full-row solvers keep log q (unnormalised) in q's row: q = exp(log q − log Σ).
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(q_ptr + offs, mask=offs < V, other=-float("inf"))
        tl.store(q_ptr + offs, tl.exp(x - log_total), mask=offs < V)


@triton.jit
def _full_row_inner(z_ptr, q_ptr, V, t, z_max, c, inv_tau_p, lse_p, beta_k, k,
                    ITERATIONS: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    # One inner solve over the row at t, warm-started from the u stored in q's row: stores
    # the new u, returns Σ e^u and Σ_{u<0} e^u / φ'(u).
    total = 0.0
    moving = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < V
        z = load_logits(z_ptr + offs, inside)
        a, _, b = prob_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
        b = tl.where(a == -float("inf"), 0.0, b)
        a = tl.maximum(a, -1e30)
        warm = tl.load(q_ptr + offs, mask=inside, other=0.0)
        u = inner_roots(warm, a - t, b, k, ITERATIONS)
        tl.store(q_ptr + offs, u, mask=inside)
        _, slope = phi_and_slope(u, a - t, b, k)
        e = tl.where(inside, tl.exp(u), 0.0)
        total += tl.sum(e, axis=0)
        moving += tl.sum(tl.where(u < 0, e / slope, 0.0), axis=0)
    return total, moving


@triton.jit
def _mirror_full_row(z_ptr, q_ptr, V, z_max, c, inv_tau_p, lse_p, beta_k, k, top, STEPS,
                     BLOCK: tl.constexpr):  # fmt: skip
    # Mirror steps over every token of the row, log q (unnormalised) kept in q's row.
    log_total = 0.0
    for step in range(STEPS):
        total = 0.0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < V
            z = load_logits(z_ptr + offs, inside)
            a, p, b = prob_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
            previous = tl.load(q_ptr + offs, mask=inside & (step > 0), other=0.0)
            q = tl.where(step == 0, p, tl.exp(previous - log_total))
            x = mirror_exponent(a, b, q, k)
            tl.store(q_ptr + offs, x, mask=inside)
            total += tl.sum(tl.where(inside, tl.exp(x - top), 0.0), axis=0)
        log_total = tl.log(total) + top
    _exp_in_place(q_ptr, V, log_total, BLOCK)


@triton.jit
def _solve_head(x, z_max, c, inv_tau_p, lse_p, beta_k, k, tail, STEPS, MIRROR: tl.constexpr,
                OUTER: tl.constexpr, INNER: tl.constexpr):  # fmt: skip
    # q on the head tokens x (−inf lanes are empty) and the tail's shift, given the tail's
    # log-mass, log Σ exp(A + b): every mirror step's, the first's to within ε (the
    # module's docstring).
    a, p, b = prob_terms(x, z_max, c, inv_tau_p, lse_p, beta_k)
    if MIRROR:
        log_x = mirror_exponent(a, b, p, k)
        log_total = log_mass(log_x, tail)
        for _step in range(STEPS - 1):
            q = tl.exp(log_x - log_total)
            log_x = mirror_exponent(a, b, q, k)
            log_total = log_mass(log_x, tail)
        return tl.exp(log_x - log_total), log_total
    else:
        u, t, log_z = solve_row(a, b, k, tail, OUTER, INNER)
        return tl.exp(u - log_z), t + log_z


@triton.jit
def _head_q_or_token(x, where, valid, z_max, c, inv_tau_p, lse_p, beta_k, k, tail, STEPS,
                     q_head_ptr, token_ptr, seed_ptr, code_ptr, group_ptr, index_ptr, step_ptr,
                     next_code_ptr, tail_code_ptr, code_scale_ptr, row, WIDTH: tl.constexpr,
                     MIRROR: tl.constexpr, OUTER: tl.constexpr, INNER: tl.constexpr,
                     SAMPLE: tl.constexpr, CODED: tl.constexpr):  # fmt: skip
    # Solve the head x (`valid` lanes) and store its q at the slot positions `where`, or with
    # SAMPLE draw the row's token (`where`: the head's ids). Returns the tail's shift.
    q_head, shift = _solve_head(x, z_max, c, inv_tau_p, lse_p, beta_k, k, tail, STEPS, MIRROR,
                                OUTER, INNER)  # fmt: skip
    if SAMPLE:
        # The tail's mass is that of its log-mass in the head's normaliser; counters
        # row·WIDTH + lane, WIDTH the unpacked head's lanes, are distinct across rows whether
        # or not a row's head was packed.
        tail_mass = tl.exp(tail - shift)
        token = head_or_tail(q_head, where, valid, tail_mass, tl.arange(0, x.shape[0]), row,
                             WIDTH, seed_ptr, code_ptr, group_ptr, index_ptr, step_ptr,
                             next_code_ptr, tail_code_ptr, code_scale_ptr, CODED)  # fmt: skip
        tl.store(token_ptr + row, token)
    else:
        tl.store(q_head_ptr + where, q_head, mask=valid)
    return shift


@kernel
def _prob_head_kernel(
    z_ptr,
    q_ptr,
    max_ptr,
    sum_c_ptr,
    sum_p_ptr,
    c_ptr,
    inv_tau_p_ptr,
    betak_ptr,
    k_ptr,
    cand_x_ptr,
    cand_index_ptr,
    cand_count_ptr,
    tail_ptr,
    scratch_x_ptr,
    scratch_index_ptr,
    qhead_ptr,
    terms_ptr,
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
    V,
    STAT_SPLITS,
    CAND_SPLITS,
    STEPS,
    MIRROR: tl.constexpr,
    OUTER: tl.constexpr,
    INNER: tl.constexpr,
    CAP: tl.constexpr,
    SLOTS: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    ROW_BLOCK: tl.constexpr,
    SAMPLE: tl.constexpr,
    CODED: tl.constexpr,
    SMALL: tl.constexpr,
):
    # Solve the head against the tail's log-mass, and store the row's terms (`bok_terms`)
    # for the tail's q. An overflowing row is solved over the whole row, q written in full.
    # Without SAMPLE, the head's q goes to its candidate slot positions. With SAMPLE, the
    # row's sample is drawn among the head's tokens and the tail as one entrant
    # (`bok_head.head_or_tail`): the token, −1 for the tail, or OVERFLOWED. Heads of at
    # most SMALL_HEAD tokens are left to a second launch with SMALL, after this one: it
    # reads them straight from their slots and solves them as here, its q stored or the
    # row's token drawn, and stores the tail's shift (see SMALL_HEAD).
    row = tl.program_id(0)
    counts = candidate_counts(cand_count_ptr, row, CAND_SPLITS, SPLIT_BLOCK)
    if SMALL:
        if tl.sum(counts, axis=0) <= SMALL_HEAD:
            c, inv_tau_p, beta_k, k = _row_params(c_ptr, inv_tau_p_ptr, betak_ptr, k_ptr, row)
            z_max, _lse_c, lse_p, top = _row_terms(
                max_ptr, sum_c_ptr, sum_p_ptr, row, STAT_SPLITS, c, inv_tau_p, beta_k, SPLIT_BLOCK
            )
            tail = _tail_log_mass(tail_ptr, row, CAND_SPLITS, top, SPLIT_BLOCK)
            x, ids, valid, position = load_few_candidates(
                cand_x_ptr, cand_index_ptr, counts, row, CAND_SPLITS, CAP, SPLIT_BLOCK, SMALL_HEAD
            )
            shift = _head_q_or_token(
                x, ids if SAMPLE else position, valid, z_max, c, inv_tau_p, lse_p, beta_k, k, tail,
                STEPS, qhead_ptr + row.to(tl.int64) * CAND_SPLITS * CAP, token_ptr,
                seed_ptr, code_ptr, group_ptr, index_ptr, step_ptr, next_code_ptr, tail_code_ptr,
                code_scale_ptr, row, SLOTS * CAP, MIRROR, OUTER, INNER, SAMPLE, CODED,
            )  # fmt: skip
            tl.store(terms_ptr + row * ROW_TERMS + SHIFT, shift)
    else:
        c, inv_tau_p, beta_k, k = _row_params(c_ptr, inv_tau_p_ptr, betak_ptr, k_ptr, row)
        z_max, _lse_c, lse_p, top = _row_terms(
            max_ptr, sum_c_ptr, sum_p_ptr, row, STAT_SPLITS, c, inv_tau_p, beta_k, SPLIT_BLOCK
        )
        many = tl.sum(counts, axis=0) > SMALL_HEAD
        shift = 0.0
        if many:
            x, ids, valid, overflow = load_candidates(
                cand_x_ptr, cand_index_ptr, cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS
            )
            tail = _tail_log_mass(tail_ptr, row, CAND_SPLITS, top, SPLIT_BLOCK)
            if overflow:
                z_row = z_ptr + row.to(tl.int64) * V
                q_row = q_ptr + row.to(tl.int64) * V
                if MIRROR:
                    _mirror_full_row(z_row, q_row, V, z_max, c, inv_tau_p, lse_p, beta_k, k, top,
                                     STEPS, ROW_BLOCK)  # fmt: skip
                else:
                    _solve_full_row(z_row, q_row, V, z_max, c, inv_tau_p, lse_p, beta_k, k, top,
                                    OUTER, INNER, ROW_BLOCK)  # fmt: skip
                if SAMPLE:
                    # The draw reads this row's written q, with the row's own code (not remapped).
                    tl.store(token_ptr + row, OVERFLOWED)
                    if CODED:
                        tl.store(tail_code_ptr + row, tl.load(code_ptr + row))
                        tl.store(code_scale_ptr + row, tl.full((), 1.0, tl.float64))
            else:
                # Where the head's q goes: its slot positions (probs), or with its ids to the draw.
                where = ids if SAMPLE else tl.arange(0, SLOTS * CAP)
                q_head_ptr = qhead_ptr + row.to(tl.int64) * CAND_SPLITS * CAP
                if tl.sum(valid.to(tl.int32), axis=0) <= COMPACT:
                    packed_x, packed_where, packed = compact(
                        x, where, valid, scratch_x_ptr, scratch_index_ptr, row, SLOTS * CAP,
                        COMPACT,
                    )  # fmt: skip
                    shift = _head_q_or_token(
                        packed_x, packed_where, packed, z_max, c, inv_tau_p, lse_p, beta_k, k,
                        tail, STEPS, q_head_ptr, token_ptr, seed_ptr, code_ptr, group_ptr,
                        index_ptr, step_ptr, next_code_ptr, tail_code_ptr, code_scale_ptr, row,
                        SLOTS * CAP, MIRROR, OUTER, INNER, SAMPLE, CODED,
                    )  # fmt: skip
                else:
                    shift = _head_q_or_token(
                        x, where, valid, z_max, c, inv_tau_p, lse_p, beta_k, k, tail, STEPS,
                        q_head_ptr, token_ptr, seed_ptr, code_ptr, group_ptr, index_ptr, step_ptr,
                        next_code_ptr, tail_code_ptr, code_scale_ptr, row, SLOTS * CAP, MIRROR,
                        OUTER, INNER, SAMPLE, CODED,
                    )  # fmt: skip
        if SAMPLE:
            tl.store(arrivals_ptr + row, 0)
        row_terms = terms_ptr + row * ROW_TERMS
        tl.store(row_terms + Z_MAX, z_max)
        tl.store(row_terms + LSE_P, lse_p)
        if many:
            tl.store(row_terms + SHIFT, shift)
        tl.store(row_terms + C, c)
        tl.store(row_terms + INV_TAU_P, inv_tau_p)
        tl.store(row_terms + BETA_K, beta_k)
        tl.store(row_terms + K, k)


@triton.jit
def _tail_log_mass(tail_ptr, row, SPLITS, top, SPLIT_BLOCK: tl.constexpr):
    # The tail's log-mass, log Σ exp(A + b), from the gather's per-split sums.
    offs = tl.arange(0, SPLIT_BLOCK)
    tails = tl.load(tail_ptr + row * SPLITS + offs, mask=offs < SPLITS, other=0.0)
    return tl.log(tl.sum(tails, axis=0)) + top


# Heads of at most this many tokens (a few dozen on language-model rows) are solved by
# `_prob_head_kernel`'s SMALL launch with two warps, read straight from their slots: each of
# Newton's and the draw's sums then crosses two warps, where its other launch's eight
# (sized for the candidates' SLOTS·CAP lanes and the full-row fallback) exchange through
# shared memory. On an H200 (stop 44, call 2, `bench/bok_prob_sweep.py`'s loop, the head
# then packed through a scratch; replayed sample, exact, 1/2/4 warps): 0.0736/0.0701/0.0729
# ms at B = 64, 0.1742/0.1683/0.1686 at B = 256; stop 43's package 0.0762 and 0.1969.
SMALL_HEAD = tl.constexpr(64)
SMALL_HEAD_WARPS = 2


@kernel
def _prob_write_kernel(
    z_ptr,
    q_ptr,
    cand_index_ptr,
    cand_count_ptr,
    qhead_ptr,
    terms_ptr,
    V,
    CHUNK,
    FIRST_STEP: tl.constexpr,
    CAP: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # The tail's q over the split's chunk (`bok_terms.tail_q`), then the head's values at
    # their ids. Rows that overflowed are already written.
    row, split, splits = program_position()
    split_offs = tl.arange(0, SPLIT_BLOCK)
    counts = tl.load(cand_count_ptr + row * splits + split_offs, mask=split_offs < splits, other=0)
    if tl.max(counts, axis=0) <= CAP:
        base = row.to(tl.int64) * V
        begin, end = split_bounds(split, CHUNK, V)
        for start in range(begin, end, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < end
            q = tail_q(load_logits(z_ptr + base + offs, inside), terms_ptr, row, FIRST_STEP)
            tl.store(q_ptr + base + offs, q, mask=inside)
        # The head's ids lie in this program's chunk; its tail values above must land first.
        tl.debug_barrier()
        lanes = tl.arange(0, CAP)
        slot = (row * splits + split).to(tl.int64) * CAP
        mine = lanes < tl.load(cand_count_ptr + row * splits + split)
        index = tl.load(cand_index_ptr + slot + lanes, mask=mine, other=0)
        q_head = tl.load(qhead_ptr + slot + lanes, mask=mine, other=0.0)
        tl.store(q_ptr + base + index, q_head, mask=mine)


# Blocks of the gather whose loads are in flight at once (`tl.range(num_stages=)`). On an
# H200 (stop 43, replayed, ms for 1/2/3 stages): exact 0.2502/0.2027/0.1973 at B = 256 and
# 0.0820/0.0773/0.0763 at B = 64; mirror 5 0.2939/0.2344/0.2388 and 0.0845/0.0799/0.0795.
# Since the tail's sums are kept per lane (stop 44, call 3, `bench/bok_prob_sweep.py`'s
# loop, block/stages 1024/2, 1024/3, 2048/2, 2048/1, exact): 0.1643, 0.1686, 0.1953, 0.2800
# ms at B = 256 and 0.0694, 0.0726, 0.0800, 0.0921 at B = 64.
GATHER_STAGES = 2


def _chunk(vocab: int, splits: int) -> int:
    # Each (row, split) program's tokens, the same for the gather and the write: the head's
    # ids that a write program puts in place are those its gather program kept. Whole
    # GATHER_BLOCKs: on an H200 (stop 43, replayed) 1024-token blocks took the sample from
    # 0.266 to 0.249 ms at B = 256 and 0.089 to 0.082 at B = 64 against 2048 (exact).
    return chunk_for(vocab, splits, GATHER_BLOCK)


class ProbProblem(NamedTuple):
    """Best-of-K w = p's problem per flat row: c = 1/τ_p + 1/(λτ_s), 1/τ_p, βK and K
    (float32 [rows]); mirror steps (0: the exact solver); the Newton solve's outer and
    inner iteration budgets."""

    c: torch.Tensor
    inv_tau_p: torch.Tensor
    beta_k: torch.Tensor
    k: torch.Tensor
    steps: int
    outer: int
    inner: int


def _solve(flat: torch.Tensor, problem: ProbProblem, seed: torch.Tensor | CodedDraw | None = None):
    # Steps 1–3 of the module's docstring over flat rows: returns q (written on overflowing
    # rows only), the candidates, the head's q by slot, the row terms and, with `seed`
    # (`draw.draw_seed`'s), the head's draw: tokens and arrivals (`draw.draw_targets`), and
    # for codes the tail's codes and scales.
    rows, vocab = flat.shape
    device = flat.device
    c, inv_tau_p, beta_k, k, steps, outer, inner = problem
    stats = row_stats(flat, c, c2=inv_tau_p)
    splits = gather_splits(vocab)
    chunk = _chunk(vocab, splits)
    candidates = Candidates.empty(rows, splits, device)
    tails = torch.empty(rows, splits, device=device, dtype=torch.float32)
    terms = torch.empty(rows, ROW_TERMS.value, device=device, dtype=torch.float32)
    split_block = pow2_at_least(max(stats.splits, splits), 16)
    mirror = steps > 0
    _prob_gather_kernel[(rows, splits)](
        flat, stats.maxes, stats.sums, stats.sums2, c, inv_tau_p, beta_k, k,
        candidates.x, candidates.index, candidates.count, tails, terms, vocab, chunk,
        stats.splits, CAP=CAP, SPLIT_BLOCK=split_block, BLOCK=GATHER_BLOCK, STAGES=GATHER_STAGES,
        num_warps=4,
    )  # fmt: skip
    q = torch.empty_like(flat)
    q_head = torch.empty(rows, splits, CAP, device=device, dtype=torch.float32)
    coded = isinstance(seed, CodedDraw)
    targets = draw_targets(rows, device)
    # A coded head writes, per row, the code remapped onto the tail and its scale.
    tail_codes = (torch.empty_like(seed.value), torch.empty_like(seed.value)) if coded else None
    randomness = (*randomness_args(seed, terms), *(tail_codes or (terms, terms)))
    flags = dict(MIRROR=mirror, OUTER=outer, INNER=inner, CAP=CAP, SLOTS=pow2_at_least(splits),
                 SPLIT_BLOCK=split_block, SAMPLE=seed is not None, CODED=coded)  # fmt: skip
    arguments = (
        flat, q, stats.maxes, stats.sums, stats.sums2, c, inv_tau_p, beta_k, k,
        candidates.x, candidates.index, candidates.count, tails,
        *compact_scratch(rows, pow2_at_least(splits) * CAP, device), q_head, terms, *targets,
        *randomness, vocab, stats.splits, splits, steps,
    )  # fmt: skip
    for small, warps in ((False, ROW_WARPS), (True, SMALL_HEAD_WARPS)):
        _prob_head_kernel[(rows,)](*arguments, ROW_BLOCK=1024, SMALL=small, num_warps=warps,
                                   **flags)  # fmt: skip
    return q, candidates, q_head, terms, targets, tail_codes


def bok_prob_probs(z: torch.Tensor, problem: ProbProblem) -> torch.Tensor:
    """q for logits z ([..., V], float32 CUDA) with w = p: the exact solution (steps = 0)
    or `steps` mirror steps of size 1/λ from q₀ = p; the problem's rows z's flat rows."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    rows, vocab = flat.shape
    q, candidates, q_head, terms, _, _ = _solve(flat, problem)
    splits = candidates.splits
    _prob_write_kernel[(rows, splits)](
        flat, q, candidates.index, candidates.count, q_head, terms, vocab,
        _chunk(vocab, splits),
        FIRST_STEP=problem.steps == 1, CAP=CAP, SPLIT_BLOCK=pow2_at_least(splits, 16),
        BLOCK=BLOCK, num_warps=4,
    )  # fmt: skip
    return q.reshape(z.shape)


def bok_prob_sample(
    z: torch.Tensor, problem: ProbProblem, randomness: Randomness = None
) -> torch.Tensor:
    """One token per row of z ([..., V], float32 CUDA), drawn from `bok_prob_probs`' q
    without writing q: the head's solve also draws between its tokens and the tail as one
    entrant, and only rows whose sample is in the tail draw from the tail's closed form,
    reading z once. `randomness`: a generator (or None) for Philox seeds, or a
    `draw.CodedDraw` (the head's order first, then the tail's, as `bok_topm_sample`)."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    seed = draw_seed(z.device, randomness)
    q, _, _, terms, targets, tail_codes = _solve(flat, problem, seed)
    coded = isinstance(seed, CodedDraw)
    source = seed._replace(value=tail_codes[0]) if coded else seed
    tokens = draw_prob_tail(flat, terms, q, source, targets, first_step=problem.steps == 1,
                            code_scale=tail_codes[1] if coded else None)  # fmt: skip
    return tokens.reshape(z.shape[:-1])
