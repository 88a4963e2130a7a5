import pytest

from decoptim.pipelines.selection import (
    cluster_answers,
    majority_vote,
    rerank_by_logprob,
    select_by_verifier,
    self_consistency,
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
