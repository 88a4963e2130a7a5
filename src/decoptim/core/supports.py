"""Support constraints C: which tokens a decoder may put mass on.

A support maps tempered logits x = (z − max z)/τ ([..., V], finite or -inf; shifted before
scaling so that a large common offset of z costs no precision, which no support can notice:
they all depend on z only through the distribution softmax(z/τ) or through the order of z)
to a boolean mask. Tokens with x = -inf are never in the support. Semantics follow Hugging
Face's warpers (temperature first, then truncation, at least one token kept). Ties at a cut-off are
resolved by one rule everywhere: **every token tied with the last kept token is kept**,
so the support depends only on the values, never on an ordering of equal values.

Supports compose: `TopKSupport(50) & TopPSupport(0.9)` keeps their intersection.
Top-p and typical sets are found without sorting, by an exact bisection over the
order-preserving integer codes of the keys (a fixed number of passes, no host sync).

float32 and float64 rows keep the same tokens except within rounding of the cut: for top-p
and typical, tokens whose float64 cumulative mass is within 1e-6·(1 + max|x|) of the mass
target; for min-p, epsilon and eta, tokens whose log-probability is within
1e-5·(1 + |x| + |log Σ e^x|) of the threshold; for every rule, tokens whose x is within
float32 rounding of the last kept one's (tests/core/test_supports.py holds the float32
path to exactly this).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import Param, constructor_repr, count, max_int, per_row, unit_interval


class Support:
    """Base class. Subclasses implement `_mask`; the finite-logit filter is applied here."""

    def mask(self, x: Tensor) -> Tensor:
        return self._mask(x) & (x > -torch.inf)

    def _mask(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __and__(self, other: Support) -> Support:
        return Intersect(self, other)

    def kernel_key(self) -> object:
        """This support's half of a kernel-table key (decoptim.core.kernels.table): its type."""
        return type(self)

    def __repr__(self) -> str:
        return constructor_repr(self)


class Full(Support):
    """Every token with a finite logit."""

    def _mask(self, x: Tensor) -> Tensor:
        return torch.ones_like(x, dtype=torch.bool)


class Intersect(Support):
    """Tokens in every part. Nested intersections are flattened: (A & B) & C has the three
    parts A, B, C."""

    def __init__(self, *parts: Support):
        self.parts = tuple(
            inner for part in parts
            for inner in (part.parts if isinstance(part, Intersect) else (part,))
        )  # fmt: skip

    def kernel_key(self) -> tuple:
        return intersection_key(*(part.kernel_key() for part in self.parts))

    def _mask(self, x: Tensor) -> Tensor:
        out = self.parts[0].mask(x)
        for part in self.parts[1:]:
            out = out & part.mask(x)
        return out

    def __repr__(self) -> str:
        return " & ".join(repr(p) for p in self.parts)


def intersection_key(*parts: object) -> tuple:
    """The kernel-table key of an intersection of supports with these keys: (Intersect, the
    parts' keys in a fixed order). Top-k & top-p is one key however it was written; a part
    given twice stays in the key, which then names another composite."""
    return (Intersect, *sorted(parts, key=repr))


class Mask(Support):
    """An explicit boolean mask, [V] or [..., V] (True = allowed)."""

    def __init__(self, allowed: Tensor):
        if not isinstance(allowed, Tensor) or allowed.dtype != torch.bool:
            raise TypeError(
                f"allowed must be a bool tensor, got {getattr(allowed, 'dtype', type(allowed))}"
            )
        self.allowed = allowed

    def _mask(self, x: Tensor) -> Tensor:
        try:
            allowed = torch.broadcast_to(self.allowed.to(x.device), x.shape)
        except RuntimeError:
            raise ValueError(
                f"allowed mask of shape {tuple(self.allowed.shape)} does not match logits of "
                f"shape {tuple(x.shape)}"
            ) from None
        return allowed

    def __repr__(self) -> str:
        return f"Mask(shape={tuple(self.allowed.shape)})"


class TopKSupport(Support):
    """The k largest logits, plus every token tied with the k-th (k clipped to V)."""

    def __init__(self, k: Param):
        self.k = count("k", k)
        self.k_max = max_int(self.k)

    def _mask(self, x: Tensor) -> Tensor:
        vocab = x.shape[-1]
        top = torch.topk(x, min(self.k_max, vocab), dim=-1).values
        k = per_row("k", self.k, x).clamp(max=vocab).expand(*x.shape[:-1], 1)
        kth = top.gather(-1, k - 1)
        return x >= kth


class TopPSupport(Support):
    """Nucleus: the fewest most probable tokens whose mass reaches p (ties at the edge kept).

    Equivalently, token v is kept iff the mass of tokens strictly more probable than v is
    below p, the rule of Hugging Face's TopPLogitsWarper when no values tie.
    """

    def __init__(self, p: Param):
        self.p = unit_interval("p", p)

    def _mask(self, x: Tensor) -> Tensor:
        weights = torch.exp(x - x.amax(-1, keepdim=True))
        return mass_threshold_mask(-x, weights, per_row("p", self.p, x))


class MinPSupport(Support):
    """Tokens with probability at least p times the largest probability."""

    def __init__(self, p: Param):
        self.p = unit_interval("p", p)

    def _mask(self, x: Tensor) -> Tensor:
        # π_v ≥ p·max π ⇔ x_v ≥ max x + log p: in log space nothing underflows.
        return x >= x.amax(-1, keepdim=True) + torch.log(per_row("p", self.p, x))


