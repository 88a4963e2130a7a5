"""The coordinated codes' hashed bits (`decoptim.core.coordinated.hashed_uniform`) in Triton,
bit for bit, for the draw's coordinated mode (`draw.CodedDraw`)."""

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
    bits = ((first >> 5).to(tl.uint64) << 26) | (second >> 6).to(tl.uint64)
    return bits.to(tl.float64) * TWO_POW_M53
