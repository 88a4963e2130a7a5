import itertools
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoptim.core.coordinated import start_codes
from decoptim.pipelines.metrics import (
    bootstrap,
    expected_distinct,
    group_distinct,
    group_maj,
    group_pass,
    group_rerank,
    group_wvote,
    maj_at_k,
    pass_at_k,
    pass_ceiling,
    rerank_at_k,
    subgroups,
    vote_limit,
    wvote_at_k,
)
from decoptim.pipelines.selection import majority_vote, rerank_pick, weighted_vote


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


# Strided subgroups: each is an exact coordinated group of k.


def test_strided_subgroups_by_hand():
    assert subgroups(list(range(16)), 16, 4) == [
        [0, 4, 8, 12],
        [1, 5, 9, 13],
        [2, 6, 10, 14],
        [3, 7, 11, 15],
    ]
    assert subgroups(list(range(16)), 8, 4) == [
        [0, 2, 4, 6],
        [1, 3, 5, 7],
        [8, 10, 12, 14],
        [9, 11, 13, 15],
    ]
    assert (
        subgroups(list(range(8)), 4)
        == subgroups(list(range(8)), 4, 4)
        == [
            [0, 1, 2, 3],
            [4, 5, 6, 7],
        ]
    )
    assert subgroups(list(range(4)), 4, 1) == [[0], [1], [2], [3]]
    with pytest.raises(ValueError, match="k=3"):
        subgroups(list(range(8)), 8, 3)
    with pytest.raises(ValueError, match="k=16"):
        subgroups(list(range(8)), 8, 16)


@pytest.mark.parametrize("k", [1, 2, 4, 8, 16])
def test_strided_subgroup_codes_are_those_of_a_group_of_k(k):
    """The fact the subgroup metrics rest on: the codes of samples r, r + G/k, ... of a
    group of G are (U' + j/k) mod 1, j = 0..k−1, the start codes of a group of k."""
    seeds = torch.tensor([12345] * 16)
    codes = start_codes(seeds, torch.arange(16), 16).value
    for indices in subgroups(list(range(16)), 16, k):
        sub = codes[indices]
        offsets = (sub - sub[0]) % 1.0
        assert torch.allclose(offsets, torch.arange(k, dtype=torch.float64) / k, atol=1e-12)


def test_group_metrics_on_strided_subgroups_by_hand():
    # one group of 8: subgroups of 4 are (0, 2, 4, 6) and (1, 3, 5, 7)
    clusters = [A, B, A, C, B, C, A, C]
    correct = [c == A for c in clusters]
    assert group_pass(correct, 8, 4) == 0.5  # A only in the first
    assert group_maj(clusters, RIGHT, 8, 4) == 0.5  # A A B A wins, B C C C loses
    assert group_distinct(clusters, 8, 4) == (2 + 2) / 2
    assert group_distinct(clusters, 8) == 3
    # pairs (0, 4) (1, 5) (2, 6) (3, 7): A-B, B-C, A-A, C-C
    assert group_pass(correct, 8, 2) == 0.5
    assert group_maj(clusters, RIGHT, 8, 2) == 0.5  # A-B is a tie, won by A (first)
    assert group_maj(clusters, RIGHT, 8, 8) == group_maj(clusters, RIGHT, 8)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([(8, 4), (8, 2), (16, 4), (16, 8), (4, 4), (4, 1)]),
    st.integers(1, 3),
    st.randoms(use_true_random=False),
)
def test_group_metrics_are_the_mean_over_subgroups(sizes, groups, rng):
    group_size, k = sizes
    n = group_size * groups
    clusters = [rng.choice([A, B, C, -1]) for _ in range(n)]
    scores = [rng.choice([None, -0.1, -0.5, -1.0]) for _ in range(n)]
    correct = [c == A for c in clusters]
    parts = subgroups(list(range(n)), group_size, k)
    assert len(parts) == n // k
    assert math.isclose(
        group_maj(clusters, RIGHT, group_size, k),
        sum(maj_at_k([clusters[i] for i in p], RIGHT, k) for p in parts) / len(parts),
    )
    assert math.isclose(
        group_rerank(correct, scores, group_size, k),
        sum(correct[p[rerank_pick([scores[i] for i in p])]] for p in parts) / len(parts),
    )
    assert math.isclose(
        group_wvote(clusters, RIGHT, scores, group_size, k),
        sum(
            RIGHT.get(weighted_vote([clusters[i] for i in p], [scores[i] for i in p]), False)
            for p in parts
        )
        / len(parts),
    )


