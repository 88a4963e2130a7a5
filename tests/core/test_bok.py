"""Best-of-K: exactness against an independent float64 solver, the paper's mirror ascent,
properties of the objective, controls and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoptim as d
from decoptim.core import bok
from tests.conftest import random_logits


def reference_bok(z, k, beta, lam, tau=1.0, weights=None):
    """Float64 maximiser for one row by nested bisection, written from the KKT conditions.

    g_v(q) = s_v − λ(log(q/p_v) + 1) + λβ w_v K (1 − q)^{K−1} is decreasing in q, so for each
    ν the token's mass is found by bisection on q ∈ (0, 1]; ν by bisection so that Σ q = 1.
    """
    z = z.double()
    s = z / tau
    log_p = torch.log_softmax(s, -1)
    w = log_p.exp() if weights is None else weights.double()

    def g(q):
        return s - lam * (torch.log(q) - log_p + 1) + lam * beta * w * k * (1 - q) ** (k - 1)

    def q_of(nu):
        lo = torch.full_like(s, 1e-300)
        hi = torch.ones_like(s)
        for _ in range(75):  # geometric bisection: 75 halvings of a log-range of 690
            mid = torch.sqrt(lo * hi)
            above = g(mid) > nu  # g decreasing: root lies to the right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    nu_lo = float(g(torch.ones_like(s)).min()) - 1
    nu_hi = float(g(torch.full_like(s, 1e-300)).max())
    for _ in range(100):
        nu = 0.5 * (nu_lo + nu_hi)
        if q_of(nu).sum() > 1:
            nu_lo = nu
        else:
            nu_hi = nu
    q = q_of(0.5 * (nu_lo + nu_hi))
    return q / q.sum()


CASES = [
    dict(k=8, beta=0.02, lam=0.2),
    dict(k=8, beta=0.05, lam=0.5, temperature=0.7),
    dict(k=4, beta=2.0, lam=0.3),
    dict(k=16, beta=30.0, lam=0.1),
    dict(k=1, beta=1.0, lam=1.0),
    dict(k=2, beta=5.0, lam=0.5),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("weights", ["prob", "topm", "rank"])
def test_exact_solver_matches_float64_reference(case, weights):
    z = random_logits(3, 24, seed=len(str(case)), scale=2.0)
    decoder = d.BestOfK(**case, weights=weights, top_m=5)
    q = decoder.probs(z)
    x = z.double()
    w = decoder.coverage_weights(x)
    tau = case.get("temperature", 1.0)
    for row in range(3):
        ref = reference_bok(z[row], case["k"], case["beta"], case["lam"], tau, w[row])
        torch.testing.assert_close(q[row].double(), ref, atol=1e-5, rtol=0)
    scale = 1 + case["lam"] * case["beta"] * case["k"] ** 2
    assert (decoder.certificate(z).gap <= 1e-5 * scale).all()


def test_float64_exact_solver_reaches_float64_precision():
    z = random_logits(4, 500, 3, scale=3.0).double()
    for beta in (0.02, 1.0, 50.0):
        gap = d.BestOfK(8, beta, 0.2).certificate(z).gap
        assert (gap < 1e-9).all(), (beta, gap)


@pytest.mark.parametrize("beta", [0.02, 1.0, 50.0])
def test_exact_solver_on_a_cpu_stops_once_t_settles(monkeypatch, beta):
    # The same q as the full budgets, to float64 rounding, in fewer inner solves (outer
    # steps) and fewer Newton steps inside them.
    z = random_logits(4, 500, 5, scale=3.0).double()
    decoder = d.BestOfK(8, beta, 0.2, weights="prob", outer_iterations=20, inner_iterations=10)
    solves, steps = [], []
    inner_newton, phi_and_slope = bok._inner_newton, bok._phi_and_slope
    monkeypatch.setattr(bok, "_inner_newton", lambda *a: solves.append(1) or inner_newton(*a))
    monkeypatch.setattr(bok, "_phi_and_slope", lambda *a: steps.append(1) or phi_and_slope(*a))
    early = decoder.probs(z)
    early_solves, early_steps = len(solves), len(steps)
    monkeypatch.setattr(bok, "_stops_early", lambda t: False)
    solves.clear()
    steps.clear()
    full = decoder.probs(z)
    assert len(solves) == 20 + 1 and early_solves < 20, early_solves
    assert early_steps < len(steps) * early_solves / len(solves), (early_steps, len(steps))
    torch.testing.assert_close(early, full, atol=1e-13, rtol=0)


def test_mirror_is_the_papers_algorithm():
    """q₀ = p; q ← q ⊙ exp(η g(q) − max), renormalised; η = 1/λ; written row by row here."""
    z = random_logits(3, 50, 8)
    k, beta, lam, steps = 8, 0.5, 0.2, 5
    got = d.BestOfK(k, beta, lam, solver="mirror", steps=steps).probs(z)
    for row in range(3):
        s = z[row].double()
        p = torch.softmax(s, -1)
        q = p.clone()
        for _ in range(steps):
            g = s - lam * (torch.log(q / p) + 1) + lam * beta * p * k * (1 - q) ** (k - 1)
            update = g / lam - (g / lam).max()
            q = q * torch.exp(update)
            q = q / q.sum()
        torch.testing.assert_close(got[row].double(), q, atol=1e-6, rtol=1e-5)


def test_mirror_step_size_parameter():
    z = random_logits(2, 40, 1)
    small = d.BestOfK(8, 0.1, 0.5, solver="mirror", steps=1, step_size=1e-6).probs(z)
    torch.testing.assert_close(small, torch.softmax(z, -1), atol=1e-5, rtol=0)


def test_mirror_stops_far_from_the_optimum_when_coverage_is_strong():
    z = random_logits(8, 1000, 2, scale=3.0)
    strong = dict(k=8, beta=20.0, lam=0.2)  # λβK = 32
    mirror_gap = d.BestOfK(**strong, solver="mirror").certificate(z).gap
    exact_gap = d.BestOfK(**strong).certificate(z).gap
    assert (exact_gap < 1e-3).all()
    assert (mirror_gap > 0.1).all()
    mild = dict(k=8, beta=0.02, lam=0.2)  # the paper's setting: mirror is close
    assert (d.BestOfK(**mild, solver="mirror").certificate(z).gap < 1e-3).all()


@pytest.mark.parametrize("solver", ["exact", "mirror"])
def test_beta_zero_is_the_closed_form_and_the_matched_temperature(solver):
    z = random_logits(4, 300, 4)
    lam, tau = 0.25, 0.8
    bok = d.BestOfK(8, 0.0, lam, temperature=tau, solver=solver)
    s = z / tau
    expected = torch.softmax(torch.log_softmax(s, -1) + s / lam, -1)
    torch.testing.assert_close(bok.probs(z), expected, atol=1e-6, rtol=1e-5)
    control = d.BestOfK(8, 0.3, lam, temperature=tau, solver=solver)
    torch.testing.assert_close(control.beta_zero_control().probs(z), expected, atol=1e-6, rtol=1e-5)
    matched = control.matched_temperature_control()
    assert math.isclose(matched.temperature, tau / (1 + 1 / lam))
    torch.testing.assert_close(matched.probs(z), expected, atol=1e-6, rtol=1e-5)


def test_effective_temperature_with_raw_scores_or_reference():
    bok = d.BestOfK(8, 0.1, 0.5, temperature=2.0, scores="raw")
    assert math.isclose(bok.effective_temperature(), 1 / (1 / 2.0 + 1 / 0.5))
    z = random_logits(2, 100, 0)
    expected = torch.softmax(z / bok.effective_temperature(), -1)
    torch.testing.assert_close(bok.beta_zero_control().probs(z), expected, atol=1e-6, rtol=1e-5)


def test_larger_beta_never_lowers_top_m_coverage():
    z = random_logits(6, 400, 5, scale=2.5)
    k, m = 8, 6
    coverage = []
    for beta in (0.0, 0.01, 0.1, 0.5, 2.0, 10.0, 50.0):
        decoder = d.BestOfK(k, beta, 0.2, weights="topm", top_m=m)
        q = decoder.probs(z)
        head = q.gather(-1, torch.topk(z, m).indices)
        coverage.append((1 - (1 - head) ** k).sum(-1))
    coverage = torch.stack(coverage)
    assert (coverage[1:] >= coverage[:-1] - 1e-5).all()
    assert (coverage[-1] > coverage[0] + 0.1).all()


@pytest.mark.parametrize("weights", ["prob", "topm"])
def test_invariant_to_a_constant_added_to_the_logits(weights):
    z = random_logits(3, 200, 6)
    decoder = d.BestOfK(8, 1.0, 0.3, weights=weights, top_m=10)
    torch.testing.assert_close(decoder.probs(z + 37.5), decoder.probs(z), atol=2e-6, rtol=1e-4)


def test_per_row_parameters_equal_row_by_row():
    z = random_logits(3, 120, 7)
    ks = torch.tensor([1, 4, 16])
    betas = torch.tensor([0.0, 0.5, 5.0])
    lams = torch.tensor([0.1, 0.3, 1.0])
    temps = torch.tensor([0.5, 1.0, 1.5])
    for solver in ("exact", "mirror"):
        batched = d.BestOfK(ks, betas, lams, temps, solver=solver, weights="topm").probs(z)
        for row in range(3):
            single = d.BestOfK(
                int(ks[row]),
                float(betas[row]),
                float(lams[row]),
                float(temps[row]),
                solver=solver,
                weights="topm",
            ).probs(z[row : row + 1])
            torch.testing.assert_close(batched[row : row + 1], single, atol=2e-6, rtol=1e-5)


def test_user_weight_tensor_and_top_m_tie_rule():
    z = torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0]])
    decoder = d.BestOfK(4, 1.0, 0.5, weights="topm", top_m=2)
    assert decoder.coverage_weights(z).tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]
    user = torch.tensor([0.0, 1.0, 0.0, 0.0, 3.0])
    q_user = d.BestOfK(4, 1.0, 0.5, weights=user).probs(z)
    q_none = d.BestOfK(4, 0.0, 0.5).probs(z)
    assert q_user[0, 4] > q_none[0, 4] and q_user[0, 1] > q_none[0, 1]


# A row of logits built to be hard: large, tied and masked values.
ADVERSARIAL_ROW = st.lists(
    st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from([0.0, 1.0, -math.inf])),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(
    values=ADVERSARIAL_ROW,
    weights=st.sampled_from(["prob", "topm", "rank"]),
    solver=st.sampled_from(["exact", "mirror"]),
)
def test_valid_distribution_on_adversarial_logits(values, weights, solver):
    z = torch.tensor([values], dtype=torch.float32)
    if (z == -math.inf).all():
        z[0, 0] = 0.0
    q = d.BestOfK(8, 0.5, 0.2, weights=weights, top_m=4, solver=solver).probs(z)
    assert torch.isfinite(q).all() and (q >= 0).all()
    assert abs(float(q.sum()) - 1) < 1e-5
    assert (q[z == -math.inf] == 0).all()


def test_sampling_follows_probs():
    z = random_logits(1, 6, 9)
    decoder = d.BestOfK(8, 2.0, 0.3)
    q = decoder.probs(z)[0]
    samples = decoder.sample(z.expand(20000, -1), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(samples, minlength=6).double() / 20000
    assert (freq - q.double()).abs().max() < 0.015


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=0, beta=0.1, lam=0.1), r"k >= 1.*k=0"),
        (dict(k=2.5, beta=0.1, lam=0.1), r"k must be an int"),
        (dict(k=8, beta=-0.1, lam=0.1), r"beta=-0.1"),
        (dict(k=8, beta=0.1, lam=0.0), r"lam=0.0"),
        (dict(k=8, beta=0.1, lam=-1.0), r"lam=-1.0"),
        (dict(k=8, beta=0.1, lam=0.1, temperature=0.0), r"temperature=0.0"),
        (dict(k=8, beta=0.1, lam=0.1, solver="newton"), r"solver=.newton"),
        (dict(k=8, beta=0.1, lam=0.1, weights="entropy"), r"weights=.entropy"),
        (dict(k=8, beta=0.1, lam=0.1, weights=torch.tensor([1.0, -1.0])), r"non-negative"),
        (dict(k=8, beta=0.1, lam=0.1, top_m=0), r"top_m"),
        (dict(k=8, beta=0.1, lam=0.1, steps=0), r"steps"),
        (dict(k=8, beta=0.1, lam=0.1, outer_iterations=0), r"outer_iterations"),
        (dict(k=8, beta=0.1, lam=0.1, scores="cold"), r"scores=.cold"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        d.BestOfK(**kwargs)


def test_weights_of_the_wrong_shape():
    decoder = d.BestOfK(8, 0.1, 0.1, weights=torch.ones(7))
    with pytest.raises(ValueError, match=r"weights of shape \(7,\)"):
        decoder.probs(torch.zeros(2, 5))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(solver="mirror", steps=51), r"steps <= 50, got steps=51"),
        (dict(solver="mirror", steps=20000), r"steps=20000"),
        (dict(outer_iterations=21), r"outer_iterations <= 20, got outer_iterations=21"),
        (dict(inner_iterations=11), r"inner_iterations <= 10, got inner_iterations=11"),
        (dict(top_m=1025), r"top_m <= 1024, got top_m=1025"),
        (dict(lam=1e-45), r"lam=1e-45"),
        (dict(beta=1e308), r"beta=1e\+308"),
        (dict(solver="mirror", step_size=1e308), r"step_size=1e\+308"),
        (dict(temperature=1e-45), r"temperature=1e-45"),
    ],
)
def test_work_and_range_limits(kwargs, match):
    """Every size that drives a step's cost is bounded, and every scale float32 overflows."""
    with pytest.raises(ValueError, match=match):
        d.BestOfK(**{"k": 8, "beta": 0.02, "lam": 0.2, **kwargs})


