"""The Philox uniforms a draw takes, for the tests' references (Triton, CPU interpreter or
CUDA)."""

import torch
import triton
import triton.language as tl

from decoptim.core.kernels.streaming import pow2_at_least
from decoptim.core.kernels.uniforms import philox_uniforms


@triton.jit
def _philox_kernel(seed_ptr, first_ptr, second_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    first, second = philox_uniforms(seed_ptr, offsets)
    tl.store(first_ptr + offsets, first, mask=offsets < n)
    tl.store(second_ptr + offsets, second, mask=offsets < n)


def philox_pairs(seed: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two uniforms (float64) at offsets 0 … count − 1 from the Philox seed tensor `seed`
    (`draw.draw_seed`'s), on its device."""
    first, second = torch.empty(2, count, dtype=torch.float64, device=seed.device)
    _philox_kernel[(1,)](seed, first, second, count, BLOCK=pow2_at_least(count, 16))
    return first, second
