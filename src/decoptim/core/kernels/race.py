"""Sampling by the exponential race: argmax_v q_v / E_v with E_v ~ Exp(1) picks v with
probability q_v / Σ q, exactly, in one streaming pass and without a prefix sum.

Exactness rests on E's small values, which decide the winners (see `exponential`): a token
can beat the others only as often as its probability allows, down to q ≈ 2⁻⁶⁴ of the
leader's; a token further below never wins.

Each row is split over several programs; each program keeps a running winner per lane and
stores its own winner; the row's last program to finish picks the row's winner and
writes the token, so a draw is one launch after the seed.

`race_sample` races over a written q. `affine_race` races over a closed form
q_v = exp(c·(z_v − max z) − shift), optionally above a floor or off a head, so decoders
whose q has that form sample without writing it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .streaming import (
    affine_q,
    chunk_for,
    floor_mode,
    load_logits,
    pow2_at_least,
    program_position,
    split_bounds,
    splits_for,
)

# With lane-wise running maxima, smaller blocks and more programs measured fastest on an
# H100 (30.6 against 38.8 µs at B = 64, V = 152k).
RACE_BLOCK = 1024


# 2⁻³² and 2⁻⁶⁴: the cells of uniforms made of one and of two 32-bit words.
TWO_POW_M32 = tl.constexpr(2.3283064365386963e-10)
TWO_POW_M64 = tl.constexpr(5.421010862427522e-20)


@triton.jit
def exponential(word, fine):
    """E ~ Exp(1) from the 32-bit random `word` (the independent word `fine` is read only
    where word = 0), to float32 rounding over its whole range.

    E = −log(1 − v) with v = (w + ½)·2⁻³² in (0, 1). Small E decides race winners. A float32
    1 − v is 1 for v < 2⁻²⁵ (E = 0: a token that wins whatever its probability), so below ½
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
def race_update(q, offs, e, best_key, best_index):
    """One block of the race, lane by lane (no reduction across the program's threads):
    the best q_v / E_v so far (E ~ Exp(1), from `exponential`) and its index."""
    key = tl.where(q > 0, q / e, -1.0)
    better = key > best_key
    return tl.where(better, key, best_key), tl.where(better, offs, best_index)


@triton.jit
def logit_keys(z, e, c):
    """Race keys exp(c·(z − max z))/E of candidates given as (z, E), relative to their own
    max (−1 for z = −inf): the same order as q/E for any common factor of q."""
    top = tl.max(z, axis=0)
    return tl.where(z > -float("inf"), tl.exp(c * (z - top)) / e, -1.0)


@triton.jit
def race_finish(key_ptr, e_ptr, index_ptr, arrivals_ptr, out_ptr, row, best_key, best_e,
                best_index, c, SPLIT_BLOCK: tl.constexpr, LOGITS: tl.constexpr):  # fmt: skip
    """Store this program's winner; the row's last program to arrive (counted in
    arrivals[row], zero before the race) writes the row's winner to out[row]. With LOGITS
    the lanes hold (z, E), compared by `logit_keys`, and each program stores its (z, E)."""
    _, split, splits = program_position()
    lane = tl.arange(0, best_key.shape[0])
    keys = logit_keys(best_key, best_e, c) if LOGITS else best_key
    at_winner = lane == tl.argmax(keys, axis=0)
    slot = row * splits + split
    tl.store(key_ptr + slot, tl.max(tl.where(at_winner, best_key, -float("inf")), axis=0))
    if LOGITS:
        tl.store(e_ptr + slot, tl.sum(tl.where(at_winner, best_e, 0.0), axis=0))
    tl.store(index_ptr + slot, tl.sum(tl.where(at_winner, best_index, 0), axis=0))
    # The barrier and the count's release put this program's stores before its arrival;
    # the last program's acquire puts its loads after every arrival. ".cg" reads from L2,
    # past any stale line in this SM's L1.
    tl.debug_barrier()
    if tl.atomic_add(arrivals_ptr + row, 1, sem="acq_rel", scope="gpu") == splits - 1:
        offs = tl.arange(0, SPLIT_BLOCK)
        present = offs < splits
        stored = tl.load(key_ptr + row * splits + offs, mask=present,
                         other=-float("inf") if LOGITS else -2.0, cache_modifier=".cg")  # fmt: skip
        if LOGITS:
            es = tl.load(e_ptr + row * splits + offs, mask=present, other=1.0,
                         cache_modifier=".cg")  # fmt: skip
            stored = tl.where(present, logit_keys(stored, es, c), -2.0)
        indices = tl.load(index_ptr + row * splits + offs, mask=present, other=0,
                          cache_modifier=".cg")  # fmt: skip
        best = tl.argmax(stored, axis=0)
        tl.store(out_ptr + row, tl.sum(tl.where(offs == best, indices, 0), axis=0).to(tl.int64))