def test_budgets_at_their_limits_are_accepted_and_solve():
    from decoptim.core.bok import MAX_INNER_ITERATIONS, MAX_OUTER_ITERATIONS, MAX_STEPS, MAX_TOP_M

    z = random_logits(2, 60, 11)
    exact = d.BestOfK(8, 1.0, 0.3, outer_iterations=MAX_OUTER_ITERATIONS,
                      inner_iterations=MAX_INNER_ITERATIONS)  # fmt: skip
    assert (exact.certificate(z).gap < 1e-4).all()
    mirror = d.BestOfK(8, 1.0, 0.3, solver="mirror", steps=MAX_STEPS).probs(z)
    torch.testing.assert_close(mirror.sum(-1), torch.ones(2))
    wide = random_logits(2, 2000, 12)
    top = d.BestOfK(8, 1.0, 0.3, weights="topm", top_m=MAX_TOP_M)
    assert (top.certificate(wide).gap < 1e-4).all()


def test_large_scores_keep_ties_in_the_tail_exact():
    """s/λ near 1e9 (λ = 1e-8): float32 cannot add log 2 to 1e9, so a tail log-sum-exp of
    two tied tokens must be taken after shifting the row's top to 0."""
    z = torch.tensor([[5.0, 5.0, 5.0, 1.0, -2.0]])
    for weights in ("topm", "rank"):
        q = d.BestOfK(1, 0.0, 1e-8, weights=weights, top_m=1).probs(z)
        torch.testing.assert_close(q, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0, 0.0]]))


