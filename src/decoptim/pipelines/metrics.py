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
- Strided subgroups (`subgroups`): within a group of G with codes c_i = (U + i/G) mod 1,
  for k dividing G the k samples r, r + G/k, ..., r + (k − 1)·G/k carry the codes
  (U + r/G) + j/k mod 1, j = 0..k−1: the codes of a group of k whose shift U + r/G is
  again uniform, and their refill bits are hashed per sample index, hence independent as
  in any group. So each of the G/k strided subgroups is itself an exact coordinated group
  of k, and the `group_*` functions take a `k` to score them: one run with groups of 16
  gives group metrics at k = 16, 8, 4 and 2. (The subgroups of one group share U, so they
  are not independent of each other; their mean is still an unbiased per-problem value,
  and the bootstrap over problems carries that dependence.) A contiguous slice of a group
  is not such a subgroup.

Gold-free selection (`decoptim.pipelines.selection`: `rerank_pick`, `weighted_vote`, from
each sample's `logprob_mean`):
- `rerank_at_k`, `wvote_at_k`: for i.i.d. samples, the expected correctness of the
  selection over size-k subsets of the n: rerank in closed form by rank, the weighted vote
  over subsets as `maj_at_k` (exact, or `max_subsets` seeded random ones);
- `group_rerank`, `group_wvote`: per group (or strided subgroup) of coordinated samples.

For both kinds:
- `expected_distinct`: for i.i.d. samples, the expected number of distinct answers among
  k of the n drawn without replacement (unbiased for k i.i.d. samples, like pass@k).
- `pass_ceiling`: min(1, K·a) for a problem with per-sample accuracy a, the most pass@K
  that any sampler keeping each sample's marginal can reach (a union bound).
- `vote_limit`: whether the most frequent answer among all n samples is right, an estimate
  from n samples of where maj@K goes as K grows (the model's modal answer).
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .selection import rank_score, rerank_pick, vote_weight, vote_winner, weighted_vote

MAX_SUBSETS = 1_000_000  # bounds memory: the subsets are materialised as one tensor


def _check_k(k: int, n: int) -> None:
    """k samples drawn from n: 1 <= k <= n."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")


def _check_scores(scores: Sequence, n: int) -> None:
    """One score per sample."""
    if len(scores) != n:
        raise ValueError(f"{n} samples but {len(scores)} scores")


def _check_count(name: str, value: object) -> None:
    """`value` (a group size or a k) is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    _check_k(k, n)
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
    return _vote_at_k(clusters, cluster_correct, [1.0] * len(clusters), k, max_subsets, seed)


@functools.lru_cache(maxsize=32)
def _subsets(n: int, k: int, max_subsets: int, seed: int) -> torch.Tensor:
    """The size-k subsets of range(n) that the subset estimators average over, [S, k], each
    sorted: all of them when C(n, k) <= `max_subsets`, else that many uniformly random ones
    from `seed` (the same for every problem with this n). Cached; not to be modified."""
    _check_k(k, n)
    if not 1 <= max_subsets <= MAX_SUBSETS:
        raise ValueError(f"max_subsets must be in [1, {MAX_SUBSETS}], got {max_subsets}")
    if math.comb(n, k) <= max_subsets:
        return torch.tensor(list(itertools.combinations(range(n), k)), dtype=torch.long)
    rng = random.Random(seed)
    return torch.tensor([sorted(rng.sample(range(n), k)) for _ in range(max_subsets)])


def rerank_at_k(correct: Sequence[bool], scores: Sequence[float | None], k: int) -> float:
    """Expected correctness of `rerank_pick` (highest `logprob_mean`, ties to the earliest)
    over the size-k subsets of the n i.i.d. samples, in closed form.

    Order the samples by (score descending, index ascending), missing scores last: the j-th
    (from 0) is picked exactly when it is in the subset and none of the j before it is,
    which C(n − 1 − j, k − 1) of the C(n, k) subsets do.
    """
    n = len(correct)
    _check_scores(scores, n)
    _check_k(k, n)
    keys = [rank_score(s) for s in scores]
    order = sorted(range(n), key=lambda i: (-keys[i], i))
    picked = sum(math.comb(n - 1 - j, k - 1) for j, i in enumerate(order) if correct[i])
    return picked / math.comb(n, k)


def wvote_at_k(
    clusters: Sequence[int],
    cluster_correct: dict[int, bool],
    scores: Sequence[float | None],
    k: int,
    max_subsets: int = 20000,
    seed: int = 0,
) -> float:
    """Expected correctness of `weighted_vote` (Σ exp(logprob_mean) per answer cluster,
    exact ties to the cluster seen first) over size-k subsets of the n i.i.d. samples: all
    of them when C(n, k) <= `max_subsets`, else that many random ones, as `maj_at_k`."""
    _check_scores(scores, len(clusters))
    weights = [vote_weight(s) for s in scores]
    return _vote_at_k(clusters, cluster_correct, weights, k, max_subsets, seed)


def _vote_at_k(
    clusters: Sequence[int],
    cluster_correct: dict[int, bool],
    weights: Sequence[float],
    k: int,
    max_subsets: int,
    seed: int,
) -> float:
    """Expected correctness over size-k subsets of a vote in which sample i counts
    `weights[i]`: the answer with the largest total wins, exact ties to the answer seen
    first in the subset; a subset without answers is wrong. Unit weights: maj@k."""
    n = len(clusters)
    subsets = _subsets(n, k, max_subsets, seed)
    n_clusters = max(max(clusters), -1) + 1
    if n_clusters == 0:
        return 0.0
    ids = torch.tensor(list(clusters), dtype=torch.long)[subsets]  # [S, k]
    weight = torch.tensor(list(weights), dtype=torch.float64)[subsets]
    valid = ids >= 0
    slots = ids.clamp_min(0)
    total = torch.zeros(len(subsets), n_clusters, dtype=torch.float64)
    total.scatter_add_(1, slots, torch.where(valid, weight, 0.0))  # in subset order
    present = torch.zeros(len(subsets), n_clusters, dtype=torch.long)
    present.scatter_add_(1, slots, valid.long())
    present = present > 0
    position = torch.arange(k).expand_as(ids)
    first = torch.full((len(subsets), n_clusters), k, dtype=torch.long)
    first.scatter_reduce_(1, slots, torch.where(valid, position, k), reduce="amin")
    total = torch.where(present, total, -math.inf)
    tied = present & (total == total.amax(-1, keepdim=True))
    winner = torch.where(tied, first, k + 1).argmin(-1)  # the earliest of the heaviest
    correct = torch.tensor([cluster_correct.get(c, False) for c in range(n_clusters)])
    return float((correct[winner] & valid.any(-1)).double().mean())


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
    _check_count("group_size", group_size)
    if not values or len(values) % group_size:
        raise ValueError(
            f"{len(values)} samples are not a positive multiple of group_size={group_size}"
        )
    return [values[i : i + group_size] for i in range(0, len(values), group_size)]


def subgroups(values: Sequence, group_size: int, k: int | None = None) -> list[Sequence]:
    """The strided subgroups of size k of each group of `group_size` (consecutive,
    group-major): for each group and r < G/k, its samples r, r + G/k, r + 2G/k, ... Each is
    an exact coordinated group of k (see the module's docstring); k = None or G: the
    groups themselves."""
    groups = groups_of(values, group_size)
    if k is None or k == group_size:
        return groups
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or group_size % k:
        raise ValueError(f"k must be an int >= 1 dividing group_size={group_size}, got k={k!r}")
    stride = group_size // k
    return [group[r::stride] for group in groups for r in range(stride)]


def group_pass(correct: Sequence[bool], group_size: int, k: int | None = None) -> float:
    """pass@K of coordinated samples: the fraction of the groups holding a correct sample
    (with `k`: of the strided subgroups of k)."""
    groups = subgroups(correct, group_size, k)
    return sum(any(group) for group in groups) / len(groups)


def group_maj(
    clusters: Sequence[int],
    cluster_correct: dict[int, bool],
    group_size: int,
    k: int | None = None,
) -> float:
    """maj@K of coordinated samples: the fraction of the groups (with `k`: strided
    subgroups of k) whose vote is right.

    `clusters` and `cluster_correct` as in `maj_at_k`; ties within a group go to the answer
    that appears first in the group.
    """
    groups = subgroups(clusters, group_size, k)
    return sum(
        bool(cluster_correct.get(vote_winner(group, [1.0] * len(group)), False)) for group in groups
    ) / len(groups)


def group_distinct(clusters: Sequence[int], group_size: int, k: int | None = None) -> float:
    """Mean number of distinct answers (cluster ids >= 0) per group (with `k`: strided
    subgroup of k) of coordinated samples."""
    groups = subgroups(clusters, group_size, k)
    return sum(len({c for c in group if c >= 0}) for group in groups) / len(groups)


def group_rerank(
    correct: Sequence[bool],
    scores: Sequence[float | None],
    group_size: int,
    k: int | None = None,
) -> float:
    """rerank@K of coordinated samples: the fraction of the groups (with `k`: strided
    subgroups of k) whose highest-`logprob_mean` sample is correct."""
    _check_scores(scores, len(correct))
    groups = subgroups(range(len(correct)), group_size, k)
    return sum(bool(correct[g[rerank_pick([scores[i] for i in g])]]) for g in groups) / len(groups)


def group_wvote(
    clusters: Sequence[int],
    cluster_correct: dict[int, bool],
    scores: Sequence[float | None],
    group_size: int,
    k: int | None = None,
) -> float:
    """wvote@K of coordinated samples: the fraction of the groups (with `k`: strided
    subgroups of k) whose vote weighted by exp(logprob_mean) is right."""
    _check_scores(scores, len(clusters))
    groups = subgroups(range(len(clusters)), group_size, k)
    won = (weighted_vote([clusters[i] for i in g], [scores[i] for i in g]) for g in groups)
    return sum(bool(cluster_correct.get(w, False)) for w in won) / len(groups)


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
    _check_k(k, n)
    return sum(pass_at_k(n, m, k) for m in _answer_counts(clusters).values())


def pass_ceiling(accuracy: float, k: int) -> float:
    """min(1, k·accuracy): no sampler whose every sample keeps its marginal passes more."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got accuracy={accuracy!r}")
    _check_count("k", k)
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
