"""pass@k, maj@k and bootstrap confidence intervals over problems.

- pass@k: the unbiased estimator 1 − C(n − c, k) / C(n, k) from n ≥ k samples, c correct.
- maj@k: the probability that a majority vote over k samples drawn without replacement
  from the n is correct, i.e. the mean over all size-k subsets: exact enumeration when
  C(n, k) ≤ `max_subsets`, else that many uniformly random subsets (seeded). Never "the
  first k". Ties within a subset go to the cluster that appears first in the subset.
- bootstrap: resample problems with replacement; percentile interval of the mean.
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