def test_matched_temperature_out_of_range_names_temperature_and_lam():
    bok = d.BestOfK(8, 0.02, 1e-8, temperature=1e-8)
    with pytest.raises(ValueError, match=r"temperature=1e-08 and lam=1e-08 is out of range"):
        bok.matched_temperature_control()


def test_w_equals_p_kernels_only_within_their_coverage_slope(monkeypatch):
    """Beyond KERNEL_PROB_MAX_SLOPE the w = p kernels gave NaN rows on an H200; such
    settings take the torch path (checked here by routing alone, so it runs anywhere)."""
    from decoptim.core.kernels import table

    monkeypatch.setattr(table, "use_kernels", lambda x: True)
    x = torch.zeros(2, 8)
    for solver, limit in table.KERNEL_PROB_MAX_SLOPE.items():
        inside = d.BestOfK(8, limit / 8, 0.5, solver=solver)
        beyond = d.BestOfK(8, 2 * limit / 8, 0.5, solver=solver)
        assert table.route_name(inside, x) == "bok_prob"
        assert table.route_name(beyond, x) == "torch"
    assert table.route_name(d.BestOfK(8, 1e8, 0.5, weights="topm", top_m=8), x) == "bok_topm"


@pytest.mark.parametrize(
    "decoder",
    [
        d.BestOfK(8, 0.02, 0.2, temperature=3.0),
        d.BestOfK(8, 2.0, 0.2, weights="topm", top_m=2, temperature=3.0),
        d.BestOfK(8, 0.02, 0.2, solver="mirror", temperature=3.0),
        d.BestOfK(8, 0.02, 0.2, temperature=3.0, scores="raw"),
    ],
    ids=repr,
)
def test_large_logits_cost_no_precision(decoder):
    # Dividing 1e6 by τ before shifting by the max rounded the gaps (0.547 for 0.505).
    z = torch.tensor([[1e6, 1e6 - 0.25, 1e6 - 0.5, 0.0]])
    expected = decoder.probs(z.double() - 1e6)
    torch.testing.assert_close(decoder.probs(z).double(), expected, atol=1e-6, rtol=0)
    near_limit = torch.tensor([[3e38, 3e38, -3e38, 2.9e38]])
    q = decoder.probs(near_limit)
    assert torch.isfinite(q).all() and q[0, 0] == q[0, 1] and q[0, 2] == 0, q


