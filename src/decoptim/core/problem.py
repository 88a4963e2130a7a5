r"""Problems on the simplex: a concave objective f on a support C, and its certificate.

    q* = argmax_{q ∈ Δ, supp q ⊆ C}  f(q)

An `Objective` gives f's value and gradient for a batch of rows (and, where one exists,
its solvers use a closed form or a threshold). Two are built in:

- `RegularizedLinear`: f(q) = <q, s> − τ·Ω(q), the master problem of every classic decoder
  (τ = 0, no Ω: the linear problem of greedy decoding);
- `KLCoverage`: f(q) = <q, s> − λ·KL(q ‖ p) + λβ·Σ_v w_v (1 − (1 − q_v)^K), Best-of-K's.

`SimplexProblem` pairs an objective with a support mask; `frank_wolfe_certificate` checks
any candidate q against any concave objective given its gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from .regularizers import Regularizer

# Coordinates below float32's smallest normal number are treated as that number when a
# gradient is evaluated: subnormals carry too few bits for log q to mean anything.
FLOAT32_SMALLEST_NORMAL = 1.1754943508222875e-38


@dataclass(frozen=True)
class Certificate:
    """Per-row optimality figures (float64 tensors of shape [...]).

    gap: the Frank–Wolfe gap max_{v ∈ C} g_v(q) − <q, g(q)>, an upper bound on
        f(q*) − f(q) for the concave objective f with gradient g.
    infeasibility: the largest of |Σq − 1|, the mass outside the support C and max(−q).
    """

    gap: Tensor
    infeasibility: Tensor

    def ok(self, tol: float = 1e-4) -> Tensor:
        return (self.gap <= tol) & (self.infeasibility <= tol)


class Objective:
    """A concave function of q ∈ Δ for a batch of rows ([..., V]).

    Subclasses are dataclasses of tensors and implement `value` and `gradient`; both read
    only the tokens of `support` (a bool mask [..., V]) and may hold -inf scores off it.
    """

    def value(self, q: Tensor, support: Tensor) -> Tensor:
        """f(q), one number per row ([...])."""
        raise NotImplementedError

    def gradient(self, q: Tensor, support: Tensor) -> Tensor:
        """∇f(q) ([..., V]); only its entries on the support are meaningful."""
        raise NotImplementedError

    def to(self, dtype: torch.dtype) -> Objective:
        """The same objective with its floating-point tensors cast to `dtype`."""
        cast = {
            f.name: getattr(self, f.name).to(dtype)
            for f in fields(self)  # type: ignore[arg-type]
            if isinstance(getattr(self, f.name), Tensor)
            and getattr(self, f.name).is_floating_point()
        }
        return replace(self, **cast)  # type: ignore[type-var]


@dataclass(frozen=True)
class RegularizedLinear(Objective):
    """f(q) = <q, s> − τ·Ω(q) (the master problem; `regularizer=None` is the linear <q, s>)."""

    scores: Tensor  # s, [..., V]; may hold -inf off the support
    temperature: Tensor  # τ ≥ 0, 0-d or [..., 1]
    regularizer: Regularizer | None

    def gradient(self, q: Tensor, support: Tensor) -> Tensor:
        s = torch.where(support, self.scores, 0.0).to(q.dtype)
        if self.regularizer is None:
            return s
        q_eval = q.clamp_min(FLOAT32_SMALLEST_NORMAL)
        return s - self.temperature.to(q.dtype) * self.regularizer.grad(q_eval)

    def value(self, q: Tensor, support: Tensor) -> Tensor:
        s = torch.where(support, self.scores, 0.0).to(q.dtype)
        value = (q * s).sum(-1)
        if self.regularizer is not None:
            tau = self.temperature.to(q.dtype)
            value = value - (tau.squeeze(-1) if tau.dim() else tau) * self.regularizer.value(q)
        return value


@dataclass(frozen=True)
class KLCoverage(Objective):
    r"""f(q) = <q, s> − λ·KL(q ‖ p) + λβ·Σ_v w_v (1 − (1 − q_v)^K)  (Best-of-K).

    1 − (1 − q_v)^K is the chance that token v appears among K draws from q; λ is the
    strength of the KL anchor to the reference p, β the coverage weight relative to λ.
    """

    scores: Tensor  # s, [..., V]; -inf off the support
    log_reference: Tensor  # log p, [..., V]; -inf off the support
    kl_strength: Tensor  # λ > 0, 0-d or [..., 1]
    beta: Tensor  # β ≥ 0, 0-d or [..., 1]
    k: Tensor  # K ≥ 1 (as a float), 0-d or [..., 1]
    weights: Tensor  # w ≥ 0, [..., V]
    # Where w can be nonzero (top-M indices, [..., M]), when it is 0 everywhere else: the
    # exact solver then iterates over these tokens only.
    head: Tensor | None = None

    def potential(self, q: Tensor) -> Tensor:
        """ψ(q) = s/λ + log p − 1 + βwK(1 − q)^{K−1}, so that ∇f(q) = λ(ψ(q) − log q)."""
        lam, k = self.kl_strength, self.k
        coverage = self.beta * self.weights * k * (1 - q).clamp_min(0) ** (k - 1)
        return self.scores / lam + self.log_reference - 1.0 + coverage

    def gradient(self, q: Tensor, support: Tensor) -> Tensor:
        """s − λ(log(q/p) + 1) + λβwK(1 − q)^{K−1} (log q floored at float32's smallest
        normal, so that underflowed tokens keep a finite gradient); 0 off the support."""
        log_q = torch.log(q.clamp_min(FLOAT32_SMALLEST_NORMAL))
        g = self.kl_strength * (self.potential(q) - log_q)
        return torch.where(support, g, 0.0)

    def value(self, q: Tensor, support: Tensor) -> Tensor:
        lam = self.kl_strength
        kl_terms = torch.where(q > 0, q * (torch.log(q) - self.log_reference), 0.0)
        coverage = self.weights * (1 - (1 - q) ** self.k)
        per_token = q * self.scores - lam * kl_terms + lam * self.beta * coverage
        return torch.where(support, per_token, 0.0).sum(-1)


@dataclass(frozen=True)
class SimplexProblem:
    """argmax_{q ∈ Δ, supp q ⊆ C} f(q): an objective f and a support mask C."""

    objective: Objective
    support: Tensor  # bool [..., V]

    def value(self, q: Tensor) -> Tensor:
        return self.objective.value(q, self.support)

    def gradient(self, q: Tensor) -> Tensor:
        return self.objective.gradient(q, self.support)

    def certificate(self, q: Tensor) -> Certificate:
        """Frank–Wolfe gap and infeasibility of `q`, evaluated in float64."""
        problem = SimplexProblem(self.objective.to(torch.float64), self.support)
        return frank_wolfe_certificate(q.to(torch.float64), problem.gradient, self.support)


def frank_wolfe_certificate(
    q: Tensor, gradient: Callable[[Tensor], Tensor], support: Tensor | None = None
) -> Certificate:
    """Frank–Wolfe gap and infeasibility of `q` for a concave objective with `gradient`."""
    if support is None:
        support = torch.ones_like(q, dtype=torch.bool)
    g = gradient(q)
    inside = torch.where(support, q, 0.0)
    best_vertex = torch.where(support, g, -torch.inf).amax(-1)
    current = torch.where(inside > 0, inside * g, 0.0).sum(-1)
    gap = (best_vertex - current).clamp_min(0.0)
    infeasibility = torch.stack(
        [
            (q.sum(-1) - 1.0).abs(),
            torch.where(support, 0.0, q.abs()).sum(-1),
            (-q).amax(-1).clamp_min(0.0),
        ]
    ).amax(0)
    return Certificate(gap=gap, infeasibility=infeasibility)
