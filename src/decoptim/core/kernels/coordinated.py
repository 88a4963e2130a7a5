"""The coordinated draw (`decoptim.core.coordinated`) on CUDA, without a [rows, V] prefix sum.

1. Per (row, split): the float64 sum of q over the split's chunk of the row.
2. One program per row: the splits' running sums locate the chunk whose bucket holds the
   code's target; the program scans only that chunk (float64 running sums, block by block)
   for the token, then refills the code below its grain with the same hashed bits as the
   torch path (both are exact; their float64 sums differ in the last bits, V·2⁻⁵² of the
   mass at most, so their tokens agree unless a code falls that close to a bucket edge).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..coordinated import _REFILL, Codes
from .streaming import cdiv, chunk_for, pow2_at_least, program_position, split_bounds, splits_for

BLOCK = 1024
TWO_POW_M52 = tl.constexpr(2.0**-52)
TWO_POW_M53 = tl.constexpr(2.0**-53)


@triton.jit
def _u32(value: tl.constexpr):
    return tl.full((), value, tl.uint32)


@triton.jit
def _mix32(x):
    # The torch path's 32-bit mixer, on uint32 (multiplication wraps modulo 2³²).
    x = x ^ (x >> 16)
    x = x * _u32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * _u32(0x846CA68B)
    return x ^ (x >> 16)


@triton.jit
def _low32(x):
    return (x & 0xFFFFFFFF).to(tl.uint32)


@triton.jit
def hashed_uniform(seed, index, step, STREAM: tl.constexpr):
    """`coordinated.hashed_uniform` bit for bit: int64 seed, index and step, 53 bits."""
    h = _mix32(_low32(seed) ^ _u32(STREAM))
    h = _mix32(h ^ _low32(seed >> 32))
    h = _mix32(h ^ _low32(index))
    h = _mix32(h ^ _low32(step))
    first = _mix32(h ^ _u32(0x68E31DA4))
    second = _mix32(first ^ _u32(0xB5297A4D))
    bits = ((first >> 5).to(tl.uint64) << 26) | (second >> 6).to(tl.uint64)
    return bits.to(tl.float64) * TWO_POW_M53


@triton.jit
def _split_sums_kernel(q_ptr, sums_ptr, V, CHUNK, BLOCK: tl.constexpr):
    row, split, _ = program_position()
    base = q_ptr + row.to(tl.int64) * V
    begin, end = split_bounds(split, CHUNK, V)
    total = tl.zeros((BLOCK,), tl.float64)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        total += tl.load(base + offs, mask=offs < end, other=0.0).to(tl.float64)
    tl.store(sums_ptr + row * tl.num_programs(1) + split, tl.sum(total, axis=0))


@triton.jit
def _pick_kernel(q_ptr, sums_ptr, value_ptr, seed_ptr, index_ptr, step_ptr, token_ptr,
                 new_value_ptr, V, CHUNK, SPLITS, STREAM: tl.constexpr,
                 SPLIT_BLOCK: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    lanes = tl.arange(0, SPLIT_BLOCK)
    sums = tl.load(sums_ptr + row * SPLITS + lanes, mask=lanes < SPLITS, other=0.0)
    ends = tl.cumsum(sums, axis=0)
    total = tl.sum(sums, axis=0)
    target = tl.load(value_ptr + row) * total
    # The chunk whose running sum first exceeds the target; rounding can leave the target
    # at the total, and then the last chunk with mass takes it.
    last_chunk = tl.max(tl.where((sums > 0) & (lanes < SPLITS), lanes, 0), axis=0)
    chunk = tl.minimum(tl.sum(((ends <= target) & (lanes < SPLITS)).to(tl.int32), axis=0),
                       last_chunk)  # fmt: skip
    running = tl.sum(tl.where(lanes < chunk, sums, 0.0), axis=0)
    base = q_ptr + row.to(tl.int64) * V
    end = tl.minimum((chunk + 1) * CHUNK, V)
    token = tl.zeros((), tl.int32) - 1
    low = running
    width = tl.zeros((), tl.float64)
    last_token = chunk * CHUNK
    last_low = running
    last_width = tl.zeros((), tl.float64)
    for start in range(chunk * CHUNK, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        q = tl.load(base + offs, mask=offs < end, other=0.0).to(tl.float64)
        block_ends = running + tl.cumsum(q, axis=0)
        # First token of this block whose bucket ends above the target (if none found yet).
        above = (block_ends > target) & (offs < end) & (q > 0)
        first = tl.min(tl.where(above, offs, 2147483647), axis=0)
        here = (token < 0) & (first < 2147483647)
        q_first = tl.sum(tl.where(offs == first, q, 0.0), axis=0)
        end_first = tl.sum(tl.where(offs == first, block_ends, 0.0), axis=0)
        token = tl.where(here, first, token)
        low = tl.where(here, end_first - q_first, low)
        width = tl.where(here, q_first, width)
        # The last token with mass so far, for a target left at the total.
        positive = (q > 0) & (offs < end)
        last = tl.max(tl.where(positive, offs, -1), axis=0)
        found_last = last >= 0
        q_last = tl.sum(tl.where(offs == last, q, 0.0), axis=0)
        end_last = tl.sum(tl.where(offs == last, block_ends, 0.0), axis=0)
        last_token = tl.where(found_last, last, last_token)
        last_low = tl.where(found_last, end_last - q_last, last_low)
        last_width = tl.where(found_last, q_last, last_width)
        running = running + tl.sum(q, axis=0)
    missing = token < 0
    token = tl.where(missing, last_token, token)
    low = tl.where(missing, last_low, low)
    width = tl.where(missing, last_width, width)
    # The code's position inside the bucket, refilled below its grain (as the torch path).
    inside = tl.minimum(tl.maximum((target - low) / width, 0.0), 1.0)
    grain = TWO_POW_M52 * total / width
    fresh = hashed_uniform(tl.load(seed_ptr + row), tl.load(index_ptr + row),
                           tl.load(step_ptr + row) + 1, STREAM)  # fmt: skip
    refilled = inside + fresh * grain
    refilled = refilled - tl.floor(refilled)
    tl.store(token_ptr + row, token.to(tl.int64))
    tl.store(new_value_ptr + row, refilled)


def coordinated_sample_cuda(q: torch.Tensor, codes: Codes) -> tuple[torch.Tensor, Codes]:
    """`coordinated_sample` for q with one row per sample ([..., V], float32 on CUDA)."""
    samples = codes.value.shape
    flat = q.reshape(-1, q.shape[-1]).float().contiguous()
    rows, vocab = flat.shape
    splits = splits_for(rows, vocab, q.device, per_sm=4, block=BLOCK)
    chunk = chunk_for(vocab, splits, BLOCK)
    splits = cdiv(vocab, chunk)
    sums = torch.empty(rows, splits, device=q.device, dtype=torch.float64)
    _split_sums_kernel[(rows, splits)](flat, sums, vocab, chunk, BLOCK=BLOCK, num_warps=4)
    parts = [part.reshape(-1).to(q.device).contiguous() for part in codes]
    tokens = torch.empty(rows, device=q.device, dtype=torch.int64)
    value = torch.empty(rows, device=q.device, dtype=torch.float64)
    _pick_kernel[(rows,)](
        flat, sums, *parts, tokens, value, vocab, chunk, splits, STREAM=_REFILL,
        SPLIT_BLOCK=pow2_at_least(splits, 16), BLOCK=BLOCK, num_warps=4,
    )  # fmt: skip
    seed, index, step = parts[1:]
    return tokens.reshape(samples), Codes(
        value.reshape(samples), seed.reshape(samples), index.reshape(samples),
        (step + 1).reshape(samples),
    )  # fmt: skip
