"""The certificate's promise: the Frank–Wolfe gap bounds f(q*) − f(q) from above."""

import pytest

import decoptim as d
from tests.conftest import random_logits


@pytest.mark.parametrize(
    "decoder", [d.Softmax(0.7), d.TopP(0.8), d.Sparsemax(), d.Entmax(1.5), d.Greedy()], ids=repr
)
def test_gap_bounds_suboptimality_of_simplex_problems(decoder):
    z = random_logits(6, 200, 2).double()
    problem = decoder.problem(z)
    q_star = decoder.probs(z)
    uniform = problem.support.double() / problem.support.sum(-1, keepdim=True)
    for mix in (0.01, 0.1, 0.5):
        q = (1 - mix) * q_star + mix * uniform
        loss = problem.objective(q_star) - problem.objective(q)
        gap = decoder.certificate(z, q).gap
        assert (loss >= -1e-9).all() and (gap >= loss - 1e-9).all()
        assert (loss > 0).any()


def test_gap_bounds_suboptimality_of_best_of_k():
    z = random_logits(6, 200, 3).double()
    decoder = d.BestOfK(8, 2.0, 0.3, weights="topm", top_m=8)
    q_star = decoder.probs(z)
    q_mirror = d.BestOfK(8, 2.0, 0.3, weights="topm", top_m=8, solver="mirror").probs(z)
    loss = decoder.objective(z, q_star) - decoder.objective(z, q_mirror)
    gap = decoder.certificate(z, q_mirror).gap
    assert (loss > 0).all() and (gap >= loss - 1e-9).all()
