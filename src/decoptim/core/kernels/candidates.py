"""Candidate gathering: the few tokens of a row that can matter, found in one streaming pass,
so that a per-row solve runs on a few hundred values held in registers instead of re-reading
the whole row dozens of times.

Each (row, split) program keeps the elements x of its chunk with x ≥ lo, in index
order, in its own slot of CAP entries, and records how many it found (possibly more than
CAP). The per-row solve loads all slots of its row at once; when any slot overflowed it falls
back to the full row, inside the same kernel (the same answer, slower). Positions depend on
the token ids only, so results do not depend on scheduling.

x and lo come from the row statistics of the first streaming pass:
- `offset`: x = s·(z − max z) and lo = −offset, for Tsallis-α (nothing below
  max − 1/(α−1) is in the support);
- `segments`: x = z and lo ≤ the k-th largest of the row's segment maxima (`row_stats`'
  segment bound). Those k maxima are k distinct tokens, so at least k tokens reach lo and
  the top k are all kept; a segment whose max is below lo holds none, and is not read where
  most are below.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .launch import kernel
from .streaming import (
    BLOCK,
    RowStats,
    cdiv,
    chunk_for,
    code_of,
    float_of_code,
    load_logits,
    pow2_at_least,
    program_position,
    sm_count,
    split_bounds,
)

CAP = 256
MAX_SPLITS = 16
# The gather's launch, from sweeps of block size (1024/2048/4096), warps (4/8) and splits
# (8–64) on an H200 at V = 151,936 (`bench/gather_sweep.py`): 1024-token blocks took 25–29%
# less time than 2048 at B = 256 with 4 warps, for both bounds (Tsallis' offset, the
# top-64 segment bound); 8 warps were faster at B = 8, mixed at B = 64 (±5% across two
# runs) and slower at B = 256.
GATHER_BLOCK = 1024
# Blocks whose loads are in flight at once in a gather program (Triton's software pipelining,
# `tl.range(num_stages=)`; 1 is none), by bound. On an H200 (`.gpu` sweep of stop 39, two
# rounds, replayed steps), 2 stages made the segment-bound gather's decoders faster at
# B = 256, Best-of-K top-64 0.1705/0.1711 → 0.1634/0.1611 ms and top-k 50 0.2197/0.2210 →
# 0.2133/0.2126, and made them 0–3% faster at B = 8 and 64; 3 and 4 stages gained less. With
# Tsallis' offset bound, sparsemax was slower with 2–4 stages (0.1285 → 0.1295–0.1350 ms).
SEGMENT_GATHER_STAGES = 2
OFFSET_GATHER_STAGES = 1
# The segment-bound gather does not read a block whose segment maxima are all below the
# bound, nor inside a block the segments below it, where fewer than SKIP_LIVE_BLOCKS of the
# blocks are expected to hold a candidate and the grid has a program per SM at least. On an
# H200 (`.gpu` A/B of stop 42, replayed, the same tokens and q; ms without → with): Best-of-K
# top-64 0.159 → 0.147 and top-k 50 0.210 → 0.191 at B = 256, top-k 50 0.082 → 0.080 at
# B = 64; but Best-of-K top-64 0.042 → 0.045 at B = 1 (16 programs), and top-k 200 and
# 1000, whose blocks are mostly live, 0.235 → 0.264 and 0.292 → 0.355 at B = 256 (the
# branch per block also stops the loads' pipelining). The branch alone, without the
# masks, gained less at B = 256 (0.153 and 0.197).
SKIP_LIVE_BLOCKS = 0.5
# Warps of the one-program-per-row solves that follow a gather.
ROW_WARPS = 8


@triton.jit
def append_to_slot(x, offs, keep, found, x_out_ptr, index_out_ptr, slot, CAP: tl.constexpr):
    """Append the kept (x, offs) of one block to a slot already holding `found` entries, in
    index order, up to CAP; returns the new count (which may exceed CAP: overflow)."""
    kept = tl.sum(keep.to(tl.int32), axis=0)
    if kept == 1:
        # The common case under a tight bound: the one kept element goes at `found`, with no
        # scan across the block (a scan per block made the top-64 gather ~1.5× as slow).
        pos = tl.zeros_like(offs) + found
        tl.store(x_out_ptr + slot + pos, x, mask=keep & (pos < CAP))
        tl.store(index_out_ptr + slot + pos, offs, mask=keep & (pos < CAP))
    elif kept > 1:
        pos = found + tl.cumsum(keep.to(tl.int32), axis=0) - 1
        tl.store(x_out_ptr + slot + pos, x, mask=keep & (pos < CAP))
        tl.store(index_out_ptr + slot + pos, offs, mask=keep & (pos < CAP))
    return found + kept


@kernel
def _gather_kernel(
    z_ptr,
    scale_ptr,
    maxes_ptr,
    bound_ptr,
    segmax_ptr,
    x_out_ptr,
    index_out_ptr,
    count_ptr,
    V,
    stride,
    CHUNK,
    N_STATS,
    NSEG,
    offset,
    KTH_SEGMENT: tl.constexpr,
    SEG: tl.constexpr,
    SKIP: tl.constexpr,
    CAP: tl.constexpr,
    STAT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
    STAGES: tl.constexpr,
):
    row, split, splits = program_position()
    if KTH_SEGMENT:
        # x = z, kept from the row's bound (`row_stats`' segment bound).
        lo = code_of(tl.load(bound_ptr + row))
        scale = 1.0
        z_top = 0.0
    else:
        scale = tl.load(scale_ptr + row)
        # Shifted before scaling, x = (z − max z)·s (z_top from the per-split maxima): a
        # large common offset of z would otherwise round x by far more than the bound's
        # resolution.
        lanes = tl.arange(0, STAT_BLOCK)
        maxes = tl.load(maxes_ptr + row * N_STATS + lanes, mask=lanes < N_STATS,
                        other=-float("inf"))  # fmt: skip
        z_top = tl.max(maxes, axis=0)
        lo = code_of(tl.zeros((), tl.float32) - offset)
    base = row.to(tl.int64) * stride
    slot = (row * splits + split).to(tl.int64) * CAP
    begin, end = split_bounds(split, CHUNK, V)
    found = tl.zeros((), tl.int32)
    segmax_row = segmax_ptr + row.to(tl.int64) * NSEG
    for start in tl.range(begin, end, BLOCK, num_stages=STAGES):
        # With SKIP, a block whose segments' maxima are all below the bound is not read, nor
        # inside a block read the segments below it: no token there can reach the bound.
        live = True
        if SKIP:
            segs = start // SEG + tl.arange(0, max(BLOCK // SEG, 1))
            tops = tl.load(segmax_row + segs, mask=segs < NSEG, other=-float("inf"))
            live = tl.max(code_of(tops), axis=0) >= lo
        if live:
            offs = start + tl.arange(0, BLOCK)
            inside = offs < end
            if SKIP:
                top = tl.load(segmax_row + offs // SEG, mask=inside, other=-float("inf"))
                inside = inside & (code_of(top) >= lo)
            x = (load_logits(z_ptr + base + offs, inside) - z_top) * scale
            keep = inside & (code_of(x) >= lo)
            found = append_to_slot(x, offs, keep, found, x_out_ptr, index_out_ptr, slot, CAP)
    tl.store(count_ptr + row * splits + split, found)


class Candidates(NamedTuple):
    """Per (row, split) slots of CAP gathered values x (see `gather_candidates`) and ids."""

    x: torch.Tensor  # [rows, splits, CAP] float32
    index: torch.Tensor  # [rows, splits, CAP] int32
    count: torch.Tensor  # [rows, splits] int32, may exceed CAP (overflow)

    @property
    def splits(self) -> int:
        return self.count.shape[1]

    @staticmethod
    def empty(rows: int, splits: int, device: torch.device) -> Candidates:
        return Candidates(
            torch.empty(rows, splits, CAP, device=device, dtype=torch.float32),
            torch.empty(rows, splits, CAP, device=device, dtype=torch.int32),
            torch.empty(rows, splits, device=device, dtype=torch.int32),
        )


def _skips_segments(rows: int, splits: int, segments: RowStats, device: torch.device) -> bool:
    # k of about NSEG segments hold the top k; a block spans GATHER_BLOCK / SEG of them.
    live = min(segments.bound_k / segments.segmax.shape[1], 1.0)
    blocks_live = 1.0 - (1.0 - live) ** max(GATHER_BLOCK // segments.segment, 1)
    return rows * splits >= sm_count(device) and blocks_live < SKIP_LIVE_BLOCKS


def gather_splits(vocab: int) -> int:
    return max(1, min(MAX_SPLITS, cdiv(vocab, BLOCK)))


def gather_candidates(
    z: torch.Tensor,
    *,
    segments: RowStats | None = None,
    scale: torch.Tensor | None = None,
    maxes: torch.Tensor | None = None,
    offset: float = 0.0,
) -> Candidates:
    """Elements x of each row of z [rows, V] with x ≥ lo.

    With `segments` (`row_stats` with `segment`, `finish` and `bound_k`): x = z and lo is the
    segment bound; a segment whose max is below lo is not read.
    With `scale` s and `maxes` (per split, [rows, splits]): x = s·(z − max z), lo = −offset.
    """
    rows, vocab = z.shape
    if (segments is None) == (maxes is None) or (maxes is None) != (scale is None):
        raise ValueError("gather_candidates needs segments, or a scale and maxes")
    kth = segments is not None
    if kth and segments.bound_k <= 0:
        raise ValueError(
            "gather_candidates' segments need row_stats(segment=, finish=True, bound_k=k)"
        )
    splits = gather_splits(vocab)
    chunk = chunk_for(vocab, splits, GATHER_BLOCK)
    n_stats = 1 if maxes is None else maxes.shape[1]
    x, index, count = Candidates.empty(rows, splits, z.device)
    _gather_kernel[(rows, splits)](
        z,
        scale if scale is not None else segments.bound,  # read only without segments
        maxes if maxes is not None else segments.bound,  # the same
        segments.bound if kth else maxes,  # read only with them
        segments.segmax if kth else maxes,  # the same
        x,
        index,
        count,
        vocab,
        vocab,
        chunk,
        n_stats,
        segments.segmax.shape[1] if kth else 1,
        offset,
        KTH_SEGMENT=kth,
        SEG=segments.segment if kth else 1,
        SKIP=kth and _skips_segments(rows, splits, segments, z.device),
        CAP=CAP,
        STAT_BLOCK=pow2_at_least(n_stats, 16),
        BLOCK=GATHER_BLOCK,
        STAGES=SEGMENT_GATHER_STAGES if kth else OFFSET_GATHER_STAGES,
        num_warps=8 if rows <= 64 else 4,
    )
    return Candidates(x, index, count)


@triton.jit
def load_candidates(x_ptr, index_ptr, count_ptr, row, SPLITS, CAP: tl.constexpr,
                    SLOTS: tl.constexpr):  # fmt: skip
    """All of a row's slots as one block: values (−inf where empty), ids, validity, and
    whether any slot overflowed (then the block is incomplete and the caller falls back)."""
    flat = tl.arange(0, SLOTS * CAP)
    split = flat // CAP
    count = tl.load(count_ptr + row * SPLITS + split, mask=split < SPLITS, other=0)
    valid = (split < SPLITS) & ((flat % CAP) < count)
    base = row.to(tl.int64) * SPLITS * CAP
    x = tl.load(x_ptr + base + flat, mask=valid, other=-float("inf"))
    index = tl.load(index_ptr + base + flat, mask=valid, other=0)
    return x, index, valid, tl.max(count, axis=0) > CAP


@triton.jit
def candidate_counts(count_ptr, row, SPLITS, SPLIT_BLOCK: tl.constexpr):
    """A row's number of candidates in each slot (0 past SPLITS)."""
    offs = tl.arange(0, SPLIT_BLOCK)
    return tl.load(count_ptr + row * SPLITS + offs, mask=offs < SPLITS, other=0)