def test_certificate_without_validation_drops_nan_like_the_probs():
    decoder = d.BestOfK(8, 0.02, 0.2, validate=False)
    z = torch.tensor([[0.5, math.nan, 0.2, 0.1]])
    certificate = decoder.certificate(z)
    assert certificate.gap.item() < 1e-6 and certificate.infeasibility.item() < 1e-6


# --- Best-of-K as a SimplexProblem: problem(), certificate() and a support -----------------

SETTINGS = [
    dict(k=8, beta=0.02, lam=0.2),
    dict(k=4, beta=2.0, lam=0.3, weights="topm", top_m=6),
    dict(k=16, beta=0.5, lam=0.1, weights="rank", top_m=10, temperature=0.7),
    dict(k=8, beta=1.0, lam=0.5, scores="raw"),
]


def design_gradient(z, q, k, beta, lam, w, tau=1.0):
    """g_v(q) = s_v − λ(log(q_v/p_v) + 1) + λβ w_v K (1 − q_v)^{K−1} (DESIGN.md §3), with
    q floored at float32's smallest normal number inside the log."""
    s = z / tau
    log_p = torch.log_softmax(s, -1)
    log_q = torch.log(q.clamp_min(1.1754943508222875e-38))
    return s - lam * (log_q - log_p + 1) + lam * beta * w * k * (1 - q) ** (k - 1)


