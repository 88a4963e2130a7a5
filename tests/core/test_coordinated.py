"""Coordinated K-sample decoding: exact marginals at early and late steps, stratification,
independence of groups, reproducibility and clear errors."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import decoptim as d
from decoptim.core.coordinated import (
    Codes,
    check_codes,
    coordinated_sample,
    coordinated_sample_in_set,
    group_codes,
    resumed_codes,
    start_codes,
)

scipy_stats = pytest.importorskip("scipy.stats")


def chi_square_pvalue(tokens: torch.Tensor, q: torch.Tensor) -> float:
    counts = torch.bincount(tokens.flatten(), minlength=q.numel()).double()
    live = q > 0
    assert counts[~live].sum() == 0, "a token without mass was drawn"
    weights = q[live].double()
    expected = weights / weights.sum() * counts.sum()
    return float(scipy_stats.chisquare(counts[live].numpy(), expected.numpy()).pvalue)


def test_first_step_marginal_of_each_index_is_exact():
    q = torch.softmax(torch.randn(40, generator=torch.Generator().manual_seed(0)) * 2, -1)
    tokens, _ = coordinated_sample(q, group_codes(groups=4000, k=8, seed=1))
    by_index = tokens.reshape(4000, 8)
    for i in (0, 3, 7):  # each sample index on its own is a draw from q
        assert chi_square_pvalue(by_index[:, i], q) > 1e-3


def run_steps(codes: Codes, steps: int, vocab: int = 64) -> Codes:
    # Uniform q over 64 tokens: exactly 6 bits per step, the case where a float64 code runs
    # dry after 9 steps (each step shifts its bits up by 6).
    q = torch.full((vocab,), 1.0 / vocab)
    for _ in range(steps):
        _, codes = coordinated_sample(q, codes, validate=False)
    return codes


def test_marginal_stays_exact_after_thousands_of_steps():
    """2,000 and 2,500 steps of 6 bits each, then a draw from a skewed q against q."""
    codes = group_codes(groups=4096 // 8, k=8, seed=7)
    probe = torch.softmax(torch.randn(64, generator=torch.Generator().manual_seed(3)), -1)
    for steps in (2000, 500):
        codes = run_steps(codes, steps)
        assert scipy_stats.kstest(codes.value.numpy(), "uniform").pvalue > 1e-3
        tokens, _ = coordinated_sample(probe, codes)
        assert chi_square_pvalue(tokens, probe) > 1e-3, int(codes.step[0])
    assert int(codes.step[0]) == 2500


def test_without_refill_the_code_runs_dry():
    # The control for the test above: with the fresh bits switched off, the same steps
    # leave every code at 0, and every later token is token 0.
    from decoptim.core import coordinated as module

    original = module.hashed_uniform
    try:
        module.hashed_uniform = lambda seed, index, step, stream: (
            original(seed, index, step, stream) * (stream != module._REFILL)
        )
        codes = run_steps(group_codes(groups=64, k=8, seed=7), 20)
    finally:
        module.hashed_uniform = original
    assert (codes.value == 0).all()


def test_buckets_are_exact_where_a_float32_prefix_sum_is_not():
    """A grid of a million codes through one row: token 0 holds 0.5, then 10,000 tokens of
    5e-9 each (5e-5 in all: a float32 running sum at 0.5 cannot add them), then the rest.
    Each token's count must be ⌊N·F⌋ differences: the run gets 50 codes."""
    n = 1_000_000
    q = torch.cat([torch.tensor([0.5]), torch.full((10000,), 5e-9), torch.tensor([0.5 - 5e-5])])
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    zeros = torch.zeros(n, dtype=torch.int64)
    tokens, _ = coordinated_sample(q.double(), Codes(grid, zeros, zeros, zeros))
    run = int(((tokens >= 1) & (tokens <= 10000)).sum())
    assert run == 50, run
    assert int((tokens == 0).sum()) == 500000


