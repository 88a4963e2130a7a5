"""Inverse transform sampling on the torch path: the token whose bucket holds u·Σq.

Buckets are float64 sums of q in token order: a float32 prefix sum over 150k tokens
misplaces every bucket by ~1e-6, more than a long tail's whole mass. With float64 sums each
token's chance is right to about V·2⁻⁵³ of the row's mass, and a token of mass 0 is never
taken. `sample_rows` is the plain draw (a uniform per row); `decoptim.core.coordinated`
picks with codes through the same buckets.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def sample_rows(q: Tensor, uniform: Tensor, validate: bool = True) -> Tensor:
    """One token per row of q [rows, V] (non-negative; rows need not sum to 1): the token
    whose bucket holds uniform·Σq, uniform [rows] float64 in [0, 1). A uniform of 53 random
    bits takes each token with its probability to ~V·2⁻⁵³ of the row's mass. With
    `validate`, the uniforms' range and each row of q (`invalid_rows`) are checked in one
    host sync."""
    if q.dim() != 2 or uniform.shape != q.shape[:1] or uniform.dtype != torch.float64:
        raise ValueError(
            f"sample_rows takes q [rows, V] and float64 uniform [rows], got q "
            f"{tuple(q.shape)} and uniform {tuple(uniform.shape)} {uniform.dtype}"
        )
    if validate:
        outside = ~((uniform >= 0) & (uniform < 1))
        bad = invalid_rows(q)
        outside_any, bad_any = torch.stack([outside.any(), bad.any()]).tolist()
        if outside_any:
            raise ValueError(f"uniform must lie in [0, 1), got {show(uniform[outside])}")
        if bad_any:
            raise invalid_q(q, bad)
    token, _, _, _ = buckets_by_block(q, uniform.reshape(-1, 1))
    return token.reshape(-1)


def invalid_rows(q: Tensor) -> Tensor:
    """Per row of q [..., V]: whether it is not finite and non-negative with a positive sum
    (non-negative entries with a finite sum are finite; a NaN fails amin ≥ 0)."""
    total = q.sum(-1)
    return ~(q.amin(-1) >= 0) | ~torch.isfinite(total) | ~(total > 0)


def invalid_q(q: Tensor, bad: Tensor, name: str = "q") -> ValueError:
    """The error naming the first row of q (called `name`) that `invalid_rows` flagged in
    `bad`."""
    row = int(torch.nonzero(bad.flatten())[0])
    return ValueError(
        f"{name} row {row} must be finite and non-negative with positive mass, got "
        f"{show(q.reshape(-1, q.shape[-1])[row])}"
    )


def show(values: Tensor) -> str:
    """The first few of `values`, for an error message."""
    flat = values.flatten()
    return f"{flat[:4].tolist()}{' ...' if flat.numel() > 4 else ''}"


def buckets(cumulative: Tensor, value: Tensor) -> tuple[Tensor, ...]:
    """Per code (value [rows, n] or [1, n] against cumulative [rows, V] float64 sums): the
    token whose bucket holds value·total, the bucket's start and width, and the total."""
    total = cumulative[:, -1:].contiguous()
    token, low, width = _locate(cumulative, value * total, 0.0)
    return token, low, width, total


class BlockBuckets(NamedTuple):
    """The buckets of each row of q [rows, V] without a [rows, V] float64 prefix sum (a
    sequential pass that costs more than the rest of a draw on a CPU): q cut into blocks of
    `block` tokens and the float64 prefix sums of the blocks' sums. Made once, it serves
    every pick from q (`locate`)."""

    blocks: Tensor  # [rows, blocks, block], q padded with zeros
    cumulative: Tensor  # [rows, blocks] float64
    block: int

    @classmethod
    def of(cls, q: Tensor, block: int = 1024) -> BlockBuckets:
        rows, vocab = q.shape
        blocks = torch.nn.functional.pad(q, (0, -vocab % block)).view(rows, -1, block)
        return cls(blocks, blocks.sum(-1, dtype=torch.float64).cumsum(-1), block)

    def locate(self, value: Tensor) -> tuple[Tensor, ...]:
        """`buckets` for one target per row: the block sums locate the block, a prefix sum
        inside it the token."""
        rows = self.blocks.shape[0]
        block_token, start, _, total = buckets(self.cumulative, value)
        index = block_token[:, :, None].expand(rows, 1, self.block)
        inside = self.blocks.gather(1, index)[:, 0]
        ends = start + torch.cumsum(inside.to(torch.float64), -1)
        token, low, width = _locate(ends, value * total, start)
        return block_token * self.block + token, low, width, total


def buckets_by_block(q: Tensor, value: Tensor, block: int = 1024) -> tuple[Tensor, ...]:
    """`buckets` for one target per row of q [rows, V] (`BlockBuckets`)."""
    return BlockBuckets.of(q, block).locate(value)


def _locate(ends: Tensor, target: Tensor, start: Tensor | float) -> tuple[Tensor, ...]:
    """The bucket holding each target: bucket j of a row spans [ends[j − 1], ends[j]) (bucket
    0 starts at `start`); returns its position, start and width. The first bucket ending
    above the target is taken; rounding can leave a target at or past the row's last end
    (two sums of the same mass round differently), and the last bucket with mass then
    takes it. (A row whose sums are not finite gets some bucket of the row.)"""
    last = torch.searchsorted(ends, ends[:, -1:].contiguous(), right=False)
    last = last.clamp(max=ends.shape[-1] - 1)
    token = torch.minimum(torch.searchsorted(ends, target.contiguous(), right=True), last)
    high = ends.gather(-1, token)
    low = torch.where(token > 0, ends.gather(-1, (token - 1).clamp_min(0)), start)
    return token, low, high - low
