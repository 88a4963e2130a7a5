"""Closed forms against the generic solvers (threshold bisection, mirror ascent)."""

import pytest
import torch

import decoptim as d
from decoptim.core.solvers import solve
from tests.conftest import random_logits

ONE = torch.tensor(1.0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_softmax_closed_form_equals_bisection_and_mirror(seed, scale):
    z = random_logits(16, 500, seed, scale) + 40.0
    support = torch.rand(z.shape, generator=torch.Generator().manual_seed(seed)) < 0.7
    support[:, 0] = True
    tau = torch.rand(16, 1, generator=torch.Generator().manual_seed(seed + 1)) + 0.2
    closed = d.softmax_on_support(z, tau, support)
    bisect = d.threshold_bisect(z, tau, d.Shannon(), support)
    problem = d.SimplexProblem(d.RegularizedLinear(z, tau, d.Shannon()), support)
    mirror = solve(problem, "mirror", mirror_steps=3)
    torch.testing.assert_close(bisect, closed, atol=1e-5, rtol=0)
    torch.testing.assert_close(mirror, closed, atol=1e-5, rtol=0)
    assert (closed[~support] == 0).all()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
@pytest.mark.parametrize("alpha,closed_form", [(2.0, d.sparsemax_sort), (1.5, d.entmax15_sort)])
def test_sort_closed_forms_equal_bisection(seed, scale, alpha, closed_form):
    z = random_logits(16, 500, seed, scale) - 7.0
    support = torch.rand(z.shape, generator=torch.Generator().manual_seed(seed)) < 0.8
    support[:, 3] = True
    lam = torch.full((16, 1), 0.7)
    exact = closed_form(z, lam, support)
    bisect = d.threshold_bisect(z, lam, d.Tsallis(alpha), support)
    torch.testing.assert_close(bisect, exact, atol=1e-5, rtol=0)
    reference = closed_form(z.double(), lam.double(), support)
    torch.testing.assert_close(exact.double(), reference, atol=1e-5, rtol=0)
    assert (exact[~support] == 0).all()


def test_general_alpha_entmax_has_zero_certificate_and_matches_float64():
    z = random_logits(8, 300, 11)
    q = d.Entmax(1.3).probs(z)
    q64 = d.Entmax(1.3).probs(z.double())
    torch.testing.assert_close(q.double(), q64, atol=1e-6, rtol=0)
    assert d.Entmax(1.3).certificate(z).gap.max() < 1e-5


def test_weighted_sum_regulariser_scales_like_temperature():
    z = random_logits(4, 200, 3)
    mask = torch.ones_like(z, dtype=torch.bool)
    q = d.threshold_bisect(z, ONE, 2.0 * d.Shannon(), mask)
    torch.testing.assert_close(q, torch.softmax(z / 2, -1), atol=1e-5, rtol=0)


def test_composite_regulariser_solved_by_bisection_is_certified():
    """Shannon + Tsallis(2): no closed form; the generic inverse and the certificate agree."""
    z = random_logits(6, 100, 5)
    decoder = d.SimplexDecoder(d.Shannon() + 0.5 * d.Tsallis(2.0), temperature=0.8)
    q = decoder.probs(z)
    assert torch.allclose(q.sum(-1), torch.ones(6))
    assert decoder.certificate(z).gap.max() < 1e-5
    mirror = solve(decoder.problem(z), "mirror", mirror_steps=400)
    torch.testing.assert_close(mirror, q, atol=1e-5, rtol=0)


def test_mirror_ascent_keeps_zero_coordinates():
    q0 = torch.tensor([[0.5, 0.0, 0.5]])
    q = d.mirror_ascent(lambda q: torch.tensor([[0.0, 10.0, 1.0]]), q0, 5, 1.0)
    assert q[0, 1] == 0
    assert q[0, 2] > q[0, 0]


def test_unknown_solver_is_rejected():
    with pytest.raises(ValueError, match="solver"):
        d.SimplexDecoder(d.Shannon(), solver="newton")
    with pytest.raises(ValueError, match="sort"):
        d.SimplexDecoder(d.Tsallis(1.2), solver="sort").probs(torch.zeros(1, 3))
