"""Pick one answer out of K samples: majority vote, log-probability reranking, a verifier.

Tie rule, everywhere: among tied candidates the one that appears **first** in the sample
order wins. For a vote, a cluster's position is that of its first member.
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


def select_by_verifier(texts: Sequence[str], scorer: Callable[[str], float]) -> int:
    """The sample a user-supplied scorer (reward model, unit tests, checker) ranks highest."""
    return best_index([float(scorer(t)) for t in texts])
