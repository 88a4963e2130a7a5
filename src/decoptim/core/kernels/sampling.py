"""Draw one token per row from q by the exponential race: argmax_v q_v / E_v, E_v ~ Exp(1).

P(argmax = v) = q_v / Σ q exactly, so this samples from q with one read of it and no
cumulative sum. The Philox seed comes from the caller's torch.Generator as a device tensor,
so a seeded generator gives reproducible draws and nothing waits on the host.
"""

from __future__ import annotations

import torch

from .streaming import race_sample


def sample_rows(q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of `q` ([..., V], CUDA), distributed as q."""
    flat = q.reshape(-1, q.shape[-1]).float().contiguous()
    return race_sample(flat, generator).reshape(q.shape[:-1])
