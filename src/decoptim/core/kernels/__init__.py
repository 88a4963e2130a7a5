"""Triton kernels for the hot paths on CUDA. The torch code in decoptim.core stays the CPU
path and the reference; a kernel is used only for CUDA tensors when Triton imports. Which
kernel solves which decoder is read from one table, `decoptim.core.kernels.table`."""

from __future__ import annotations

import functools

import torch


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def use_kernels(x: torch.Tensor) -> bool:
    return x.is_cuda and triton_available() and not _DISABLED


_DISABLED = False

# Best-of-K's fused path ranks its head in registers (an M × M comparison for rank weights).
MAX_FUSED_TOP_M = 256


def set_kernels_enabled(enabled: bool) -> None:
    """Switch the Triton kernels off (or back on), e.g. to time the torch reference."""
    global _DISABLED
    _DISABLED = not enabled
