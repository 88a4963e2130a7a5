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


def philox_words(key: int, counter: int) -> tuple[int, int, int, int]:
    """Philox4x32-10 (Salmon et al., SC'11) in plain Python, an independent reference for
    `tl.randint4x(key, counter)`: the key's two 32-bit halves, the counter's in its first two
    words (the last two are 0)."""
    mask = 0xFFFFFFFF
    k0, k1 = key & mask, (key >> 32) & mask
    c0, c1, c2, c3 = counter & mask, (counter >> 32) & mask, 0, 0
    for _ in range(10):
        low, high = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (high >> 32) ^ c1 ^ k0, high & mask, (low >> 32) ^ c3 ^ k1, low & mask
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    return c0, c1, c2, c3
