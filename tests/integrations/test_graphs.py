"""GraphedStep: the same results as the eager step, replayed from a CUDA graph."""

import pytest
import torch

import decoptim as d
from decoptim.integrations.graphs import GraphedStep
from tests.conftest import random_logits

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_inputs_run_the_step_directly():
    calls = []

    def step(x):
        calls.append(x)
        return x * 2

    graphed = GraphedStep(step)
    x = torch.arange(4.0)
    assert torch.equal(graphed(x), x * 2) and calls == [x]


def test_tuples_of_tensors_pass_through_and_other_arguments_are_named():
    codes = d.group_codes(2, 4, seed=0)
    graphed = GraphedStep(lambda x, codes: (x + 1, codes._replace(step=codes.step + 1)))
    x, out_codes = graphed(torch.zeros(8), codes)
    assert torch.equal(x, torch.ones(8)) and isinstance(out_codes, d.Codes)
    assert torch.equal(out_codes.step, codes.step + 1)
    with pytest.raises(TypeError, match="the step's arguments must be tensors or tuples of "
                       "tensors, got float"):  # fmt: skip
        graphed(torch.zeros(8), 0.5)


def test_flattened_steps_rebuild_nested_tuples_and_named_tuples():
    from decoptim.integrations.graphs import _flatten, _unflatten

    codes = d.group_codes(1, 3, seed=2)
    tree = (torch.zeros(2), (codes, torch.ones(1)))
    tensors, spec = _flatten(tree, "tree")
    assert len(tensors) == 6 and hash(spec) == hash(_flatten(tree, "tree")[1])
    rebuilt = _unflatten(spec, list(tensors))
    assert isinstance(rebuilt[1][0], d.Codes) and type(rebuilt[1]) is tuple
    assert all(a is b for a, b in zip(_flatten(rebuilt, "tree")[0], tensors, strict=True))


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="step must be callable"):
        GraphedStep(3)
    with pytest.raises(ValueError, match="max_graphs=0"):
        GraphedStep(torch.exp, max_graphs=0)


@cuda
@pytest.mark.parametrize(
    "decoder",
    [
        d.BestOfK(8, 0.02, 0.2, weights="topm", top_m=64, validate=False),
        d.TopP(0.9, validate=False),
        d.Sparsemax(validate=False),
        d.MinP(0.1, validate=False),
    ],
    ids=repr,
)
def test_replays_equal_the_eager_step_and_outlive_the_next_call(decoder):
    graphed = GraphedStep(decoder.probs)
    inputs = [random_logits(8, 32000, seed).cuda() for seed in range(3)]
    outputs = [graphed(z) for z in inputs]
    for z, q in zip(inputs, outputs, strict=True):
        assert torch.equal(q, decoder.probs(z))
    assert not graphed.eager and len(graphed._graphs) == 1


@cuda
def test_strided_and_mixed_dtype_arguments_are_copied_in_and_results_outlive_replays():
    """Strided views and tensors of several dtypes are copied into the graph's buffers and
    come through as they would eagerly; one call's results are not overwritten by the next."""
    graphed = GraphedStep(lambda x, ids: (x * 2, ids + 1, x.sum(-1, dtype=torch.float64)))
    base = random_logits(4, 200, 0).cuda()
    ids = torch.arange(4, device="cuda")
    first = graphed(base[:, ::2], ids)
    second = graphed(base[:, 1::2], ids + 10)
    for (x, i), result in (((base[:, ::2], ids), first), ((base[:, 1::2], ids + 10), second)):
        expected = (x * 2, i + 1, x.sum(-1, dtype=torch.float64))
        assert all(torch.equal(a, b) for a, b in zip(result, expected, strict=True))
    assert not graphed.eager and len(graphed._graphs) == 1


@cuda
def test_shapes_beyond_max_graphs_are_recaptured():
    graphed = GraphedStep(lambda x: torch.softmax(x, -1), max_graphs=1)
    for rows in (2, 3, 2):
        z = random_logits(rows, 100, rows).cuda()
        assert torch.equal(graphed(z), torch.softmax(z, -1))
        kept = [captured.inputs[0].shape for captured in graphed._graphs.values()]
        assert kept == [(rows, 100)]


@cuda
def test_a_step_with_a_host_sync_warns_and_runs_eagerly():
    def step(x):
        return x * float(x.abs().max())  # reads a value on the host: not capturable

    graphed = GraphedStep(step)
    z = random_logits(2, 50, 0).cuda()
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        first = graphed(z)
    assert graphed.eager and torch.equal(first, step(z))
    assert torch.equal(graphed(z * 2), step(z * 2))
    # The sync was caught before any capture began: sampling graphs still capture after it.
    sampler = GraphedStep(d.TopP(0.9, validate=False).sample)
    sampler(z)
    assert not sampler.eager


def captured_sampling(decoder: d.Decoder) -> tuple[GraphedStep, torch.Tensor]:
    """`decoder.sample` captured as a graph (validation off: its host sync would keep the
    step eager) on zero logits [64, 1000] after one call, and those logits."""
    graphed = GraphedStep(decoder.sample)
    z = torch.zeros(64, 1000, device="cuda")
    graphed(z)
    return graphed, z


UNCHECKED = {"validate": False}