@pytest.mark.parametrize("case", SETTINGS, ids=repr)
def test_problem_and_certificate_agree_with_the_solver(case):
    z = random_logits(6, 300, 21, scale=2.0).double()
    decoder = d.BestOfK(**case)
    q = decoder.probs(z)
    problem = decoder.problem(z)
    assert isinstance(problem.objective, d.KLCoverage)
    assert problem.objective.kl_strength == case["lam"] == decoder.kl_strength
    certificate = decoder.certificate(z)
    assert (certificate.gap <= 1e-6).all() and (certificate.infeasibility <= 1e-9).all()
    # The base-class certificate is the Frank–Wolfe certificate of problem(z).
    direct = d.frank_wolfe_certificate(q, problem.gradient, problem.support)
    torch.testing.assert_close(certificate.gap, direct.gap, atol=1e-12, rtol=0)
    # Its gradient is the one DESIGN.md states (s = z/τ tempered; shifted by the row max).
    if case.get("scores") != "raw":
        w = decoder.coverage_weights(z)
        tau = case.get("temperature", 1.0)
        shifted = z - z.amax(-1, keepdim=True)
        expected = design_gradient(shifted, q, case["k"], case["beta"], case["lam"], w, tau)
        torch.testing.assert_close(problem.gradient(q), expected, atol=1e-9, rtol=1e-9)
    # q maximises the objective: any mix towards another distribution is worse.
    p = torch.softmax(z, -1)
    for mix in (1e-3, 0.1):
        assert (problem.value(q) >= problem.value((1 - mix) * q + mix * p) - 1e-12).all()


