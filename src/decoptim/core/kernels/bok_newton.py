"""Best-of-K's nested Newton solve in Triton, the one implementation of it that the kernels
share (the top-M head, `bok_head`, and the w = p path, `bok_prob`).

For a row's head (a_v, b_v, v ≤ M, and the tail's log-mass) it finds t and u_v with
u_v = a_v − t + b_v·(1 − e^{u_v})^{K−1} and Σ_v e^{u_v} + e^{tail − t} = 1: a monotone,
inflection-aware inner Newton on each u_v nested in a bracketed outer Newton on t, with
fixed budgets (the outer one left early once t is settled: `solve_row`); the algorithm of
`decoptim.core.bok._coverage_roots`, every iterate in registers.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def safe_pow(base, exponent):
    # base ** exponent for base >= 0, with 0 ** 0 = 1.
    safe = tl.where(base > 0, base, 1.0)
    value = tl.exp(exponent * tl.log(safe))
    return tl.where(exponent == 0, 1.0, tl.where(base > 0, value, 0.0))


@triton.jit
def phi_and_slope(u, a, b, k):
    """φ(u) = u − a − b·(1 − e^u)^{K−1}, whose root is u_v, and its slope φ'(u)."""
    e = tl.exp(u)
    one_minus = tl.maximum(1.0 - e, 0.0)
    phi = u - a - b * safe_pow(one_minus, k - 1.0)
    slope = 1.0 + b * (k - 1.0) * safe_pow(one_minus, tl.maximum(k - 2.0, 0.0)) * e
    return phi, slope


@triton.jit
def inner_roots(u, a, b, k, ITERATIONS: tl.constexpr):
    """Each u_v with φ(u_v) = 0 in [min(a, 0), min(a + b, 0)]: Newton from the warm start u
    (or one step from it, or the inflection point), on the side of the inflection where its
    iterates are monotone, for ITERATIONS steps."""
    lo = tl.minimum(a, 0.0)
    hi = tl.minimum(a + b, 0.0)
    u_infl = -tl.log(tl.maximum(k - 1.0, 1.0))
    warm = tl.minimum(tl.maximum(u, lo), hi)
    phi, slope = phi_and_slope(warm, a, b, k)
    warm_ok = ((warm <= u_infl) & (phi >= 0)) | ((warm >= u_infl) & (phi <= 0))
    stepped = tl.minimum(tl.maximum(warm - phi / slope, lo), hi)
    phi_s, _ = phi_and_slope(stepped, a, b, k)
    stepped_ok = ((stepped <= u_infl) & (phi_s >= 0)) | ((stepped >= u_infl) & (phi_s <= 0))
    start = tl.minimum(tl.maximum(u_infl + 0.0 * a, lo), hi)
    u = tl.where(warm_ok, warm, tl.where(stepped_ok, stepped, start))
    for _ in range(ITERATIONS):
        phi, slope = phi_and_slope(u, a, b, k)
        u = tl.minimum(tl.maximum(u - phi / slope, lo), hi)
    return u


@triton.jit
def log_mass(u, tail):
    """log(Σ_v e^{u_v} + e^tail) over the block u."""
    m = tl.maximum(tl.max(u, axis=0), tail)
    return m + tl.log(tl.sum(tl.exp(u - m), axis=0) + tl.exp(tail - m))


@triton.jit
def _rounding(t):
    # A step of t this small is float32 rounding: 64 ulps of max(|t|, 1).
    return 64 * 1.1920928955078125e-07 * tl.maximum(tl.abs(t), 1.0)


@triton.jit
def outer_step(t, t_lo, t_hi, g, d_g, last_step, before_last):
    """One safeguarded Newton step on t for G(t) = log Σ q (decreasing; root G = 0): the
    bracket shrinks with the sign of g, and a Newton step is taken only inside it and when
    it at most halves the step before last (rtsafe's rule), else the bracket's midpoint.
    Returns (t, t_lo, t_hi, last_step, before_last) for the next step."""
    t_lo = tl.where(g > 0, t, t_lo)
    t_hi = tl.where(g > 0, t_hi, t)
    newton = t - g / d_g
    step = tl.abs(newton - t)
    # Rounding-sized steps must not trip the cycle test once converged (see bok.py).
    rounding = _rounding(t)
    in_bracket = (newton >= t_lo - rounding) & (newton <= t_hi + rounding)
    accept = in_bracket & ((2 * step <= before_last) | (step <= rounding))
    following = tl.where(accept, tl.minimum(tl.maximum(newton, t_lo), t_hi), 0.5 * (t_lo + t_hi))
    return following, t_lo, t_hi, tl.abs(following - t), last_step


@triton.jit
def solve_row(a, b, k, tail, OUTER: tl.constexpr, INNER: tl.constexpr):
    """(u, t, log Σ q) for one row's head a, b and the tail's log-mass: up to OUTER bracketed
    Newton steps on t, each after INNER inner steps, then 2·INNER more at the final t. The
    outer steps stop once two in a row moved t by rounding only (`_rounding`): t is then
    settled, and the steps left would only repeat the inner ones that the final 2·INNER
    do. A program solves one row, so the row's budget ends without waiting on any other;
    the torch path (batched rows) stops only once every row is settled, and only on a CPU
    (`bok._stops_early`: elsewhere that test would be a host sync)."""
    dead = a == -float("inf")
    b = tl.where(dead, 0.0, b)
    a = tl.maximum(a, -1e30)
    t_lo = log_mass(a, tail)
    t_hi = log_mass(a + b, tail)
    t = t_lo
    u = a - t
    last_step = t_hi - t_lo
    before_last = last_step
    steps = 0
    calm = 0
    while (steps < OUTER) & (calm < 2):
        u = inner_roots(u, a - t, b, k, INNER)
        g = log_mass(u, tail - t)
        _, slope = phi_and_slope(u, a - t, b, k)
        moving = tl.where(u < 0, tl.exp(u - g) / slope, 0.0)
        d_g = -(tl.sum(moving, axis=0) + tl.exp(tail - t - g))
        t_before = t
        t, t_lo, t_hi, last_step, before_last = outer_step(
            t, t_lo, t_hi, g, d_g, last_step, before_last
        )
        calm = tl.where(last_step <= _rounding(t_before), calm + 1, 0)
        steps += 1
    u = inner_roots(u, a - t, b, k, 2 * INNER)
    return u, t, log_mass(u, tail - t)
