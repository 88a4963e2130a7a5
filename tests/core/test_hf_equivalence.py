"""The truncation decoders equal Hugging Face's warpers (temperature first, then truncation)."""

import pytest
import torch

import decoptim as d
from tests.conftest import random_logits

lp = pytest.importorskip("transformers.generation.logits_process")

CASES = [
    (lambda t: d.TopK(7, temperature=t), lambda: lp.TopKLogitsWarper(7)),
    (lambda t: d.TopK(1, temperature=t), lambda: lp.TopKLogitsWarper(1)),
    (lambda t: d.TopP(0.9, temperature=t), lambda: lp.TopPLogitsWarper(0.9)),
    (lambda t: d.TopP(0.3, temperature=t), lambda: lp.TopPLogitsWarper(0.3)),
    (lambda t: d.MinP(0.05, temperature=t), lambda: lp.MinPLogitsWarper(0.05)),
    (lambda t: d.MinP(0.5, temperature=t), lambda: lp.MinPLogitsWarper(0.5)),
    (lambda t: d.Typical(0.9, temperature=t), lambda: lp.TypicalLogitsWarper(0.9)),
    (lambda t: d.Typical(0.2, temperature=t), lambda: lp.TypicalLogitsWarper(0.2)),
    (lambda t: d.Epsilon(3e-3, temperature=t), lambda: lp.EpsilonLogitsWarper(3e-3)),
    (lambda t: d.Eta(3e-3, temperature=t), lambda: lp.EtaLogitsWarper(3e-3)),
]


def hf_probs(warper, logits, temperature):
    scores = lp.TemperatureLogitsWarper(temperature)(None, logits.clone())
    return torch.softmax(warper(None, scores), dim=-1)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("seed", range(4))
def test_decoder_equals_hf_warper(case, temperature, seed):
    ours, theirs = CASES[case]
    scale = [0.5, 2.0, 5.0, 10.0][seed]
    z = random_logits(32, 1000, seed, scale)
    expected = hf_probs(theirs(), z, temperature)
    got = ours(temperature).probs(z)
    assert torch.equal(got > 0, expected > 0), "supports differ"
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_per_row_parameters_equal_hf_row_by_row():
    z = random_logits(3, 400, 9)
    ps = torch.tensor([0.2, 0.6, 0.95])
    temps = torch.tensor([0.6, 1.0, 1.5])
    got = d.TopP(ps, temperature=temps).probs(z)
    for row in range(3):
        warper = lp.TopPLogitsWarper(float(ps[row]))
        expected = hf_probs(warper, z[row : row + 1], float(temps[row]))
        torch.testing.assert_close(got[row : row + 1], expected, atol=1e-6, rtol=1e-5)
    ks = torch.tensor([1, 5, 50])
    got = d.TopK(ks).probs(z)
    for row in range(3):
        expected = hf_probs(lp.TopKLogitsWarper(int(ks[row])), z[row : row + 1], 1.0)
        torch.testing.assert_close(got[row : row + 1], expected, atol=1e-6, rtol=1e-5)


def test_typical_keeps_a_whole_tied_group_like_hf():
    # Both keep all four 1s at the edge (docs/decoders.md once said HF could keep part).
    z = torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    expected = hf_probs(lp.TypicalLogitsWarper(0.5), z, 1.0)
    got = d.Typical(0.5).probs(z)
    assert torch.equal(got > 0, expected > 0) and int((got[0, 1:5] > 0).sum()) == 4
    torch.testing.assert_close(got, expected)
