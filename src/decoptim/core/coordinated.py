r"""Coordinated K-sample decoding: the K samples of one prompt drawn jointly, each exact.

Arithmetic sampling (Vilnis et al., ICML 2023). Sample i of a group of K carries a code
c_i = (U + i/K) mod 1, with one uniform U per group. At a step with distribution q over the
vocabulary (in token order, cumulative sums F), the sample takes the token t whose bucket
[F_{t−1}, F_t) holds c·F_V and continues with the code's position inside that bucket,

    c ← (c·F_V − F_{t−1}) / (F_t − F_{t−1}).

Given its prefix a code is uniform on [0, 1), so every sample is exactly a draw from q at
every step, while the K codes of a group stay evenly spread: a token with q ≥ 1/K at a
shared prefix is taken by at least one of them. A sample needs only its group's seed, its
index i and K: no state is shared between rows after the start, so engines that treat the
K samples as separate requests can run it.

A decoder whose q is a softmax p restricted to a set holding a fixed share of p's mass
(top-p, typical) can draw by rejection over p's buckets instead (`coordinated_sample_in_set`,
`sample_coordinated(..., by_rejection=True)`): as exact, on a GPU about as cheap as a plain
sample, but spread over p's buckets, which keeps less of the group's coverage.

Precision. The buckets are float64 prefix sums (a float32 sum over 150k tokens misplaces
every bucket by ~1e-6, more than the whole tail's mass), so each token's probability is
right to about V·2⁻⁵³ of the row's mass (2e-11 at V = 152k). A float64 code holds 53 bits
and each step uses about −log₂ q_t of them: after the step the position inside the bucket
is known only to the grain 2⁻⁵²·F_V/(F_t − F_{t−1}). Fresh random bits are added below that
grain (as a range coder refills its low bits), c ← (c + u·grain) mod 1, so the code stays
uniform given the prefix for sequences of any length; those bits come from a counter-based
hash of (group seed, index, step), the same on every device, so a run repeats exactly for
the same seeds on the same device. (Between devices, or between the torch path and the CUDA
kernel, the float64 sums round differently in their last bits; a code magnifies such a
difference by 1/q_t per step, so two such runs agree token for token only for a while.)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .inverse_transform import BlockBuckets, buckets, invalid_q, invalid_rows, show
from .kernels import use_kernels

_MASK32 = 0xFFFFFFFF
# Hash streams: the group's starting uniform U, the refill bits of each step's next code,
# and those of the code a rejected pick passes on (`coordinated_sample_in_set`; one stream
# per pick, so no bits are read twice and a resumed code, the refill stream's, is
# independent of every token drawn before it).
_START, _REFILL, _REDRAW = 0x5EED0001, 0x5EED0002, 0x5EED0100
# Picks from p before a rejected code picks from q itself (`coordinated_sample_in_set`);
# top-p's and typical's kernels make as many.
PROPOSALS = 4
_TWO_POW_M52 = 2.0**-52
_TWO_POW_M53 = 2.0**-53


class Codes(NamedTuple):
    """Per sample (shape [...], one entry per row of the logits): its code in [0, 1)
    (float64), its group's seed and its index in the group (int64), and how many steps it
    has taken (int64; the refill bits of each step depend on it)."""

    value: Tensor
    seed: Tensor
    index: Tensor
    step: Tensor

    def to(self, device: torch.device | str) -> Codes:
        return Codes(*(part.to(device) for part in self))

    def select(self, rows: Tensor | slice) -> Codes:
        """The codes of some rows (an index, a mask or a slice of the sample dimensions)."""
        return Codes(*(part[rows] for part in self))


def _mul32(x: Tensor, constant: int) -> Tensor:
    # x·constant mod 2³² for 0 ≤ x < 2³² in int64 without overflow: 16-bit halves of the
    # constant keep every product below 2⁴⁸.
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    # A bijective 32-bit mixer (xor-shift-multiply, "lowbias32" constants).
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hashed_uniform(seed: Tensor, index: Tensor, step: Tensor, stream: int) -> Tensor:
    """A float64 uniform in [0, 1) with 53 random bits, a hash of (seed, index, step,
    stream): the same on every device, independent across any change of its inputs."""
    h = _mix32((seed & _MASK32) ^ stream)
    h = _mix32(h ^ ((seed >> 32) & _MASK32))
    h = _mix32(h ^ (index & _MASK32))
    h = _mix32(h ^ (step & _MASK32))
    first = _mix32(h ^ 0x68E31DA4)
    second = _mix32(first ^ 0xB5297A4D)
    bits = ((first >> 5) << 26) | (second >> 6)  # 27 + 26 = 53 bits
    return bits.to(torch.float64) * _TWO_POW_M53


def group_seeds(seed: int, groups: Tensor) -> Tensor:
    """One seed in [0, 2⁶²) per group id (int64 tensor), derived from a run's `seed`: the
    codes of a group depend on its id and the run's seed only, never on which groups share
    a batch.

    The run's seed is mixed in by xor with the ids before hashing, so for ids and seeds
    below 2ᵏ another seed gives the same set of group seeds, permuted among the groups
    (each group's own codes do change). Batches meant as independent draws of one prompt
    need other group ids (`group_codes(first_group=...)`), not only another seed. Kept
    as is: the study's runs were drawn with it and regenerate only with it."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    ids = groups.to(torch.int64)
    low = _mix32(_mix32((ids & _MASK32) ^ (seed & _MASK32)) ^ ((seed >> 32) & _MASK32))
    high = _mix32(low ^ (ids >> 32) ^ 0x3C6EF372)
    return (high << 30) | (low >> 2)  # 62 bits: a seed plus an index stays an int64


def _seeds_and_indices(seed: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    # Group seeds and sample indices as int64 tensors of one shape.
    seed, index = _as_int64("seed", seed), _as_int64("index", index)
    if seed.shape != index.shape:
        raise ValueError(
            f"seed and index must have the same shape, got {tuple(seed.shape)} and "
            f"{tuple(index.shape)}"
        )
    return seed, index


def start_codes(seed: Tensor, index: Tensor, k: Tensor | int) -> Codes:
    """Codes c_i = (U + i/K) mod 1 for samples with group seeds `seed`, indices `index` (both
    int64 [...]) and group size `k` (an int or an int64 tensor [...]); U is a hash of the
    seed, shared by the group."""
    seed, index = _seeds_and_indices(seed, index)
    k = _as_int64("k", k, like=index)
    if bool((k < 1).any()):
        raise ValueError(f"k must be >= 1, got k={show(k[k < 1])}")
    outside = (index < 0) | (index >= k)
    if bool(outside.any()):
        raise ValueError(
            f"index must satisfy 0 <= index < k, got index={show(index[outside])} "
            f"with k={show(torch.broadcast_to(k, index.shape)[outside])}"
        )
    zero = torch.zeros_like(index)
    shared = hashed_uniform(seed, zero, zero, _START)
    value = torch.remainder(shared + index.to(torch.float64) / k.to(torch.float64), 1.0)
    return Codes(value, seed, index, zero)


def resumed_codes(seed: Tensor, index: Tensor, step: Tensor | int) -> Codes:
    """Fresh codes for samples that continue at `step` (the number of tokens they have
    taken) without the codes their earlier draws left: a request resumed after preemption,
    or one that accepted several tokens at once. Arguments as for `start_codes` (group seeds
    and indices, int64 [...]), `step` an int or an int64 tensor [...], >= 0.

    Each code is the refill hash of (seed, index, step), a uniform that no draw before
    `step` read (the draw of step s − 1 adds the hash of step s below the grain of the code
    it leaves for step s), so it is independent of the sample's tokens so far: the sample
    stays exact given its prefix, but is no longer stratified against its group (at step
    0, `start_codes` gives the stratified code)."""
    seed, index = _seeds_and_indices(seed, index)
    step = _as_int64("step", step, like=index)
    step = torch.broadcast_to(step, index.shape).clone()
    if bool((step < 0).any()):
        raise ValueError(f"step must be >= 0, got step={show(step[step < 0])}")
    return Codes(hashed_uniform(seed, index, step, _REFILL), seed, index, step)


def group_codes(
    groups: int, k: int, seed: int = 0, device: torch.device | str = "cpu", first_group: int = 0
) -> Codes:
    """Codes for `groups` groups of `k` samples in group-major rows (row g·k + i is sample
    i of group `first_group` + g), as `generate(n=k)` and `num_return_sequences=k` lay
    them out."""
    for name, value in (("groups", groups), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    ids = torch.arange(first_group, first_group + groups, device=device).repeat_interleave(k)
    index = torch.arange(k, device=device).repeat(groups)
    return start_codes(group_seeds(seed, ids), index, k)


def coordinated_sample(q: Tensor, codes: Codes, validate: bool = True) -> tuple[Tensor, Codes]:
    """One token per sample, picked by its code from its row of q ([..., V], non-negative;
    rows need not sum to 1), and the codes for the next step.

    q has one row per sample (q.shape[:-1] == codes.value.shape), or a single row ([V] or
    [1, V]) that every sample draws from. Every sample's token is distributed exactly as
    q/Σq (to ~V·2⁻⁵³ of the row's mass) whatever the other rows hold; samples of one group
    with a shared prefix are stratified.
    """
    flat, shared = _checked_rows(codes, validate, q=q)[0]
    if not shared and q.dtype == torch.float32 and use_kernels(q):
        from .kernels.draw import draw_coordinated

        return draw_coordinated(q, codes)
    seed, index, step, value = _laid_out(codes, q.device, shared)
    token, inside, grain = _pick(_buckets_of(flat, shared), value)
    return _as_samples(codes, token, _refill(inside, grain, seed, index, step, _REFILL))


def coordinated_sample_in_set(
    p: Tensor, q: Tensor, codes: Codes, validate: bool = True
) -> tuple[Tensor, Codes]:
    """`coordinated_sample` for q = p restricted to a set S and renormalised (q ∝ p on S, 0
    off it; p and q [..., V], one row per sample or a single shared row), by rejection over
    p's buckets: a code picks a token from p; a token in S (q > 0) is kept with the code's
    place inside its bucket as the next code; a token outside S passes that place on to
    pick again, up to PROPOSALS times; a code still rejected then picks from q's buckets.

    Each sample stays exact: a code is uniform given the tokens it has rejected, so each
    pick is a fresh draw from p, and a draw from p kept only in S is a draw from q. The
    group stays stratified over p's buckets (a token with p ≥ 1/K at a shared prefix is
    taken by at least one sample), and only the codes that land outside S, a share
    p(S̄) ≤ 1 − mass of them for top-p and typical, are picked again, no longer stratified.
    On CUDA top-p's and typical's kernels do this without writing q for
    `sample_coordinated(..., by_rejection=True)` (their set's edge is needed only for the
    codes rejected PROPOSALS times), which costs about a plain sample."""
    (flat_p, shared), (flat_q, _) = _checked_rows(codes, validate, p=p, q=q)
    if flat_p.shape != flat_q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")  # fmt: skip
    seed, index, step, value = _laid_out(codes, p.device, shared)
    tokens = torch.full_like(seed, -1)
    next_value = torch.zeros_like(value)
    p_buckets = _buckets_of(flat_p, shared)  # once for the PROPOSALS picks
    for draw in range(PROPOSALS):
        token, inside, grain = _pick(p_buckets, value)
        kept = (tokens < 0) & (flat_q.gather(-1, token) > 0)
        tokens = torch.where(kept, token, tokens)
        accepted = _refill(inside, grain, seed, index, step, _REFILL)
        next_value = torch.where(kept, accepted, next_value)
        value = _refill(inside, grain, seed, index, step, _REDRAW + draw)
    token, inside, grain = _pick(_buckets_of(flat_q, shared), value)
    left = tokens < 0
    tokens = torch.where(left, token, tokens)
    next_value = torch.where(left, _refill(inside, grain, seed, index, step, _REFILL), next_value)
    return _as_samples(codes, tokens, next_value)


def _checked_rows(codes: Codes, validate: bool, **named: Tensor) -> list[tuple[Tensor, bool]]:
    # Each named tensor (q, or p and q) as rows [n, V] and whether it is one row shared by
    # every sample; shapes always checked, values with `validate` (all of them and the codes
    # in one host sync). Errors name the tensor.
    if not isinstance(codes, Codes):
        raise TypeError(f"codes must be Codes (see start_codes), got {type(codes).__name__}")
    samples = codes.value.shape
    rows = []
    for name, q in named.items():
        if not isinstance(q, Tensor) or q.dim() == 0:
            raise TypeError(f"{name} must be a tensor of shape [..., V], got {type(q).__name__}")
        flat = q.reshape(-1, q.shape[-1])
        shared = flat.shape[0] == 1
        if not shared and tuple(q.shape[:-1]) != tuple(samples):
            raise ValueError(
                f"codes hold {tuple(samples)} samples but {name} has rows "
                f"{tuple(q.shape[:-1])} (shape {tuple(q.shape)}); give one row per sample or "
                "a single row"
            )
        rows.append((flat, shared))
    if validate:
        _check_step(codes, **named)
    return rows


def _laid_out(codes: Codes, device: torch.device, shared: bool) -> tuple[Tensor, ...]:
    # The codes' seed, index, step and value as the samples' targets: along one row [1, n]
    # for a shared row of q, else one per row [n, 1].
    layout = (1, -1) if shared else (-1, 1)
    return tuple(
        part.to(device).reshape(layout)
        for part in (codes.seed, codes.index, codes.step, codes.value)
    )


def _buckets_of(flat: Tensor, shared: bool) -> Tensor | BlockBuckets:
    # The buckets of q's rows, made once for every pick from them: a shared row's float64
    # prefix sums (its n targets share them), else one row per target by blocks.
    return torch.cumsum(flat.to(torch.float64), -1) if shared else BlockBuckets.of(flat)


def _pick(layout: Tensor | BlockBuckets, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # The token whose bucket (of `_buckets_of`'s layout) holds each code, the code's place
    # inside that bucket, and the grain to which that place is known (2⁻⁵² of the row's
    # mass, in the bucket's units).
    if isinstance(layout, BlockBuckets):
        token, low, width, total = layout.locate(value)
    else:
        token, low, width, total = buckets(layout, value)
    inside = ((value * total - low) / width).clamp(0.0, 1.0)
    return token, inside, _TWO_POW_M52 * total / width


def _refill(
    inside: Tensor, grain: Tensor, seed: Tensor, index: Tensor, step: Tensor, stream: int
) -> Tensor:
    # A code's place inside its bucket with hashed bits of `stream` added below its grain.
    refilled = inside + hashed_uniform(seed, index, step + 1, stream) * grain
    return refilled - torch.floor(refilled)


def _as_samples(codes: Codes, token: Tensor, value: Tensor) -> tuple[Tensor, Codes]:
    # Tokens and next codes (step + 1) in the samples' shape.
    samples = codes.value.shape
    parts = (value, codes.seed, codes.index, codes.step + 1)
    return token.reshape(samples), Codes(
        *(part.to(value.device).reshape(samples) for part in parts)
    )


def forced_scores(tokens: Tensor, like: Tensor) -> Tensor:
    """Scores (shape and dtype of `like`, [rows, V]) that put all mass on each row's token
    of `tokens` ([rows]): 0 there, −inf elsewhere. An engine that samples from softmax of
    the scores, at any temperature, then takes the token the code picked."""
    forced = torch.full_like(like, -torch.inf)
    return forced.scatter_(-1, tokens.reshape(-1, 1), 0.0)


def check_codes(codes: Codes) -> None:
    """Raises unless `codes` are `Codes` with float64 values in [0, 1) (one host sync)."""
    if not isinstance(codes, Codes):
        raise TypeError(f"codes must be Codes (see start_codes), got {type(codes).__name__}")
    _check_values(codes.value)


def _check_values(value: Tensor, *other_flags: Tensor) -> list[bool]:
    # The codes' dtype and range, and the truth of other flags read in the same host sync.
    if value.dtype != torch.float64:
        raise TypeError(f"codes.value must be float64, got dtype={value.dtype}")
    outside = ~((value >= 0) & (value < 1))
    flags = torch.stack([outside.any(), *other_flags]).tolist()
    if flags[0]:
        raise ValueError(f"codes must lie in [0, 1), got {show(value[outside])}")
    return flags[1:]


def _check_step(codes: Codes, **named: Tensor) -> None:
    # The codes and each named tensor of rows [..., V], their values read in one host sync.
    for name, q in named.items():
        if not q.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {q.dtype}")
        if q.shape[-1] == 0:
            raise ValueError(f"{name} must have shape [..., V] with V >= 1, got {tuple(q.shape)}")
    bad = [invalid_rows(q) for q in named.values()]
    flags = _check_values(codes.value, *(rows.any() for rows in bad))
    for (name, q), rows, is_bad in zip(named.items(), bad, flags, strict=True):
        if is_bad:
            raise invalid_q(q, rows, name)


def _as_int64(name: str, value: Tensor | int, like: Tensor | None = None) -> Tensor:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool {value!r}")
    if isinstance(value, int):
        device = like.device if like is not None else "cpu"
        return torch.tensor(value, dtype=torch.int64, device=device)
    if not isinstance(value, Tensor) or value.is_floating_point() or value.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an int or an integer tensor, got "
            f"{getattr(value, 'dtype', type(value).__name__)}"
        )
    return value.to(torch.int64)


__all__ = [
    "Codes",
    "check_codes",
    "coordinated_sample",
    "coordinated_sample_in_set",
    "forced_scores",
    "group_codes",
    "group_seeds",
    "hashed_uniform",
    "resumed_codes",
    "start_codes",
]
