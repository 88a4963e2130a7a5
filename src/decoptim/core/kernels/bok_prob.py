"""Best-of-K with probability weights (w = p) on CUDA: the exact solver and mirror ascent of
step 1/λ, in four launches and three streaming passes over z.

With A_v = c·(z_v − max z) (log p + s/λ − 1 up to a row constant) and b_v = βK·p_v, the
exact solution is u_v = A_v − t + b_v·(1 − e^{u_v})^{K−1}, and a mirror step of size 1/λ is
log q_v ← A_v + b_v·(1 − q_v)^{K−1} − (normaliser). The coverage factor (1 − q_v)^{K−1}
moves a token's u by at most b_v·(K−1)·q_v, and every iterate obeys
q_v ≤ r_v·e^{b_v}, r = softmax(A) (the β = 0 optimum). So a token with

    ρ_v = βK(K−1) · p_v · r_v · e^{βK·max p} < ε = 2⁻²³   (float32 resolution)

is solved in closed form, u_v = A_v + b_v − t, its relative error below ε. ρ_v grows with z_v,
so these tokens are those below one bound per row, and Σ_v √(p_v r_v) ≤ 1 caps the others
at 1/√(ρ-threshold) (a few dozen on language-model rows).
1. Per row: max z, LSE(c·(z − max z)) and LSE((z − max z)/τ_p).
2. Gather the tokens above the bound (the head) and sum the tail's closed-form mass.
3. One program per row solves the head in registers, with the tail as one log-mass: the
   same nested Newton as the top-M path, or the mirror steps. A row whose head overflows
   its slots is solved over the whole row by the same program, with no tail approximation.
4. Write q = exp(A + b − shift) and put the head's values in place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .bok_newton import inner_roots, log_mass, outer_step, phi_and_slope, safe_pow, solve_row
from .candidates import (
    CAP,
    COMPACT,
    ROW_WARPS,
    Candidates,
    append_to_slot,
    compact,
    compact_scratch,
    gather_splits,
    load_candidates,
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


@triton.jit
def _token_terms(z, z_max, c, inv_tau_p, lse_p, beta_k):
    # A, p and b = βK·p of each token (A = −inf, p = b = 0 for masked tokens).
    d = z - z_max
    p = tl.exp(d * inv_tau_p - lse_p)
    return c * d, p, beta_k * p


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
    V,
    CHUNK,
    STAT_SPLITS,
    MIRROR: tl.constexpr,
    CAP: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Per (row, split): the head tokens (ρ_v ≥ ε) into the split's slot; the tail's
    # Σ exp(A + b − top) (and, for mirror's first step, Σ exp(A + b(1 − p)^{K−1} − top)).
    row, split, splits = program_position()
    c, inv_tau_p, beta_k, k = _row_params(c_ptr, inv_tau_p_ptr, betak_ptr, k_ptr, row)
    z_max, lse_c, lse_p, top = _row_terms(
        max_ptr, sum_c_ptr, sum_p_ptr, row, STAT_SPLITS, c, inv_tau_p, beta_k, SPLIT_BLOCK
    )
    # Head iff log ρ_v ≥ log ε, i.e. (1/τ_p + c)(z_v − max z) ≥ gap; K = 1 or β = 0 make
    # the gap +inf (no head: the closed form is then exact).
    gap = LOG_EPS - tl.log(beta_k * (k - 1.0)) - top + lse_p + lse_c
    slope = inv_tau_p + c
    base = row.to(tl.int64) * V
    slot = (row * splits + split).to(tl.int64) * CAP
    begin, end = split_bounds(split, CHUNK, V)
    found = tl.zeros((), tl.int32)
    tail = 0.0
    tail_first = 0.0
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < end
        z = load_logits(z_ptr + base + offs, inside)
        keep = inside & (slope * (z - z_max) >= gap)
        found = append_to_slot(z, offs, keep, found, x_out_ptr, index_out_ptr, slot, CAP)
        a, p, b = _token_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
        in_tail = inside & ~keep
        tail += tl.sum(tl.where(in_tail, tl.exp(a + b - top), 0.0), axis=0)
        if MIRROR:
            first = a + b * safe_pow(tl.maximum(1.0 - p, 0.0), k - 1.0)
            tail_first += tl.sum(tl.where(in_tail, tl.exp(first - top), 0.0), axis=0)
    tl.store(count_ptr + row * splits + split, found)
    tl.store(tail_ptr + (row * 2) * splits + split, tail)
    tl.store(tail_ptr + (row * 2 + 1) * splits + split, tail_first)


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
        a, _, b = _token_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
        s_lo += tl.sum(tl.exp(a), axis=0)
        s_hi += tl.sum(tl.exp(a + b - top), axis=0)
    t_lo = tl.log(s_lo)
    t_hi = tl.log(s_hi) + top
    t = t_lo
    for start in range(0, V, BLOCK):  # the first warm start, u = A − t
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        a, _, _ = _token_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
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
        a, _, b = _token_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
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
            a, p, b = _token_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
            previous = tl.load(q_ptr + offs, mask=inside & (step > 0), other=0.0)
            q = tl.where(step == 0, p, tl.exp(previous - log_total))
            x = a + b * safe_pow(tl.maximum(1.0 - q, 0.0), k - 1.0)
            tl.store(q_ptr + offs, x, mask=inside)
            total += tl.sum(tl.where(inside, tl.exp(x - top), 0.0), axis=0)
        log_total = tl.log(total) + top
    _exp_in_place(q_ptr, V, log_total, BLOCK)


@triton.jit
def _solve_head(x, z_max, c, inv_tau_p, lse_p, beta_k, k, tail, tail_first, STEPS,
                MIRROR: tl.constexpr, OUTER: tl.constexpr, INNER: tl.constexpr):  # fmt: skip
    # q on the head tokens x (−inf lanes are empty) and the tail's shift, given the tail's
    # log-mass (and, for mirror's first step, that of A + b(1 − p)^{K−1}).
    a, p, b = _token_terms(x, z_max, c, inv_tau_p, lse_p, beta_k)
    if MIRROR:
        log_x = a + b * safe_pow(tl.maximum(1.0 - p, 0.0), k - 1.0)
        log_total = log_mass(log_x, tail_first)
        for _step in range(STEPS - 1):
            q = tl.exp(log_x - log_total)
            log_x = a + b * safe_pow(tl.maximum(1.0 - q, 0.0), k - 1.0)
            log_total = log_mass(log_x, tail)
        return tl.exp(log_x - log_total), log_total
    else:
        u, t, log_z = solve_row(a, b, k, tail, OUTER, INNER)
        return tl.exp(u - log_z), t + log_z


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
    row_out_ptr,
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
):
    # Solve the head against the tail's log-mass; q of the head goes to its candidate slot
    # positions, and max z, LSE_p and the tail's shift to row_out. Overflow: whole row.
    row = tl.program_id(0)
    c, inv_tau_p, beta_k, k = _row_params(c_ptr, inv_tau_p_ptr, betak_ptr, k_ptr, row)
    z_max, _lse_c, lse_p, top = _row_terms(
        max_ptr, sum_c_ptr, sum_p_ptr, row, STAT_SPLITS, c, inv_tau_p, beta_k, SPLIT_BLOCK
    )
    x, _ids, valid, overflow = load_candidates(
        cand_x_ptr, cand_index_ptr, cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS
    )
    split_offs = tl.arange(0, SPLIT_BLOCK)
    present = split_offs < CAND_SPLITS
    tails = tl.load(tail_ptr + row * 2 * CAND_SPLITS + split_offs, mask=present, other=0.0)
    tail = tl.log(tl.sum(tails, axis=0)) + top
    shift = 0.0
    if overflow:
        z_row = z_ptr + row.to(tl.int64) * V
        q_row = q_ptr + row.to(tl.int64) * V
        if MIRROR:
            _mirror_full_row(z_row, q_row, V, z_max, c, inv_tau_p, lse_p, beta_k, k, top,
                             STEPS, ROW_BLOCK)  # fmt: skip
        else:
            _solve_full_row(z_row, q_row, V, z_max, c, inv_tau_p, lse_p, beta_k, k, top,
                            OUTER, INNER, ROW_BLOCK)  # fmt: skip
    else:
        firsts = tl.load(
            tail_ptr + (row * 2 + 1) * CAND_SPLITS + split_offs, mask=present, other=0.0
        )
        tail_first = tl.log(tl.sum(firsts, axis=0)) + top
        flat = tl.arange(0, SLOTS * CAP)
        q_head_ptr = qhead_ptr + row.to(tl.int64) * CAND_SPLITS * CAP
        if tl.sum(valid.to(tl.int32), axis=0) <= COMPACT:
            packed_x, packed_flat, packed = compact(
                x, flat, valid, scratch_x_ptr, scratch_index_ptr, row, SLOTS * CAP, COMPACT
            )
            q_packed, shift = _solve_head(
                packed_x, z_max, c, inv_tau_p, lse_p, beta_k, k, tail, tail_first, STEPS,
                MIRROR, OUTER, INNER,
            )  # fmt: skip
            tl.store(q_head_ptr + packed_flat, q_packed, mask=packed)
        else:
            q_head, shift = _solve_head(x, z_max, c, inv_tau_p, lse_p, beta_k, k, tail,
                                        tail_first, STEPS, MIRROR, OUTER, INNER)  # fmt: skip
            tl.store(q_head_ptr + flat, q_head, mask=valid)
    tl.store(row_out_ptr + row * 3, z_max)
    tl.store(row_out_ptr + row * 3 + 1, lse_p)
    tl.store(row_out_ptr + row * 3 + 2, shift)


@kernel
def _prob_write_kernel(
    z_ptr,
    q_ptr,
    c_ptr,
    inv_tau_p_ptr,
    betak_ptr,
    k_ptr,
    cand_index_ptr,
    cand_count_ptr,
    qhead_ptr,
    row_ptr,
    V,
    CHUNK,
    FIRST_STEP_TAIL: tl.constexpr,
    CAP: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # q = exp(A + b − shift) over the split's chunk (b·(1 − p)^{K−1} after a single mirror
    # step), then the head's values at their ids. Rows that overflowed are already written.
    row, split, splits = program_position()
    split_offs = tl.arange(0, SPLIT_BLOCK)
    counts = tl.load(cand_count_ptr + row * splits + split_offs, mask=split_offs < splits, other=0)
    if tl.max(counts, axis=0) <= CAP:
        c, inv_tau_p, beta_k, k = _row_params(c_ptr, inv_tau_p_ptr, betak_ptr, k_ptr, row)
        z_max = tl.load(row_ptr + row * 3)
        lse_p = tl.load(row_ptr + row * 3 + 1)
        shift = tl.load(row_ptr + row * 3 + 2)
        base = row.to(tl.int64) * V
        begin, end = split_bounds(split, CHUNK, V)
        for start in range(begin, end, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < end
            z = load_logits(z_ptr + base + offs, inside)
            a, p, b = _token_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
            if FIRST_STEP_TAIL:
                b = b * safe_pow(tl.maximum(1.0 - p, 0.0), k - 1.0)
            tl.store(q_ptr + base + offs, tl.exp(a + b - shift), mask=inside)
        # The head's ids lie in this program's chunk; its tail values above must land first.
        tl.debug_barrier()
        lanes = tl.arange(0, CAP)
        slot = (row * splits + split).to(tl.int64) * CAP
        mine = lanes < tl.load(cand_count_ptr + row * splits + split)
        index = tl.load(cand_index_ptr + slot + lanes, mask=mine, other=0)
        q_head = tl.load(qhead_ptr + slot + lanes, mask=mine, other=0.0)
        tl.store(q_ptr + base + index, q_head, mask=mine)


def bok_prob_probs(
    z: torch.Tensor,
    c: torch.Tensor,
    inv_tau_p: torch.Tensor,
    beta_k: torch.Tensor,
    k: torch.Tensor,
    steps: int,
    outer: int,
    inner: int,
) -> torch.Tensor:
    """q for logits z ([..., V], float32 CUDA) with w = p: the exact solution (steps = 0)
    or `steps` mirror steps of size 1/λ from q₀ = p. c, 1/τ_p, βK, K: float32 [rows]."""
    shape = z.shape
    vocab = shape[-1]
    flat = z.reshape(-1, vocab).contiguous()
    rows = flat.shape[0]
    stats = row_stats(flat, c, c2=inv_tau_p)
    splits = gather_splits(vocab)
    chunk = chunk_for(vocab, splits, BLOCK)
    candidates = Candidates.empty(rows, splits, z.device)
    tails = torch.empty(rows, 2, splits, device=z.device, dtype=torch.float32)
    split_block = pow2_at_least(max(stats.splits, splits), 16)
    mirror = steps > 0
    _prob_gather_kernel[(rows, splits)](
        flat, stats.maxes, stats.sums, stats.sums2, c, inv_tau_p, beta_k, k,
        candidates.x, candidates.index, candidates.count, tails,
        vocab, chunk, stats.splits,
        MIRROR=mirror, CAP=CAP, SPLIT_BLOCK=split_block, BLOCK=BLOCK, num_warps=4,
    )  # fmt: skip
    q = torch.empty_like(flat)
    q_head = torch.empty(rows, splits, CAP, device=z.device, dtype=torch.float32)
    row_terms = torch.empty(rows, 3, device=z.device, dtype=torch.float32)
    _prob_head_kernel[(rows,)](
        flat, q, stats.maxes, stats.sums, stats.sums2, c, inv_tau_p, beta_k, k,
        candidates.x, candidates.index, candidates.count, tails,
        *compact_scratch(rows, pow2_at_least(splits) * CAP, z.device), q_head, row_terms,
        vocab, stats.splits, splits, steps,
        MIRROR=mirror, OUTER=outer, INNER=inner, CAP=CAP,
        SLOTS=pow2_at_least(splits), SPLIT_BLOCK=split_block, ROW_BLOCK=1024,
        num_warps=ROW_WARPS,
    )  # fmt: skip
    _prob_write_kernel[(rows, splits)](
        flat, q, c, inv_tau_p, beta_k, k, candidates.index, candidates.count, q_head,
        row_terms, vocab, chunk,
        FIRST_STEP_TAIL=steps == 1, CAP=CAP, SPLIT_BLOCK=split_block, BLOCK=BLOCK,
        num_warps=4,
    )  # fmt: skip
    return q.reshape(shape)
