import math
import random

import pytest

from decoptim.pipelines.selection import (
    cluster_answers,
    majority_vote,
    rerank_by_logprob,
    rerank_pick,
    select_by_verifier,
    self_consistency,
    vote_winner,
    weighted_vote,
)


def test_vote_groups_equivalent_answers():
    vote = majority_vote(["1/2", "0.5", "\\frac{1}{2}", "3", "3", None])
    assert vote.answer == "1/2" and vote.votes == 3 and vote.distinct == 2
    assert vote.clusters == [0, 0, 0, 1, 1, -1]


def test_vote_tie_goes_to_the_earliest_cluster():
    assert majority_vote(["7", "8", "8", "7"]).answer == "7"
    assert majority_vote(["8", "7", "7", "8"]).answer == "8"


def test_vote_with_no_parsable_answer():
    vote = majority_vote([None, None])
    assert vote.answer is None and vote.votes == 0 and vote.distinct == 0


def test_self_consistency_end_to_end_on_texts():
    texts = ["so \\boxed{4}", "The answer is 4.", "I think 5", "#### 4.0"]
    vote = self_consistency(texts)
    assert vote.answer == "4" and vote.votes == 3


def test_cluster_uses_representative_not_transitivity():
    calls = []

    def eq(a, b):
        calls.append((a, b))
        return abs(float(a) - float(b)) < 1.5

    assert cluster_answers(["0", "1", "2"], eq) == [0, 0, 1]


def test_rerank_and_verifier():
    assert rerank_by_logprob([-10.0, -6.0, -9.0], [10, 3, 20], normalize=True) == 2
    assert rerank_by_logprob([-10.0, -6.0, -9.0], [10, 3, 20], normalize=False) == 1
    assert rerank_by_logprob([-1.0, -1.0], [1, 1]) == 0
    assert select_by_verifier(["a", "bbb", "cc"], len) == 1
    with pytest.raises(ValueError, match="lengths"):
        rerank_by_logprob([-1.0], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        select_by_verifier(["a"], lambda t: float("nan"))


# Gold-free selection from logprob_mean: rerank and the vote weighted by exp(logprob_mean).
NAN = float("nan")


def test_rerank_pick_takes_the_highest_score_missing_scores_last_ties_earliest():
    assert rerank_pick([-1.0, -0.2, -0.5]) == 1
    assert rerank_pick([-0.5, -0.2, -0.2]) == 1  # tie: the earlier one
    assert rerank_pick([None, -3.0, NAN]) == 1  # None and NaN rank below every number
    assert rerank_pick([None, None]) == 0 and rerank_pick([NAN]) == 0  # all missing: first
    with pytest.raises(ValueError, match="no samples"):
        rerank_pick([])


def test_weighted_vote_sums_exp_logprob_per_cluster():
    # cluster 0: two samples of p = e^-2 each (0.27); cluster 1: one of p = e^-0.1 (0.90)
    assert weighted_vote([0, 1, 0], [-2.0, -0.1, -2.0]) == 1
    assert majority_vote(["7", "8", "7"]).clusters == [0, 1, 0]  # the plain vote says 0
    # three confident samples outweigh one
    assert weighted_vote([0, 1, 0, 0], [-0.5, -0.1, -0.5, -0.5]) == 0
    # exact tie (1 + 1 against 2): the cluster seen first, whichever cluster id it has
    assert weighted_vote([1, 0, 0, 1], [0.0, 0.0, 0.0, 0.0]) == 1
    assert weighted_vote([2, 1, 1], [math.log(0.5), math.log(0.25), math.log(0.25)]) == 2
    # missing scores weigh 0; with every score missing the first answer wins
    assert weighted_vote([0, 1, 1], [-1.0, None, NAN]) == 0
    assert weighted_vote([-1, 1, 0], [None, None, None]) == 1
    # no answer never wins, however confident; nothing parsed: -1
    assert weighted_vote([-1, 0], [0.0, -5.0]) == 0
    assert weighted_vote([-1, -1], [0.0, 0.0]) == -1
    with pytest.raises(ValueError, match="2 cluster ids but 1 scores"):
        weighted_vote([0, 1], [0.0])


def test_vote_winner_with_unit_weights_is_the_majority_vote():
    rng = random.Random(3)
    for _ in range(200):
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(rng.randint(1, 7))]
        vote = majority_vote(answers, lambda a, b: a == b)
        winner = vote_winner(vote.clusters, [1.0] * len(answers))
        expected = -1 if vote.answer is None else vote.clusters[answers.index(vote.answer)]
        assert winner == expected