class TypicalSupport(Support):
    """Locally typical set: tokens ordered by |−log p_v − H(p)|, the fewest reaching `mass`."""

    def __init__(self, mass: Param):
        self.mass = unit_interval("mass", mass)

    def _mask(self, x: Tensor) -> Tensor:
        log_probs = torch.log_softmax(x, dim=-1)
        probs = log_probs.exp()
        entropy = -torch.special.xlogy(probs, probs).sum(-1, keepdim=True)
        deviation = (-log_probs - entropy).abs()
        weights = torch.exp(x - x.amax(-1, keepdim=True))
        return mass_threshold_mask(deviation, weights, per_row("mass", self.mass, x))


class EpsilonSupport(Support):
    """Tokens with probability at least epsilon, and always the most probable ones."""

    def __init__(self, epsilon: Param):
        self.epsilon = unit_interval("epsilon", epsilon)

    def _mask(self, x: Tensor) -> Tensor:
        keep = torch.log_softmax(x, dim=-1) >= torch.log(per_row("epsilon", self.epsilon, x))
        return keep | (x == x.amax(-1, keepdim=True))


class EtaSupport(Support):
    """Tokens with probability at least min(ε, √ε·exp(−H(p))), and the most probable ones."""

    def __init__(self, epsilon: Param):
        self.epsilon = unit_interval("epsilon", epsilon)

    def _mask(self, x: Tensor) -> Tensor:
        log_probs = torch.log_softmax(x, dim=-1)
        entropy = -torch.special.xlogy(log_probs.exp(), log_probs.exp()).sum(-1, keepdim=True)
        log_eps = torch.log(per_row("epsilon", self.epsilon, x))
        cutoff = torch.minimum(log_eps, 0.5 * log_eps - entropy)
        return (log_probs >= cutoff) | (x == x.amax(-1, keepdim=True))


def ordered_codes(keys: Tensor) -> Tensor:
    """Integers whose order is the order of the floating-point `keys` (as int64).

    float32 keys map onto [0, 2^32); float64 keys onto the signed int64 range. Adding +0.0
    turns -0.0 into +0.0, so that equal values (a tie) always share a code.
    """
    keys = keys + 0.0
    if keys.dtype == torch.float64:
        bits = keys.contiguous().view(torch.int64)
        return torch.where(bits < 0, bits ^ 0x7FFFFFFFFFFFFFFF, bits)
    bits = keys.to(torch.float32).contiguous().view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64) + 2**31


def mass_threshold_mask(keys: Tensor, weights: Tensor, mass: Tensor) -> Tensor:
    """Keep {v : key_v ≤ t*}, t* the smallest key value with Σ_{key_u ≤ t*} w_u ≥ mass·Σ w.

    Exact and sort-free. For float32 keys a radix select finds t* one byte of its code at a
    time: four passes, each a weighted 256-bin histogram of the tokens that share the bytes
    found so far. The weights need no normalisation (a float32 softmax's normaliser is off
    by up to ~1e-6, enough to move a cut near p = 1), and masses are summed in float64
    (float32 sums of thousands of tokens misjudge them by up to ~1e-4). mass ≥ 1 keeps every
    token.
    """
    codes = ordered_codes(keys)
    weights = weights.to(torch.float64)
    # A mass below float32's range (p = 1e-300 as a float32 row parameter is 0) still
    # keeps the most probable tokens, as any tiny positive mass does.
    mass = mass.to(torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
    everything = mass >= 1
    mass = mass * weights.sum(-1, keepdim=True)
    if keys.dtype == torch.float64:
        return (codes <= _bisect_code(codes, weights, mass)) | everything
    rows = codes.shape[:-1]
    prefix = torch.zeros((*rows, 1), dtype=torch.int64, device=codes.device)
    below = torch.zeros((*rows, 1), dtype=weights.dtype, device=codes.device)
    for shift in (24, 16, 8, 0):
        in_group = (codes >> (shift + 8)) == prefix
        # Tokens outside the group add 0 to the bin of their own digit: spread over the 256
        # bins rather than all into one, where a GPU's atomic adds would queue up.
        digit = (codes >> shift) & 0xFF
        histogram = torch.zeros((*rows, 256), dtype=weights.dtype, device=codes.device)
        histogram.scatter_add_(-1, digit, torch.where(in_group, weights, 0.0))
        cumulative = below + histogram.cumsum(-1)
        chosen = (cumulative < mass).sum(-1, keepdim=True).clamp(max=255)
        below = torch.where(chosen > 0, cumulative.gather(-1, (chosen - 1).clamp_min(0)), below)
        prefix = (prefix << 8) | chosen
    return (codes <= prefix) | everything


def _bisect_code(codes: Tensor, weights: Tensor, mass: Tensor) -> Tensor:
    """The same threshold by bisection over int64 codes (65 passes; float64 references)."""
    lo = codes.amin(-1, keepdim=True) - 1  # mass up to lo is 0 < mass
    hi = codes.amax(-1, keepdim=True)  # mass up to hi is the total
    for _ in range(65):
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        reached = torch.where(codes <= mid, weights, 0.0).sum(-1, keepdim=True) >= mass
        hi = torch.where(reached, mid, hi)
        lo = torch.where(reached, lo, mid)
    return hi
