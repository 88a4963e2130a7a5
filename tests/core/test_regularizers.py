import pytest
import torch

import decoptim as d
from tests.conftest import random_logits


def test_kl_to_a_reference_gives_the_tilted_reference():
    """argmax <q, s> − λ KL(q ‖ r) = r·exp(s/λ), normalised."""
    s = random_logits(4, 100, 1).double()
    log_r = torch.log_softmax(random_logits(4, 100, 2).double(), -1)
    lam = torch.tensor(0.5, dtype=torch.float64)
    support = torch.ones_like(s, dtype=torch.bool)
    q = d.threshold_bisect(s, lam, d.KL(log_r), support)
    torch.testing.assert_close(q, torch.softmax(log_r + s / lam, -1), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "reg", [d.Shannon(), d.Tsallis(1.5), d.Tsallis(2.0), d.Shannon() + d.Tsallis(3.0)], ids=repr
)
def test_grad_inverse_inverts_grad(reg):
    q = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    torch.testing.assert_close(reg.grad_inverse(reg.grad(q)), q, atol=1e-9, rtol=0)


def test_bad_regulariser_arguments():
    with pytest.raises(ValueError, match="alpha"):
        d.Tsallis(1.0)
    with pytest.raises(ValueError, match="weight"):
        -1.0 * d.Shannon()
    with pytest.raises(TypeError, match="reference_logprobs"):
        d.KL([0.0, 1.0])


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_a_weighted_sum_inverts_its_derivative_to_full_precision_at_tiny_masses(dtype, tol):
    # Found by a property test: halving [0, 1] sixty times left q = 4.4e-14 with 5e-6
    # relative error, and the certificate's log q with a gap of 4e-6.
    reg = d.Shannon() + 0.5 * d.Tsallis(2.0)
    q = torch.tensor([4.4202281036407726e-14, 2e-9, 0.3, 1.0], dtype=dtype)
    back = reg.grad_inverse(reg.grad(q))
    assert ((back - q).abs() <= tol * q).all(), (back, q)