@triton.jit
def _race_block(x_ptr, offs, end, word, fine, best_key, best_e, best_index, c, z_max, shift,
                floor, edge_code, edge_id, WRITTEN: tl.constexpr, FLOOR: tl.constexpr,
                HEAD: tl.constexpr, LOGITS: tl.constexpr):  # fmt: skip
    # One block of the race: over a written q (WRITTEN), over `affine_q` of z, or (LOGITS)
    # over exp(c·z) with each lane's best kept as (z, E) rather than as a key q/E.
    e = exponential(word, fine)
    if LOGITS:
        z = load_logits(x_ptr + offs, offs < end)
        # q_v/E_v > q_b/E_b ⇔ exp(c·(z_v − z_b))·E_b > E_v: no max z needed, nothing
        # overflows into a wrong answer (exp → inf means v wins, → 0 means it loses), and a
        # −inf z gives NaN or 0 on the left, so it never wins.
        better = tl.exp(c * (z - best_key)) * best_e > e
        return (tl.where(better, z, best_key), tl.where(better, e, best_e),
                tl.where(better, offs, best_index))  # fmt: skip
    if WRITTEN:
        q = tl.load(x_ptr + offs, mask=offs < end, other=0.0)
    else:
        q = affine_q(x_ptr, offs, end, c, z_max, shift, floor, edge_code, edge_id, FLOOR, HEAD)
    best_key, best_index = race_update(q, offs, e, best_key, best_index)
    return best_key, best_e, best_index


@triton.jit
def _race_pass(x_ptr, row, split, V, CHUNK, seed, c, z_max, shift, floor, edge_code, edge_id,
               BLOCK: tl.constexpr, WRITTEN: tl.constexpr, FLOOR: tl.constexpr,
               HEAD: tl.constexpr, FINE: tl.constexpr, LOGITS: tl.constexpr):  # fmt: skip
    # The race over one split of a row: its winner per lane (key, or z with LOGITS; E; the
    # index), and whether any word was 0. Without FINE the cell w = 0 is not split (its E
    # is then wrong), so the caller redoes the split with FINE when one occurred.
    base = x_ptr + row.to(tl.int64) * V
    begin, end = split_bounds(split, CHUNK, V)
    lane = tl.arange(0, BLOCK)
    best_key = tl.zeros((BLOCK,), tl.float32) + (-float("inf") if LOGITS else -1.0)
    best_e = tl.zeros((BLOCK,), tl.float32) + 1.0
    best_index = tl.zeros((BLOCK,), tl.int32)
    zero_word = tl.zeros((BLOCK,), tl.int32)
    for start in range(begin, end, 4 * BLOCK):
        # One Philox call yields four words: one per quarter of this 4·BLOCK span. The
        # counters row·V + start + lane never repeat, since start advances by 4·BLOCK;
        # the fine words' counters, with the high word 1, are never used by the others.
        counter = row.to(tl.int64) * V + start + lane
        words = tl.randint4x(seed, counter)
        if FINE:
            fine = tl.randint4x(seed, counter + 4294967296)
        else:
            no_word = words[0] * 0
            fine = (no_word, no_word, no_word, no_word)
            zero_word |= ((words[0] == 0) | (words[1] == 0) | (words[2] == 0)
                          | (words[3] == 0)).to(tl.int32)  # fmt: skip
        offs = start + lane
        for quarter in tl.static_range(4):
            best_key, best_e, best_index = _race_block(
                base, offs, end, words[quarter], fine[quarter], best_key, best_e, best_index,
                c, z_max, shift, floor, edge_code, edge_id, WRITTEN, FLOOR, HEAD, LOGITS,
            )  # fmt: skip
            offs += BLOCK
    return best_key, best_e, best_index, zero_word