@triton.jit
def load_few_candidates(x_ptr, index_ptr, counts, row, SPLITS, CAP: tl.constexpr,
                        SPLIT_BLOCK: tl.constexpr, WIDTH: tl.constexpr):  # fmt: skip
    """A row's candidates, at most WIDTH in all (`counts` from `candidate_counts`), packed in
    slot order into a WIDTH-lane block read straight from the slots: values (−inf where
    empty), ids, validity, and each one's slot position (slot·CAP + its place there).
    `compact` packs any number through a scratch, a barrier and the whole SLOTS·CAP block."""
    ends = tl.cumsum(counts, axis=0)
    lanes = tl.arange(0, WIDTH)
    # A lane's slot is the number of slots that end at or before it.
    slot = tl.sum((ends[None, :] <= lanes[:, None]).to(tl.int32), axis=1)
    slots = tl.arange(0, SPLIT_BLOCK)
    starts = ends - counts
    start = tl.sum(tl.where(slots[None, :] == slot[:, None], starts[None, :], 0), axis=1)
    valid = lanes < tl.sum(counts, axis=0)
    position = slot * CAP + lanes - start
    base = row.to(tl.int64) * SPLITS * CAP
    x = tl.load(x_ptr + base + position, mask=valid, other=-float("inf"))
    index = tl.load(index_ptr + base + position, mask=valid, other=0)
    return x, index, valid, position


