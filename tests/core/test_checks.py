"""Bad input raises an error that names the parameter and the value."""

import math

import pytest
import torch

import decoptim as d


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: d.TopK(0), r"k >= 1.*k=0"),
        (lambda: d.TopK(-3), r"k=-3"),
        (lambda: d.TopK(2.5), r"k must be an int.*2.5"),
        (lambda: d.TopK(torch.tensor([3, 0])), r"k.*0"),
        (lambda: d.TopP(0.0), r"0 < p <= 1.*p=0.0"),
        (lambda: d.TopP(1.5), r"p=1.5"),
        (lambda: d.TopP(torch.tensor([0.5, 1.2])), r"p.*1.2"),
        (lambda: d.MinP(-0.1), r"p=-0.1"),
        (lambda: d.Typical(0.0), r"mass=0.0"),
        (lambda: d.Epsilon(2.0), r"epsilon=2.0"),
        (lambda: d.Eta(0.0), r"epsilon=0.0"),
        (lambda: d.Softmax(0.0), r"temperature.*0.0"),
        (lambda: d.Softmax(-1.0), r"temperature=-1.0"),
        (lambda: d.Softmax(math.nan), r"temperature=nan"),
        (lambda: d.TopP(0.9, temperature=torch.tensor([1.0, 0.0])), r"temperature"),
        (lambda: d.Entmax(1.0), r"alpha=1.0"),
        (lambda: d.Entmax(0.5), r"alpha=0.5"),
    ],
)
def test_bad_parameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_nan_logits():
    z = torch.zeros(3, 5)
    z[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"logits contain NaN \(first at row 1\)"):
        d.Softmax().probs(z)


def test_all_neg_inf_row():
    z = torch.zeros(2, 4)
    z[1] = -math.inf
    with pytest.raises(ValueError, match=r"logits row 1 is all -inf"):
        d.TopP(0.9).sample(z)


def test_pos_inf_logits():
    with pytest.raises(ValueError, match=r"\+inf"):
        d.Sparsemax().probs(torch.tensor([[0.0, math.inf]]))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_logits(dtype):
    with pytest.raises(TypeError, match=r"logits must be float.*dtype=torch\."):
        d.Softmax().probs(torch.ones(2, 3, dtype=dtype))


def test_non_tensor_and_empty_logits():
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        d.Softmax().probs([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"V = 0"):
        d.Softmax().probs(torch.zeros(2, 0))
    with pytest.raises(ValueError, match=r"0-d"):
        d.Softmax().probs(torch.tensor(1.0))


def test_per_row_parameter_of_wrong_length():
    with pytest.raises(ValueError, match=r"per-row parameter temperature has shape \(3,\)"):
        d.Softmax(torch.tensor([1.0, 2.0, 3.0])).probs(torch.zeros(4, 10))
    with pytest.raises(ValueError, match=r"per-row parameter k"):
        d.TopK(torch.tensor([1, 2])).probs(torch.zeros(3, 10))


def test_probs_of_the_wrong_shape_for_a_certificate():
    with pytest.raises(ValueError, match="probs has shape"):
        d.Softmax().certificate(torch.zeros(2, 5), torch.ones(2, 4) / 4)


def test_validation_can_be_skipped_for_trusted_hot_loops():
    z = torch.zeros(1, 3)
    z[0, 0] = math.nan
    # Without the check a NaN entry simply drops out of the support (no error, no sync).
    q = d.Softmax(validate=False).probs(z)
    assert q.tolist() == [[0.0, 0.5, 0.5]]