@triton.jit
def _race_span(x_ptr, row, split, V, CHUNK, seed, c, z_max, shift, floor, edge_code, edge_id,
               BLOCK: tl.constexpr, WRITTEN: tl.constexpr, FLOOR: tl.constexpr,
               HEAD: tl.constexpr, LOGITS: tl.constexpr):  # fmt: skip
    # The race over one split of a row: its winner per lane. A zero word (probability 2⁻³²
    # per token) needs 32 more bits; checking for one once per split, not per block, keeps
    # the common pass free of reductions, and the rare split with one is raced again.
    best_key, best_e, best_index, zero_word = _race_pass(
        x_ptr, row, split, V, CHUNK, seed, c, z_max, shift, floor, edge_code, edge_id, BLOCK,
        WRITTEN, FLOOR, HEAD, False, LOGITS,
    )  # fmt: skip
    if tl.max(zero_word, axis=0) > 0:
        best_key, best_e, best_index, zero_word = _race_pass(
            x_ptr, row, split, V, CHUNK, seed, c, z_max, shift, floor, edge_code, edge_id,
            BLOCK, WRITTEN, FLOOR, HEAD, True, LOGITS,
        )  # fmt: skip
    return best_key, best_e, best_index


@triton.jit
def _race_kernel(q_ptr, seed_ptr, key_ptr, index_ptr, arrivals_ptr, out_ptr, V, CHUNK,
                 BLOCK: tl.constexpr, SPLIT_BLOCK: tl.constexpr):  # fmt: skip
    row, split, _ = program_position()
    best_key, best_e, best_index = _race_span(
        q_ptr, row, split, V, CHUNK, tl.load(seed_ptr), 0.0, 0.0, 0.0, 0.0, 0, 0,
        BLOCK, True, False, False, False,
    )  # fmt: skip
    race_finish(key_ptr, key_ptr, index_ptr, arrivals_ptr, out_ptr, row, best_key, best_e,
                best_index, 0.0, SPLIT_BLOCK, False)  # fmt: skip


@triton.jit
def _affine_race_kernel(z_ptr, c_ptr, zmax_ptr, shift_ptr, floor_ptr, edge_code_ptr,
                        edge_id_ptr, seed_ptr, key_ptr, index_ptr, arrivals_ptr, out_ptr, V,
                        CHUNK, BLOCK: tl.constexpr, SPLIT_BLOCK: tl.constexpr,
                        FLOOR: tl.constexpr, HEAD: tl.constexpr):  # fmt: skip
    # `_race_kernel` over `affine_q` instead of a written q, with the same Philox counters.
    # With HEAD, rows whose token is already drawn (out[row] ≥ 0) do nothing.
    row = tl.program_id(0)
    pending = tl.load(out_ptr + row) < 0 if HEAD else True
    if pending:
        best_key, best_e, best_index = _race_span(
            z_ptr, row, tl.program_id(1), V, CHUNK, tl.load(seed_ptr), tl.load(c_ptr + row),
            tl.load(zmax_ptr + row), tl.load(shift_ptr + row), tl.load(floor_ptr + row),
            tl.load(edge_code_ptr + row), tl.load(edge_id_ptr + row), BLOCK, False, FLOOR, HEAD,
            False,
        )  # fmt: skip
        race_finish(key_ptr, key_ptr, index_ptr, arrivals_ptr, out_ptr, row, best_key, best_e,
                    best_index, 0.0, SPLIT_BLOCK, False)  # fmt: skip


@triton.jit
def _logit_race_kernel(z_ptr, c_ptr, seed_ptr, z_win_ptr, e_win_ptr, index_ptr, arrivals_ptr,
                       out_ptr, V, CHUNK, BLOCK: tl.constexpr,
                       SPLIT_BLOCK: tl.constexpr):  # fmt: skip
    # The race over q ∝ exp(c·z) in one read of z, with the same Philox counters.
    row = tl.program_id(0)
    c = tl.load(c_ptr + row)
    best_z, best_e, best_index = _race_span(
        z_ptr, row, tl.program_id(1), V, CHUNK, tl.load(seed_ptr), c, 0.0, 0.0, 0.0, 0, 0,
        BLOCK, False, False, False, True,
    )  # fmt: skip
    race_finish(z_win_ptr, e_win_ptr, index_ptr, arrivals_ptr, out_ptr, row, best_z, best_e,
                best_index, c, SPLIT_BLOCK, True)  # fmt: skip