# A row with at most this many candidates is packed into a block of this size first, so
# that the per-row solve does not spend its time on the empty lanes of all slots.
COMPACT = tl.constexpr(256)


@triton.jit
def compact(x, index, valid, scratch_x_ptr, scratch_index_ptr, row, LANES: tl.constexpr,
            COMPACT: tl.constexpr):  # fmt: skip
    """The valid (x, index) of a LANES-lane block packed, in order, into the first lanes of
    a COMPACT-lane block (through a per-row scratch of LANES entries); assumes at most
    COMPACT are valid. Returns values (−inf where empty), indices and validity."""
    pos = tl.cumsum(valid.to(tl.int32), axis=0) - 1
    base = row.to(tl.int64) * LANES
    tl.store(scratch_x_ptr + base + pos, x, mask=valid)
    tl.store(scratch_index_ptr + base + pos, index, mask=valid)
    tl.debug_barrier()  # other threads' stores must land before the loads below
    lanes = tl.arange(0, COMPACT)
    packed = lanes < tl.sum(valid.to(tl.int32), axis=0)
    packed_x = tl.load(scratch_x_ptr + base + lanes, mask=packed, other=-float("inf"))
    packed_index = tl.load(scratch_index_ptr + base + lanes, mask=packed, other=0)
    return packed_x, packed_index, packed