@cuda
@pytest.mark.parametrize(
    "decoder",
    [
        d.Softmax(**UNCHECKED),
        d.TopP(0.95, **UNCHECKED),
        d.MinP(0.01, **UNCHECKED),
        d.Sparsemax(**UNCHECKED),
        d.BestOfK(8, 0.05, 1.0, weights="topm", top_m=4, **UNCHECKED),
        d.BestOfK(8, 0.05, 1.0, weights="prob", **UNCHECKED),
    ],
    ids=repr,
)
def test_replayed_sampling_draws_fresh_randomness_each_call(decoder):
    # The draw's seeds come from decoptim's seed stream on the device, which each replay
    # advances (the eager calls before the capture made it); torch's generator stays put.
    graphed, z = captured_sampling(decoder)
    generator = torch.cuda.default_generators[z.device.index]
    offset = generator.get_offset()
    draws = torch.stack([graphed(z) for _ in range(8)])
    assert not graphed.eager and generator.get_offset() == offset
    assert len({tuple(row.tolist()) for row in draws}) == 8
    # 512 uniform draws over 1,000 tokens: ~400 distinct; repeated randomness gives ≤ 64.
    assert draws.unique().numel() > 300


@cuda
@pytest.mark.parametrize(
    "decoder",
    [
        d.Softmax(1.0, **UNCHECKED),
        d.TopP(0.9, **UNCHECKED),
        d.BestOfK(8, 0.05, 1.0, weights="topm", **UNCHECKED),
    ],
    ids=repr,
)
def test_replays_repeat_after_decoptims_manual_seed(decoder):
    # torch.manual_seed does not reach the graphs' seed stream; decoptim.manual_seed restarts
    # it in place, so a graph captured already repeats its draws (generate relies on it).
    graphed, z = captured_sampling(decoder)

    def replays(seed: int) -> torch.Tensor:
        d.manual_seed(seed)
        return torch.stack([graphed(z) for _ in range(4)])

    first = replays(3)
    assert not graphed.eager
    assert torch.equal(replays(3), first)
    assert not torch.equal(replays(4), first)
    torch.manual_seed(3)  # torch's own seed leaves the stream where it is
    assert not torch.equal(torch.stack([graphed(z) for _ in range(4)]), first)


@cuda
@pytest.mark.parametrize(
    "decoder,by_rejection",
    [
        (d.Softmax(0.8, **UNCHECKED), False),
        (d.TopP(0.9, **UNCHECKED), False),
        (d.TopP(0.9, **UNCHECKED), True),
        (d.MinP(0.05, **UNCHECKED), False),
        (d.BestOfK(8, 0.02, 0.2, **UNCHECKED), False),
    ],
    ids=repr,
)
def test_coordinated_steps_replay_the_eager_draws_with_their_codes(decoder, by_rejection):
    """A coordinated step takes the codes as a second input and returns new ones: replayed,
    four chained steps draw the eager step's tokens and codes exactly (a code picks its
    token without random numbers)."""
    graphed = GraphedStep(lambda x, codes: decoder.sample_coordinated(x, codes, by_rejection))
    codes = eager_codes = d.group_codes(8, 8, seed=3, device="cuda")
    for step in range(4):
        z = random_logits(64, 32000, step).cuda()
        tokens, codes = graphed(z, codes)
        expected, eager_codes = decoder.sample_coordinated(z, eager_codes, by_rejection)
        assert torch.equal(tokens, expected), step
        assert isinstance(codes, d.Codes)
        assert all(torch.equal(a, b) for a, b in zip(codes, eager_codes, strict=True)), step
    assert not graphed.eager and len(graphed._graphs) == 1


@cuda
def test_results_that_are_unchanged_arguments_are_the_callers_own_tensors():
    """A coordinated step returns its codes' group seeds and indices as they came in: each
    replay hands back the caller's own tensors there, not copies, and the other results
    as copies; an argument the step writes into is never handed back."""
    decoder = d.Softmax(0.8, **UNCHECKED)
    graphed = GraphedStep(lambda x, codes: decoder.sample_coordinated(x, codes))
    for seed in range(2):
        codes = d.group_codes(2, 4, seed=seed, device="cuda")
        z = random_logits(8, 1000, seed).cuda()
        tokens, new = graphed(z, codes)
        expected, expected_new = decoder.sample_coordinated(z, codes)
        assert new.seed is codes.seed and new.index is codes.index
        assert new.value is not codes.value and torch.equal(new.value, expected_new.value)
        assert torch.equal(tokens, expected) and torch.equal(new.step, codes.step + 1)

    def add_one_in_place(x):
        return x.add_(1)

    graphed = GraphedStep(add_one_in_place)
    x = torch.zeros(4, device="cuda")
    out = graphed(x)
    assert out is not x and torch.equal(out, torch.ones(4, device="cuda"))
    assert not graphed.eager and len(graphed._graphs) == 1


def test_results_pass_through_only_whole_unchanged_argument_buffers():
    """`_passed_through` on the CPU: an output that is an input buffer (same data, shape,
    strides, dtype) and still equals its argument is handed back; a view of part of it, a
    reshaped view, a buffer the step changed, or a new tensor is copied out."""
    from decoptim.integrations.graphs import _passed_through

    arguments = [torch.arange(6.0), torch.arange(4)]
    inputs = [a.clone() for a in arguments]
    outputs = [inputs[1], inputs[0][:3], inputs[0].view(2, 3), inputs[0] + 0, inputs[0]]
    assert _passed_through(outputs, inputs, arguments) == [1, None, None, None, 0]
    inputs[0].add_(1)  # as a step that writes into its argument
    assert _passed_through(outputs, inputs, arguments) == [1, None, None, None, None]
