"""Sort-free Tsallis-α decoders on CUDA (sparsemax α = 2, entmax).

Bisection on η in q_v = [(α−1)(x_v − η)]₊^{1/(α−1)}, x = z/τ, inside
[max x − 1/(α−1), max x]. Only tokens with x ≥ max x − 1/(α−1) can be in the support, so
they are gathered first (`candidates.py`) and the 32 bisection steps run on them in
registers; a row with too many falls back to re-reading the whole row in the same program.
A streaming pass writes q; a sample is drawn inside the solve, from the candidates (the
support is among them) or, for a row that overflowed, over the row's blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .candidates import (
    CAP,
    ROW_WARPS,
    gather_candidates,
    load_candidates,
)
from .draw import CodedDraw, Randomness, draw_seed, randomness_args
from .launch import kernel
from .streaming import BLOCK as STREAM_BLOCK
from .streaming import (
    chunk_for,
    load_logits,
    pow2_at_least,
    program_position,
    row_stats,
    split_bounds,
    splits_for,
)
from .uniforms import REFILL, TWO_POW_M52, next_code, philox_uniforms, pick

BLOCK = 4096


@triton.jit
def tsallis_psi(y, alpha_minus_one, KIND: tl.constexpr):
    """[(α−1)·y]₊^{1/(α−1)}, KIND from `psi_kind`."""
    base = tl.maximum(alpha_minus_one * y, 0.0)
    if KIND == 0:  # α = 2
        return base
    elif KIND == 1:  # α = 1.5
        return base * base
    else:
        safe = tl.where(base > 0, base, 1.0)
        return tl.where(base > 0, tl.exp(tl.log(safe) / alpha_minus_one), 0.0)


@triton.jit
def _row_block_q(z_row, offs, end, inv_tau, top, eta, alpha_minus_one, KIND: tl.constexpr):
    # q of one block of a row: [(α−1)((z − max z)/τ − η)]₊^{1/(α−1)}, 0 at offs ≥ end.
    x = (load_logits(z_row + offs, offs < end) - top) * inv_tau
    return tsallis_psi(x - eta, alpha_minus_one, KIND)


@triton.jit
def _tsallis_mass_of_row(z_row, V, inv_tau, top, eta, alpha_minus_one, KIND: tl.constexpr,
                         BLOCK: tl.constexpr):  # fmt: skip
    total = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        q = _row_block_q(z_row, offs, V, inv_tau, top, eta, alpha_minus_one, KIND)
        total += tl.sum(q, axis=0)
    return total


@triton.jit
def _draw_from_row(z_row, V, inv_tau, top, eta, alpha_minus_one, u_block, u_token,
                   CODED: tl.constexpr, KIND: tl.constexpr, BLOCK: tl.constexpr,
                   BLOCKS: tl.constexpr):  # fmt: skip
    # A row whose candidates overflowed, as `draw._draw_kernel` draws: a block by u_block·Σ
    # over the float64 block masses, then a token inside it. With CODED, u_block is the code
    # and the token is picked at the code's place inside the block's bucket (u_token unused).
    # Returns the token, its bucket (low, width) in the block's units, where the target fell
    # there, and the refill grain, 2⁻⁵²·Σ in those units.
    blocks = tl.arange(0, BLOCKS)
    lane = tl.arange(0, BLOCK)
    mass = tl.zeros([BLOCKS], tl.float64)
    for start in range(0, V, BLOCK):
        q = _row_block_q(z_row, start + lane, V, inv_tau, top, eta, alpha_minus_one, KIND)
        mass = tl.where(blocks == start // BLOCK, tl.sum(q.to(tl.float64), axis=0), mass)
    total = tl.sum(mass, axis=0)
    target = u_block * total
    block, before, block_mass = pick(mass, blocks, target)
    start = block * BLOCK
    q = _row_block_q(z_row, start + lane, V, inv_tau, top, eta, alpha_minus_one, KIND)
    in_block = tl.sum(q.to(tl.float64), axis=0)
    position = tl.minimum((target - before) / block_mass, 1.0) if CODED else u_token
    token, low, width = pick(q, lane, position * in_block)
    grain = TWO_POW_M52 * total * in_block / (width * block_mass)
    return start + token, low, width, position * in_block, grain


@kernel
def _tsallis_solve_kernel(
    z_ptr,
    inv_tau_ptr,
    maxes_ptr,
    cand_x_ptr,
    cand_index_ptr,
    cand_count_ptr,
    top_ptr,
    eta_ptr,
    total_ptr,
    seed_ptr,
    code_ptr,
    group_ptr,
    index_ptr,
    step_ptr,
    next_code_ptr,
    token_ptr,
    V,
    SPLITS,
    CAND_SPLITS,
    alpha_minus_one,
    KIND: tl.constexpr,
    ITERATIONS: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    CAP: tl.constexpr,
    SLOTS: tl.constexpr,
    ROW_BLOCK: tl.constexpr,
    ROW_BLOCKS: tl.constexpr,
    SAMPLE: tl.constexpr,
    CODED: tl.constexpr,
):
    # η by bisection on the gathered candidates (x ≥ max x − 1/(α−1), every token that can
    # be in the support), or on the whole row if they overflowed. With SAMPLE, then one
    # token drawn from q: among the candidates in registers (in token order, so the running
    # sums are the row's), or over the row's blocks when they overflowed. With CODED the
    # row's code replaces the Philox uniforms and its next code goes to next_code[row].
    row = tl.program_id(0)
    inv_tau = tl.load(inv_tau_ptr + row)
    split_offs = tl.arange(0, SPLIT_BLOCK)
    maxes = tl.load(
        maxes_ptr + row * SPLITS + split_offs, mask=split_offs < SPLITS, other=-float("inf")
    )
    top = tl.max(maxes, axis=0)
    # The candidates are y = (z − max z)/τ: shifted before scaling, like the reference, so
    # neither y nor η's resolution depends on a common offset of the logits.
    y, index, _, overflow = load_candidates(
        cand_x_ptr, cand_index_ptr, cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS
    )
    z_row = z_ptr + row.to(tl.int64) * V
    lo = -1.0 / alpha_minus_one
    hi = 0.0
    for _ in range(ITERATIONS):
        mid = 0.5 * (lo + hi)
        if overflow:
            total = _tsallis_mass_of_row(z_row, V, inv_tau, top, mid, alpha_minus_one, KIND,
                                         ROW_BLOCK)  # fmt: skip
        else:
            total = tl.sum(tsallis_psi(y - mid, alpha_minus_one, KIND), axis=0)
        too_much = total >= 1.0
        lo = tl.where(too_much, mid, lo)
        hi = tl.where(too_much, hi, mid)
    if overflow:
        total = _tsallis_mass_of_row(z_row, V, inv_tau, top, lo, alpha_minus_one, KIND,
                                     ROW_BLOCK)  # fmt: skip
    else:
        total = tl.sum(tsallis_psi(y - lo, alpha_minus_one, KIND), axis=0)
    tl.store(top_ptr + row, top)
    tl.store(eta_ptr + row, lo)
    tl.store(total_ptr + row, total)
    if SAMPLE:
        if CODED:
            first = tl.load(code_ptr + row)
            second = first
        else:
            first, second = philox_uniforms(seed_ptr, row)
        if overflow:
            token, low, width, place, grain = _draw_from_row(
                z_row, V, inv_tau, top, lo, alpha_minus_one, first, second, CODED, KIND,
                ROW_BLOCK, ROW_BLOCKS,
            )  # fmt: skip
        else:
            q = tsallis_psi(y - lo, alpha_minus_one, KIND).to(tl.float64)
            lanes = tl.arange(0, SLOTS * CAP)
            mass = tl.sum(q, axis=0)
            place = first * mass
            chosen, low, width = pick(q, lanes, place)
            token = tl.sum(tl.where(lanes == chosen, index, 0), axis=0)
            grain = TWO_POW_M52 * mass / width
        tl.store(token_ptr + row, token.to(tl.int64))
        if CODED:
            code = next_code(place, low, width, grain, group_ptr, index_ptr, step_ptr, row, REFILL)
            tl.store(next_code_ptr + row, code)


@kernel
def _tsallis_write_kernel(z_ptr, inv_tau_ptr, top_ptr, eta_ptr, total_ptr, q_ptr, V, CHUNK,
                          alpha_minus_one, KIND: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    row, split, _ = program_position()
    inv_tau = tl.load(inv_tau_ptr + row)
    top = tl.load(top_ptr + row)
    eta = tl.load(eta_ptr + row)
    total = tl.load(total_ptr + row)
    base = row.to(tl.int64) * V
    begin, end = split_bounds(split, CHUNK, V)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        q = _row_block_q(z_ptr + base, offs, end, inv_tau, top, eta, alpha_minus_one, KIND)
        tl.store(q_ptr + base + offs, q / total, mask=offs < end)


def psi_kind(alpha: float) -> int:
    """The KIND of `tsallis_psi` for α: 0 for sparsemax (α = 2), 1 for α = 1.5, else 2."""
    return 0 if alpha == 2.0 else 1 if alpha == 1.5 else 2


def _solve(
    flat: torch.Tensor,
    inv_tau: torch.Tensor,
    alpha: float,
    source: torch.Tensor | CodedDraw | None = None,
):
    # The solve's launch: max z, η and the mass per row, and with a draw's `source` (a
    # Philox seed tensor or a CodedDraw, see `draw.draw_seed`) also the drawn tokens.
    rows, vocab = flat.shape
    maxes = row_stats(flat, inv_tau).maxes
    candidates = gather_candidates(flat, scale=inv_tau, maxes=maxes, offset=1.0 / (alpha - 1.0))
    top, eta, total = (torch.empty(rows, device=flat.device, dtype=torch.float32) for _ in "abc")
    coded = isinstance(source, CodedDraw)
    tokens = None if source is None else torch.empty(rows, device=flat.device, dtype=torch.int64)
    _tsallis_solve_kernel[(rows,)](
        flat, inv_tau, maxes, candidates.x, candidates.index, candidates.count, top, eta,
        total, *randomness_args(source, top), top if tokens is None else tokens, vocab,
        maxes.shape[1], candidates.splits, alpha - 1.0, KIND=psi_kind(alpha), ITERATIONS=32,
        SPLIT_BLOCK=pow2_at_least(maxes.shape[1], 16), CAP=CAP,
        SLOTS=pow2_at_least(candidates.splits), ROW_BLOCK=BLOCK,
        ROW_BLOCKS=pow2_at_least(triton.cdiv(vocab, BLOCK)), SAMPLE=source is not None,
        CODED=coded, num_warps=ROW_WARPS,
    )  # fmt: skip
    return top, eta, total, tokens


def tsallis_terms(flat: torch.Tensor, inv_tau: torch.Tensor, alpha: float):
    """Per row of flat [rows, V] (float32 CUDA): max z, the threshold η and the mass
    Σ [(α−1)((z − max z)/τ − η)]₊^{1/(α−1)}, each float32 [rows]."""
    return _solve(flat, inv_tau, alpha)[:3]


def tsallis_sample(
    z: torch.Tensor, inv_tau: torch.Tensor, alpha: float, randomness: Randomness = None
) -> torch.Tensor:
    """One token per row of z ([..., V], float32 CUDA) from α-entmax of z/τ (1/τ: float32
    [rows]), drawn inside the solve from the candidates it holds in registers: z is read
    by the row-stats and gather passes only, and nothing of size [rows, V] is written.
    `randomness`: a generator (or None) for Philox seeds, or a `draw.CodedDraw`."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    tokens = _solve(flat, inv_tau, alpha, draw_seed(z.device, randomness))[3]
    return tokens.reshape(z.shape[:-1])


def tsallis_probs(z: torch.Tensor, inv_tau: torch.Tensor, alpha: float) -> torch.Tensor:
    """α-entmax of z/τ per row (z [..., V] float32 CUDA; 1/τ float32 [rows])."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    rows, vocab = flat.shape
    top, eta, total = tsallis_terms(flat, inv_tau, alpha)
    q = torch.empty_like(flat)
    splits = splits_for(rows, vocab, z.device)
    chunk = chunk_for(vocab, splits, STREAM_BLOCK)
    _tsallis_write_kernel[(rows, splits)](
        flat, inv_tau, top, eta, total, q, vocab, chunk, alpha - 1.0, KIND=psi_kind(alpha),
        BLOCK=STREAM_BLOCK, num_warps=4,
    )  # fmt: skip
    return q.reshape(z.shape)
