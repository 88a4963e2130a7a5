r"""Solvers for the master problem  argmax_{q ∈ Δ, supp q ⊆ C} <q, s> − τΩ(q).

- closed forms: `softmax_on_support` (Shannon), `sparsemax_sort` (Tsallis 2),
  `entmax15_sort` (Tsallis 1.5), `argmax_one_hot` (τ = 0);
- `threshold_bisect`: any separable Ω, by bisection on the dual variable η with
  q_v = (ω')⁻¹((s_v − η)/τ); no sort, a fixed number of passes, batched;
- `mirror_ascent`: any smooth concave objective on the simplex given its gradient (so
  `solve(problem, "mirror")` takes any `Objective`; Best-of-K's own exact solver is in
  `decoptim.core.bok`).

All take batched tensors [..., V] and per-row τ (0-d or [..., 1]); none syncs with the host.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .problem import Objective, RegularizedLinear, SimplexProblem
from .regularizers import Regularizer, Shannon, Tsallis


def argmax_one_hot(scores: Tensor, support: Tensor) -> Tensor:
    """All mass on the first (lowest-index) maximiser of s over the support."""
    s = torch.where(support, scores, -torch.inf)
    index = s.argmax(-1, keepdim=True)
    return torch.zeros_like(s).scatter_(-1, index, 1.0)


def shifted(scores: Tensor, temperature: Tensor, support: Tensor) -> Tensor:
    """(s − max_C s)/τ on C, −inf off it. Every solution is invariant to a common shift of s;
    shifting before dividing keeps large scores (1e6, or 3e38 at τ = 0.5) from rounding or
    overflowing in s/τ."""
    s = torch.where(support, scores, -torch.inf)
    return (s - s.amax(-1, keepdim=True)) / temperature


def softmax_on_support(scores: Tensor, temperature: Tensor, support: Tensor) -> Tensor:
    """Shannon closed form: q = softmax(s/τ) renormalised on C."""
    return torch.softmax(shifted(scores, temperature, support), dim=-1)


def _finite_for_sort(scores: Tensor, temperature: Tensor, support: Tensor, margin: float) -> Tensor:
    # x = (s − max s)/τ. Entries more than `margin` below 0 can never be in the support, so
    # off-support tokens are parked there: the sort-based formulas then see no infinities.
    # The shift also keeps the moments small, which avoids cancellation in float32.
    x = shifted(scores, temperature, support)
    return torch.where(x > -margin, x, -margin)


def sparsemax_sort(scores: Tensor, temperature: Tensor, support: Tensor) -> Tensor:
    """Exact sparsemax of s/τ on C (Tsallis α = 2) by a sort of each row."""
    x = _finite_for_sort(scores, temperature, support, 2.0)
    x_sorted = torch.sort(x, dim=-1, descending=True).values
    ranks = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    cumulative = x_sorted.cumsum(-1)
    in_support = 1 + ranks * x_sorted > cumulative
    size = in_support.sum(-1, keepdim=True)
    threshold = (cumulative.gather(-1, size - 1) - 1) / size.to(x.dtype)
    return torch.where(support, (x - threshold).clamp_min(0), 0.0)


def entmax15_sort(scores: Tensor, temperature: Tensor, support: Tensor) -> Tensor:
    """Exact 1.5-entmax of s/τ on C by a sort: q = [(s/τ − η)/2]₊²."""
    y = _finite_for_sort(scores, temperature, support, 4.0) / 2
    y_sorted = torch.sort(y, dim=-1, descending=True).values
    ranks = torch.arange(1, y.shape[-1] + 1, device=y.device, dtype=y.dtype)
    mean = y_sorted.cumsum(-1) / ranks
    mean_sq = (y_sorted**2).cumsum(-1) / ranks
    spread = ranks * (mean_sq - mean**2)
    delta = ((1 - spread) / ranks).clamp_min(0)
    tau = mean - delta.sqrt()
    size = (tau <= y_sorted).sum(-1, keepdim=True)
    tau_star = tau.gather(-1, size - 1)
    return torch.where(support, (y - tau_star).clamp_min(0) ** 2, 0.0)


def threshold_bisect(
    scores: Tensor,
    temperature: Tensor,
    regularizer: Regularizer,
    support: Tensor,
    iterations: int | None = None,
) -> Tensor:
    """Any separable Ω: bisection on η in q_v(η) = (ω')⁻¹((s_v − η)/τ), Σ_v q_v(η) = 1.

    The bracket [s_max − τω'(1), s_max − τω'(1/n)] (n = |C|) holds the root: at its left end
    the best token alone has mass 1, at its right end every token has at most 1/n. Each
    pass halves it; the result is renormalised so that it lies on the simplex exactly.
    """
    if iterations is None:
        iterations = 60 if scores.dtype == torch.float64 else 32
    s = torch.where(support, scores, -torch.inf)
    # η is found relative to the row maximum so that its resolution does not depend on
    # a common offset of the scores (the solution does not either).
    s = s - s.amax(-1, keepdim=True)
    n = support.sum(-1, keepdim=True).clamp_min(1).to(s.dtype)
    ones = torch.ones_like(s)
    lo = torch.where(support, s - temperature * regularizer.grad(ones), -torch.inf).amax(
        -1, keepdim=True
    )
    hi = torch.where(support, s - temperature * regularizer.grad(ones / n), -torch.inf).amax(
        -1, keepdim=True
    )

    def mass_at(eta: Tensor) -> Tensor:
        # Off the support s = -inf, which every inverse derivative maps to 0.
        return regularizer.grad_inverse((s - eta) / temperature)

    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        too_much = mass_at(mid).sum(-1, keepdim=True) >= 1
        lo = torch.where(too_much, mid, lo)
        hi = torch.where(too_much, hi, mid)
    q = mass_at(lo)
    return q / q.sum(-1, keepdim=True)


def mirror_ascent(
    gradient: Callable[[Tensor], Tensor],
    q0: Tensor,
    steps: int,
    step_size: Tensor | float,
) -> Tensor:
    """Exponentiated-gradient ascent: q ← q ⊙ exp(η·g(q) − max), renormalised, `steps` times.

    Zero coordinates of q0 stay zero (the update is multiplicative).
    """
    q = q0
    for _ in range(steps):
        g = gradient(q)
        u = torch.where(q > 0, torch.log(q) + step_size * g, -torch.inf)
        u = u - u.amax(-1, keepdim=True)
        q = torch.exp(u)
        q = q / q.sum(-1, keepdim=True)
    return q


SOLVERS = ("auto", "closed_form", "sort", "bisect", "mirror")


def solve(problem: SimplexProblem, solver: str = "auto", mirror_steps: int = 200) -> Tensor:
    """Solve a `SimplexProblem` with the named solver ("auto" picks a closed form if any).

    A `RegularizedLinear` objective takes any of `SOLVERS`; any other objective takes
    "mirror" (step size 1, from the uniform distribution on the support).
    """
    objective, C = problem.objective, problem.support
    if not isinstance(objective, RegularizedLinear):
        if solver != "mirror":
            raise ValueError(
                f"solver={solver!r} needs a RegularizedLinear objective, got "
                f"{type(objective).__name__}; use solver='mirror' (or the decoder's own solver)"
            )
        q0 = C.to(torch.float64) / C.sum(-1, keepdim=True).clamp_min(1)
        return mirror_ascent(problem.gradient, q0.to(_dtype_of(objective)), mirror_steps, 1.0)
    reg, s, temperature = objective.regularizer, objective.scores, objective.temperature
    if reg is None:
        return argmax_one_hot(s, C)
    if solver == "auto":
        # Sorting is the fastest exact route on a CPU; on a GPU the sort-free bisection is.
        has_sort_form = isinstance(reg, Tsallis) and reg.alpha in (1.5, 2.0)
        if isinstance(reg, Shannon):
            solver = "closed_form"
        elif has_sort_form and s.device.type == "cpu":
            solver = "sort"
        else:
            solver = "bisect"
    if solver == "closed_form":
        if isinstance(reg, Shannon):
            return softmax_on_support(s, temperature, C)
        solver = "sort"
    if solver == "sort":
        if isinstance(reg, Tsallis) and reg.alpha == 2.0:
            return sparsemax_sort(s, temperature, C)
        if isinstance(reg, Tsallis) and reg.alpha == 1.5:
            return entmax15_sort(s, temperature, C)
        raise ValueError(f"solver='sort' has no closed form for regularizer {reg!r}")
    if solver == "bisect":
        return threshold_bisect(s, temperature, reg, C)
    if solver == "mirror":
        q0 = softmax_on_support(torch.zeros_like(s), torch.ones_like(temperature), C)
        # Step 1/τ is the exact one-step solution for Shannon; for others it is a sane scale.
        return mirror_ascent(problem.gradient, q0, mirror_steps, 1.0 / temperature)
    raise ValueError(f"solver must be one of {SOLVERS}, got solver={solver!r}")


def _dtype_of(objective: Objective) -> torch.dtype:
    """The floating dtype an objective computes in (that of its first floating tensor)."""
    for value in vars(objective).values():
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.dtype
    return torch.get_default_dtype()
