"""Inverse transform sampling on the torch path (`decoptim.core.inverse_transform`): each
uniform lands in the float64 bucket that holds it, on long tails at V = 151,936, on half
precision rows, never on a token of mass 0; rows without mass are an error."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoptim as d
from decoptim.core.inverse_transform import sample_rows

TOP = 1.0 - 2.0**-53  # the largest float64 below 1


def reference_token(q: torch.Tensor, u: float) -> int:
    """The first token whose float64 prefix sum exceeds u·Σq (a token of mass 0 never)."""
    ends = torch.cumsum(q.double(), 0)
    return int(torch.searchsorted(ends, u * ends[-1], right=True).clamp(max=q.numel() - 1))


def test_a_tail_of_tiny_masses_at_v_150k_is_hit_token_for_token():
    """Token 0 holds 0.5, then 10,000 tokens of 5e-9 (a float32 running sum at 0.5 cannot
    add them), then the rest of 151,936 tokens. A uniform at the middle of tail token j's
    bucket must take token j."""
    vocab, tail = 151_936, 10_000
    q = torch.full((vocab,), (0.5 - tail * 5e-9) / (vocab - 1 - tail), dtype=torch.float64)
    q[0] = 0.5
    q[1 : tail + 1] = 5e-9
    picked = torch.arange(0, tail, 97)
    ends = torch.cumsum(q, 0)
    uniform = (ends[picked] + 2.5e-9) / ends[-1]  # the middle of token (picked + 1)'s bucket
    tokens = sample_rows(q.expand(len(picked), -1), uniform)
    assert torch.equal(tokens, picked + 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_precision_rows_take_the_tokens_of_their_float64_values(dtype):
    generator = torch.Generator().manual_seed(3)
    q = torch.softmax(torch.randn(64, 151_936, generator=generator) * 3, -1).to(dtype)
    uniform = torch.rand(64, dtype=torch.float64, generator=generator)
    expected = [reference_token(row, float(u)) for row, u in zip(q, uniform, strict=True)]
    assert sample_rows(q, uniform).tolist() == expected


def test_tokens_of_mass_zero_are_never_taken_even_at_the_ends_of_the_unit_interval():
    q = torch.tensor([[0.0, 0.0, 0.3, 0.0, 0.7, 0.0, 0.0]] * 3)
    tokens = sample_rows(q, torch.tensor([0.0, 0.5, TOP], dtype=torch.float64))
    assert tokens.tolist() == [2, 4, 4]
    # one token with all the mass, at the last position of a padded block
    last = torch.zeros(2, 1025)
    last[:, 1024] = 1.0
    assert sample_rows(last, torch.tensor([0.0, TOP], dtype=torch.float64)).tolist() == [1024] * 2


@settings(max_examples=60, deadline=None)
@given(
    vocab=st.integers(1, 3000),
    zeros=st.floats(0.0, 0.9),
    uniform=st.floats(0.0, TOP),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_uniform_lands_in_the_bucket_that_holds_it(vocab, zeros, uniform, seed):
    generator = torch.Generator().manual_seed(seed)
    q = torch.rand(vocab, generator=generator) ** 4
    q[torch.rand(vocab, generator=generator) < zeros] = 0.0
    q[torch.randint(vocab, (1,), generator=generator)] = 1.0  # at least one token with mass
    token = int(sample_rows(q[None], torch.tensor([uniform], dtype=torch.float64))[0])
    assert q[token] > 0
    assert token == reference_token(q, uniform)


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf"), -0.5])
def test_a_row_that_is_negative_or_without_positive_finite_mass_is_an_error_naming_it(bad):
    q = torch.ones(4, 10)
    q[2] = 0.0 if bad == 0.0 else 1.0
    q[2, 3] = bad
    uniform = torch.full((4,), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"q row 2 must be finite and non-negative"):
        sample_rows(q, uniform)
    assert sample_rows(q, uniform, validate=False).shape == (4,)


def test_uniforms_outside_the_unit_interval_are_an_error_naming_them():
    with pytest.raises(ValueError, match=r"uniform must lie in \[0, 1\), got \[1.0\]"):
        sample_rows(torch.ones(2, 10), torch.tensor([0.5, 1.0], dtype=torch.float64))


def test_shapes_other_than_rows_by_vocabulary_or_float32_uniforms_are_an_error():
    for q, uniform in [
        (torch.ones(10), torch.zeros(1, dtype=torch.float64)),
        (torch.ones(3, 10), torch.zeros(2, dtype=torch.float64)),
        (torch.ones(3, 10), torch.zeros(3)),
    ]:
        shapes = rf"q \({', '.join(map(str, q.shape))},?\) and uniform \({uniform.shape[0]},\)"
        with pytest.raises(ValueError, match=shapes):
            sample_rows(q, uniform)


def test_a_decoder_samples_its_rows_on_the_torch_path_by_these_buckets():
    z = torch.randn(16, 5000, generator=torch.Generator().manual_seed(0)) * 2
    decoder = d.TopP(0.9)
    tokens = decoder.sample(z, generator=torch.Generator().manual_seed(5))
    uniform = torch.rand(16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(tokens, sample_rows(decoder.probs(z), uniform))
