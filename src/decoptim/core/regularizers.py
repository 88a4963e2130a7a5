r"""Separable convex regularisers Ω(q) = Σ_v ω_v(q_v) on the probability simplex.

Each regulariser supplies three elementwise functions: its value ω, its derivative ω'
and the inverse derivative (ω')⁻¹ clipped at 0. The last one is what the threshold solver
needs: with scores s and strength λ the master problem's KKT conditions give
q_v = (ω')⁻¹((s_v − η)/λ) for one scalar η per row.

They compose like optax transformations: `0.5 * Shannon() + Tsallis(2.0)` is a regulariser
whose inverse derivative is found numerically.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import check_param, constructor_repr, tsallis_alpha

# A float32 zero stands for "below the smallest subnormal": derivatives that blow up at 0
# (entropy, KL) are evaluated there instead, so exact underflow zeros stay finite.
TINY = 1.401298464324817e-45


class Regularizer:
    """Base class: a separable convex function of q ∈ [0, 1]^V."""

    def elementwise(self, q: Tensor) -> Tensor:
        """ω_v(q_v), elementwise."""
        raise NotImplementedError

    def grad(self, q: Tensor) -> Tensor:
        """ω'_v(q_v), elementwise (may be -inf at q = 0)."""
        raise NotImplementedError

    def grad_inverse(self, y: Tensor) -> Tensor:
        """The q ≥ 0 maximising q·y − ω(q), elementwise: (ω')⁻¹(y), or 0 where y ≤ ω'(0)."""
        return _bisect_grad_inverse(self, y)

    def value(self, q: Tensor) -> Tensor:
        """Ω(q) = Σ_v ω_v(q_v), summed over the last dimension."""
        return self.elementwise(q).sum(-1)

    def __add__(self, other: Regularizer) -> Regularizer:
        return WeightedSum([(1.0, self), (1.0, other)])

    def __repr__(self) -> str:
        return constructor_repr(self)

    def __rmul__(self, weight: float) -> Regularizer:
        return WeightedSum([(weight, self)])

    __mul__ = __rmul__


class Shannon(Regularizer):
    r"""Negative Shannon entropy Ω(q) = Σ q log q; with it the master problem is softmax."""

    def elementwise(self, q: Tensor) -> Tensor:
        return torch.special.xlogy(q, q)

    def grad(self, q: Tensor) -> Tensor:
        return torch.log(q.clamp_min(TINY)) + 1.0

    def grad_inverse(self, y: Tensor) -> Tensor:
        return torch.exp(y - 1.0)


class KL(Regularizer):
    r"""KL(q ‖ r) = Σ q log(q / r) to a fixed reference r, given by its log-probabilities."""

    def __init__(self, reference_logprobs: Tensor):
        if not isinstance(reference_logprobs, Tensor) or not reference_logprobs.is_floating_point():
            raise TypeError("reference_logprobs must be a floating-point tensor")
        self.log_r = reference_logprobs

    def elementwise(self, q: Tensor) -> Tensor:
        log_r = self.log_r.to(q)
        return torch.where(q > 0, q * (torch.log(q.clamp_min(TINY)) - log_r), 0.0)

    def grad(self, q: Tensor) -> Tensor:
        return torch.log(q.clamp_min(TINY)) - self.log_r.to(q) + 1.0

    def grad_inverse(self, y: Tensor) -> Tensor:
        return torch.exp(y - 1.0 + self.log_r.to(y))

    def __repr__(self) -> str:
        return f"KL(reference of shape {tuple(self.log_r.shape)})"


class Tsallis(Regularizer):
    r"""Tsallis α-negentropy Ω(q) = (Σ q^α − 1) / (α(α − 1)), α > 1.

    α = 2 is ½‖q‖² up to a constant (sparsemax); α → 1 recovers Shannon.
    """

    def __init__(self, alpha: float):
        if isinstance(alpha, Tensor) and alpha.numel() != 1:
            raise TypeError(
                f"alpha must be one number (one α per regulariser or decoder), got a tensor of "
                f"shape {tuple(alpha.shape)}: alpha={alpha.tolist()}"
            )
        tsallis_alpha("alpha", alpha)
        self.alpha = float(alpha)

    def elementwise(self, q: Tensor) -> Tensor:
        a = self.alpha
        return q.clamp_min(0) ** a / (a * (a - 1))

    def value(self, q: Tensor) -> Tensor:
        # The constant makes Ω vanish at vertices; it moves no solution.
        return self.elementwise(q).sum(-1) - 1.0 / (self.alpha * (self.alpha - 1))

    def grad(self, q: Tensor) -> Tensor:
        a = self.alpha
        return q.clamp_min(0) ** (a - 1) / (a - 1)

    def grad_inverse(self, y: Tensor) -> Tensor:
        a = self.alpha
        base = ((a - 1) * y).clamp_min(0)
        # The two common cases avoid a general power, the costliest op in the bisection.
        if a == 2.0:
            return base
        if a == 1.5:
            return base * base
        return base ** (1.0 / (a - 1))


class WeightedSum(Regularizer):
    """Σ_i c_i Ω_i with c_i > 0; its inverse derivative is found by bisection on [0, 1]."""

    def __init__(self, terms: list[tuple[float, Regularizer]]):
        flat: list[tuple[float, Regularizer]] = []
        for weight, reg in terms:
            check_param("weight", weight, lambda c: (c > 0) & torch.isfinite(c), "0 < weight < inf")
            if isinstance(reg, WeightedSum):
                flat.extend((weight * w, r) for w, r in reg.terms)
            else:
                flat.append((float(weight), reg))
        self.terms = flat

    def elementwise(self, q: Tensor) -> Tensor:
        return sum(w * r.elementwise(q) for w, r in self.terms)

    def value(self, q: Tensor) -> Tensor:
        return sum(w * r.value(q) for w, r in self.terms)

    def grad(self, q: Tensor) -> Tensor:
        return sum(w * r.grad(q) for w, r in self.terms)

    def grad_inverse(self, y: Tensor) -> Tensor:
        if len(self.terms) == 1:
            weight, reg = self.terms[0]
            return reg.grad_inverse(y / weight)
        return _bisect_grad_inverse(self, y)

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{r!r}" for w, r in self.terms)


def _bisect_grad_inverse(reg: Regularizer, y: Tensor) -> Tensor:
    """Solve ω'(q) = y for q ∈ [0, 1] elementwise; ω' is increasing, so bisection is exact.

    The bisection runs over the bit patterns of q (for non-negative floats their order is
    the integers'), so it ends at the smallest float q with ω'(q) ≥ y to full relative
    precision: a tiny q such as 1e-14 comes out right to its last bits, where halving
    [0, 1] sixty times would leave it with ~5e-6 relative error (and an entropy term's
    log q, in gradients and certificates, with that much absolute error). Values of q
    above 1 never occur at a solution on the simplex, so the clip is harmless.
    """
    codes = torch.int64 if y.dtype == torch.float64 else torch.int32
    lo = torch.zeros_like(y, dtype=codes)  # the code of q = 0
    hi = torch.ones_like(y).view(codes)  # the code of q = 1
    # As many halvings as 1.0's code has bits (0x3FF0… and 0x3F80…): fixed, no host sync.
    for _ in range(62 if codes == torch.int64 else 30):
        mid = lo + (hi - lo) // 2
        below = reg.grad(mid.view(y.dtype)) < y
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    q = hi.view(y.dtype)
    return torch.where(reg.grad(torch.zeros_like(y)) >= y, torch.zeros_like(q), q)


__all__ = ["KL", "TINY", "Regularizer", "Shannon", "Tsallis", "WeightedSum"]