@pytest.mark.parametrize("case", SETTINGS, ids=repr)
@pytest.mark.parametrize("solver", ["exact", "mirror"])
@pytest.mark.parametrize(
    "support", [d.TopKSupport(7), d.MinPSupport(0.05), d.TopKSupport(1)], ids=repr
)
def test_support_equals_the_problem_on_the_restricted_logits(case, solver, support):
    z = random_logits(5, 200, 22, scale=2.0).double()
    z[0, :50] = -torch.inf
    decoder = d.BestOfK(**case, solver=solver, support=support)
    q = decoder.probs(z)
    tau = case.get("temperature", 1.0)
    allowed = support.mask((z - z.amax(-1, keepdim=True)) / tau)
    assert (q[~allowed] == 0).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-12, rtol=0)
    restricted = torch.where(allowed, z, -torch.inf)
    expected = d.BestOfK(**case, solver=solver).probs(restricted)
    torch.testing.assert_close(q, expected, atol=1e-13, rtol=0)
    if isinstance(support, d.TopKSupport):
        assert ((q > 0).sum(-1) <= support.k).all()
    if solver == "exact":
        certificate = decoder.certificate(z)
        assert (certificate.gap <= 1e-6).all() and (certificate.infeasibility <= 1e-12).all()
        # Mass off the support is infeasible for this problem.
        outside = d.BestOfK(**case).probs(z)
        assert (decoder.certificate(z, outside).infeasibility > 0).all()


def test_support_in_float32_stays_on_the_support():
    z = random_logits(4, 5000, 23)
    for support in (d.TopKSupport(40), d.MinPSupport(0.1), d.TopPSupport(0.9)):
        decoder = d.BestOfK(8, 2.0, 0.2, weights="topm", top_m=16, support=support)
        q = decoder.probs(z)
        allowed = support.mask(z - z.amax(-1, keepdim=True))
        assert (q[~allowed] == 0).all() and (q[allowed] > 0).all()
        torch.testing.assert_close(q.sum(-1), torch.ones(4))
        torch.testing.assert_close(q.double(), decoder.probs(z.double()), atol=2e-6, rtol=0)
        assert (decoder.certificate(z).gap < 1e-5).all()


def test_support_composes_with_the_controls_and_sampling():
    z = random_logits(3, 100, 24)
    decoder = d.BestOfK(8, 0.5, 0.25, temperature=0.8, support=d.TopKSupport(5))
    control = decoder.beta_zero_control()
    assert control.support is decoder.support and control.beta == 0.0
    matched = decoder.matched_temperature_control()
    torch.testing.assert_close(control.probs(z), matched.probs(z), atol=1e-6, rtol=1e-5)
    assert "support=TopKSupport(k=5)" in repr(decoder)
    assert "support" not in repr(d.BestOfK(8, 0.5, 0.25))  # default repr unchanged
    drawn = decoder.sample(z.expand(50, 3, 100).reshape(150, 100))
    assert (decoder.probs(z).repeat(50, 1).gather(1, drawn[:, None]) > 0).all()
    with pytest.raises(TypeError, match="support must be a Support, got str"):
        d.BestOfK(8, 0.5, 0.25, support="topk")


@settings(max_examples=40, deadline=None)
@given(
    values=ADVERSARIAL_ROW,
    weights=st.sampled_from(["prob", "topm", "rank"]),
    solver=st.sampled_from(["exact", "mirror"]),
    support=st.sampled_from(
        [
            d.TopKSupport(1),
            d.TopKSupport(3),
            d.MinPSupport(0.3),
            d.TopKSupport(5) & d.MinPSupport(1e-3),
        ]
    ),
)
def test_support_gives_a_distribution_on_it_for_adversarial_logits(
    values, weights, solver, support
):
    z = torch.tensor([values], dtype=torch.float32)
    if (z == -math.inf).all():
        z[0, 0] = 0.0
    decoder = d.BestOfK(8, 0.5, 0.2, weights=weights, top_m=4, solver=solver, support=support)
    q = decoder.probs(z)
    assert torch.isfinite(q).all() and (q >= 0).all()
    assert abs(float(q.sum()) - 1) < 1e-5
    assert (q[~support.mask(z - z.amax(-1, keepdim=True))] == 0).all()