def test_long_tail_at_v_150k_is_drawn_no_more_than_its_mass():
    """8 tokens at logits 0..2 and 151,928 at −24 (tail mass 2.1e-7): 1.6 million draws."""
    vocab = 151936
    z = torch.full((vocab,), -24.0)
    z[:8] = torch.linspace(0, 2, 8)
    q = torch.softmax(z, -1)
    tokens = torch.cat(
        [coordinated_sample(q, group_codes(50000, 8, seed=11, first_group=50000 * b))[0]
         for b in range(4)]
    )  # fmt: skip
    expected = float(q[8:].double().sum()) * tokens.numel()
    tail = int((tokens >= 8).sum())
    assert tail <= scipy_stats.poisson.ppf(1 - 1e-6, expected), (tail, expected)
    head = torch.cat([q[:8], q[8:].sum()[None]])
    assert chi_square_pvalue(tokens.clamp(max=8), head) > 1e-3


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 16),
    vocab=st.integers(1, 30),
    seed=st.integers(0, 2**40),
    concentration=st.sampled_from([0.3, 1.0, 5.0]),
)
def test_every_group_takes_each_token_between_floor_and_ceil_of_k_q(k, vocab, seed, concentration):
    """K evenly spaced codes: a bucket of width q holds ⌊Kq⌋ or ⌈Kq⌉ of them, so a token
    with q ≥ 1/K is taken by every group at least once."""
    generator = torch.Generator().manual_seed(seed % 2**31)
    q = torch.distributions.Dirichlet(torch.full((vocab,), concentration)).sample()
    q = q.double()
    q = q / q.sum()
    groups = 50
    tokens, _ = coordinated_sample(q, group_codes(groups, k, seed=seed))
    counts = torch.stack([torch.bincount(g, minlength=vocab) for g in tokens.reshape(groups, k)])
    expected = k * q
    assert (counts >= torch.floor(expected - 1e-9)).all()
    assert (counts <= torch.ceil(expected + 1e-9)).all()
    del generator


def test_groups_are_independent_of_each_other_and_of_batch_composition():
    q = torch.tensor([0.5, 0.3, 0.2])
    codes = group_codes(groups=6000, k=4, seed=5)
    tokens, _ = coordinated_sample(q, codes)
    first = tokens.reshape(6000, 4)[:, 0]
    # sample 0 of group g against sample 0 of group g + 1: a contingency table
    table = torch.zeros(3, 3)
    for a, b in zip(first[0::2].tolist(), first[1::2].tolist(), strict=True):
        table[a, b] += 1
    assert scipy_stats.chi2_contingency(table.numpy()).pvalue > 1e-3
    # the same group drawn alone or among others gives the same tokens
    alone = group_codes(groups=1, k=4, seed=5, first_group=17)
    drawn_alone, _ = coordinated_sample(q, alone)
    assert torch.equal(drawn_alone, tokens[17 * 4 : 18 * 4])


def test_same_seed_same_tokens_and_codes():
    q = torch.softmax(torch.randn(3, 8, 100, generator=torch.Generator().manual_seed(1)), -1)
    a = coordinated_sample(q.reshape(24, 100), group_codes(3, 8, seed=9))
    b = coordinated_sample(q.reshape(24, 100), group_codes(3, 8, seed=9))
    c = coordinated_sample(q.reshape(24, 100), group_codes(3, 8, seed=10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1].value, b[1].value)
    assert not torch.equal(a[0], c[0])


def test_decoder_sample_coordinated_uses_the_decoders_q():
    z = torch.randn(2000 * 4, 50, generator=torch.Generator().manual_seed(2))
    z[:] = z[0]  # one prompt state for every group
    decoder = d.TopP(0.8, temperature=0.7)
    tokens, codes = decoder.sample_coordinated(z, group_codes(2000, 4, seed=3))
    q = decoder.probs(z[:1])[0]
    assert chi_square_pvalue(tokens, q) > 1e-3
    assert (codes.step == 1).all()


