import itertools
import math
import random

import pytest

from decoptim.pipelines.metrics import bootstrap, maj_at_k, pass_at_k
from decoptim.pipelines.selection import majority_vote


def brute_pass_at_k(correct, k):
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    "n,c,k", [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 5, 2), (8, 3, 8), (10, 1, 4)]
)
def test_pass_at_k_is_the_subset_average(n, c, k):
    correct = [True] * c + [False] * (n - c)
    assert math.isclose(pass_at_k(n, c, k), brute_pass_at_k(correct, k))


def test_pass_at_k_bad_input():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)


def test_maj_at_k_exact_equals_brute_force_votes():
    rng = random.Random(0)
    answers = [rng.choice(["1", "2", "3", None]) for _ in range(9)]
    clusters = majority_vote(answers, lambda a, b: a == b).clusters
    right = {cid: answers[clusters.index(cid)] == "2" for cid in set(clusters) if cid >= 0}
    for k in (1, 3, 5, 9):
        expected = []
        for subset in itertools.combinations(range(9), k):
            vote = majority_vote([answers[i] for i in subset], lambda a, b: a == b)
            expected.append(vote.answer == "2")
        assert math.isclose(maj_at_k(clusters, right, k), sum(expected) / len(expected))


def test_maj_at_1_is_single_sample_accuracy_and_sampling_path_is_close():
    clusters = [0, 1, 0, 2, 0, 1, 1, 0] * 2  # n = 16
    right = {0: True, 1: False, 2: False}
    assert math.isclose(maj_at_k(clusters, right, 1), 8 / 16)
    exact = maj_at_k(clusters, right, 8)  # C(16, 8) = 12870 subsets, enumerated
    sampled = maj_at_k(clusters, right, 8, max_subsets=4000, seed=1)
    assert abs(exact - sampled) < 0.03
    with pytest.raises(ValueError, match="max_subsets"):
        maj_at_k(clusters, right, 8, max_subsets=10**9)


def test_bootstrap_interval_contains_the_mean():
    est = bootstrap([0, 1, 1, 0, 1, 1, 1, 0, 1, 1])
    assert est.low <= est.mean <= est.high and est.mean == 0.7
    assert 0.3 < est.low < 0.7 < est.high <= 1.0
    assert str(est).startswith("70.0 [")
