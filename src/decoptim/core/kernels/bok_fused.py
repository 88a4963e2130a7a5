"""Best-of-K with top-M or rank weights on CUDA: two streaming passes over the logits.

s = z/τ_s and p = softmax(z/τ_p) are z scaled by per-row constants, so the closed-form
tail of the exact solution is q_v = exp(c·z_v − L − 1 − t − log Z) with c = 1/τ_p + 1/(λτ_s)
and L = LSE(z/τ_p). Pass 1 computes L and LSE(c·z) per row; torch.topk picks the M head
tokens; the head kernel solves them; pass 2 writes q.

Ties at the M-th place follow torch.topk here (the CPU path breaks them toward the lower
token id); on untied logits both paths pick the same tokens.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .bok_head import coverage_roots


@triton.jit
def _stats_kernel(z_ptr, inv_tau_ptr, c_ptr, out_ptr, V, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    inv_tau = tl.load(inv_tau_ptr + row)
    c = tl.load(c_ptr + row)
    m1 = -float("inf")
    s1 = 0.0
    m2 = -float("inf")
    s2 = 0.0
    base = z_ptr + row.to(tl.int64) * stride
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = tl.load(base + offs, mask=offs < V, other=-float("inf")).to(tl.float32)
        x1 = z * inv_tau
        x2 = z * c
        new1 = tl.maximum(m1, tl.max(x1, axis=0))
        new2 = tl.maximum(m2, tl.max(x2, axis=0))
        s1 = s1 * tl.exp(m1 - new1) + tl.sum(tl.exp(x1 - new1), axis=0)
        s2 = s2 * tl.exp(m2 - new2) + tl.sum(tl.exp(x2 - new2), axis=0)
        m1 = new1
        m2 = new2
    tl.store(out_ptr + row * 2, m1 + tl.log(s1))
    tl.store(out_ptr + row * 2 + 1, m2 + tl.log(s2))


@triton.jit
def _write_kernel(z_ptr, c_ptr, shift_ptr, q_ptr, V, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.load(c_ptr + row)
    shift = tl.load(shift_ptr + row)
    base = row.to(tl.int64) * stride
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        z = tl.load(z_ptr + base + offs, mask=mask, other=-float("inf")).to(tl.float32)
        tl.store(q_ptr + base + offs, tl.exp(z * c - shift), mask=mask)


def bok_topm_probs(
    z: torch.Tensor,
    tau_scores: torch.Tensor,
    tau_reference: torch.Tensor,
    lam: torch.Tensor,
    b_head_of: callable,
    k: torch.Tensor,
    top_m: int,
    outer: int,
    inner: int,
) -> torch.Tensor:
    """q for logits z ([..., V], CUDA); per-row parameters broadcast as [..., 1] or scalars.

    `b_head_of(head)` maps the head indices ([rows, M]) to b = βKw on them.
    """
    shape = z.shape
    vocab = shape[-1]
    flat = z.reshape(-1, vocab).float().contiguous()
    rows = flat.shape[0]

    def per_row(value: torch.Tensor) -> torch.Tensor:
        return torch.broadcast_to(value.to(flat), (*shape[:-1], 1)).reshape(rows).contiguous()

    inv_tau_p = per_row(1.0 / tau_reference)
    c = per_row(1.0 / tau_reference + 1.0 / (lam * tau_scores))
    stats = torch.empty(rows, 2, device=z.device, dtype=torch.float32)
    _stats_kernel[(rows,)](flat, inv_tau_p, c, stats, vocab, vocab, BLOCK=4096, num_warps=8)
    lse_p, lse_c = stats[:, :1], stats[:, 1:]
    m = min(top_m, vocab)
    z_head, head = torch.topk(flat, m, dim=-1)
    a_head = c[:, None] * z_head - lse_p - 1.0
    lse_a = lse_c - lse_p - 1.0
    head_lse = torch.logsumexp(a_head, -1, keepdim=True)
    # The tail's mass is the total minus the head's; it is tiny whenever the head dominates,
    # and its rounding error then moves no probability by more than float32 resolution.
    tail_lse = lse_a + torch.log1p(-torch.exp(torch.clamp(head_lse - lse_a, max=0.0)))
    k_rows = torch.broadcast_to(k.to(flat), (*shape[:-1], 1)).reshape(rows, 1)
    u, t, log_z = coverage_roots(a_head, b_head_of(head), k_rows, tail_lse, outer, inner)
    q = torch.empty_like(flat)
    shift = (lse_p + 1.0 + t + log_z).reshape(rows).contiguous()
    _write_kernel[(rows,)](flat, c, shift, q, vocab, vocab, BLOCK=4096, num_warps=8)
    q.scatter_(-1, head, torch.exp(u - log_z))
    return q.reshape(shape)
