import itertools
import math
import random

import pytest

from decoptim.pipelines.metrics import (
    bootstrap,
    expected_distinct,
    group_distinct,
    group_maj,
    group_pass,
    maj_at_k,
    pass_at_k,
    pass_ceiling,
    vote_limit,
)
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


# Coordinated samples: groups of K are the unit.
A, B, C, D = 0, 1, 2, 3  # cluster ids; A is the right answer
RIGHT = {A: True, B: False, C: False, D: False}


def test_group_metrics_by_hand():
    # two groups of 4, group-major: the first holds A once, the second not at all
    clusters = [B, A, C, B, C, C, D, -1]
    correct = [c == A for c in clusters]
    assert group_pass(correct, 4) == 0.5
    # group 1: B twice wins; group 2: C twice wins -> neither vote is right
    assert group_maj(clusters, RIGHT, 4) == 0.0
    # 2-2 ties go to the answer seen first in the group: A in the first, C in the second
    assert group_maj([A, B, B, A, C, A, A, C], RIGHT, 4) == 0.5
    assert group_distinct(clusters, 4) == (3 + 2) / 2  # no answer (-1) is not an answer
    assert group_pass(correct, 8) == 1.0 and group_pass(correct, 1) == 1 / 8


def test_group_metrics_reject_a_partial_group():
    with pytest.raises(ValueError, match="not a positive multiple of group_size=3"):
        group_pass([True] * 8, 3)
    with pytest.raises(ValueError, match="group_size=0"):
        group_maj([A, B], RIGHT, 0)


def test_iid_estimators_differ_from_the_group_values_on_coordinated_samples():
    """Stratified groups (each of the two groups of 4 holds the right answer exactly twice,
    as arithmetic codes give a token of mass 1/2): every group votes right and passes.
    Subsets of 4 mixing the groups see other splits, so the i.i.d. estimates are lower."""
    clusters = [A, A, B, C, A, A, B, C]
    correct = [c == A for c in clusters]
    assert group_maj(clusters, RIGHT, 4) == 1.0
    # By hand over the 70 subsets of 4 (A at 0,1,4,5; B at 2,6; C at 3,7): A wins all 17
    # with 3 or 4 As; of the 36 with two As, the 24 with one B and one C, and 10 of the 12
    # ties (lost only when both As come from the second group, after the other pair);
    # none of the 17 with at most one A. 51/70.
    assert maj_at_k(clusters, RIGHT, 4) == pytest.approx(51 / 70, rel=1e-6)
    spread = [A, B, C, D, A, B, C, D]  # one right sample in each group
    assert group_pass([c == A for c in spread], 4) == 1.0
    assert math.isclose(pass_at_k(8, 2, 4), 1 - 15 / 70)  # 1 − C(6,4)/C(8,4) = 55/70
    assert group_pass(correct, 4) == 1.0 and pass_at_k(8, 4, 4) < 1.0


def test_expected_distinct_is_the_subset_average():
    clusters = [A, A, B, -1, C, A]
    for k in range(1, 7):
        subsets = list(itertools.combinations(clusters, k))
        brute = sum(len({c for c in s if c >= 0}) for s in subsets) / len(subsets)
        assert math.isclose(expected_distinct(clusters, k), brute)
    assert expected_distinct(clusters, 6) == 3
    with pytest.raises(ValueError, match="k=7, n=6"):
        expected_distinct(clusters, 7)


def test_pass_ceiling_and_vote_limit():
    assert pass_ceiling(0.1, 8) == pytest.approx(0.8) and pass_ceiling(0.25, 8) == 1.0
    assert pass_ceiling(0.0, 4) == 0.0
    with pytest.raises(ValueError, match=r"accuracy=1\.5"):
        pass_ceiling(1.5, 4)
    with pytest.raises(ValueError, match="k=0"):
        pass_ceiling(0.5, 0)
    assert vote_limit([B, A, A, C, B, A], RIGHT) == 1.0  # A 3, B 2
    assert vote_limit([B, A, A, B, -1, -1, -1], RIGHT) == 0.5  # tie: half of the modes right
    assert vote_limit([B, B, A, -1], RIGHT) == 0.0
    assert vote_limit([-1, -1], RIGHT) == 0.0
