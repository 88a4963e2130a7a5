"""Supports: the sort-free mass threshold against a sort, composition, explicit masks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoptim as d
from decoptim.core.supports import mass_threshold_mask, ordered_codes


def threshold_by_sorting(keys, weights, mass):
    """Reference: smallest key value t with Σ_{key ≤ t} w ≥ mass·Σ w, one row at a time."""
    out = torch.zeros_like(keys, dtype=torch.bool)
    for row in range(keys.shape[0]):
        values = torch.unique(keys[row])  # sorted ascending
        totals = torch.stack([weights[row][keys[row] <= v].double().sum() for v in values])
        reached = torch.nonzero(totals >= mass[row] * weights[row].double().sum()).flatten()
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


def test_radix_select_equals_the_float64_bisection_at_a_full_vocabulary():
    # float32 keys take the byte-at-a-time radix select, the same values as float64 keys the
    # bisection: the kept sets must be equal. Rows crowd their keys into few top bytes (so
    # later passes keep few tokens in the group and many outside it), with ties and inf.
    vocab = 151_936
    generator = torch.Generator().manual_seed(7)
    crowded = 1.0 + torch.randint(0, 2**12, (vocab,), generator=generator) * 2.0**-20
    spread = torch.randn(vocab, generator=generator).abs() * 5
    tied = torch.full((vocab,), 2.5)
    tied[:1000] = 0.5
    with_inf = spread.clone()
    with_inf[::97] = math.inf
    keys = torch.stack([crowded, spread, tied, with_inf]).to(torch.float32)
    weights = torch.softmax(torch.randn(4, vocab, generator=generator) * 4, -1)
    for mass in (1e-9, 0.3, 0.9, 1.0 - 1e-7):
        target = torch.full((4, 1), mass, dtype=torch.float64)
        radix = mass_threshold_mask(keys, weights, target)
        bisection = mass_threshold_mask(keys.double(), weights, target)
        assert torch.equal(radix, bisection), mass


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


# --- float32 against float64 at the cut ---------------------------------------------------


def test_top_p_one_keeps_every_token_with_probability():
    q = d.TopP(1.0).probs(torch.tensor([[0.0, -20.0]]))
    assert q[0, 1] > 0, q
    torch.testing.assert_close(q, torch.softmax(torch.tensor([[0.0, -20.0]]), -1))


def three_group_row(middle: float, light: float) -> torch.Tensor:
    """A float16 row of V = 15,257 with three values: 7 heavy tokens at 0, 5,150 at `middle`
    and 10,100 light ones at `light`. float32 sums of the middling group misjudged the mass
    above the light ones by more than their whole mass (~1e-5)."""
    groups = [torch.zeros(7), torch.full((5150,), middle), torch.full((10100,), light)]
    return torch.cat(groups).to(torch.float16)[None]


@pytest.mark.parametrize(
    "middle, light, p", [(-4.0, -16.0, 1.0), (-4.0, -16.0, 0.99999), (-2.0, -16.0, 0.99999)]
)
def test_top_p_near_one_keeps_what_float64_keeps_on_a_tied_float16_row(middle, light, p):
    z = three_group_row(middle, light)
    light_mass = float(torch.softmax(z.double(), -1)[0, -10100:].sum())
    # The cut is well away from rounding: the light group is in iff its mass exceeds 1 − p.
    assert abs(light_mass - (1 - p)) > 1e-6, light_mass
    kept32 = d.TopP(p).problem(z.float()).support
    kept64 = d.TopP(p).problem(z.double()).support
    assert int(kept32.sum()) == (15257 if light_mass > 1 - p else 5157), int(kept32.sum())
    assert torch.equal(kept32, kept64)


def reference_distance_to_cut(name: str, parameter: float, x: torch.Tensor) -> torch.Tensor:
    """For each token of a float64 row x = (z − max z)/τ: how far it is from its decoder's
    cut, in the unit the decoder's rule compares (mass for top-p and typical, log-probability
    for min-p, epsilon and eta, x for top-k)."""
    log_pi = torch.log_softmax(x, -1)
    pi = log_pi.exp()
    if name == "topk":
        kth = x.topk(int(parameter)).values[-1]
        return x - kth
    if name == "topp":
        above = torch.stack([pi[x > v].sum() for v in x]) if x.numel() < 2000 else None
        if above is None:
            order = torch.argsort(x, descending=True, stable=True)
            sorted_x, sorted_pi = x[order], pi[order]
            before = torch.cumsum(sorted_pi, 0) - sorted_pi
            # the mass strictly above a value: the cumulative mass before its first copy
            first = torch.searchsorted(-sorted_x, -sorted_x, side="left")
            above = torch.empty_like(x)
            above[order] = before[first]
        return parameter - above
    if name == "typical":
        entropy = -(pi * log_pi).sum()
        deviation = (-log_pi - entropy).abs()
        order = torch.argsort(deviation, stable=True)
        sorted_dev, sorted_pi = deviation[order], pi[order]
        before = torch.cumsum(sorted_pi, 0) - sorted_pi
        first = torch.searchsorted(sorted_dev, sorted_dev, side="left")
        below = torch.empty_like(x)
        below[order] = before[first]
        return parameter - below
    if name == "minp":
        return x - x.max() - math.log(parameter)
    if name == "epsilon":
        return log_pi - math.log(parameter)
    if name == "eta":
        entropy = -(pi * log_pi).sum()
        return log_pi - torch.minimum(
            torch.tensor(math.log(parameter)), 0.5 * math.log(parameter) - entropy
        )
    raise ValueError(name)


TRUNCATIONS = {
    "topk": (lambda v: d.TopK(int(v)), st.integers(1, 3000)),
    "topp": (lambda v: d.TopP(v), st.sampled_from([0.5, 0.9, 0.99, 0.999, 0.99999, 1.0])),
    "typical": (lambda v: d.Typical(v), st.sampled_from([0.2, 0.9, 0.999, 0.99999, 1.0])),
    "minp": (lambda v: d.MinP(v), st.sampled_from([1e-30, 1e-9, 1e-4, 0.05, 0.5, 1.0])),
    "epsilon": (lambda v: d.Epsilon(v), st.sampled_from([1e-12, 1e-8, 3e-4, 0.05])),
    "eta": (lambda v: d.Eta(v), st.sampled_from([1e-12, 1e-8, 3e-4, 0.05])),
}


@pytest.mark.parametrize("name", sorted(TRUNCATIONS))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_float32_keeps_the_float64_support_except_at_the_cut(name, data):
    """Tolerance (stated in decoptim.core.supports): a token may be in one support and not
    the other only if, in float64, it is within 1e-6·(1 + max|x|) of the cut in mass (top-p,
    typical) or within 1e-5·(1 + |x| + |log Σ e^x|) in log-probability (min-p, epsilon,
    eta), or its x is within float32 rounding of the last kept token's (every rule)."""
    build, parameters = TRUNCATIONS[name]
    parameter = data.draw(parameters, label="parameter")
    vocab = data.draw(st.one_of(st.integers(1, 300), st.integers(5000, 50000)), label="vocab")
    dtype = data.draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float32]))
    temperature = data.draw(st.sampled_from([1.0, 0.7, 1.5]), label="temperature")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(vocab, generator=generator) * data.draw(st.sampled_from([0.5, 3.0, 20.0]))
    shape = data.draw(st.sampled_from(["gaussian", "rounded", "three groups"]), label="shape")
    if shape == "rounded":
        z = (z * 2).round() / 2
    if shape == "three groups":  # big tied groups: where float32 sums of masses went wrong
        values = torch.tensor([0.0, -data.draw(st.floats(1, 6)), -data.draw(st.floats(8, 18))])
        sizes = torch.tensor([1e-3, 0.35, 0.65])
        z = values[torch.multinomial(sizes, vocab, True, generator=generator)]
    if data.draw(st.booleans(), label="long tail") and vocab > 10:
        z[vocab // 10 :] -= 30.0
    z = z.to(dtype)[None]
    decoder = build(parameter)
    decoder.temperature = temperature
    kept32 = decoder.problem(z.float()).support[0]
    kept64 = decoder.problem(z.double()).support[0]
    differ = kept32 != kept64
    if not differ.any():
        return
    x = (z.double() - z.double().max()) / temperature
    distance = reference_distance_to_cut(name, parameter, x[0])
    log_scale = 1 + x[0].abs() + torch.logsumexp(x[0], -1).abs()
    if name in ("topp", "typical"):
        near = distance.abs() <= 1e-6 * (1 + x[0].abs().max())
    elif name == "topk":
        near = torch.zeros_like(differ)
    else:
        near = distance.abs() <= 1e-5 * log_scale
    edge = x[0][kept64].min()
    rounding = (x[0] - edge).abs() <= 2.0**-21 * (1 + x[0].abs().max())
    unexplained = differ & ~near & ~rounding
    assert not unexplained.any(), (
        f"{int(unexplained.sum())} of {vocab} tokens differ away from the cut; first at "
        f"distance {float(distance[unexplained][0]):.3g}"
    )


def test_nested_intersections_are_flattened_and_keep_the_same_tokens():
    a, b, c = d.TopKSupport(5), d.TopPSupport(0.7), d.MinPSupport(0.2)
    nested = (a & b) & c
    assert [type(part) for part in nested.parts] == [type(a), type(b), type(c)]
    assert [type(part) for part in (a & (b & c)).parts] == [type(a), type(b), type(c)]
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)) * 2
    assert torch.equal(nested.mask(x), a.mask(x) & b.mask(x) & c.mask(x))
    assert repr(nested) == f"{a!r} & {b!r} & {c!r}"
