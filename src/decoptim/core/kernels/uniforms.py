"""The uniforms the kernels draw with, and the inverse-transform pick they feed.

- `philox_uniforms`: a row's two 53-bit uniforms from one Philox call on the draw's seed;
- `hashed_uniform`: the coordinated codes' hashed bits (`decoptim.core.coordinated`), bit
  for bit, for the draw's coordinated mode (`draw.CodedDraw`);
- `pick`: the first weight whose float64 running sum exceeds a target;
- `next_code`: a coordinated row's code for its next step, from the bucket it was drawn in.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..coordinated import _REDRAW, _REFILL

TWO_POW_M52 = tl.constexpr(2.0**-52)
TWO_POW_M53 = tl.constexpr(2.0**-53)
REFILL = tl.constexpr(_REFILL)
REDRAW = tl.constexpr(_REDRAW)


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
    return uniform53(first, second)


@triton.jit
def uniform53(high, low):
    """A float64 uniform in [0, 1) on the grid of 2⁻⁵³ from two 32-bit words: the top 27
    bits of `high` and the top 26 of `low` (as the torch path's `hashed_uniform`)."""
    top = (high.to(tl.uint32, bitcast=True) >> 5).to(tl.uint64)
    bottom = (low.to(tl.uint32, bitcast=True) >> 6).to(tl.uint64)
    return ((top << 26) | bottom).to(tl.float64) * TWO_POW_M53


@triton.jit
def philox_uniforms(seed_ptr, row):
    """Two independent 53-bit uniforms for `row` from the Philox seed at seed_ptr."""
    words = tl.randint4x(tl.load(seed_ptr), row.to(tl.int64))
    return uniform53(words[0], words[1]), uniform53(words[2], words[3])


@triton.jit
def pick(weights, position, target):
    """The first position whose float64 running sum of `weights` (≥ 0) exceeds `target`
    (a float64 in [0, Σ)), and that position's bucket: its running sum before it and its
    weight. Capped at the last positive weight (a target computed as u·Σ may round up to
    Σ), so a weight of 0 is never picked; position 0 when Σ = 0."""
    weights = weights.to(tl.float64)
    running = tl.cumsum(weights, axis=0)
    below = tl.sum((running <= target).to(tl.int32), axis=0)
    chosen = tl.minimum(below, tl.max(tl.where(weights > 0, position, 0), axis=0))
    width = tl.sum(tl.where(position == chosen, weights, 0.0), axis=0)
    low = tl.sum(tl.where(position == chosen, running, 0.0), axis=0) - width
    return chosen, low, width


@triton.jit
def next_code(place, low, width, grain, group_ptr, index_ptr, step_ptr, row,
              STREAM: tl.constexpr):  # fmt: skip
    """A coordinated row's next code, as `coordinated.coordinated_sample` makes it: where its
    target `place` fell inside the drawn token's bucket [low, low + width), refilled below
    `grain` (2⁻⁵² of the row's mass, in the bucket's units) with the hashed bits of its
    group seed, index and step + 1 (of `STREAM`: a rejected pick's code takes its own,
    `coordinated.coordinated_sample_in_set`)."""
    inside = tl.minimum(tl.maximum((place - low) / width, 0.0), 1.0)
    fresh = hashed_uniform(tl.load(group_ptr + row), tl.load(index_ptr + row),
                           tl.load(step_ptr + row) + 1, STREAM)  # fmt: skip
    refilled = inside + fresh * grain
    return refilled - tl.floor(refilled)
