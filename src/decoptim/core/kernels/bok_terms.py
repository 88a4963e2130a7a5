"""Best-of-K with w = p, token by token: the terms its kernels (`bok_prob`) and the draw over
its tail's closed form (`draw`, COVERAGE) compute alike. One definition, so that the draw
excludes exactly the head the gather kept and weighs the tail exactly as q is written.

With d_v = z_v − max z: A_v = c·d_v, p_v = exp(d_v/τ_p − LSE_p) and b_v = βK·p_v. Token v
is in the head iff (1/τ_p + c)·d_v ≥ gap (the row's bound, `bok_prob`); below it
q_v = exp(A_v + b_v − shift), or exp(A_v + b_v·(1 − p_v)^{K−1} − shift) after a single
mirror step from q₀ = p.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .bok_newton import safe_pow


@triton.jit
def prob_terms(z, z_max, c, inv_tau_p, lse_p, beta_k):
    """A, p and b = βK·p of each token (A = −inf, p = b = 0 for masked tokens)."""
    d = z - z_max
    p = tl.exp(d * inv_tau_p - lse_p)
    return c * d, p, beta_k * p


@triton.jit
def mirror_exponent(a, b, q, k):
    """A + b·(1 − q)^{K−1}: log q (unnormalised) after a mirror step from q."""
    return a + b * safe_pow(tl.maximum(1.0 - q, 0.0), k - 1.0)


@triton.jit
def in_prob_head(z, z_max, slope, gap):
    """Whether each token is in the head: slope·(z − max z) ≥ gap, slope = 1/τ_p + c."""
    return slope * (z - z_max) >= gap


@triton.jit
def prob_tail_exponent(z, z_max, c, inv_tau_p, lse_p, beta_k, k, FIRST_STEP: tl.constexpr):
    """log q_v + shift on the tail: A + b, or A + b·(1 − p)^{K−1} after one mirror step."""
    a, p, b = prob_terms(z, z_max, c, inv_tau_p, lse_p, beta_k)
    if FIRST_STEP:
        return mirror_exponent(a, b, p, k)
    return a + b


# A row's terms as `bok_prob`'s kernels leave them for the draw: float32 [rows, ROW_TERMS].
ROW_TERMS = tl.constexpr(8)
Z_MAX, LSE_P, SHIFT, GAP, C, INV_TAU_P, BETA_K, K = (tl.constexpr(i) for i in range(8))


@triton.jit
def tail_q(z, terms_ptr, row, FIRST_STEP: tl.constexpr):
    """q of the tail tokens among z (0 on the head), from the row's terms."""
    row_terms = terms_ptr + row * ROW_TERMS
    z_max = tl.load(row_terms + Z_MAX)
    c = tl.load(row_terms + C)
    inv_tau_p = tl.load(row_terms + INV_TAU_P)
    exponent = prob_tail_exponent(z, z_max, c, inv_tau_p, tl.load(row_terms + LSE_P),
                                  tl.load(row_terms + BETA_K), tl.load(row_terms + K),
                                  FIRST_STEP)  # fmt: skip
    head = in_prob_head(z, z_max, inv_tau_p + c, tl.load(row_terms + GAP))
    return tl.where(head, 0.0, tl.exp(exponent - tl.load(row_terms + SHIFT)))
