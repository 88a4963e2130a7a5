"""The coordinated codes' hashed bits (`decoptim.core.coordinated.hashed_uniform`) in Triton,
bit for bit, for the draw's coordinated mode (`draw.CodedDraw`), and the 53-bit uniform
both that hash and the draw's Philox words are turned into."""

from __future__ import annotations

import triton
import triton.language as tl

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
    return uniform53(first, second)


@triton.jit
def uniform53(high, low):
    """A float64 uniform in [0, 1) on the grid of 2⁻⁵³ from two 32-bit words: the top 27
    bits of `high` and the top 26 of `low` (as the torch path's `hashed_uniform`)."""
    top = (high.to(tl.uint32, bitcast=True) >> 5).to(tl.uint64)
    bottom = (low.to(tl.uint32, bitcast=True) >> 6).to(tl.uint64)
    return ((top << 26) | bottom).to(tl.float64) * TWO_POW_M53
