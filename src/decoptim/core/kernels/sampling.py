"""Draw one token per row from q by the exponential race: argmax_v q_v / E_v, E_v ~ Exp(1).

P(argmax = v) = q_v / Σ q exactly, so this samples from q with one read of it and no
cumulative sum. The Philox seed comes from the caller's torch.Generator as a device tensor,
so a seeded generator gives reproducible draws and nothing waits on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _race_kernel(q_ptr, out_ptr, seed_ptr, V, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    seed = tl.load(seed_ptr)
    best_key = -1.0
    best_index = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        q = tl.load(q_ptr + row.to(tl.int64) * stride + offs, mask=mask, other=0.0)
        u = tl.rand(seed, row * V + offs)
        exponential = -tl.log(1.0 - u)
        # q > 0 with E = 0 gives +inf (that token wins, as it should); q = 0 never wins.
        key = tl.where(q > 0, q / exponential, -1.0)
        block_best = tl.max(key, axis=0)
        block_index = tl.argmax(key, axis=0) + start
        better = block_best > best_key
        best_index = tl.where(better, block_index, best_index)
        best_key = tl.where(better, block_best, best_key)
    tl.store(out_ptr + row, best_index)


def sample_rows(q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of `q` ([..., V], CUDA), distributed as q."""
    flat = q.reshape(-1, q.shape[-1]).float().contiguous()
    rows, vocab = flat.shape
    seed = torch.randint(0, 2**31 - 1, (1,), device=q.device, generator=generator)
    out = torch.empty(rows, dtype=torch.int64, device=q.device)
    _race_kernel[(rows,)](flat, out, seed, vocab, vocab, BLOCK=4096, num_warps=8)
    return out.reshape(q.shape[:-1])
