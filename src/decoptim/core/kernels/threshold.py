"""Sort-free threshold decoders on CUDA, one Triton program per row.

Each kernel runs the same bisection as the torch reference in decoptim.core, but keeps its
loop inside one program: every pass re-reads the row (600 KB at V = 152k, from L2 after the
first), instead of launching a handful of kernels per pass.

- Tsallis-α (sparsemax α = 2, entmax): bisection on η in q_v = [(α−1)(x_v − η)]₊^{1/(α−1)},
  x = z/τ, inside [max x − 1/(α−1), max x]; 32 passes, then q renormalised.
- Top-p: the nucleus by bisection over the order-preserving int32 codes of x (33 passes),
  so ties at the edge are kept exactly as on the CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096


@triton.jit
def _psi(y, alpha_minus_one, KIND: tl.constexpr):
    base = tl.maximum(alpha_minus_one * y, 0.0)
    if KIND == 0:  # α = 2
        return base
    elif KIND == 1:  # α = 1.5
        return base * base
    else:
        safe = tl.where(base > 0, base, 1.0)
        return tl.where(base > 0, tl.exp(tl.log(safe) / alpha_minus_one), 0.0)


@triton.jit
def _tsallis_kernel(
    z_ptr,
    inv_tau_ptr,
    q_ptr,
    V,
    stride,
    alpha_minus_one,
    KIND: tl.constexpr,
    ITERATIONS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    base = row.to(tl.int64) * stride
    inv_tau = tl.load(inv_tau_ptr + row)
    top = -float("inf")
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(z_ptr + base + offs, mask=offs < V, other=-float("inf")) * inv_tau
        top = tl.maximum(top, tl.max(x, axis=0))
    # Relative to the row maximum, like the reference: the resolution of η does not depend
    # on a common offset of the logits.
    lo = -1.0 / alpha_minus_one
    hi = 0.0
    for _ in range(ITERATIONS):
        mid = 0.5 * (lo + hi)
        total = 0.0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(z_ptr + base + offs, mask=offs < V, other=-float("inf")) * inv_tau - top
            total += tl.sum(_psi(x - mid, alpha_minus_one, KIND), axis=0)
        too_much = total >= 1.0
        lo = tl.where(too_much, mid, lo)
        hi = tl.where(too_much, hi, mid)
    total = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(z_ptr + base + offs, mask=offs < V, other=-float("inf")) * inv_tau - top
        total += tl.sum(_psi(x - lo, alpha_minus_one, KIND), axis=0)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        x = tl.load(z_ptr + base + offs, mask=mask, other=-float("inf")) * inv_tau - top
        tl.store(q_ptr + base + offs, _psi(x - lo, alpha_minus_one, KIND) / total, mask=mask)


def tsallis_probs(z: torch.Tensor, temperature: torch.Tensor, alpha: float) -> torch.Tensor:
    """α-entmax of z/τ per row ([..., V], float32 CUDA; τ 0-d or [..., 1])."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    rows, vocab = flat.shape
    inv_tau = torch.broadcast_to(1.0 / temperature.to(flat), (*z.shape[:-1], 1)).reshape(rows)
    q = torch.empty_like(flat)
    kind = 0 if alpha == 2.0 else 1 if alpha == 1.5 else 2
    _tsallis_kernel[(rows,)](
        flat,
        inv_tau.contiguous(),
        q,
        vocab,
        vocab,
        alpha - 1.0,
        KIND=kind,
        ITERATIONS=32,
        BLOCK=BLOCK,
        num_warps=16,
    )
    return q.reshape(z.shape)


@triton.jit
def _code(x):
    # Order-preserving int32 code of a float32 (-0.0 made +0.0 first, so ties share codes).
    bits = (x + 0.0).to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64)


@triton.jit
def _top_p_kernel(z_ptr, inv_tau_ptr, p_ptr, q_ptr, V, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * stride
    inv_tau = tl.load(inv_tau_ptr + row)
    target = tl.load(p_ptr + row)
    top = -float("inf")
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(z_ptr + base + offs, mask=offs < V, other=-float("inf")) * inv_tau
        top = tl.maximum(top, tl.max(x, axis=0))
    norm = 0.0
    low_code = _code(top)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(z_ptr + base + offs, mask=offs < V, other=-float("inf")) * inv_tau
        norm += tl.sum(tl.exp(x - top), axis=0)
        finite = x > -float("inf")
        low_code = tl.minimum(low_code, tl.min(tl.where(finite, _code(x), low_code), axis=0))
    # Keep {x : code(x) >= c*}, c* the largest code whose upper set holds mass >= p:
    # mass(lo) >= p always, mass(hi) < p always; 33 halvings close the int32 range.
    lo = low_code
    hi = _code(top) + 1
    for _ in range(33):
        mid = lo + (hi - lo) // 2
        mass = 0.0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(z_ptr + base + offs, mask=offs < V, other=-float("inf")) * inv_tau
            keep = (_code(x) >= mid) & (x > -float("inf"))
            mass += tl.sum(tl.where(keep, tl.exp(x - top), 0.0), axis=0)
        reached = mass >= target * norm
        lo = tl.where(reached & (hi - lo > 1), mid, lo)
        hi = tl.where(reached | (hi - lo <= 1), hi, mid)
    kept = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(z_ptr + base + offs, mask=offs < V, other=-float("inf")) * inv_tau
        keep = (_code(x) >= lo) & (x > -float("inf"))
        kept += tl.sum(tl.where(keep, tl.exp(x - top), 0.0), axis=0)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        x = tl.load(z_ptr + base + offs, mask=mask, other=-float("inf")) * inv_tau
        keep = (_code(x) >= lo) & (x > -float("inf"))
        tl.store(q_ptr + base + offs, tl.where(keep, tl.exp(x - top) / kept, 0.0), mask=mask)


def top_p_probs(z: torch.Tensor, temperature: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Top-p of softmax(z/τ) per row ([..., V], float32 CUDA; τ, p 0-d or [..., 1])."""
    flat = z.reshape(-1, z.shape[-1]).contiguous()
    rows, vocab = flat.shape

    def per_row(value: torch.Tensor) -> torch.Tensor:
        return torch.broadcast_to(value.to(flat), (*z.shape[:-1], 1)).reshape(rows).contiguous()

    q = torch.empty_like(flat)
    _top_p_kernel[(rows,)](
        flat, per_row(1.0 / temperature), per_row(p), q, vocab, vocab, BLOCK=BLOCK, num_warps=16
    )
    return q.reshape(z.shape)
