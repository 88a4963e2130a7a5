r"""The master problem and its optimality certificate.

    q* = argmax_{q ∈ Δ, supp q ⊆ C}  <q, s> − λ·Ω(q)

`SimplexProblem` holds (s, λ, Ω, C) for a batch of rows; `frank_wolfe_certificate` checks
any candidate q against any concave objective given its gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass
class SimplexProblem:
    """<q, s> − λΩ(q) over the simplex restricted to `support` (λ = 0: a linear problem)."""

    scores: Tensor  # [..., V]; may hold -inf off the support
    lam: Tensor  # 0-d or [..., 1]
    regularizer: Regularizer | None
    support: Tensor  # bool [..., V]

    def gradient(self, q: Tensor) -> Tensor:
        s = torch.where(self.support, self.scores, 0.0).to(q.dtype)
        if self.regularizer is None:
            return s
        q_eval = q.clamp_min(FLOAT32_SMALLEST_NORMAL)
        return s - self.lam.to(q.dtype) * self.regularizer.grad(q_eval)

    def objective(self, q: Tensor) -> Tensor:
        s = torch.where(self.support, self.scores, 0.0).to(q.dtype)
        value = (q * s).sum(-1)
        if self.regularizer is not None:
            lam = self.lam.to(q.dtype)
            value = value - (lam.squeeze(-1) if lam.dim() else lam) * self.regularizer.value(q)
        return value

    def certificate(self, q: Tensor) -> Certificate:
        q64 = q.to(torch.float64)
        problem = SimplexProblem(
            self.scores.to(torch.float64),
            self.lam.to(torch.float64),
            self.regularizer,
            self.support,
        )
        return frank_wolfe_certificate(q64, problem.gradient, self.support)


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
