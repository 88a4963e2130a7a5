"""Supports: the sort-free mass threshold against a sort, composition, explicit masks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoptim as d
from decoptim.core.supports import mass_threshold_mask, ordered_codes


def threshold_by_sorting(keys, weights, mass):
    """Reference: smallest key value t with Σ_{key ≤ t} w ≥ mass, one row at a time."""
    out = torch.zeros_like(keys, dtype=torch.bool)
    for row in range(keys.shape[0]):
        values = torch.unique(keys[row])  # sorted ascending
        totals = torch.stack([weights[row][keys[row] <= v].double().sum() for v in values])
        reached = torch.nonzero(totals >= mass[row]).flatten()
        t = values[reached[0]] if len(reached) else values[-1]
        out[row] = keys[row] <= t
    return out


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(-50, 50, width=32), st.sampled_from([0.0, -0.0, 1.5, -3.0, math.inf])),
        min_size=1,
        max_size=60,
    ),
    mass=st.floats(0.01, 1.0),
    use_float64=st.booleans(),
)
def test_mass_threshold_equals_sorting(values, mass, use_float64):
    dtype = torch.float64 if use_float64 else torch.float32
    keys = torch.tensor([values], dtype=dtype)
    weights = torch.rand(keys.shape, generator=torch.Generator().manual_seed(len(values)))
    weights = (weights / weights.sum()).to(dtype)
    target = torch.tensor([[mass]], dtype=dtype)
    got = mass_threshold_mask(keys, weights, target)
    assert torch.equal(got, threshold_by_sorting(keys, weights, target.flatten()))


def test_ordered_codes_preserve_order_including_signed_zero_and_infinities():
    x = torch.tensor([-math.inf, -1e30, -1.0, -1e-40, -0.0, 0.0, 1e-40, 2.0, math.inf])
    for dtype in (torch.float32, torch.float64):
        codes = ordered_codes(x.to(dtype))
        assert (codes[1:] >= codes[:-1]).all()
        assert codes[4] == codes[5]  # -0.0 and 0.0 are one value


def test_supports_compose_by_intersection():
    z = torch.randn(5, 300, generator=torch.Generator().manual_seed(2)) * 2
    both = (d.TopKSupport(20) & d.TopPSupport(0.8)).mask(z)
    assert torch.equal(both, d.TopKSupport(20).mask(z) & d.TopPSupport(0.8).mask(z))


def test_explicit_mask_support():
    z = torch.zeros(2, 4)
    allowed = torch.tensor([True, False, True, False])
    q = d.SimplexDecoder(d.Shannon(), d.Mask(allowed)).probs(z)
    assert q.tolist() == [[0.5, 0.0, 0.5, 0.0]] * 2
    with pytest.raises(ValueError, match=r"allowed mask of shape \(3,\)"):
        d.SimplexDecoder(d.Shannon(), d.Mask(torch.ones(3, dtype=torch.bool))).probs(z)
    with pytest.raises(TypeError, match="bool tensor"):
        d.Mask(torch.ones(4))