def race_seed(device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """Philox seeds drawn from `generator` into a device tensor: seeded draws repeat, and
    nothing waits on the host."""
    return torch.randint(0, 2**31 - 1, (2,), device=device, generator=generator)


def race_targets(rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens a race writes (int64 [rows]) and its arrival counters (int32 [rows]), which
    must be zero when the race starts: the per-row kernel before `affine_race` zeroes them."""
    return (
        torch.empty(rows, device=device, dtype=torch.int64),
        torch.empty(rows, device=device, dtype=torch.int32),
    )


def _race_plan(rows: int, vocab: int, device: torch.device):
    # The grid, the chunk (whole 4·RACE_BLOCK spans), the buffers of per-program winners
    # and the launch constants.
    splits = splits_for(rows, vocab, device, per_sm=8, block=RACE_BLOCK)
    winners = (
        torch.empty(rows, splits, device=device, dtype=torch.float32),
        torch.empty(rows, splits, device=device, dtype=torch.int32),
    )
    meta = dict(BLOCK=RACE_BLOCK, SPLIT_BLOCK=pow2_at_least(splits, 16), num_warps=8)
    return (rows, splits), chunk_for(vocab, splits, 4 * RACE_BLOCK), winners, meta


def race_sample(q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of q ([..., V], CUDA), distributed as q."""
    flat = q.reshape(-1, q.shape[-1]).float().contiguous()
    rows, vocab = flat.shape
    tokens = torch.empty(rows, device=q.device, dtype=torch.int64)
    arrivals = torch.zeros(rows, device=q.device, dtype=torch.int32)
    grid, chunk, winners, meta = _race_plan(rows, vocab, q.device)
    _race_kernel[grid](
        flat, race_seed(q.device, generator), *winners, arrivals, tokens, vocab, chunk, **meta
    )
    return tokens.reshape(q.shape[:-1])


def affine_race(
    z: torch.Tensor,
    c: torch.Tensor,
    z_max: torch.Tensor,
    shift: torch.Tensor,
    seed: torch.Tensor,
    targets: tuple[torch.Tensor, torch.Tensor],
    floor: torch.Tensor | None = None,
    head_edge: tuple[torch.Tensor, torch.Tensor] | None = None,
    tempered: bool = False,
) -> torch.Tensor:
    """One token per row of z [rows, V] from q ∝ exp(c·(z − z_max) − shift) ([rows] each):
    with `floor`, only over c·z ≥ floor (with `tempered`, c holds τ and the floor is on
    (z − z_max)/τ, see `streaming.affine_q`); with `head_edge` (code, id per row), only over
    the tail below that edge and only on rows whose token (in `targets`) is still −1."""
    rows, vocab = z.shape
    tokens, arrivals = targets
    grid, chunk, winners, meta = _race_plan(rows, vocab, z.device)
    edge_code, edge_id = (shift, shift) if head_edge is None else head_edge
    _affine_race_kernel[grid](
        z, c, z_max, shift, shift if floor is None else floor, edge_code, edge_id, seed,
        *winners, arrivals, tokens, vocab, chunk,
        FLOOR=floor_mode(floor, tempered), HEAD=head_edge is not None, **meta,
    )  # fmt: skip
    return tokens


def logit_race(
    z: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row of z [rows, V] (CUDA, float32) from q ∝ exp(c·z) (c: float32
    [rows], > 0), reading z once: no max z, no normaliser, nothing of size [rows, V] written.
    NaN logits count as −inf."""
    rows, vocab = z.shape
    tokens = torch.empty(rows, device=z.device, dtype=torch.int64)
    arrivals = torch.zeros(rows, device=z.device, dtype=torch.int32)
    grid, chunk, (z_win, index), meta = _race_plan(rows, vocab, z.device)
    _logit_race_kernel[grid](
        z, c, race_seed(z.device, generator), z_win, torch.empty_like(z_win), index, arrivals,
        tokens, vocab, chunk, **meta,
    )  # fmt: skip
    return tokens