def set_of(p: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    # q: p restricted to the tokens `kept` and renormalised.
    q = torch.where(kept, p, 0.0)
    return q / q.sum(-1, keepdim=True)


@pytest.mark.parametrize("share", ["most", "little"])
def test_draw_in_a_set_by_rejection_is_exact_and_its_codes_stay_uniform(share):
    """q = p on a set holding 90% of p (nearly every code kept at its first pick) or 3%
    (most codes rejected PROPOSALS times, then picking from q itself): each index of the
    group against q by chi-square, the next codes uniform by Kolmogorov–Smirnov."""
    p = torch.softmax(torch.randn(60, generator=torch.Generator().manual_seed(4)) * 1.5, -1)
    order = p.argsort(descending=True)
    kept = torch.zeros(60, dtype=torch.bool)
    nucleus = int((p[order].cumsum(0) < 0.9).sum()) + 1
    kept[order[:nucleus] if share == "most" else order[-15:]] = True
    q = set_of(p, kept)
    assert (0.9 <= p[kept].sum() < 0.95) if share == "most" else (p[kept].sum() < 0.05)
    tokens, codes = coordinated_sample_in_set(p, q, group_codes(groups=3000, k=8, seed=2))
    for i in (0, 5):
        assert chi_square_pvalue(tokens.reshape(3000, 8)[:, i], q) > 1e-3
    assert scipy_stats.kstest(codes.value.numpy(), "uniform").pvalue > 1e-3
    assert (codes.step == 1).all()


def test_draw_in_a_set_is_stratified_over_p_and_keeps_the_first_pick_inside():
    """A code whose first pick from p is inside the set takes coordinated_sample's token and
    next code over p; over many groups of 8, a token with p ≥ 1/8 in the set is taken by
    ⌊8p⌋ or more samples of every group (rejected codes can only add to it)."""
    p = torch.tensor([0.40, 0.05, 0.2, 0.3, 0.05])
    kept = torch.tensor([True, False, True, True, False])
    codes = group_codes(groups=2000, k=8, seed=3)
    tokens, new = coordinated_sample_in_set(p, set_of(p, kept), codes)
    over_p, over_p_codes = coordinated_sample(p, codes)
    first_inside = kept[over_p]
    assert 0.85 < float(first_inside.double().mean()) < 0.95
    assert torch.equal(tokens[first_inside], over_p[first_inside])
    assert torch.equal(new.value[first_inside], over_p_codes.value[first_inside])
    groups = tokens.reshape(2000, 8)
    for token, least in ((0, 3), (2, 1), (3, 2)):
        assert ((groups == token).sum(1) >= least).all(), token


def test_draw_in_a_set_per_row_equals_the_shared_row_and_checks_its_input():
    generator = torch.Generator().manual_seed(6)
    p = torch.softmax(torch.randn(1, 300, generator=generator), -1)
    q = set_of(p, p > p.median())
    codes = group_codes(groups=4, k=8, seed=1)
    shared = coordinated_sample_in_set(p, q, codes)
    per_row = coordinated_sample_in_set(p.expand(32, -1), q.expand(32, -1), codes)
    assert torch.equal(shared[0], per_row[0])
    torch.testing.assert_close(shared[1].value, per_row[1].value, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"p and q must have the same shape"):
        coordinated_sample_in_set(p, q[:, :299], codes)
    with pytest.raises(ValueError, match=r"q row 0 must be finite and non-negative"):
        coordinated_sample_in_set(p, q - 1, codes)
    # Each error names the tensor at fault.
    with pytest.raises(ValueError, match=r"p row 0 must be finite and non-negative"):
        coordinated_sample_in_set(p - 1, q, codes)
    with pytest.raises(TypeError, match=r"p must be a floating-point tensor"):
        coordinated_sample_in_set((p > 0).long(), q, codes)
    with pytest.raises(ValueError, match=r"but p has rows \(2,\)"):
        coordinated_sample_in_set(p.expand(2, -1), q, codes)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 300),
    st.floats(0.0, 30.0),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["top", "tail", "random", "one"]),
)
def test_draw_in_a_set_keeps_inside_the_set_and_its_first_kept_picks(vocab, scale, seed, kind):
    """Any row of logits (ties, huge spreads, a single token) and any set: every token is in
    the set, every next code in [0, 1), and a code whose first pick from p is inside the
    set takes coordinated_sample's token and next code over p."""
    generator = torch.Generator().manual_seed(seed)
    z = (torch.randn(vocab, generator=generator, dtype=torch.float64) * scale).round(decimals=1)
    p = torch.softmax(z, -1)[None]
    order = p[0].argsort(descending=True)
    kept = torch.zeros(vocab, dtype=torch.bool)
    if kind == "top":
        kept[order[: max(1, vocab // 3)]] = True
    elif kind == "tail":
        kept[order[-max(1, vocab // 3) :]] = True
    elif kind == "random":
        kept = torch.rand(vocab, generator=generator) < 0.5
    kept[order[int(torch.randint(vocab, (1,), generator=generator))]] = True
    if kind == "one":
        kept = torch.zeros(vocab, dtype=torch.bool)
        kept[order[-1]] = True
    assume(bool(p[0, kept].sum() > 0))  # else the set's mass underflowed: no q to draw from
    q = set_of(p, kept)
    codes = group_codes(groups=3, k=8, seed=seed % 1000)
    tokens, new = coordinated_sample_in_set(p, q, codes)
    assert kept[tokens].all()
    assert ((new.value >= 0) & (new.value < 1)).all()
    over_p, over_p_codes = coordinated_sample(p, codes)
    first = kept[over_p]
    assert torch.equal(tokens[first], over_p[first])
    assert torch.equal(new.value[first], over_p_codes.value[first])


def test_top_p_and_typical_draw_by_rejection_over_softmax_when_asked():
    """By default every decoder draws over q's buckets; `by_rejection=True` (top-p and
    typical, whose set holds a fixed share of softmax's mass) over softmax's, as
    `coordinated_sample_in_set`; other decoders refuse it by name."""
    z = torch.randn(16, 200, generator=torch.Generator().manual_seed(8)) * 2
    codes = group_codes(groups=2, k=8, seed=4)
    softmax = d.Softmax(0.9).probs(z)
    for decoder in (d.TopP(0.8, 0.9), d.Typical(0.7, 0.9),
                    d.SimplexDecoder(d.Shannon(), d.TopPSupport(0.8), 0.9)):  # fmt: skip
        q = decoder.probs(z)
        tokens, new = decoder.sample_coordinated(z, codes, by_rejection=True)
        expected, expected_new = coordinated_sample_in_set(softmax, q, codes)
        assert torch.equal(tokens, expected), decoder
        assert torch.equal(new.value, expected_new.value), decoder
        assert torch.equal(decoder.sample_coordinated(z, codes)[0], coordinated_sample(q, codes)[0])
    assert not torch.equal(tokens, coordinated_sample(q, codes)[0])  # the two orders differ
    for decoder in (d.MinP(0.1, 0.9), d.TopK(20, 0.9), d.Softmax(0.9)):
        with pytest.raises(ValueError, match=r"by_rejection=True needs a decoder whose q is"):
            decoder.sample_coordinated(z, codes, by_rejection=True)
    with pytest.raises(TypeError, match=r"by_rejection must be a bool, got 1"):
        d.TopP(0.8).sample_coordinated(z, codes, by_rejection=1)


def test_bad_input_is_named():
    q = torch.full((4, 5), 0.2)
    codes = group_codes(2, 2)
    with pytest.raises(ValueError, match=r"k must be an int >= 1, got k=0"):
        group_codes(2, 0)
    with pytest.raises(ValueError, match=r"k must be >= 1"):
        start_codes(torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match=r"index must satisfy 0 <= index < k, got index=\[3\]"):
        start_codes(torch.zeros(2, dtype=torch.int64), torch.tensor([0, 3]), 2)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 1\), got \[1.5\]"):
        coordinated_sample(q, codes._replace(value=torch.tensor([0.1, 1.5, 0.2, 0.3]).double()))
    with pytest.raises(ValueError, match=r"codes hold \(4,\) samples but q has rows \(3,\)"):
        coordinated_sample(q[:3], codes)
    with pytest.raises(ValueError, match=r"q row 1 must be finite and non-negative"):
        coordinated_sample(torch.tensor([[1.0, 0], [math.nan, 1], [1, 1], [1, 1]]), codes)
    with pytest.raises(TypeError, match=r"codes must be Codes"):
        coordinated_sample(q, codes.value)
    with pytest.raises(TypeError, match=r"seed must be an int"):
        group_codes(2, 2, seed=1.5)
    assert isinstance(codes, Codes)


def test_the_runnable_example_in_the_docs_prints_what_the_docs_say(capsys):
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "coordinated.md").read_text()
    section = doc[doc.index("## Runnable example") :]
    code, printed = re.findall(r"```(?:python)?\n(.*?)```", section, re.S)[:2]
    exec(compile(code, "docs/coordinated.md", "exec"), {})
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize("vocab", [1, 7, 1024, 1025, 151936])
def test_one_row_per_sample_draws_what_a_shared_row_draws(vocab):
    """The per-row path (block sums, then one block) against the shared row's full prefix
    sum, with codes at 0, near 1 and on a grid, on a row with empty blocks."""
    z = torch.randn(vocab, generator=torch.Generator().manual_seed(vocab)) * 4
    z[vocab // 3 : vocab // 2] = -torch.inf
    q = torch.softmax(z, -1)
    n = 512
    grid = (torch.arange(n - 2, dtype=torch.float64) + 0.5) / n
    value = torch.cat([torch.tensor([0.0, 1 - 2.0**-53], dtype=torch.float64), grid])
    zeros = torch.zeros(n, dtype=torch.int64)
    codes = Codes(value, zeros, zeros, zeros)
    shared, shared_codes = coordinated_sample(q, codes)
    per_row, per_row_codes = coordinated_sample(q.expand(n, -1).contiguous(), codes)
    assert torch.equal(shared, per_row)
    assert (q[per_row] > 0).all()
    chosen = q.double()[per_row] / q.double().sum()
    apart = (shared_codes.value - per_row_codes.value).abs()
    apart = torch.minimum(apart, 1 - apart)  # codes live on a circle: 1 − ε is next to 0
    assert (apart <= vocab * 2.0**-50 / chosen).all()


def resumed_tokens(codes_at_3) -> tuple[list[torch.Tensor], torch.Tensor]:
    # 20,000 samples take three tokens from q, then a fourth with codes_at_3(codes after the
    # three draws): returns the three prefix tokens and the fourth.
    q = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
    codes = group_codes(groups=2500, k=8, seed=11)
    prefix = []
    for _ in range(3):
        token, codes = coordinated_sample(q, codes)
        prefix.append(token)
    token, _ = coordinated_sample(q, codes_at_3(codes))
    assert chi_square_pvalue(token, q) > 1e-3
    return prefix, token


def independence_pvalues(prefix: list[torch.Tensor], token: torch.Tensor) -> list[float]:
    pvalues = []
    for earlier in prefix:
        table = torch.zeros(5, 5, dtype=torch.float64)
        table.index_put_((earlier, token), torch.ones(len(token), dtype=torch.float64), True)
        pvalues.append(float(scipy_stats.chi2_contingency(table.numpy()).pvalue))
    return pvalues


def test_a_resumed_sample_draws_from_q_independently_of_its_prefix():
    """Codes from `resumed_codes` at step 3 (a request that lost its codes) draw each token
    from q whatever tokens the sample took at steps 0..2. The control: a stale code (the
    sample's start code again) is uniform too, but repeats the first token."""
    prefix, token = resumed_tokens(lambda codes: resumed_codes(codes.seed, codes.index, 3))
    assert min(independence_pvalues(prefix, token)) > 1e-3
    prefix, token = resumed_tokens(lambda codes: start_codes(codes.seed, codes.index, 8))
    assert torch.equal(token, prefix[0]) and independence_pvalues(prefix, token)[0] < 1e-9


def test_resumed_codes_are_the_refill_hash_of_their_step():
    # The values vLLM's CodeBook gave resumed rows before resumed_codes existed (a run
    # repeats across versions), with the step broadcast to every sample.
    from decoptim.core.coordinated import _REFILL, hashed_uniform

    seed, index = torch.tensor([5, 5, 2**61]), torch.tensor([0, 1, 7])
    codes = resumed_codes(seed, index, 4)
    four = torch.full((3,), 4)
    assert torch.equal(codes.value, hashed_uniform(seed, index, four, _REFILL))
    assert torch.equal(codes.step, four) and torch.equal(codes.seed, seed)
    assert ((codes.value >= 0) & (codes.value < 1)).all()
    per_row = resumed_codes(seed, index, torch.tensor([4, 2, 4])).value  # a step per sample
    assert torch.equal(per_row[[0, 2]], codes.value[[0, 2]]) and per_row[1] != codes.value[1]
    with pytest.raises(ValueError, match=r"step must be >= 0, got step=\[-1\]"):
        resumed_codes(seed, index, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match=r"seed and index must have the same shape"):
        resumed_codes(seed[:2], index, 1)


def test_check_codes_names_what_is_wrong():
    codes = group_codes(2, 4, seed=0)
    check_codes(codes)
    with pytest.raises(TypeError, match="codes must be Codes"):
        check_codes(codes.value)
    with pytest.raises(TypeError, match="float64"):
        check_codes(codes._replace(value=codes.value.float()))
    with pytest.raises(ValueError, match=r"\[0, 1\), got \[1.0\]"):
        check_codes(codes._replace(value=torch.where(codes.index == 3, 1.0, codes.value)[:4]))
