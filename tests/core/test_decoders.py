"""Properties every decoder must have, on adversarial logits (hypothesis) and in sampling."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoptim as d
from tests.conftest import random_logits

DECODERS = {
    "greedy": lambda: d.Greedy(),
    "softmax": lambda: d.Softmax(0.7),
    "topk": lambda: d.TopK(3, temperature=1.3),
    "topp": lambda: d.TopP(0.8, temperature=0.9),
    "minp": lambda: d.MinP(0.1),
    "typical": lambda: d.Typical(0.7),
    "epsilon": lambda: d.Epsilon(0.02),
    "eta": lambda: d.Eta(0.02),
    "sparsemax": lambda: d.Sparsemax(0.5),
    "entmax15": lambda: d.Entmax(1.5),
    "entmax13": lambda: d.Entmax(1.3, temperature=2.0),
}


@st.composite
def logit_rows(draw, max_vocab=40):
    """Rows with huge values, exact ties, -inf entries and at least one finite entry."""
    rows = draw(st.integers(1, 3))
    vocab = draw(st.integers(1, max_vocab))
    element = st.one_of(
        st.floats(-1e4, 1e4, width=32),
        st.sampled_from([0.0, 1.0, -1.0, 5.0]),  # frequent exact ties
        st.just(-math.inf),
    )
    values = draw(st.lists(element, min_size=rows * vocab, max_size=rows * vocab))
    x = torch.tensor(values, dtype=torch.float32).reshape(rows, vocab)
    finite_at = draw(st.lists(st.integers(0, vocab - 1), min_size=rows, max_size=rows))
    for row, col in enumerate(finite_at):
        if x[row, col] == -math.inf:
            x[row, col] = draw(st.floats(-1e4, 1e4, width=32))
    return x


def assert_valid_distribution(q, logits):
    assert q.dtype == torch.float32 and q.shape == logits.shape
    assert torch.isfinite(q).all() and (q >= 0).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(q.shape[:-1]), atol=1e-5, rtol=0)
    assert (q[logits == -math.inf] == 0).all()


@pytest.mark.parametrize("name", DECODERS)
@settings(max_examples=60, deadline=None)
@given(logits=logit_rows())
def test_valid_distribution_on_adversarial_logits(name, logits):
    decoder = DECODERS[name]()
    q = decoder.probs(logits)
    assert_valid_distribution(q, logits)
    # The most likely token survives truncation, except under typical sampling (below).
    if name != "typical":
        best = logits.argmax(-1, keepdim=True)
        assert (q.gather(-1, best) > 0).all()
    cert = decoder.certificate(logits, q)
    scale = logits[logits > -math.inf].abs().max().clamp_min(1.0)
    assert (cert.infeasibility <= 1e-5).all()
    assert (cert.gap <= 1e-4 * scale).all()


def test_typical_sampling_may_drop_the_most_likely_token():
    # Five tokens at p = 0.15 sit next to the entropy; the argmax (p = 0.25) is the least
    # typical and the five already cover mass 0.7 (found by hypothesis; transformers agrees).
    logits = torch.tensor([[0.0, -math.inf, 0.0, 0.0, 0.0, 0.0, 0.5]])
    q = d.Typical(0.7).probs(logits)
    assert q[0, 6] == 0
    torch.testing.assert_close(q[0, [0, 2, 3, 4, 5]], torch.full((5,), 0.2))


@pytest.mark.parametrize("name", DECODERS)
@settings(max_examples=25, deadline=None)
@given(logits=logit_rows(max_vocab=12), dtype=st.sampled_from([torch.float16, torch.bfloat16]))
def test_half_precision_inputs(name, logits, dtype):
    low = logits.clamp(-6e4, 6e4).to(dtype)
    q = DECODERS[name]().probs(low)
    assert_valid_distribution(q, low.float())
    torch.testing.assert_close(q, DECODERS[name]().probs(low.float()), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", DECODERS)
def test_vocabulary_of_one_and_one_finite_entry(name):
    decoder = DECODERS[name]()
    assert decoder.probs(torch.tensor([[3.0]])).tolist() == [[1.0]]
    row = torch.full((1, 9), -math.inf)
    row[0, 4] = -2.5
    q = decoder.probs(row)
    assert q[0, 4] == 1.0 and q.sum() == 1.0


@pytest.mark.parametrize("name", DECODERS)
def test_certificate_is_tight_at_output_and_not_at_perturbations(name):
    decoder = DECODERS[name]()
    z = random_logits(8, 300, 1)
    q = decoder.probs(z)
    cert = decoder.certificate(z)
    assert cert.ok(1e-5).all(), (cert.gap.max(), cert.infeasibility.max())
    # Move 10% of the mass within the support, towards its uniform distribution.
    support = q > 0
    uniform = support.float() / support.sum(-1, keepdim=True)
    moved = 0.9 * q + 0.1 * uniform
    changed = (moved - q).abs().sum(-1) > 1e-3
    gap = decoder.certificate(z, moved).gap
    assert (gap[changed] > 1e-3).all()
    # Mass outside a truncation support C is infeasible.
    if not decoder.problem(z).support.all():
        leaked = 0.95 * q + 0.05 * torch.softmax(z, -1)
        assert (decoder.certificate(z, leaked).infeasibility > 1e-4).any()


def test_per_row_parameters_equal_row_by_row():
    z = random_logits(4, 250, 2)
    temps = torch.tensor([0.3, 0.8, 1.0, 2.5])
    decoders = [
        (d.Softmax(temps), lambda t: d.Softmax(t)),
        (d.TopK(torch.tensor([1, 2, 10, 100]), temps), None),
        (d.MinP(torch.tensor([0.5, 0.1, 0.01, 0.2])), None),
        (d.Sparsemax(temps), lambda t: d.Sparsemax(t)),
        (d.Entmax(1.5, temps), lambda t: d.Entmax(1.5, t)),
    ]
    for batched, single in decoders:
        q = batched.probs(z)
        assert_valid_distribution(q, z)
        if single is not None:
            for row in range(4):
                expected = single(float(temps[row])).probs(z[row : row + 1])
                torch.testing.assert_close(q[row : row + 1], expected, atol=1e-6, rtol=0)
    ks = [1, 2, 10, 100]
    q = d.TopK(torch.tensor(ks)).probs(z)
    assert (q > 0).sum(-1).tolist() == ks


def test_tie_rule_keeps_every_token_tied_at_the_cutoff():
    z = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    assert (d.TopK(2).probs(z) > 0).tolist() == [[True, True, True, True, False]]
    # Nucleus: mass above the tied group is softmax(3) < p, so the whole group enters.
    assert (d.TopP(0.7).probs(z) > 0).tolist() == [[True, True, True, True, False]]
    greedy = d.Greedy().probs(torch.tensor([[1.0, 2.0, 2.0]]))
    assert (greedy > 0).tolist() == [[False, True, False]]


def test_batch_shapes_are_preserved_and_devices_kept():
    z = torch.randn(2, 3, 50)
    for make in DECODERS.values():
        decoder = make()
        assert decoder.probs(z).shape == z.shape
        assert decoder.sample(z).shape == (2, 3)


@pytest.mark.parametrize("name", [n for n in DECODERS if n != "greedy"])
def test_sampling_frequencies_match_probs(name):
    scipy_stats = pytest.importorskip("scipy.stats")
    decoder = DECODERS[name]()
    z = random_logits(1, 12, 4, scale=1.5)
    q = decoder.probs(z)[0].double()
    draws = 40000
    generator = torch.Generator().manual_seed(1234)
    samples = decoder.sample(z.expand(draws, -1), generator=generator)
    counts = torch.bincount(samples, minlength=12).double()
    assert counts[q == 0].sum() == 0, "sampled a token outside the support"
    live = q > 0
    if live.sum() > 1:
        expected = q[live] / q[live].sum() * draws
        result = scipy_stats.chisquare(counts[live].numpy(), expected.numpy())
        assert result.pvalue > 1e-3, result


def test_sampling_is_reproducible_with_a_seeded_generator():
    z = random_logits(16, 1000, 0)
    decoder = d.TopP(0.95)
    first = decoder.sample(z, generator=torch.Generator().manual_seed(7))
    second = decoder.sample(z, generator=torch.Generator().manual_seed(7))
    third = decoder.sample(z, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_greedy_sample_is_argmax():
    z = random_logits(5, 100, 3)
    assert torch.equal(d.Greedy().sample(z), z.argmax(-1))


def test_custom_decoder_from_parts():
    """A new decoder without editing the library: 1.5-entmax restricted to the top 20."""
    decoder = d.SimplexDecoder(d.Tsallis(1.5), d.TopKSupport(20) & d.MinPSupport(0.01), 0.8)
    z = random_logits(4, 500, 6)
    q = decoder.probs(z)
    assert ((q > 0).sum(-1) <= 20).all()
    assert decoder.certificate(z).ok(1e-5).all()


# --- validate=False with NaN, large and overflowing logits --------------------------------


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_without_validation_nan_entries_drop_out_like_minus_inf(name):
    decoder = DECODERS[name]()
    decoder.validate = False
    z = torch.tensor([[0.5, math.nan, 0.2, 0.1], [math.nan, 1.0, math.nan, -2.0]])
    masked = torch.where(torch.isnan(z), -math.inf, z)
    expected = DECODERS[name]().probs(masked)
    got = decoder.probs(z)
    assert not torch.isnan(got).any(), got
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    drawn = decoder.sample(z.expand(200, 2, 4).reshape(400, 4))
    assert (expected.repeat(200, 1).gather(1, drawn[:, None]) > 0).all()


def test_topk_without_validation_keeps_the_finite_top_two():
    decoder = d.TopK(2, validate=False)
    got = decoder.probs(torch.tensor([[0.5, math.nan, 0.2, 0.1]]))
    expected = torch.tensor([[0.574443, 0.0, 0.425557, 0.0]])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "build",
    [lambda s: d.Sparsemax(3.0, solver=s), lambda s: d.Entmax(1.5, 3.0, solver=s)],
    ids=["sparsemax", "entmax15"],
)
def test_sort_and_bisection_agree_at_large_logits(build):
    z = torch.tensor([[1e6, 1e6 - 0.25, 1e6 - 0.5, 0.0]])
    exact = build("bisect").probs(z.double() - 1e6)
    for solver in ("sort", "bisect"):
        torch.testing.assert_close(build(solver).probs(z).double(), exact, atol=2e-7, rtol=0)
    sparse = d.Sparsemax(3.0).probs(z)
    expected = torch.tensor([[5 / 12, 1 / 3, 1 / 4, 0.0]])
    torch.testing.assert_close(sparse, expected, atol=2e-7, rtol=0)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_logits_near_the_float32_limit_at_small_temperature(name):
    z = torch.tensor([[3e38, 3e38, -3e38, 2.9e38]])
    got = DECODERS[name]().probs(z)
    assert torch.isfinite(got).all() and torch.allclose(got.sum(-1), torch.ones(1)), got
    tied = got[0, 0] == got[0, 1] > 0.0 if name != "greedy" else got[0, 0] == 1.0
    assert tied and got[0, 2] == 0.0, got
    for decoder in (d.Sparsemax(0.5), d.Entmax(1.5, 0.5)):
        torch.testing.assert_close(decoder.probs(z), torch.tensor([[0.5, 0.5, 0.0, 0.0]]))


def test_per_row_alpha_is_a_clear_error():
    with pytest.raises(TypeError, match=r"alpha must be one number.*shape \(2,\)"):
        d.Entmax(torch.tensor([1.5, 2.0]))
    assert d.Entmax(torch.tensor(1.5)).alpha == 1.5


def test_every_decoder_states_its_problem_in_two_lines_of_math():
    classes = [getattr(d, name) for name in d.__all__]
    decoders = [c for c in classes if isinstance(c, type) and issubclass(c, d.Decoder)]
    assert d.BestOfK in decoders and d.SimplexDecoder in decoders
    for cls in decoders:
        if cls is d.Decoder:
            continue
        first, second = cls.__doc__.strip().splitlines()[:2]
        assert "argmax_{q ∈ Δ" in first and second.strip(), cls
    assert "supp q ⊆ C" in d.BestOfK.__doc__.splitlines()[0]


@pytest.mark.parametrize("validate", [True, False])
def test_each_call_looks_up_the_kernel_route_once_and_solves_by_it(monkeypatch, validate):
    # A fake route that puts all mass on token 2: probs and sample must solve by the route
    # that `_checked` looked up, and no call may look it up twice.
    from decoptim.core import decoders as decoders_module
    from decoptim.core.kernels.table import Route

    def on_token_2(decoder, x):
        return torch.nn.functional.one_hot(torch.full(x.shape[:-1], 2), x.shape[-1]).to(x.dtype)

    lookups = []

    def counted(decoder, x):
        lookups.append(type(decoder).__name__)
        return Route("fake", covers=lambda decoder: True, probs=on_token_2)

    def looked_up(method, *args):
        lookups.clear()
        result = method(*args)
        return len(lookups), result

    monkeypatch.setattr(decoders_module, "kernel_route", counted)
    logits = random_logits(3, 7, seed=1)
    token_2 = torch.full((3,), 2)
    for make in [*DECODERS.values(), lambda: d.BestOfK(4, 0.5, 1.0)]:
        decoder = make()
        decoder.validate = validate
        greedy = isinstance(decoder, d.Greedy)

        count, q = looked_up(decoder.probs, logits)
        assert count == 1 and torch.equal(q.argmax(-1), token_2), decoder
        count, tokens = looked_up(decoder.sample, logits)
        # Greedy's sample is the argmax of the checked logits: no route unless NaN cleaning
        # (validate=False) needs it.
        assert count == (0 if greedy and validate else 1), decoder
        assert greedy or torch.equal(tokens, token_2), decoder
        count, certificate = looked_up(decoder.certificate, logits)
        assert count == 1, decoder
        count, given = looked_up(decoder.certificate, logits, on_token_2(None, logits))
        assert count == (0 if validate else 1), decoder
        torch.testing.assert_close(certificate.gap, given.gap, equal_nan=True)
        torch.testing.assert_close(certificate.infeasibility, given.infeasibility)
