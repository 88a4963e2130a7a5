"""pass@k, maj@k and bootstrap confidence intervals over problems.

- pass@k: the unbiased estimator 1 − C(n − c, k) / C(n, k) from n ≥ k samples, c correct.
- maj@k: the probability that a majority vote over k samples drawn without replacement
  from the n is correct, i.e. the mean over all size-k subsets: exact enumeration when
  C(n, k) ≤ `max_subsets`, else that many uniformly random subsets (seeded). Never "the
  first k". Ties within a subset go to the cluster that appears first in the subset.
- bootstrap: resample problems with replacement; percentile interval of the mean.

Those estimators assume the n samples of a problem are i.i.d.: any size-k subset is then a
valid k-sample draw. Coordinated samples (`decoptim.core.coordinated`) are not: the samples
of a group of K are drawn jointly and stratified, so a subset that mixes groups, or cuts
one, is a draw from no sampler anyone runs. For them the group is the unit:
- `group_pass`, `group_maj`, `group_distinct`: pass@K, maj@K and the number of distinct
  answers of each group of K (consecutive samples, group-major), averaged over the
  problem's groups; a bootstrap over problems of these per-problem means resamples
  problems with all their groups.
- k = 1 quantities (single-sample accuracy, pass@1, maj@1) stay valid: every coordinated
  sample is exactly distributed as an i.i.d. one, and a mean over samples only needs the
  marginals.

For both kinds:
- `expected_distinct`: for i.i.d. samples, the expected number of distinct answers among
  k of the n drawn without replacement (unbiased for k i.i.d. samples, like pass@k).
- `pass_ceiling`: min(1, K·a) for a problem with per-sample accuracy a, the most pass@K
  that any sampler keeping each sample's marginal can reach (a union bound).
- `vote_limit`: whether the most frequent answer among all n samples is right, an estimate
  from n samples of where maj@K goes as K grows (the model's modal answer).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

MAX_SUBSETS = 1_000_000  # bounds memory: the subsets are materialised as one tensor


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def maj_at_k(
    clusters: Sequence[int],
    cluster_correct: dict[int, bool],
    k: int,
    max_subsets: int = 20000,
    seed: int = 0,
) -> float:
    """Expected correctness of a k-sample majority vote, over size-k subsets of the n.

    `clusters` holds one equivalence-class id per sample (-1: no answer, never wins),
    numbered by first appearance; `cluster_correct` says which classes are right.
    """
    n = len(clusters)
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if not 1 <= max_subsets <= MAX_SUBSETS:
        raise ValueError(f"max_subsets must be in [1, {MAX_SUBSETS}], got {max_subsets}")
    n_clusters = max(max(clusters), -1) + 1
    if n_clusters == 0:
        return 0.0
    if math.comb(n, k) <= max_subsets:
        subsets = torch.tensor(list(itertools.combinations(range(n), k)), dtype=torch.long)
    else:
        rng = random.Random(seed)
        subsets = torch.tensor([sorted(rng.sample(range(n), k)) for _ in range(max_subsets)])
    ids = torch.tensor(list(clusters), dtype=torch.long)[subsets]  # [S, k]
    valid = ids >= 0
    slots = ids.clamp_min(0)
    counts = torch.zeros(len(subsets), n_clusters, dtype=torch.long)
    counts.scatter_add_(1, slots, valid.long())
    position = torch.arange(k).expand_as(ids)
    first = torch.full((len(subsets), n_clusters), k, dtype=torch.long)
    first.scatter_reduce_(1, slots, torch.where(valid, position, k), reduce="amin")
    score = torch.where(counts > 0, counts * (k + 1) - first, -1)  # votes, then earliest
    winner = score.argmax(-1)
    has_vote = counts.sum(-1) > 0
    correct = torch.tensor([cluster_correct.get(c, False) for c in range(n_clusters)])
    return float((correct[winner] & has_vote).float().mean())


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def bootstrap(
    values: Sequence[float], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Mean over problems with a percentile bootstrap interval."""
    if len(values) == 0:
        raise ValueError("bootstrap needs at least one value")
    data = torch.tensor(list(values), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(data), (resamples, len(data)), generator=generator)
    means = data[index].mean(1)
    alpha = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return Estimate(float(data.mean()), float(low), float(high))


def groups_of(values: Sequence, group_size: int) -> list[Sequence]:
    """The consecutive groups of `group_size` in `values` (group-major order)."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got group_size={group_size!r}")
    if not values or len(values) % group_size:
        raise ValueError(
            f"{len(values)} samples are not a positive multiple of group_size={group_size}"
        )
    return [values[i : i + group_size] for i in range(0, len(values), group_size)]


def group_pass(correct: Sequence[bool], group_size: int) -> float:
    """pass@K of coordinated samples: the fraction of the groups holding a correct sample."""
    groups = groups_of(correct, group_size)
    return sum(any(group) for group in groups) / len(groups)


def group_maj(clusters: Sequence[int], cluster_correct: dict[int, bool], group_size: int) -> float:
    """maj@K of coordinated samples: the fraction of the groups whose vote is right.

    `clusters` and `cluster_correct` as in `maj_at_k`; ties within a group go to the answer
    that appears first in the group.
    """
    groups = groups_of(clusters, group_size)
    return sum(maj_at_k(group, cluster_correct, group_size) for group in groups) / len(groups)


def group_distinct(clusters: Sequence[int], group_size: int) -> float:
    """Mean number of distinct answers (cluster ids >= 0) per group of coordinated samples."""
    groups = groups_of(clusters, group_size)
    return sum(len({c for c in group if c >= 0}) for group in groups) / len(groups)


def _answer_counts(clusters: Sequence[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for c in clusters:
        if c >= 0:
            counts[c] = counts.get(c, 0) + 1
    return counts


def expected_distinct(clusters: Sequence[int], k: int) -> float:
    """Expected number of distinct answers among k of the n i.i.d. samples (without
    replacement): Σ over answers of P(the answer is among the k) = Σ_c pass@k(n, m_c)."""
    n = len(clusters)
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    return sum(pass_at_k(n, m, k) for m in _answer_counts(clusters).values())


def pass_ceiling(accuracy: float, k: int) -> float:
    """min(1, k·accuracy): no sampler whose every sample keeps its marginal passes more."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got accuracy={accuracy!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got k={k!r}")
    return min(1.0, k * accuracy)


def vote_limit(clusters: Sequence[int], cluster_correct: dict[int, bool]) -> float:
    """Whether the most frequent answer among all the samples is right: the limit of maj@K
    as K grows, estimated from these n samples. A tie counts as the fraction of the tied
    answers that are right (which one is the mode is then unknown); no answer scores 0."""
    counts = _answer_counts(clusters)
    if not counts:
        return 0.0
    top = max(counts.values())
    modes = [c for c, m in counts.items() if m == top]
    return sum(bool(cluster_correct.get(c, False)) for c in modes) / len(modes)
