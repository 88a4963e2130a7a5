r"""The kernel table: which Triton path solves (and samples) a decoder's problem on CUDA.

    KERNELS[(objective or regulariser type, support key)] = routes, tried in order

A decoder names its key with `kernel_key()`: (type(Ω), C.kernel_key()) for a regularised
linear problem (None for Ω when there is none, as for greedy), (KLCoverage, C.kernel_key())
for Best-of-K. A support's key is its type; an intersection's is `intersection_key` of its
parts' keys, so each combination of supports is its own entry. Types match exactly: a
subclass is a new composite. A `Route` is one kernel entry: `probs` writes q, `sample`
(where there is one) draws without writing q, and `covers` says which settings of the
decoder it handles (a budget, a solver, a range).

- A key whose routes do not cover the decoder's settings runs on the torch path; so does a
  key listed with no routes (its torch ops are that composite's GPU implementation).
- A key missing from the table runs on the torch path too, and says so with a warning,
  once per (decoder class, support key).
- Only float32 rows on CUDA with the kernels enabled are routed; all else is torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..checks import Param, kernel_rows, per_row
from ..problem import KLCoverage
from ..regularizers import Shannon, Tsallis
from ..supports import (
    EpsilonSupport,
    EtaSupport,
    Full,
    Intersect,
    MinPSupport,
    TopKSupport,
    TopPSupport,
    TypicalSupport,
    intersection_key,
)
from . import MAX_FUSED_TOP_M, use_kernels

if TYPE_CHECKING:  # the kernel modules import Triton: only where a route runs
    from .bok_prob import ProbProblem
    from .bok_topm import TopMProblem
    from .draw import Randomness

# The w = p Best-of-K kernels give NaN rows beyond these coverage slopes βK (measured on an
# H200: mirror from βK ≈ 800, exact from 1e5, where e^{βK·max p} in their head bound
# overflows); such settings run on the torch path, which is exact there too.
KERNEL_PROB_MAX_SLOPE = {"mirror": 128.0, "exact": 1e4}

Decoder = Any  # decoptim.core.decoders.Decoder (which imports this module)


@dataclass(frozen=True)
class Route:
    name: str
    covers: Callable[[Decoder], bool]
    probs: Callable[[Decoder, Tensor], Tensor]
    sample: Callable[[Decoder, Tensor, Randomness], Tensor] | None = None
    # Whether `sample` also draws coordinated samples: a `draw.CodedDraw` as its randomness.
    codes: bool = False


def _rows(name: str, value: Param, x: Tensor) -> Tensor:
    # A scalar or per-row parameter as the float32 [rows] vector that kernels read.
    return kernel_rows(per_row(name, value, x) if isinstance(value, Tensor) else value, x)


# --- Closed forms whose kernels take (x, 1/τ, a parameter) --------------------------------


def _closed_form_route(
    name: str,
    kernels: Callable[[], tuple[Callable, Callable]],
    rows: Callable[[Decoder, Tensor], tuple],
    solvers: tuple[str, ...] | None = ("auto", "closed_form"),
) -> Route:
    """A route to `probs(x, *rows)` and `sample(x, *rows, randomness)`, the pair that
    `kernels()` imports on first use (the kernel modules import Triton), for the decoder's
    `solvers` (None: any)."""

    def probs(decoder: Decoder, x: Tensor) -> Tensor:
        return kernels()[0](x, *rows(decoder, x))

    def sample(decoder: Decoder, x: Tensor, randomness: Randomness) -> Tensor:
        return kernels()[1](x, *rows(decoder, x), randomness)

    def covers(decoder: Decoder) -> bool:
        return solvers is None or decoder.solver in solvers

    return Route(name, covers=covers, probs=probs, sample=sample, codes=True)


def _inv_tau(decoder: Decoder, x: Tensor) -> tuple[Tensor]:
    return (_rows("temperature", 1.0 / decoder.temperature, x),)


def _inv_tau_and(name: str) -> Callable[[Decoder, Tensor], tuple]:
    # 1/τ and the support's parameter `name`, per row.
    return lambda decoder, x: (
        *_inv_tau(decoder, x),
        _rows(name, getattr(decoder.support, name), x),
    )


def _tsallis_kernels() -> tuple[Callable, Callable]:
    from .tsallis import tsallis_probs, tsallis_sample

    return tsallis_probs, tsallis_sample


def _softmax_kernels() -> tuple[Callable, Callable]:
    from .temperature import softmax_probs, softmax_sample

    return softmax_probs, softmax_sample


def _top_p_kernels() -> tuple[Callable, Callable]:
    from .top_p import top_p_probs, top_p_sample

    return top_p_probs, top_p_sample


def _typical_kernels() -> tuple[Callable, Callable]:
    from .top_p import typical_probs, typical_sample

    return typical_probs, typical_sample


# Tsallis-α over every token (sparsemax, entmax): bisection on the threshold.
TSALLIS = _closed_form_route(
    "tsallis", _tsallis_kernels,
    lambda decoder, x: (*_inv_tau(decoder, x), decoder.regularizer.alpha), ("auto", "bisect"),
)  # fmt: skip
# Shannon over every token (temperature sampling): exp((z − max z)/τ), never sorted.
SOFTMAX = _closed_form_route("softmax", _softmax_kernels, _inv_tau)
# Shannon over a top-p support (nucleus sampling).
TOP_P = _closed_form_route("top_p", _top_p_kernels, _inv_tau_and("p"), solvers=None)
# Shannon over the locally typical set: top-p's kernels on the key −|x − E_p[x]|.
TYPICAL = _closed_form_route("typical", _typical_kernels, _inv_tau_and("mass"), solvers=None)


# --- Shannon above a floor on x = (z − max z)/τ: min-p, epsilon, eta, top-k ------------


def _top_k_rows(support: TopKSupport, x: Tensor) -> tuple[Tensor, int]:
    # k per row, clipped to V, as the contiguous int64 [rows] the kernels read (cached for a
    # Python int), and the largest k.
    vocab = x.shape[-1]
    k = support.k
    k = per_row("k", k, x).clamp(max=vocab) if isinstance(k, Tensor) else min(k, vocab)
    return kernel_rows(k, x, torch.int64), min(support.k_max, vocab)


def _min_p_terms(decoder: Decoder, flat: Tensor, tau: Tensor, x: Tensor):
    from .floor import min_p_terms

    return min_p_terms(flat, tau, torch.log(_rows("p", decoder.support.p, x)))


def _epsilon_terms(decoder: Decoder, flat: Tensor, tau: Tensor, x: Tensor):
    from .floor import epsilon_terms

    return epsilon_terms(flat, tau, torch.log(_rows("epsilon", decoder.support.epsilon, x)))


def _eta_terms(decoder: Decoder, flat: Tensor, tau: Tensor, x: Tensor):
    from .floor import eta_terms

    return eta_terms(flat, tau, torch.log(_rows("epsilon", decoder.support.epsilon, x)))


def _top_k_terms(decoder: Decoder, flat: Tensor, tau: Tensor, x: Tensor):
    from .floor import top_k_terms

    support = decoder.support
    if isinstance(support, Intersect):
        parts = {type(part): part for part in support.parts}
        top_k, top_p, min_p = parts[TopKSupport], parts.get(TopPSupport), parts.get(MinPSupport)
        extra = {
            "top_p": None if top_p is None else _rows("p", top_p.p, x),
            "log_min_p": None if min_p is None else torch.log(_rows("p", min_p.p, x)),
        }
    else:
        top_k, extra = support, {}
    return top_k_terms(flat, tau, *_top_k_rows(top_k, x), not decoder.validate, **extra)


def _floor_route(name: str, terms) -> Route:
    """A route for q ∝ exp(x) on x ≥ floor: `terms(decoder, flat, tau, x)` gives max z and
    the floor per row, as the torch path computes them (`kernels/floor.py`)."""

    def solved(decoder: Decoder, x: Tensor):
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        tau = _rows("temperature", decoder.temperature, x)
        return flat, tau, *terms(decoder, flat, tau, x)

    def probs(decoder: Decoder, x: Tensor) -> Tensor:
        from .floor import floor_probs

        return floor_probs(*solved(decoder, x)).reshape(x.shape)

    def sample(decoder: Decoder, x: Tensor, randomness: Randomness) -> Tensor:
        from .floor import floor_sample

        return floor_sample(*solved(decoder, x), randomness).reshape(x.shape[:-1])

    def covered(decoder: Decoder) -> bool:
        return decoder.solver in ("auto", "closed_form")

    return Route(name, covers=covered, probs=probs, sample=sample, codes=True)


MIN_P = _floor_route("floor", _min_p_terms)
EPSILON = _floor_route("floor", _epsilon_terms)
ETA = _floor_route("floor", _eta_terms)
TOP_K = _floor_route("floor", _top_k_terms)
# Top-k with top-p and/or min-p, each once (the table's keys): a floor found on the top-k list.
TOP_K_INTERSECTION = _floor_route("top_k_intersection", _top_k_terms)


# --- Best-of-K over every token: w = p (exact or mirror), top-M and rank weights (exact) ----


def _bok_rows(decoder: Decoder, x: Tensor) -> dict[str, Tensor]:
    """Per-row float32 vectors for the kernels: c = 1/τ_p + 1/(λτ_s), βK, K and 1/τ_p."""

    def value(name: str, v: Param) -> float | Tensor:
        # Python numbers stay numbers, so the per-row vectors below come from a cache.
        return per_row(name, v, x) if isinstance(v, Tensor) else float(v)

    tau = value("temperature", decoder.temperature)
    tau_s = tau if decoder.scores == "tempered" else 1.0
    tau_p = tau if decoder.reference == "tempered" else 1.0
    k = value("k", decoder.k)
    c = 1.0 / tau_p + 1.0 / (value("lam", decoder.lam) * tau_s)
    beta_k = value("beta", decoder.beta) * k
    return {
        "c": kernel_rows(c, x),
        "beta_k": kernel_rows(beta_k, x),
        "k": kernel_rows(k, x),
        "inv_tau_p": kernel_rows(1.0 / tau_p, x),
    }


def _bok_prob_covers(decoder: Decoder) -> bool:
    # w = p, with the exact solver or mirror ascent of the default step 1/λ, up to the slope.
    if isinstance(decoder.weights, Tensor) or decoder.weights != "prob":
        return False
    exact_or_default_mirror = decoder.solver == "exact" or decoder.step_size is None
    return exact_or_default_mirror and decoder._slope_bound <= KERNEL_PROB_MAX_SLOPE[decoder.solver]


def _bok_prob_args(decoder: Decoder, x: Tensor) -> tuple[ProbProblem]:
    # bok_prob's argument after z: the rows' parameters and the solver's settings.
    from .bok_prob import ProbProblem

    rows = _bok_rows(decoder, x)
    steps = decoder.steps if decoder.solver == "mirror" else 0
    return (ProbProblem(rows["c"], rows["inv_tau_p"], rows["beta_k"], rows["k"], steps,
                        decoder.outer_iterations, decoder.inner_iterations),)  # fmt: skip


def _bok_prob_kernels() -> tuple[Callable, Callable]:
    from .bok_prob import bok_prob_probs, bok_prob_sample

    return bok_prob_probs, bok_prob_sample


def _bok_topm_covers(decoder: Decoder) -> bool:
    # Top-M or rank weights with the exact solver, M ≤ MAX_FUSED_TOP_M.
    if isinstance(decoder.weights, Tensor) or decoder.weights not in ("topm", "rank"):
        return False
    return decoder.solver == "exact" and decoder.top_m <= MAX_FUSED_TOP_M


def _bok_topm_problem(decoder: Decoder, x: Tensor) -> TopMProblem:
    from .bok_topm import TopMProblem

    rows = _bok_rows(decoder, x)
    return TopMProblem(
        rows["c"], rows["beta_k"], rows["k"], decoder.top_m, decoder.weights == "rank",
        decoder.outer_iterations, decoder.inner_iterations,
    )  # fmt: skip


def _bok_topm_probs(decoder: Decoder, x: Tensor) -> Tensor:
    from .bok_topm import bok_topm_probs

    return bok_topm_probs(x, _bok_topm_problem(decoder, x))


def _bok_topm_sample(decoder: Decoder, x: Tensor, randomness: Randomness) -> Tensor:
    from .bok_topm import bok_topm_sample

    return bok_topm_sample(x, _bok_topm_problem(decoder, x), randomness)


BOK_PROB = replace(
    _closed_form_route("bok_prob", _bok_prob_kernels, _bok_prob_args), covers=_bok_prob_covers
)
BOK_TOPM = Route(
    "bok_topm", covers=_bok_topm_covers, probs=_bok_topm_probs, sample=_bok_topm_sample,
    codes=True,
)  # fmt: skip


# --- the table -----------------------------------------------------------------------------

Key = tuple[type | None, object]

KERNELS: dict[Key, tuple[Route, ...]] = {
    (Tsallis, Full): (TSALLIS,),
    (Shannon, Full): (SOFTMAX,),
    (Shannon, TopPSupport): (TOP_P,),
    (KLCoverage, Full): (BOK_PROB, BOK_TOPM),
    # The torch path by design: a mask and a softmax are a few passes of torch ops, and
    # sampling goes through the draw kernel over q (greedy takes the argmax).
    (None, Full): (),
    (Shannon, MinPSupport): (MIN_P,),
    (Shannon, EpsilonSupport): (EPSILON,),
    (Shannon, EtaSupport): (ETA,),
    (Shannon, TopKSupport): (TOP_K,),
    **{
        (Shannon, intersection_key(TopKSupport, *others)): (TOP_K_INTERSECTION,)
        for others in ((TopPSupport,), (MinPSupport,), (TopPSupport, MinPSupport))
    },
    (Shannon, TypicalSupport): (TYPICAL,),
}

_WARNED: set[tuple[type, object]] = set()


def kernel_route(decoder: Decoder, x: Tensor) -> Route | None:
    """The kernel route that solves `decoder`'s problem for checked logits `x`; None for
    the torch path (a composite missing from `KERNELS` warns once, see the module doc)."""
    if x.dtype != torch.float32 or not use_kernels(x):
        return None
    key = decoder.kernel_key()
    if key is None:
        return None
    routes = KERNELS.get(key)
    if routes is None:
        _warn_uncovered(decoder, key)
        return None
    return next((route for route in routes if route.covers(decoder)), None)


def _warn_uncovered(decoder: Decoder, key: Key) -> None:
    objective, support = key
    seen = (type(decoder), support)
    if seen in _WARNED:
        return
    _WARNED.add(seen)
    name = "none" if objective is None else objective.__name__
    warnings.warn(
        f"{type(decoder).__name__} with support {_key_name(support)} (objective {name}) has no "
        "entry in decoptim's kernel table that covers it; it runs on the torch path on CUDA "
        "(slower, same result). This is said once per decoder class and support key (a support's "
        "type; an intersection's parts).",
        stacklevel=4,
    )


def _key_name(support: object) -> str:
    # A support type's name; an intersection's as its parts joined by "&".
    if isinstance(support, tuple) and support[:1] == (Intersect,):
        return " & ".join(_key_name(part) for part in support[1:])
    return getattr(support, "__name__", repr(support))


def route_name(decoder: Decoder, x: Tensor) -> str:
    """The name of the route `kernel_route` picks ("torch" for the torch path)."""
    route = kernel_route(decoder, x)
    return "torch" if route is None else route.name
