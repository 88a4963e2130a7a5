"""The certificate's promise: the Frank–Wolfe gap bounds f(q*) − f(q) from above."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoptim as d
from decoptim.core.solvers import solve
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
        loss = problem.value(q_star) - problem.value(q)
        gap = decoder.certificate(z, q).gap
        assert (loss >= -1e-9).all() and (gap >= loss - 1e-9).all()
        assert (loss > 0).any()


def test_gap_bounds_suboptimality_of_best_of_k():
    z = random_logits(6, 200, 3).double()
    decoder = d.BestOfK(8, 2.0, 0.3, weights="topm", top_m=8)
    q_star = decoder.probs(z)
    q_mirror = d.BestOfK(8, 2.0, 0.3, weights="topm", top_m=8, solver="mirror").probs(z)
    problem = decoder.problem(z)
    loss = problem.value(q_star) - problem.value(q_mirror)
    gap = decoder.certificate(z, q_mirror).gap
    assert (loss > 0).all() and (gap >= loss - 1e-9).all()


# --- objectives: value and gradient agree; any objective is solvable by mirror ascent -----

PROBLEMS = [
    d.Softmax(0.7),
    d.TopK(5, 1.3),
    d.Entmax(1.5),
    d.SimplexDecoder(d.Shannon() + 0.5 * d.Tsallis(2.0), temperature=0.8),
    d.BestOfK(8, 2.0, 0.3),
    d.BestOfK(4, 1.0, 0.5, weights="rank", top_m=5, support=d.MinPSupport(0.01)),
]


@pytest.mark.parametrize("decoder", PROBLEMS, ids=repr)
def test_gradient_is_the_gradient_of_the_value(decoder):
    z = random_logits(3, 40, 4).double()
    problem = decoder.problem(z)
    q = torch.softmax(z, -1).masked_fill(~problem.support, 0.0)
    q = (q / q.sum(-1, keepdim=True)).requires_grad_(True)
    problem.value(q).sum().backward()
    on = problem.support & (q > 1e-30)
    torch.testing.assert_close(problem.gradient(q.detach())[on], q.grad[on], atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("decoder", PROBLEMS[4:], ids=repr)
def test_any_objective_is_solved_by_generic_mirror_ascent(decoder):
    z = random_logits(3, 30, 5).double()
    problem = decoder.problem(z)
    q = solve(problem, "mirror", mirror_steps=400)
    torch.testing.assert_close(q, decoder.probs(z), atol=1e-9, rtol=0)
    assert (problem.certificate(q).gap < 1e-9).all()
    with pytest.raises(ValueError, match=r"solver='auto' needs a RegularizedLinear.*KLCoverage"):
        solve(problem, "auto")


def test_objective_to_casts_its_float_tensors_only():
    decoder = d.BestOfK(4, 1.0, 0.5, weights="topm", top_m=3)
    objective = decoder.problem(random_logits(2, 10, 6)).objective
    cast = objective.to(torch.float64)
    assert cast.scores.dtype == cast.weights.dtype == cast.kl_strength.dtype == torch.float64
    assert cast.head.dtype == torch.int64 and torch.equal(cast.head, objective.head)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(-50, 50), st.sampled_from([0.0, -float("inf")])),
        min_size=2,
        max_size=20,
    ),
    index=st.integers(0, len(PROBLEMS) - 1),
)
def test_every_problem_certifies_its_decoders_own_output(values, index):
    z = torch.tensor([values], dtype=torch.float64)
    if (z == -float("inf")).all():
        z[0, 0] = 0.0
    decoder = PROBLEMS[index]
    certificate = decoder.problem(z).certificate(decoder.probs(z))
    assert certificate.ok(1e-6).all(), (certificate, decoder)
