r"""Best-of-K: the coverage decoder for multi-sample pipelines.

    q* = argmax_{q ∈ Δ, supp q ⊆ C} <q, s> − λ·KL(q ‖ p) + λβ·Σ_v w_v (1 − (1 − q_v)^K)

1 − (1 − q_v)^K is the chance that token v appears at least once among K draws from q,
so the last term rewards spreading mass over the tokens that weights w deem worth
covering. By default s = z/τ, p = softmax(z/τ) and C is every token; with a support C
(top-k, min-p, ...) the problem is the same one on the logits restricted to C. The
objective is `decoptim.core.problem.KLCoverage`; this module holds its solvers.

Two solvers:
- "mirror": the paper's Algorithm 1, `steps` exponentiated-gradient steps from q₀ = p
  with step size 1/λ (a fixed budget; not guaranteed to reach the optimum);
- "exact": the maximiser to float precision. In log space u = log q each token satisfies
  u_v = A_v − t + b_v (1 − e^{u_v})^{K−1} with A = log p + s/λ − 1, b = βwK and one scalar
  t = ν/λ; the inner root (in u) and the outer one (in t, where Σ e^u = 1) are monotone,
  and both are found by Newton steps kept inside shrinking brackets. Where w_v = 0 the root
  is u_v = A_v − t, so with top-M weights the tail collapses into one log-sum-exp and the
  iterations touch M tokens per row.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import (
    Param,
    count,
    max_int,
    nonnegative,
    per_row,
    positive,
    shown,
)
from .decoders import Decoder, SimplexDecoder, Softmax
from .problem import KLCoverage, SimplexProblem
from .regularizers import Shannon
from .supports import Full, Support, ordered_codes

WEIGHTS = ("prob", "topm", "rank")
# Upper limits on the budgets, which bound the work of one step: per row, mirror ascent makes
# `steps` passes over the V logits, the exact solver about outer_iterations ×
# (inner_iterations + 4) passes over V tokens (w = p or a tensor) or over top_m tokens
# (top-M and rank weights, after one top-M selection over V). The limits are above the
# paper's budget (5 mirror steps, 20 in its ablation) and the exact solver's automatic one
# (at most 15 × 8, enough for a relative Frank–Wolfe gap of 1e-6).
MAX_STEPS = 50
MAX_OUTER_ITERATIONS = 20
MAX_INNER_ITERATIONS = 10
# top-M and rank weights: the exact solver iterates over the M head tokens (a top-M
# indicator is meant for M ≪ V; CUDA's fused kernels take M ≤ 256).
MAX_TOP_M = 1024
# The CUDA routes (and KERNEL_PROB_MAX_SLOPE, the w = p kernels' range of βK) are in the
# kernel table, decoptim.core.kernels.table.
BOK_SOLVERS = ("exact", "mirror")
TEMPERING = ("tempered", "raw")


class BestOfK(Decoder):
    r"""argmax_{q ∈ Δ, supp q ⊆ C} <q, s> − λ KL(q ‖ p) + λβ Σ_v w_v (1 − (1 − q_v)^K),
    s = z/τ, p = softmax(z/τ) renormalised on C = C(z/τ) (by default every finite token).

    Args:
        k: K, the number of samples whose coverage is rewarded (int in [1, 2³¹ − 1], or
            per row).
        beta: β ∈ [0, 1e8], the coverage weight relative to λ (the paper's β̄ = λβ).
        lam: λ ∈ [1e-8, 1e8], the strength of the KL anchor to p (the paper's λ; the
            problem's `KLCoverage.kl_strength`, also `self.kl_strength`). Not a temperature.
        temperature: τ ∈ [1e-8, 1e8].
        weights: "prob" (w = p), "topm" (1 on the `top_m` most probable tokens, ties broken
            toward the lower token id), "rank" (1, 1 − 1/M, …, 1/M on the top M by
            probability, 0 beyond) or a non-negative tensor broadcastable to [..., V].
        top_m: M for "topm" and "rank", in [1, MAX_TOP_M = 1024] (an M above V acts as V).
        solver: "exact" or "mirror" (the paper's algorithm).
        steps, step_size: mirror ascent's iteration count (at most MAX_STEPS = 50) and step
            (in [1e-8, 1e8]; default 1/λ).
        scores, reference: "tempered" (z/τ, the default) or "raw" (z) for s and for p.
        outer_iterations, inner_iterations: the exact solver's Newton budgets (default:
            chosen from the largest coverage slope βwK, from (8, 4) up to (15, 8); at most
            MAX_OUTER_ITERATIONS = 20 and MAX_INNER_ITERATIONS = 10). On a CPU both loops
            stop once settled on every row; elsewhere they run in full.
        validate: check logits for NaN, +inf and all -inf rows (one host sync on GPU).
        support: C, any `Support` (e.g. `TopKSupport(50)`, `MinPSupport(0.1)`), computed from
            the tempered logits (z − max z)/τ like every decoder's; default every finite
            token. The problem is then BoK's on the logits restricted to C (−inf off it):
            p and the named weights are renormalised on C, the top M are taken inside C.

    On CUDA the kernel table (`decoptim.core.kernels.table`) has routes for the full
    support; with another support BoK runs on the torch path (and warns once).
    """

    def __init__(
        self,
        k: Param,
        beta: Param,
        lam: Param,
        temperature: Param = 1.0,
        weights: str | Tensor = "prob",
        top_m: int = 8,
        solver: str = "exact",
        steps: int = 5,
        step_size: Param | None = None,
        scores: str = "tempered",
        reference: str = "tempered",
        outer_iterations: int | None = None,
        inner_iterations: int | None = None,
        validate: bool = True,
        support: Support | None = None,
    ):
        self.k = count("k", k)
        self.beta = nonnegative("beta", beta)
        self.lam = positive("lam", lam)
        self.temperature = positive("temperature", temperature)
        if isinstance(weights, Tensor):
            if not weights.is_floating_point():
                raise TypeError(f"weights tensor must be floating point, got dtype={weights.dtype}")
            if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
                raise ValueError("weights tensor must be finite and non-negative")
        elif weights not in WEIGHTS:
            raise ValueError(
                f"weights must be one of {WEIGHTS} or a tensor, got weights={weights!r}"
            )
        self.weights = weights
        self.top_m = int(count("top_m", top_m, MAX_TOP_M))
        if solver not in BOK_SOLVERS:
            raise ValueError(f"solver must be one of {BOK_SOLVERS}, got solver={solver!r}")
        self.solver = solver
        self.steps = int(count("steps", steps, MAX_STEPS))
        self.step_size = None if step_size is None else positive("step_size", step_size)
        for name, value in (("scores", scores), ("reference", reference)):
            if value not in TEMPERING:
                raise ValueError(f"{name} must be one of {TEMPERING}, got {name}={value!r}")
        self.scores = scores
        self.reference = reference
        self._slope_bound = self.coverage_slope_bound()  # read once: no sync per call
        auto_outer, auto_inner = _newton_budget(self._slope_bound)
        self.outer_iterations = int(
            count(
                "outer_iterations",
                auto_outer if outer_iterations is None else outer_iterations,
                MAX_OUTER_ITERATIONS,
            )
        )
        self.inner_iterations = int(
            count(
                "inner_iterations",
                auto_inner if inner_iterations is None else inner_iterations,
                MAX_INNER_ITERATIONS,
            )
        )
        self.validate = validate
        if support is not None and not isinstance(support, Support):
            raise TypeError(
                f"support must be a Support, got {type(support).__name__} {shown(support)}"
            )
        self.support = support if support is not None else Full()

    @property
    def kl_strength(self) -> Param:
        """λ, the strength of the KL anchor (the constructor's `lam`)."""
        return self.lam

    def coverage_slope_bound(self) -> float:
        """An upper bound on b = βwK over all rows and tokens (w ≤ 1 for named weights)."""
        w_max = float(self.weights.max()) if isinstance(self.weights, Tensor) else 1.0
        beta = float(self.beta.max()) if isinstance(self.beta, Tensor) else float(self.beta)
        return beta * max_int(self.k) * w_max

    # -- the problem ---------------------------------------------------------------------

    def problem(self, x: Tensor) -> SimplexProblem:
        """The `KLCoverage` objective for checked logits `x`, on the support C(z/τ).

        s is shifted by the row's max (the same problem on the simplex, whose objective moves
        by a constant): shifting before dividing by τ keeps logits of 1e6 or 3e38 exact."""
        if type(self.support) is not Full:
            tau = per_row("temperature", self.temperature, x).to(x.dtype)
            allowed = self.support.mask((x - x.amax(-1, keepdim=True)) / tau)
            x = torch.where(allowed, x, -torch.inf)
        parts = self._parts(x)
        head = None
        if isinstance(self.weights, str) and self.weights in ("topm", "rank"):
            head = self._head(parts["log_p"])
        objective = KLCoverage(
            scores=parts["s"],
            log_reference=parts["log_p"],
            kl_strength=parts["lam"],
            beta=parts["beta"],
            k=parts["k"],
            weights=self.coverage_weights(x, parts["log_p"], head),
            head=head,
        )
        return SimplexProblem(objective, x > -torch.inf)

    def kernel_key(self) -> tuple[type, object]:
        return KLCoverage, self.support.kernel_key()

    def _parts(self, x: Tensor) -> dict[str, Tensor]:
        """s, log p, λ, β, K (each broadcastable to [..., V] or [..., 1])."""
        tau = per_row("temperature", self.temperature, x).to(x.dtype)
        shifted = x - x.amax(-1, keepdim=True)
        tempered = shifted / tau
        s = tempered if self.scores == "tempered" else shifted
        log_p = torch.log_softmax(tempered if self.reference == "tempered" else shifted, dim=-1)
        return {
            "s": s,
            "log_p": log_p,
            "lam": per_row("lam", self.lam, x).to(x.dtype),
            "beta": per_row("beta", self.beta, x).to(x.dtype),
            "k": per_row("k", self.k, x).to(x.dtype),
        }

    def _head(self, log_p: Tensor) -> Tensor:
        """Indices of the top-M tokens by probability, ties toward the lower token id."""
        vocab = log_p.shape[-1]
        m = min(self.top_m, vocab)
        index = torch.arange(vocab, device=log_p.device)
        key = (ordered_codes(log_p.float()) << 31) | (2**31 - 1 - index)
        return torch.topk(key, m, dim=-1).indices

    def coverage_weights(
        self, x: Tensor, log_p: Tensor | None = None, head: Tensor | None = None
    ) -> Tensor:
        """w ([..., V]) for checked logits `x` (restricted to the support, if any)."""
        if log_p is None:
            log_p = self._parts(x)["log_p"]
        if isinstance(self.weights, Tensor):
            try:
                return torch.broadcast_to(self.weights.to(device=x.device, dtype=x.dtype), x.shape)
            except RuntimeError:
                raise ValueError(
                    f"weights of shape {tuple(self.weights.shape)} do not broadcast to logits "
                    f"of shape {tuple(x.shape)}"
                ) from None
        if self.weights == "prob":
            return log_p.exp()
        if head is None:
            head = self._head(log_p)
        return torch.zeros_like(x).scatter_(-1, head, self._head_weights(head).to(x.dtype))

    def _head_weights(self, head: Tensor) -> Tensor:
        m = head.shape[-1]
        if self.weights == "topm":
            return torch.ones(head.shape, dtype=torch.float64, device=head.device)
        ranks = torch.arange(m, device=head.device, dtype=torch.float64)
        return (1.0 - ranks / m).expand(head.shape)

    # -- solving on the torch path (the kernel table's routes are in core/kernels) --------

    def _solve_torch(self, x: Tensor) -> Tensor:
        objective = self.problem(x).objective
        if self.solver == "mirror":
            step = (
                (1.0 / objective.kl_strength)
                if self.step_size is None
                else per_row("step_size", self.step_size, x).to(x.dtype)
            )
            return coverage_mirror(objective, self.steps, step * objective.kl_strength)
        return coverage_exact(objective, self.outer_iterations, self.inner_iterations)

    # -- controls ------------------------------------------------------------------------

    def beta_zero_control(self) -> BestOfK:
        """The same decoder without the coverage term (β = 0, same λ, τ and solver)."""
        return BestOfK(
            self.k,
            0.0,
            self.lam,
            self.temperature,
            self.weights,
            self.top_m,
            self.solver,
            self.steps,
            self.step_size,
            self.scores,
            self.reference,
            self.outer_iterations,
            self.inner_iterations,
            self.validate,
            self.support,
        )

    def effective_temperature(self) -> Param:
        """τ_eff with softmax(z/τ_eff) = argmax <q, s> − λ KL(q ‖ p) (the β = 0 optimum).

        q ∝ p·exp(s/λ), so 1/τ_eff = 1/τ_p + 1/(λ τ_s), with τ_s, τ_p the temperatures
        inside s and p (τ when "tempered", 1 when "raw"): for the defaults τ/(1 + 1/λ).
        """
        tau_s = self.temperature if self.scores == "tempered" else 1.0
        tau_p = self.temperature if self.reference == "tempered" else 1.0
        return 1.0 / (1.0 / tau_p + 1.0 / (self.lam * tau_s))

    def matched_temperature_control(self) -> SimplexDecoder:
        """Plain sampling at the effective temperature of the β = 0 problem (a `Softmax`;
        with a support, softmax on that support, which is then computed at τ_eff: the
        same tokens for top-k, not in general for probability-based supports)."""
        tau = self.effective_temperature()
        try:
            if type(self.support) is Full:
                return Softmax(tau, validate=self.validate)
            return SimplexDecoder(Shannon(), self.support, tau, validate=self.validate)
        except ValueError as error:
            raise ValueError(
                f"the matched temperature τ/(1 + 1/λ) of temperature={shown(self.temperature)} "
                f"and lam={shown(self.lam)} is out of range: {error}"
            ) from None

    def __repr__(self) -> str:
        weights = "tensor" if isinstance(self.weights, Tensor) else repr(self.weights)
        return (
            f"BestOfK(k={self.k!r}, beta={self.beta!r}, lam={self.lam!r}, "
            f"temperature={self.temperature!r}, weights={weights}, top_m={self.top_m}, "
            f"solver={self.solver!r}, steps={self.steps}"
            + ("" if type(self.support) is Full else f", support={self.support!r}")
            + ")"
        )


def coverage_mirror(objective: KLCoverage, steps: int, step_lam: Tensor) -> Tensor:
    """The paper's Algorithm 1: `steps` steps of mirror ascent from q₀ = p, step η (given
    as ηλ). `solvers.mirror_ascent` for g = λ(ψ − log q): log q ← (1 − ηλ)·log q + ηλ·ψ(q),
    renormalised. The same iterates, without the floor that g puts under log q (which
    would pin tokens below 1e-38); at the default η = 1/λ, log q drops out. Tokens off the
    support (p = 0) stay at 0."""
    q = objective.log_reference.exp()
    for _ in range(steps):
        log_q = torch.where(q > 0, torch.log(q), 0.0)
        u = torch.where(
            q > 0, (1 - step_lam) * log_q + step_lam * objective.potential(q), -torch.inf
        )
        q = torch.softmax(u, dim=-1)
    return q


def coverage_exact(objective: KLCoverage, outer: int, inner: int) -> Tensor:
    """The maximiser of a `KLCoverage` objective to float precision (see the module doc):
    u_v = a_v − t + b_v(1 − e^{u_v})^{K−1}, a = log p + s/λ − 1, b = βwK, one t per row.
    With `objective.head` (w = 0 off it) the tail's roots are closed-form. Tokens with
    s = −inf (off the support) get exactly 0."""
    lam, beta, k = objective.kl_strength, objective.beta, objective.k
    a_full = objective.log_reference + objective.scores / lam - 1.0
    # The solution does not change when a and t shift together. Shifting the row's top
    # to 0 keeps sums such as the tail's log-sum-exp exact where s/λ is large (at 1e9 a
    # float32 ulp is 64, and two tied tail tokens would count as one).
    a_full = a_full - a_full.amax(-1, keepdim=True).clamp_min(-torch.finfo(a_full.dtype).max)
    head = objective.head
    if head is not None:
        a_head = a_full.gather(-1, head)
        b_head = beta * k * objective.weights.gather(-1, head)
        tail_lse = torch.logsumexp(a_full.scatter(-1, head, -torch.inf), -1, keepdim=True)
        u, t, log_z = _coverage_roots(a_head, b_head, k, tail_lse, outer, inner)
        q = torch.exp(a_full - t - log_z)
        return q.scatter_(-1, head, torch.exp(u - log_z))
    b = beta * k * objective.weights
    no_tail = torch.full_like(a_full[..., :1], -torch.inf)
    u, _, log_z = _coverage_roots(a_full, b, k, no_tail, outer, inner)
    return torch.exp(u - log_z)


# Newton budgets (outer, inner) by the largest coverage slope b: measured to reach a
# relative Frank–Wolfe gap below 1e-6 in float64 over random β, λ, K, weights and logit
# scales (bench/bok_solvers.py shows the effect on accuracy; the budget is fixed on a GPU so
# that no step waits on the host, and a ceiling on a CPU).
_BUDGETS = ((0.5, (8, 4)), (4.0, (10, 5)), (32.0, (12, 6)), (float("inf"), (15, 8)))


def _newton_budget(slope_bound: float) -> tuple[int, int]:
    return next(budget for bound, budget in _BUDGETS if slope_bound <= bound)


def _stops_early(x: Tensor) -> bool:
    # On a CPU reading a flag costs nothing, so the Newton loops stop once settled on every
    # row: the outer one once t has moved by rounding only in two steps in a row (as the
    # kernels' per-row loop does, `kernels/bok_newton.py`), the inner one once a step moves
    # no u by more than rounding. Elsewhere they run their budgets, so that no step waits
    # on the host.
    return x.device.type == "cpu"


def _rounding(x: Tensor) -> Tensor:
    # A step of x this small is rounding: 64 ulps of max(|x|, 1) (the kernels' `_rounding`).
    return 64 * torch.finfo(x.dtype).eps * x.abs().clamp_min(1.0)


def _phi_and_slope(u: Tensor, a: Tensor, b: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """φ(u) = u − a − b(1 − e^u)^{K−1} and φ'(u) = 1 + b(K−1)(1 − e^u)^{K−2} e^u."""
    e = torch.exp(u)
    one_minus = (1 - e).clamp_min(0)
    phi = u - a - b * one_minus ** (k - 1)
    slope = 1 + b * (k - 1) * one_minus ** (k - 2).clamp_min(0) * e
    return phi, slope


def _inner_newton(u: Tensor, a: Tensor, b: Tensor, k: Tensor, iterations: int) -> Tensor:
    """Root u* ≤ 0 of φ(u) = u − a − b(1 − e^u)^{K−1}, a monotone Newton iteration.

    φ is increasing, convex where e^u < 1/(K−1) and concave beyond (its inflection is at
    u_i = −log(K−1)). Newton converges monotonically on a convex increasing function from
    the right of the root and on a concave one from the left. The warm start `u` is kept
    when it sits on such a side; otherwise the iteration starts at u_i (or at the end of
    the bracket [min(a, 0), min(a + b, 0)] next to it), which always does.
    """
    lo, hi = a.clamp(max=0.0), (a + b).clamp(max=0.0)
    u_inflection = -torch.log((k - 1).clamp_min(1.0))

    def valid(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        phi, slope = _phi_and_slope(v, a, b, k)
        on_side = ((v <= u_inflection) & (phi >= 0)) | ((v >= u_inflection) & (phi <= 0))
        return on_side & (v >= lo) & (v <= hi), phi, slope

    # A warm start that moved to the wrong side often gets back by one Newton step (on the
    # concave part a step from the right lands left of the root); else start at u_i.
    warm = torch.minimum(torch.maximum(u, lo), hi)
    warm_ok, phi, slope = valid(warm)
    stepped = torch.minimum(torch.maximum(warm - phi / slope, lo), hi)
    stepped_ok, _, _ = valid(stepped)
    start = torch.minimum(torch.maximum(u_inflection.expand_as(a), lo), hi)
    u = torch.where(warm_ok, warm, torch.where(stepped_ok, stepped, start))
    early_exit = _stops_early(u)
    for _ in range(iterations):
        phi, slope = _phi_and_slope(u, a, b, k)
        following = torch.minimum(torch.maximum(u - phi / slope, lo), hi)
        if early_exit and bool(((following - u).abs() <= _rounding(u)).all()):
            return following
        u = following
    return u


def _coverage_roots(
    a: Tensor, b: Tensor, k: Tensor, tail_lse: Tensor, outer: int, inner: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Solve u_v = a_v − t + b_v(1 − e^{u_v})^{K−1} with Σ_v e^{u_v} + e^{tail_lse − t} = 1.

    Returns u ([..., n]), t ([..., 1]) and log Z, the log of the total mass at t (≈ 0),
    by which the caller renormalises. G(t) = log Σ e^u is decreasing: t starts at LSE(a)
    (where G ≥ 0) inside the bracket [LSE(a), LSE(a + b)], which shrinks with the sign of
    G; Newton steps are taken when they stay inside and at most halve the step before
    last (Numerical Recipes' rtsafe rule, which stops cycles), bisections otherwise.
    """

    def log_total(u: Tensor, t: Tensor) -> Tensor:
        return torch.logaddexp(torch.logsumexp(u, -1, keepdim=True), tail_lse - t)

    # Tokens with -inf logits: a finite stand-in far below everything and b = 0 pin their
    # bracket [a, a] to one point, so no inf − inf arises and their mass is exactly 0.
    dead = a == -torch.inf
    b = torch.where(dead, 0.0, b)
    a = a.clamp_min(-1e30)
    t_lo = torch.logaddexp(torch.logsumexp(a, -1, keepdim=True), tail_lse)
    t_hi = torch.logaddexp(torch.logsumexp(a + b, -1, keepdim=True), tail_lse)
    t = t_lo
    u = a - t
    last_step = before_last = t_hi - t_lo
    early_exit = _stops_early(t)
    calm = 0
    for _ in range(outer):
        u = _inner_newton(u, a - t, b, k, inner)
        g = log_total(u, t)
        t_lo = torch.where(g > 0, t, t_lo)
        t_hi = torch.where(g > 0, t_hi, t)
        _, slope = _phi_and_slope(u, a - t, b, k)
        tail_mass = torch.exp(tail_lse - t - g)
        # dG/dt < 0; a token held at the clip u = 0 (q = 1) does not move with t.
        moving = torch.where(u < 0, torch.exp(u - g) / slope, 0.0)
        d_g = -(moving.sum(-1, keepdim=True) + tail_mass)
        newton = t - g / d_g
        step = (newton - t).abs()
        # With a fixed budget the loop runs past convergence: rounding-sized steps must not
        # trip the cycle test, or they would throw t back to the bracket's midpoint.
        rounding = _rounding(t)
        settled = step <= rounding
        # The root can sit on the bracket's end (K = 1 makes it exactly LSE(a + b)).
        in_bracket = (newton >= t_lo - rounding) & (newton <= t_hi + rounding)
        accept = in_bracket & ((2 * step <= before_last) | settled)
        following = torch.where(accept, newton.clamp(t_lo, t_hi), 0.5 * (t_lo + t_hi))
        before_last, last_step = last_step, (following - t).abs()
        t = following
        if early_exit:
            calm = calm + 1 if bool((last_step <= rounding).all()) else 0
            if calm == 2:
                break
    u = _inner_newton(u, a - t, b, k, 2 * inner)
    return u, t, log_total(u, t)


__all__ = ["BestOfK", "coverage_exact", "coverage_mirror"]