# Gold-free selection over i.i.d. samples: expectations over size-k subsets.


def brute_rerank(correct, scores, k):
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(correct[s[rerank_pick([scores[i] for i in s])]] for s in subsets) / len(subsets)


def brute_wvote(clusters, scores, k):
    subsets = list(itertools.combinations(range(len(clusters)), k))
    won = [weighted_vote([clusters[i] for i in s], [scores[i] for i in s]) for s in subsets]
    return sum(RIGHT.get(w, False) for w in won) / len(subsets)


SCORES = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.sampled_from([0.0, -0.25, -1.0]),  # repeated values: ties
    st.floats(-5.0, 0.0),
)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_rerank_at_k_equals_enumeration_of_all_subsets(data):
    n = data.draw(st.integers(1, 8))
    correct = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    scores = data.draw(st.lists(SCORES, min_size=n, max_size=n))
    k = data.draw(st.integers(1, n))
    assert math.isclose(rerank_at_k(correct, scores, k), brute_rerank(correct, scores, k))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_wvote_at_k_equals_enumeration_of_all_subsets(data):
    n = data.draw(st.integers(1, 8))
    clusters = data.draw(st.lists(st.sampled_from([A, B, C, -1]), min_size=n, max_size=n))
    scores = data.draw(st.lists(SCORES, min_size=n, max_size=n))
    k = data.draw(st.integers(1, n))
    assert math.isclose(wvote_at_k(clusters, RIGHT, scores, k), brute_wvote(clusters, scores, k))


def test_rerank_and_wvote_by_hand():
    # the right answer A has the lower scores: rerank and the weighted vote both lose it
    clusters = [A, A, A, B]
    correct = [True, True, True, False]
    scores = [-1.0, -1.0, -1.0, -0.01]
    assert rerank_at_k(correct, scores, 1) == 0.75  # k = 1: accuracy
    assert rerank_at_k(correct, scores, 4) == 0.0  # B is in every subset of 4
    assert rerank_at_k(correct, scores, 2) == 0.5  # the 3 pairs without B
    assert wvote_at_k(clusters, RIGHT, scores, 4) == 1.0  # 3·e^-1 = 1.10 > e^-0.01
    assert wvote_at_k(clusters, RIGHT, scores, 2) == 0.5  # A-A pairs win, A-B pairs lose
    # without log-probabilities: rerank takes the first sample of the subset
    assert rerank_at_k([False, True, True], [None] * 3, 2) == 1 / 3  # pair (1, 2) only
    assert wvote_at_k([-1, -1], RIGHT, [0.0, 0.0], 1) == 0.0
    with pytest.raises(ValueError, match="3 samples but 2 scores"):
        rerank_at_k(correct[:3], scores[:2], 1)


def test_wvote_sampling_path_is_close_to_the_exact_value():
    rng = random.Random(5)
    clusters = [rng.choice([A, B, C]) for _ in range(16)]
    scores = [rng.uniform(-2.0, 0.0) for _ in range(16)]
    exact = wvote_at_k(clusters, RIGHT, scores, 8)  # C(16, 8) = 12870 subsets
    sampled = wvote_at_k(clusters, RIGHT, scores, 8, max_subsets=4000, seed=1)
    assert abs(exact - sampled) < 0.03
