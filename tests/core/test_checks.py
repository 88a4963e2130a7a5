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


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: d.TopK(2**31), r"k must satisfy k <= 2147483647, got k=2147483648"),
        (lambda: d.TopK(10**29), r"k <= 2147483647, got k=100000000000000000000000000000"),
        (lambda: d.TopK(torch.tensor([3, 2**40])), r"k <= 2147483647.*1099511627776"),
        (lambda: d.Softmax(1e-9), r"1e-08 <= temperature <= 1e\+08, got temperature=1e-09"),
        (lambda: d.Softmax(1e9), r"temperature=1000000000.0"),
        (lambda: d.Softmax(10**400), r"temperature=1000000000000"),
        (lambda: d.Softmax(torch.tensor([1.0, 1e-45])), r"e-45 in temperature=tensor\(\[1.0, 1"),
        (lambda: d.Softmax("hot"), r"temperature must be a float or a tensor, got str 'hot'"),
    ],
)
def test_parameters_beyond_what_float32_or_the_step_budget_allows(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bounds_are_inclusive():
    from decoptim.core.checks import MAX_COUNT, MAX_SCALE, MIN_SCALE

    assert d.TopK(MAX_COUNT).support.k == MAX_COUNT
    assert d.Softmax(MIN_SCALE).temperature == MIN_SCALE
    assert d.Softmax(MAX_SCALE).temperature == MAX_SCALE


def test_error_messages_quote_values_shortened():
    from decoptim.core.checks import shown

    assert shown("abc") == "'abc'"
    long = shown("x" * 100_000)
    assert len(long) < 100 and long.endswith("(100000 characters)")
    assert shown(10**5000) == "<int of 16610 bits>"
    assert shown(torch.arange(100)).startswith("tensor([0, 1, 2, 3, 4, 5, 6, 7, ...")
    with pytest.raises(TypeError) as error:
        d.TopK("9" * 100_000)
    assert len(str(error.value)) < 200


def test_tsallis_alpha_range():
    from decoptim.core.checks import tsallis_alpha

    assert tsallis_alpha("alpha", 1.5) == 1.5
    for bad in (1.0, 1 + 1e-12, 1e9, math.inf, math.nan):
        with pytest.raises(ValueError, match="alpha"):
            tsallis_alpha("alpha", bad)


def test_constructor_repr_shows_the_parameters_kept_under_their_names():
    class Window(d.Support):
        def __init__(self, low: float, high: torch.Tensor, scratch: int = 0):
            self.low, self.high = low, high  # `scratch` is not kept: left out

    class Plain(d.Support):
        pass

    window = Window(0.5, torch.tensor([1.0, 2.0]))
    assert repr(window) == "Window(low=0.5, high=tensor[1.0, 2.0])"
    assert repr(Plain()) == "Plain()"
    assert (
        repr(window & d.TopKSupport(3))
        == "Window(low=0.5, high=tensor[1.0, 2.0]) & TopKSupport(k=3)"
    )
    assert repr(0.5 * d.Tsallis(1.5)) == "0.5*Tsallis(alpha=1.5)"


def test_device_constants_are_shared_per_key_and_kept_for_the_most_recent_keys():
    from decoptim.core.checks import DeviceConstants

    constants = DeviceConstants(size=3)
    cpu = torch.device("cpu")
    first = constants.get((4,), 0.5, torch.float32, cpu)
    assert first.tolist() == [0.5] * 4 and first.dtype == torch.float32
    assert constants.get((4,), 0.5, torch.float32, cpu) is first
    # Each part of the key makes a tensor of its own.
    others = [
        constants.get((5,), 0.5, torch.float32, cpu),
        constants.get((4,), 0.25, torch.float32, cpu),
        constants.get((4,), 0.5, torch.float64, cpu),
    ]
    assert all(other is not first for other in others)
    assert others[0].shape == (5,) and others[1].tolist() == [0.25] * 4
    assert others[2].dtype == torch.float64
    # Three newer keys than `first`: it was dropped, and comes back as a new tensor.
    again = constants.get((4,), 0.5, torch.float32, cpu)
    assert again is not first and again.tolist() == [0.5] * 4
    # A key used again counts as recent: it outlives keys made before its last use.
    constants = DeviceConstants(size=2)
    kept = constants.get((), 1.0, torch.float32, cpu)
    older = constants.get((), 2.0, torch.float32, cpu)
    assert constants.get((), 1.0, torch.float32, cpu) is kept
    constants.get((), 3.0, torch.float32, cpu)
    assert constants.get((), 1.0, torch.float32, cpu) is kept
    assert constants.get((), 2.0, torch.float32, cpu) is not older


def test_kernel_rows_and_per_row_read_scalars_from_the_shared_constants():
    from decoptim.core.checks import kernel_rows, per_row

    x = torch.zeros(2, 3, 7)
    rows = kernel_rows(0.3, x)
    assert rows.shape == (6,) and rows.dtype == torch.float32 and kernel_rows(0.3, x) is rows
    assert kernel_rows(5, x, torch.int64).tolist() == [5] * 6
    scalar = per_row("k", 4, x)
    assert scalar.shape == () and scalar.dtype == torch.int64 and per_row("k", 4, x) is scalar
    assert per_row("p", 0.5, x).dtype == torch.float32
