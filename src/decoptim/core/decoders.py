r"""Decoders: each one a (regulariser, support, τ) instance of the master problem.

    q* = argmax_{q ∈ Δ, supp q ⊆ C} <q, z> − τ·Ω(q)        (z: logits, τ: temperature)

(`RegularizedLinear` on a support; Best-of-K, in `decoptim.core.bok`, is another objective
on the simplex through the same `Decoder` base.)

Every decoder offers `probs`, `sample` and `certificate`, takes logits [..., V] in
float16, bfloat16, float32 (computed in float32) or float64 (computed in float64), and
accepts Python scalars or per-row tensors (shape `logits.shape[:-1]`) as parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import Param, check_logits, per_row, positive
from .coordinated import Codes, check_codes, coordinated_sample, coordinated_sample_in_set
from .inverse_transform import sample_rows
from .kernels import use_kernels
from .kernels.table import Route, kernel_route
from .problem import Certificate, RegularizedLinear, SimplexProblem
from .regularizers import Regularizer, Shannon, Tsallis
from .solvers import SOLVERS, solve
from .supports import (
    EpsilonSupport,
    EtaSupport,
    Full,
    MinPSupport,
    Support,
    TopKSupport,
    TopPSupport,
    TypicalSupport,
)


class Decoder:
    """Base class. Subclasses implement `problem` and `kernel_key` (and may override
    `_solve_torch`, the torch path's solver, or `_solve(x, route)` as a whole)."""

    validate: bool = True

    def problem(self, x: Tensor) -> SimplexProblem:
        """The optimisation problem this decoder solves for already-checked logits `x`."""
        raise NotImplementedError

    def kernel_key(self) -> tuple[type | None, object] | None:
        """(objective or regulariser type, the support's `kernel_key()`): this decoder's key
        in the kernel table (`decoptim.core.kernels.table`); None looks up no kernel."""
        return None

    def _kernel(self, x: Tensor) -> Route | None:
        # The Triton path that solves this input, None for the torch path.
        return kernel_route(self, x)

    def _solve(self, x: Tensor, route: Route | None) -> Tensor:
        # `route`: `_kernel(x)`, looked up once per call by `_checked`.
        return self._solve_torch(x) if route is None else route.probs(self, x)

    def _solve_torch(self, x: Tensor) -> Tensor:
        return solve(self.problem(x))

    def _checked(self, logits: Tensor, solving: bool = True) -> tuple[Tensor, Route | None]:
        """`logits` checked and upcast, and the kernel route for them (`_kernel`, looked up
        once per call; not looked up, None, when not `solving` and validating). Without
        validation a NaN entry drops out of the support like −inf: here on the torch path,
        as the kernels read it on theirs."""
        x = check_logits(logits, self.validate)
        if not solving and self.validate:
            return x, None
        route = self._kernel(x)
        if not self.validate and route is None:
            x = torch.nan_to_num(x, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
        return x, route

    def probs(self, logits: Tensor) -> Tensor:
        """The decoder's distribution: same shape and device as `logits`; rows sum to 1."""
        return self._solve(*self._checked(logits))

    def sample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One token id per row ([...], int64), drawn from `probs(logits)`."""
        x, route = self._checked(logits)
        if use_kernels(x):
            from .kernels.draw import draw_from_probs

            if route is not None and route.sample is not None:
                return route.sample(self, x, generator)
            return draw_from_probs(self._solve(x, route), generator)
        # Inverse transform over float64 block sums (`sample_rows`), with a 53-bit uniform per
        # row: exact to ~V·2⁻⁵³ of a row's mass, and on a CPU far faster than
        # torch.multinomial (softmax at B = 8, V = 151,936: 3.9 ms a step against 18.1 for
        # softmax and multinomial, docs/benchmarks.md).
        q = self._solve(x, route)
        flat = q.reshape(-1, q.shape[-1])
        uniform = torch.rand(
            flat.shape[0], dtype=torch.float64, device=flat.device, generator=generator
        )
        return sample_rows(flat, uniform, self.validate).reshape(q.shape[:-1])

    def sample_coordinated(
        self, logits: Tensor, codes: Codes, by_rejection: bool = False
    ) -> tuple[Tensor, Codes]:
        """One token per row ([...], int64), each drawn from `probs(logits)` by its row's
        code, and the codes for the next step: the rows of a group are drawn jointly
        (stratified over q's buckets), each exactly from q. See `decoptim.core.coordinated`.

        `by_rejection` (top-p and typical only): pick from softmax's buckets and keep a
        token inside the set, a rejected code picking again (`coordinated_sample_in_set`):
        as exact, about a plain sample's cost on a GPU instead of finding the set's edge for
        every row, but the group is spread over softmax's buckets and keeps less of
        coordination's gain where much mass lies outside the set (docs/coordinated.md)."""
        self.check_by_rejection(by_rejection)
        x, route = self._checked(logits)
        if (
            use_kernels(x)
            and route is not None
            and route.codes
            and isinstance(codes, Codes)
            and tuple(codes.value.shape) == tuple(x.shape[:-1])
        ):
            # The route's own draw over q's closed form, with the codes as its randomness.
            from .kernels.draw import CodedDraw

            if self.validate:
                check_codes(codes)
            source = CodedDraw.of(codes, x.device, by_rejection)
            return route.sample(self, x, source), source.next_codes(codes.value.shape)
        q = self._solve(x, route)
        if not by_rejection:
            return coordinated_sample(q, codes, validate=self.validate)
        return coordinated_sample_in_set(self._rejection_proposal(x), q, codes, self.validate)

    def _draws_by_rejection(self) -> bool:
        # Whether q is softmax (at this decoder's τ) restricted to a set holding a fixed
        # share of its mass, so that `sample_coordinated(by_rejection=True)` applies.
        return False

    def _rejection_proposal(self, x: Tensor) -> Tensor:
        # The softmax that q restricts (torch path), for decoders that `_draws_by_rejection`.
        raise NotImplementedError(f"{self!r} does not draw by rejection")

    def check_by_rejection(self, by_rejection: bool) -> None:
        """Raises unless `by_rejection` is a bool that this decoder can draw with (True only
        for top-p and typical: see `sample_coordinated`)."""
        if not isinstance(by_rejection, bool):
            raise TypeError(f"by_rejection must be a bool, got {by_rejection!r}")
        if by_rejection and not self._draws_by_rejection():
            raise ValueError(
                "by_rejection=True needs a decoder whose q is softmax restricted to a set "
                f"holding a fixed share of its mass (top-p, typical), got {self!r}"
            )

    def certificate(self, logits: Tensor, probs: Tensor | None = None) -> Certificate:
        """Optimality figures of `probs` (default: this decoder's output) for its problem:
        the Frank–Wolfe gap of `problem(logits)` in float64 and the infeasibility."""
        x, route = self._checked(logits, solving=probs is None)
        q = self._solve(x, route) if probs is None else probs
        if q.shape != x.shape:
            raise ValueError(f"probs has shape {tuple(q.shape)}, logits {tuple(x.shape)}")
        return self.problem(x).certificate(q)


class SimplexDecoder(Decoder):
    r"""A decoder built from parts: argmax_{q ∈ Δ, supp q ⊆ C(z/τ)} <q, z> − τ·Ω(q),
    C(z/τ) the support's tokens for the tempered logits (every finite one by default).

    Args:
        regularizer: Ω, for example `Shannon()`, `Tsallis(1.5)` or `0.5 * Shannon() + Tsallis(2)`.
        support: C, computed from the tempered logits z/τ (default: every finite logit).
        temperature: τ > 0, a scalar or a per-row tensor.
        solver: "auto" (a closed form when one exists, else bisection), "closed_form",
            "sort", "bisect" or "mirror".
        validate: check logits for NaN, +inf and all -inf rows (one host sync on GPU).
            With `validate=False` NaN entries drop out of the support like −inf (a row with
            no finite entry gives a row of NaN).

    On CUDA the kernel table (`decoptim.core.kernels.table`) picks the path from
    (type(Ω), type(C)).
    """

    def __init__(
        self,
        regularizer: Regularizer,
        support: Support | None = None,
        temperature: Param = 1.0,
        solver: str = "auto",
        validate: bool = True,
    ):
        if not isinstance(regularizer, Regularizer):
            raise TypeError(f"regularizer must be a Regularizer, got {type(regularizer).__name__}")
        if support is not None and not isinstance(support, Support):
            raise TypeError(f"support must be a Support, got {type(support).__name__}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got solver={solver!r}")
        self.regularizer = regularizer
        self.support = support if support is not None else Full()
        self.temperature = positive("temperature", temperature)
        self.solver = solver
        self.validate = validate

    def problem(self, x: Tensor) -> SimplexProblem:
        # Scores shifted by the row maximum: the same problem on the simplex, and neither the
        # support nor the certificate loses precision to a large common offset.
        tau = per_row("temperature", self.temperature, x).to(x.dtype)
        scores = x - x.amax(-1, keepdim=True)
        objective = RegularizedLinear(scores, tau, self.regularizer)
        return SimplexProblem(objective, self.support.mask(scores / tau))

    def kernel_key(self) -> tuple[type | None, object]:
        return type(self.regularizer), self.support.kernel_key()

    def _solve_torch(self, x: Tensor) -> Tensor:
        return solve(self.problem(x), self.solver)

    def _draws_by_rejection(self) -> bool:
        # Top-p's and typical's sets hold mass ≥ p (their `mass`) of softmax.
        return type(self.regularizer) is Shannon and isinstance(
            self.support, (TopPSupport, TypicalSupport)
        )

    def _rejection_proposal(self, x: Tensor) -> Tensor:
        return SimplexDecoder(Shannon(), None, self.temperature, validate=False)._solve_torch(x)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(regularizer={self.regularizer!r}, support={self.support!r}, "
            f"temperature={self.temperature!r}, solver={self.solver!r})"
        )


class Greedy(Decoder):
    r"""argmax_{q ∈ Δ} <q, z>
    = all mass on the first (lowest-index) maximiser of z."""

    def __init__(self, validate: bool = True):
        self.validate = validate

    def problem(self, x: Tensor) -> SimplexProblem:
        objective = RegularizedLinear(x, torch.zeros((), dtype=x.dtype), None)
        return SimplexProblem(objective, x > -torch.inf)

    def kernel_key(self) -> tuple[type | None, object]:
        return None, Full

    def sample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self._checked(logits, solving=False)[0].argmax(-1)

    def __repr__(self) -> str:
        return "Greedy()"


class Softmax(SimplexDecoder):
    r"""argmax_{q ∈ Δ} <q, z> − τ Σ_v q_v log q_v
    = softmax(z/τ)."""

    def __init__(self, temperature: Param = 1.0, validate: bool = True):
        super().__init__(Shannon(), Full(), temperature, validate=validate)


class TopK(SimplexDecoder):
    r"""argmax_{q ∈ Δ, supp q ⊆ top-k(z)} <q, z> − τ Σ_v q_v log q_v
    = softmax(z/τ) renormalised on the k largest logits (ties with the k-th kept)."""

    def __init__(self, k: Param, temperature: Param = 1.0, validate: bool = True):
        super().__init__(Shannon(), TopKSupport(k), temperature, validate=validate)


class TopP(SimplexDecoder):
    r"""argmax_{q ∈ Δ, supp q ⊆ N_p} <q, z> − τ Σ_v q_v log q_v,
    N_p = {v : Σ_{u: z_u > z_v} softmax(z/τ)_u < p} (the nucleus; ties at its edge kept)."""

    def __init__(self, p: Param, temperature: Param = 1.0, validate: bool = True):
        super().__init__(Shannon(), TopPSupport(p), temperature, validate=validate)


class MinP(SimplexDecoder):
    r"""argmax_{q ∈ Δ, supp q ⊆ M_p} <q, z> − τ Σ_v q_v log q_v,
    M_p = {v : π_v ≥ p·max_u π_u}, π = softmax(z/τ)."""

    def __init__(self, p: Param, temperature: Param = 1.0, validate: bool = True):
        super().__init__(Shannon(), MinPSupport(p), temperature, validate=validate)


class Typical(SimplexDecoder):
    r"""argmax_{q ∈ Δ, supp q ⊆ T_m} <q, z> − τ Σ_v q_v log q_v, T_m the fewest tokens by
    |−log π_v − H(π)| whose π-mass reaches m (π = softmax(z/τ); ties at the edge kept)."""

    def __init__(self, mass: Param, temperature: Param = 1.0, validate: bool = True):
        super().__init__(Shannon(), TypicalSupport(mass), temperature, validate=validate)


class Epsilon(SimplexDecoder):
    r"""argmax_{q ∈ Δ, supp q ⊆ E_ε} <q, z> − τ Σ_v q_v log q_v,
    E_ε = {v : π_v ≥ ε} ∪ argmax π, π = softmax(z/τ)."""

    def __init__(self, epsilon: Param, temperature: Param = 1.0, validate: bool = True):
        super().__init__(Shannon(), EpsilonSupport(epsilon), temperature, validate=validate)


class Eta(SimplexDecoder):
    r"""argmax_{q ∈ Δ, supp q ⊆ H_ε} <q, z> − τ Σ_v q_v log q_v,
    H_ε = {v : π_v ≥ min(ε, √ε·e^{−H(π)})} ∪ argmax π, π = softmax(z/τ)."""

    def __init__(self, epsilon: Param, temperature: Param = 1.0, validate: bool = True):
        super().__init__(Shannon(), EtaSupport(epsilon), temperature, validate=validate)


class Sparsemax(SimplexDecoder):
    r"""argmax_{q ∈ Δ} <q, z> − τ·½‖q‖²
    = [z/τ − η]₊ with η such that Σ q = 1."""

    def __init__(self, temperature: Param = 1.0, solver: str = "auto", validate: bool = True):
        super().__init__(Tsallis(2.0), Full(), temperature, solver, validate)


class Entmax(SimplexDecoder):
    r"""argmax_{q ∈ Δ} <q, z> − τ·(Σ_v q_v^α − 1)/(α(α − 1)),  α > 1
    = [(α − 1)(z/τ − η)]₊^{1/(α−1)} with η such that Σ q = 1."""

    def __init__(
        self, alpha: float, temperature: Param = 1.0, solver: str = "auto", validate: bool = True
    ):
        super().__init__(Tsallis(alpha), Full(), temperature, solver, validate)
        self.alpha = float(alpha)


__all__ = [
    "Decoder",
    "Entmax",
    "Epsilon",
    "Eta",
    "Greedy",
    "MinP",
    "SimplexDecoder",
    "Softmax",
    "Sparsemax",
    "TopK",
    "TopP",
    "Typical",
]