def compact_scratch(rows: int, lanes: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    return (
        torch.empty(rows, lanes, device=device, dtype=torch.float32),
        torch.empty(rows, lanes, device=device, dtype=torch.int32),
    )


# --- The k-th largest logit of a row, from the gathered candidates ------------------------

# Packed values a code is compared with at once in `kth_largest_packed_code`.
RANK_CHUNK = tl.constexpr(32)
# Larger than any int32 code: a neutral element for min over codes.
NO_CODE = tl.constexpr(1 << 40)
# code_of(−FLT_MAX): codes at or above it are the finite floats (and +inf).
LOWEST_FINITE_CODE = tl.constexpr(-0x7F800000)  # −inf's code is one below


@triton.jit
def kth_largest_code(codes, valid, k):
    """The largest c with #{valid codes ≥ c} ≥ k; assumes at least k valid codes."""
    # #{codes ≥ lo} ≥ k > #{codes ≥ hi} throughout: log₂ of the codes' span steps, at most 33.
    lo = tl.min(tl.where(valid, codes, NO_CODE), axis=0)
    hi = tl.max(tl.where(valid, codes, -NO_CODE), axis=0) + 1
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        enough = tl.sum((valid & (codes >= mid)).to(tl.int32), axis=0) >= k
        lo = tl.where(enough, mid, lo)
        hi = tl.where(enough, hi, mid)
    return lo


@triton.jit
def kth_largest_packed_code(packed_x, packed, scratch_x_ptr, row, LANES: tl.constexpr, k):
    """`kth_largest_code` of the block `compact` packed (through the same row's scratch of
    LANES entries, where its values are read back): the largest code whose count of codes
    at or above it is ≥ k. The counts come from comparing every code with RANK_CHUNK packed
    values at a time, a few steps whose sums stay mostly inside each thread, where the
    bisection takes up to 33 sums across the whole program."""
    codes = code_of(packed_x)
    packed_x_ptr = scratch_x_ptr + row.to(tl.int64) * LANES
    count = tl.sum(packed.to(tl.int32), axis=0)
    at_least = tl.zeros(codes.shape, tl.int32)
    for start in range(0, count, RANK_CHUNK):
        lanes = start + tl.arange(0, RANK_CHUNK)
        present = lanes < count
        other = code_of(tl.load(packed_x_ptr + lanes, mask=present, other=0.0))
        ahead = present[None, :] & (other[None, :] >= codes[:, None])
        at_least += tl.sum(ahead.to(tl.int32), axis=1)
    kth = tl.max(tl.where(packed & (at_least >= k), codes, -NO_CODE), axis=0)
    # Fewer than k codes: the smallest, as the bisection gives.
    lowest = tl.min(tl.where(packed, codes, NO_CODE), axis=0)
    return tl.where(kth == -NO_CODE, lowest, kth)


@triton.jit
def count_at_least(z_ptr, V, c, BLOCK: tl.constexpr):
    """#{v : code(z_v) ≥ c} over a whole row of V logits."""
    n = tl.zeros((), tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(z_ptr + offs, offs < V)
        n += tl.sum(((offs < V) & (code_of(z) >= c)).to(tl.int32), axis=0)
    return n


@triton.jit
def kth_largest_code_of_row(z_ptr, V, k, BLOCK: tl.constexpr):
    """`kth_largest_code` over a whole row, re-read per bisection step: the fallback when a
    row's gathered candidates overflowed (33 reads of the row; rare)."""
    lo = tl.zeros((), tl.int64) - (1 << 31)
    hi = tl.zeros((), tl.int64) + (1 << 31)
    for _ in range(33):
        mid = lo + (hi - lo) // 2
        enough = count_at_least(z_ptr, V, mid, BLOCK) >= k
        lo = tl.where(enough & (hi - lo > 1), mid, lo)
        hi = tl.where(enough | (hi - lo <= 1), hi, mid)
    return lo


@kernel
def _kth_largest_kernel(z_ptr, cand_x_ptr, cand_index_ptr, cand_count_ptr, k_ptr, out_ptr,
                        scratch_x_ptr, scratch_index_ptr, V, CAND_SPLITS, CAP: tl.constexpr,
                        SLOTS: tl.constexpr, ROW_BLOCK: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    k = tl.load(k_ptr + row)
    x, ids, valid, overflow = load_candidates(
        cand_x_ptr, cand_index_ptr, cand_count_ptr, row, CAND_SPLITS, CAP, SLOTS
    )
    if overflow:
        # Usually a row with fewer than k finite logits (a mask): its bound is −inf, so the
        # gather kept every token. One count answers it; otherwise bisect over the row.
        z_row = z_ptr + row.to(tl.int64) * V
        if count_at_least(z_row, V, LOWEST_FINITE_CODE, ROW_BLOCK) < k:
            code = code_of(tl.full((), -float("inf"), tl.float32))
        else:
            code = kth_largest_code_of_row(z_row, V, k, ROW_BLOCK)
    elif tl.sum(valid.to(tl.int32), axis=0) <= COMPACT:
        packed_x, _, packed = compact(
            x, ids, valid, scratch_x_ptr, scratch_index_ptr, row, SLOTS * CAP, COMPACT
        )
        code = kth_largest_packed_code(packed_x, packed, scratch_x_ptr, row, SLOTS * CAP, k)
    else:
        code = kth_largest_code(code_of(x), valid, k)
    tl.store(out_ptr + row, float_of_code(code))


def top_candidates(z: torch.Tensor, segments: RowStats) -> Candidates:
    """Every token of each row of z [rows, V] that can be among its k_max largest (and a few
    below), x = z: `gather_candidates` from the segments of
    `row_stats(..., segment=segment_size(V, k_max), finish=True, bound_k=k_max)`.
    z must be contiguous: the kernels step from row to row by V."""
    if not z.is_contiguous():
        raise ValueError("top_candidates needs contiguous logits [rows, V]")
    return gather_candidates(z, segments=segments)


def kth_largest(z: torch.Tensor, k: torch.Tensor, candidates: Candidates) -> torch.Tensor:
    """The k-th largest logit of each row of z [rows, V] (k: int [rows], each ≤ the k_max
    that `top_candidates(z, segments)` gathered `candidates` for), NaN counted as −inf and
    −0.0 as +0.0 (as `load_logits` and `code_of` read them). z and k must be contiguous
    (`checks.kernel_rows` makes such a k): the kernels step from row to row by V and read
    k[row]; an expanded k, of stride 0, would be read past its end."""
    rows, vocab = z.shape
    if not (z.is_contiguous() and k.is_contiguous()):
        raise ValueError("kth_largest needs contiguous logits [rows, V] and k [rows]")
    out = torch.empty(rows, device=z.device, dtype=torch.float32)
    slots = pow2_at_least(candidates.splits)
    _kth_largest_kernel[(rows,)](
        z, candidates.x, candidates.index, candidates.count, k, out,
        *compact_scratch(rows, slots * CAP, z.device), vocab, candidates.splits, CAP=CAP,
        SLOTS=slots, ROW_BLOCK=2048, num_warps=ROW_WARPS,
    )  # fmt: skip
    return out
