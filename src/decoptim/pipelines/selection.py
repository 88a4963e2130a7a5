"""Pick one answer out of K samples: majority vote, log-probability reranking, a verifier.

Tie rule, everywhere: among tied candidates the one that appears **first** in the sample
order wins. For a vote, a cluster's position is that of its first member.

Gold-free selection from each sample's length-normalised log-probability (`logprob_mean`,
the mean over its tokens of the model's log p):
- `rerank_pick`: the sample with the highest score;
- `weighted_vote`: the answer cluster with the largest Σ exp(score) over its samples (a
  vote in which each sample counts its per-token probability, geometric mean, in (0, 1]).
A score that is None or NaN (a backend without log-probabilities, an empty sample) ranks
below every number and weighs 0 in the vote; ties (equal scores, equal sums) go to the
sample, or cluster, seen first, so that with every score missing `rerank_pick` takes the
first sample and `weighted_vote` the first answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .answers import extract_answer, is_equivalent

Equivalence = Callable[[str, str], bool]


def cluster_answers(
    answers: Sequence[str | None], equivalent: Equivalence = is_equivalent
) -> list[int]:
    """Cluster id per answer (-1 for None), clusters numbered in order of first appearance.

    An answer joins the first earlier cluster whose representative (its first member) it is
    equivalent to.
    """
    representatives: list[str] = []
    ids = []
    for answer in answers:
        if answer is None:
            ids.append(-1)
            continue
        for cid, rep in enumerate(representatives):
            if answer == rep or equivalent(answer, rep):
                ids.append(cid)
                break
        else:
            representatives.append(answer)
            ids.append(len(representatives) - 1)
    return ids


@dataclass
class Vote:
    answer: str | None  # the winning cluster's representative (None when nothing parsed)
    votes: int  # members of the winning cluster
    clusters: list[int]  # cluster id per sample (-1: no answer)
    distinct: int  # number of distinct answers among the samples


def majority_vote(answers: Sequence[str | None], equivalent: Equivalence = is_equivalent) -> Vote:
    """Self-consistency: the largest equivalence class of answers; ties to the earliest."""
    clusters = cluster_answers(answers, equivalent)
    counts: dict[int, int] = {}
    for cid in clusters:
        if cid >= 0:
            counts[cid] = counts.get(cid, 0) + 1
    if not counts:
        return Vote(None, 0, clusters, 0)
    # Cluster ids grow with first appearance, so the smallest id among the largest wins.
    winner = min(counts, key=lambda cid: (-counts[cid], cid))
    representative = answers[clusters.index(winner)]
    return Vote(representative, counts[winner], clusters, len(counts))


def self_consistency(
    texts: Sequence[str],
    extract: Callable[[str], str | None] = extract_answer,
    equivalent: Equivalence = is_equivalent,
) -> Vote:
    """Extract each sample's final answer and take the majority vote."""
    return majority_vote([extract(t) for t in texts], equivalent)


def best_index(scores: Sequence[float]) -> int:
    """Index of the highest score; NaN never wins; ties go to the earliest."""
    best, best_score = -1, -math.inf
    for i, score in enumerate(scores):
        if not math.isnan(score) and (best < 0 or score > best_score):
            best, best_score = i, score
    if best < 0:
        raise ValueError("every score is NaN: nothing to select")
    return best


def rerank_by_logprob(
    logprob_sum: Sequence[float], lengths: Sequence[int], normalize: bool = True
) -> int:
    """The sample the model itself likes best: Σ log p, or Σ log p / length."""
    if len(logprob_sum) != len(lengths):
        raise ValueError(f"{len(logprob_sum)} log-probabilities but {len(lengths)} lengths")
    if normalize:
        return best_index(
            [s / n if n > 0 else math.nan for s, n in zip(logprob_sum, lengths, strict=True)]
        )
    return best_index(list(logprob_sum))


def rank_score(score: float | None) -> float:
    """A log-probability as a sort key: None and NaN rank below every number."""
    return -math.inf if score is None or math.isnan(score) else float(score)


def vote_weight(score: float | None) -> float:
    """A sample's weight in `weighted_vote`: exp(score), 0 when the score is missing."""
    return math.exp(rank_score(score))


def rerank_pick(scores: Sequence[float | None]) -> int:
    """The sample with the highest `logprob_mean` (None/NaN lowest); ties to the earliest."""
    if not scores:
        raise ValueError("no samples to rerank")
    keys = [rank_score(s) for s in scores]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))


def vote_winner(clusters: Sequence[int], weights: Sequence[float]) -> int:
    """The cluster id with the largest sum of its samples' weights (summed in sample
    order), or -1 when no sample has an answer (-1 never wins). Ties (exactly equal sums)
    go to the cluster whose first member comes first. With unit weights: the majority
    vote."""
    if len(clusters) != len(weights):
        raise ValueError(f"{len(clusters)} cluster ids but {len(weights)} weights")
    total: dict[int, float] = {}  # insertion order: first appearance
    for cid, w in zip(clusters, weights, strict=True):
        if cid >= 0:
            total[cid] = total.get(cid, 0.0) + w
    best, best_weight = -1, -math.inf
    for cid, w in total.items():
        if w > best_weight:
            best, best_weight = cid, w
    return best


def weighted_vote(clusters: Sequence[int], scores: Sequence[float | None]) -> int:
    """The winning cluster id of a vote weighted by exp(logprob_mean) (`vote_winner` with
    `vote_weight`), or -1 when no sample has an answer."""
    if len(clusters) != len(scores):
        raise ValueError(f"{len(clusters)} cluster ids but {len(scores)} scores")
    return vote_winner(clusters, [vote_weight(s) for s in scores])


def select_by_verifier(texts: Sequence[str], scorer: Callable[[str], float]) -> int:
    """The sample a user-supplied scorer (reward model, unit tests, checker) ranks highest."""
    return best_index([float(scorer(t)) for t in texts])
