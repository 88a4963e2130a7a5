"""The same decoders on CUDA: equal to the CPU path (skipped where no GPU is present)."""

import copy

import pytest
import torch

import decoptim as d
from tests.conftest import (
    assert_draws_are_the_two_step_picks,
    assert_first_proposal_inside_the_top_p_cut_kept,
    assert_first_proposal_inside_the_typical_set_kept,
    assert_same_support_up_to_the_top_p_cut,
    assert_same_support_up_to_the_typical_edge,
    crowded_rows,
    random_logits,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DECODERS = [
    d.Greedy(),
    d.Softmax(0.7),
    d.TopK(50),
    d.TopP(0.9),
    d.MinP(0.1),
    d.Epsilon(3e-4),
    d.Eta(3e-4),
    d.Sparsemax(),
    d.Entmax(1.5),
    d.Entmax(1.3),
    d.TopP(torch.tensor([0.5, 0.9] * 8), temperature=torch.tensor([0.7, 1.3] * 8)),
    d.Sparsemax(torch.tensor([0.5, 2.0] * 8)),
    d.BestOfK(8, 0.02, 0.2),
    d.BestOfK(8, 0.02, 0.2, solver="mirror"),
    d.BestOfK(8, 2.0, 0.2, weights="topm", top_m=64),
]


@pytest.mark.parametrize("decoder", DECODERS, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_equals_cpu(decoder, dtype):
    z = random_logits(16, 32000, 0).to(dtype)
    q_cpu = decoder.probs(z)
    q_gpu = decoder.probs(z.cuda())
    assert q_gpu.device.type == "cuda" and q_gpu.dtype == torch.float32
    torch.testing.assert_close(q_gpu.cpu(), q_cpu, atol=2e-6, rtol=1e-4)
    # Same optimality on both devices (mirror ascent's gap is not ~0, but it is the same).
    gap_gpu = decoder.certificate(z.cuda(), q_gpu).gap.cpu()
    gap_cpu = decoder.certificate(z, q_cpu).gap
    torch.testing.assert_close(gap_gpu, gap_cpu, atol=1e-5, rtol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [32000, 151936])
def test_cuda_typical_keeps_the_cpu_support_up_to_its_edges(vocab, dtype):
    """Typical on top-p's kernels (key −|x − E_p[x]|): the CPU torch path's tokens but at
    the set's two edges, within float32 rounding (the kernels' E_p[x] comes from float32
    split sums), q to float32 rounding on the rest, per-row mass and τ, draws inside."""
    z = random_logits(16, vocab, 0).to(dtype)
    mass, tau = torch.tensor([0.5, 0.9, 0.95, 0.2] * 4), torch.tensor([0.7, 1.0, 1.3, 1.0] * 4)
    decoder = d.Typical(mass, tau)
    q_gpu = decoder.probs(z.cuda()).cpu()
    assert q_gpu.dtype == torch.float32
    assert_same_support_up_to_the_typical_edge(z, tau, mass, q_gpu, decoder.probs(z), 2e-4)
    drawn = decoder.sample(z.cuda(), generator=torch.Generator("cuda").manual_seed(0))
    assert (q_gpu.gather(1, drawn.cpu()[:, None]) > 0).all()


@pytest.mark.parametrize(
    "decoder",
    [d.Softmax(0.8), d.TopP(0.9), d.MinP(0.05), d.BestOfK(8, 0.05, 1.0, weights="topm"),
     d.Sparsemax(0.5), d.Entmax(1.5, 0.5)],
    ids=repr,
)  # fmt: skip
def test_cuda_sampling_is_reproducible(decoder):
    z = random_logits(64, 32000, 1).cuda()
    first = decoder.sample(z, generator=torch.Generator("cuda").manual_seed(3))
    second = decoder.sample(z, generator=torch.Generator("cuda").manual_seed(3))
    third = decoder.sample(z, generator=torch.Generator("cuda").manual_seed(4))
    assert first.device.type == "cuda" and torch.equal(first, second)
    assert not torch.equal(first, third)


SAMPLED = [
    d.Softmax(0.8),
    d.TopP(0.7),
    d.Typical(0.8, 0.9),  # the draw over top-p's floor, below a ceiling on z
    d.MinP(0.1, 1.3),
    d.Epsilon(0.02, 0.8),
    d.TopK(7, 0.9),
    # Drawn inside the solve, among the candidates it holds in registers.
    d.Sparsemax(2.0),
    d.Entmax(1.5, 1.5),
    # Best-of-K draws without writing q: head or tail by a race, then the tail's draw.
    d.BestOfK(8, 2.0, 0.3),
    d.BestOfK(8, 2.0, 0.3, solver="mirror", steps=3),
    d.BestOfK(6, 1.0, 0.5, solver="mirror", steps=1, temperature=1.3),
    d.BestOfK(8, 0.05, 1.0, weights="topm", top_m=4),
    d.BestOfK(8, 0.5, 1.0, weights="rank", top_m=6, temperature=2.0),
]


@pytest.mark.parametrize("decoder", SAMPLED, ids=repr)
def test_cuda_sampler_follows_probs(decoder):
    """The CUDA sampler against q: chi-square with a fixed seed."""
    pytest.importorskip("scipy.stats")
    z = random_logits(1, 20, 3, scale=1.5).cuda()
    q = decoder.probs(z)[0].double().cpu()
    draws = 200000
    samples = decoder.sample(z.expand(draws, -1), generator=torch.Generator("cuda").manual_seed(1))
    counts = torch.bincount(samples.cpu(), minlength=20).double()
    assert counts[q == 0].sum() == 0
    live = q > 0
    expected = q[live] / q[live].sum() * draws
    assert pooled_chisquare_pvalue(counts[live], expected) > 1e-3


def pooled_chisquare_pvalue(counts: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's chi-square p-value, the categories expected fewer than 5 times pooled into
    one: below that the statistic is not chi-square distributed, and one draw of a token of
    q ~ 1e-9 (Best-of-K's sharp rows hold several) would fail an exact sampler."""
    scipy_stats = pytest.importorskip("scipy.stats")
    rare = expected < 5
    if rare.any():
        counts = torch.cat([counts[~rare], counts[rare].sum()[None]])
        expected = torch.cat([expected[~rare], expected[rare].sum()[None]])
    return float(scipy_stats.chisquare(counts.numpy(), expected.numpy()).pvalue)


@pytest.mark.parametrize("decoder", SAMPLED, ids=repr)
def test_cuda_sampler_replayed_in_a_graph_follows_probs(decoder, monkeypatch):
    """Replayed from a CUDA graph, a sampler's seeds come from decoptim's stream on the
    device (`draw.graph_seed_stream`, here with a fixed key), not torch's generator: the
    replays leave the generator where it was, and still follow q (chi-square as above)."""
    from decoptim.core.kernels import draw

    pytest.importorskip("scipy.stats")
    decoder = copy.copy(decoder)
    decoder.validate = False  # validation reads the logits on the host: not capturable
    z = random_logits(1, 20, 3, scale=1.5).cuda().expand(20000, -1).contiguous()
    q = decoder.probs(z[:1])[0].double().cpu()
    stream = torch.tensor([1234, 0], dtype=torch.int64, device="cuda")
    monkeypatch.setitem(draw._graph_seed_streams, z.device.index, stream)
    decoder.sample(z)  # compiles the kernels before the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tokens = decoder.sample(z)
    generator = torch.cuda.default_generators[z.device.index]
    offset, taken = generator.get_offset(), int(stream[1])
    counts = torch.zeros(20, dtype=torch.float64)
    for _ in range(10):
        graph.replay()
        counts += torch.bincount(tokens.cpu(), minlength=20)
    assert generator.get_offset() == offset and int(stream[1]) > taken
    assert counts[q == 0].sum() == 0
    live = q > 0
    expected = q[live] / q[live].sum() * counts.sum()
    assert pooled_chisquare_pvalue(counts[live], expected) > 1e-3


def test_cuda_a_graph_keeps_reading_its_parameters_after_the_constants_cache_moves_on(
    monkeypatch,
):
    """A captured step reads its parameters' tensors (`checks.DeviceConstants`) at their
    captured addresses on every replay: those stay alive after the cache has dropped their
    keys and the allocator has handed freed blocks out again, so replays still give the
    eager q."""
    from decoptim.core import checks

    monkeypatch.setattr(checks, "DEVICE_CONSTANTS", checks.DeviceConstants(size=4))
    decoder = d.TopP(0.9, temperature=0.8, validate=False)
    z = random_logits(8, 32000, 0).cuda()
    expected = decoder.probs(z)  # compiles, and makes 1/τ's and p's rows outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        q = decoder.probs(z)
    for value in range(16):  # more keys than the cache holds
        checks.kernel_rows(value + 0.5, z)
    # Blocks of the rows' size, alive through the replay: freed ones are handed out again.
    _refill = [torch.full((8,), 1e3, device="cuda") for _ in range(4096)]
    graph.replay()
    torch.testing.assert_close(q, expected, atol=0, rtol=0)


def test_cuda_a_parameter_first_made_inside_a_capture_is_not_shared_with_eager_calls(
    monkeypatch,
):
    """A capture runs no kernels, so a parameter tensor first filled inside one holds its
    value only in replays: an eager call made right after the capture, before any replay,
    still reads its own (equal to the CPU path), and the replay then gives the same q."""
    from decoptim.core import checks

    monkeypatch.setattr(checks, "DEVICE_CONSTANTS", checks.DeviceConstants())
    decoder = d.TopP(0.83, temperature=0.71, validate=False)
    z = random_logits(8, 32000, 1).cuda()
    d.TopP(0.5, validate=False).probs(z)  # compiles the kernels, with other parameters
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        q = decoder.probs(z)
    eager = decoder.probs(z)
    torch.testing.assert_close(eager.cpu(), decoder.probs(z.cpu()), atol=2e-6, rtol=1e-4)
    graph.replay()
    torch.testing.assert_close(q, eager, atol=0, rtol=0)


def test_cuda_graph_seeds_are_philox_words_and_clear_the_counters():
    """`draw.next_graph_seeds` on the GPU: Philox4x32-10's first two words at (key, count)
    against a plain-Python Philox, the count's carry into its high word, the counters
    zeroed up to their end (1,500 over two programs) and not past it."""
    from decoptim.core.kernels.draw import next_graph_seeds
    from tests.core.kernels.philox_pairs import philox_words

    key = 0x9E3779B97F4A7C15 % 2**63
    stream = torch.tensor([key, 2**32 - 1], dtype=torch.int64, device="cuda")
    buffer = torch.full((2048,), 7, dtype=torch.int32, device="cuda")
    for count in range(2**32 - 1, 2**32 + 2):
        seeds = next_graph_seeds(stream, clear=buffer[:1500])
        assert seeds.tolist() == list(philox_words(key, count)[:2]), (count, seeds)
        assert stream.tolist() == [key, count + 1]
    assert (buffer[:1500] == 0).all() and (buffer[1500:] == 7).all()


def test_cuda_a_graph_captured_before_any_eager_draw_takes_torchs_generator(monkeypatch):
    """With no seed stream on the device yet (none is made inside a capture), a captured
    sampler draws its seeds with torch's graph-safe `randint`: each replay advances torch's
    generator and draws fresh tokens."""
    from decoptim.core.kernels import draw

    monkeypatch.setattr(draw, "_graph_seed_streams", {})
    decoder = d.Softmax(validate=False)
    z = torch.zeros(64, 1000, device="cuda")
    decoder.sample(z, generator=torch.Generator("cuda"))  # compiles; makes no stream
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tokens = decoder.sample(z)
    assert draw._graph_seed_streams == {}
    generator = torch.cuda.default_generators[z.device.index]
    offset = generator.get_offset()
    draws = set()
    for _ in range(4):
        graph.replay()
        draws.add(tuple(tokens.tolist()))
    assert generator.get_offset() > offset and len(draws) == 4


@pytest.mark.parametrize(
    "decoder",
    [
        d.Softmax(0.6),
        d.TopP(0.95),
        d.MinP(0.3),
        d.Typical(0.95),
        d.BestOfK(8, 0.05, 1.0, weights="topm", top_m=2),
        d.Sparsemax(3.0),
    ],
    ids=repr,
)
def test_cuda_draw_over_rows_split_across_programs_follows_probs(decoder):
    """Long rows are streamed by several programs each, and the last to finish draws the
    row's token: five live tokens spread across the row, 256 rows per call, chi-square."""
    scipy_stats = pytest.importorskip("scipy.stats")
    vocab, spots = 65536, torch.tensor([3, 20000, 20001, 41000, 65535])
    z = torch.full((256, vocab), -torch.inf)
    z[:, spots] = torch.tensor([1.0, 0.2, 0.6, -0.3, 0.4])
    z = z.cuda()
    q = decoder.probs(z[:1])[0, spots].double().cpu()
    generator = torch.Generator("cuda").manual_seed(2)
    samples = torch.cat([decoder.sample(z, generator=generator) for _ in range(40)]).cpu()
    assert torch.isin(samples, spots).all(), samples[~torch.isin(samples, spots)]
    counts = (samples[:, None] == spots).sum(0).double()
    live = q > 0
    assert counts[~live].sum() == 0 and live.sum() >= 3, (q, counts)
    expected = q[live] / q[live].sum() * len(samples)
    assert scipy_stats.chisquare(counts[live].numpy(), expected.numpy()).pvalue > 1e-3


TAILED = [
    d.Softmax(1.0),
    d.TopK(1000),  # ties with the 1000th keep the whole tail
    d.MinP(1e-12),
    d.TopP(1.0),
    d.Entmax(1.01, solver="bisect"),
    # The head's race against the tail as one entrant, then the tail's own draw (4 of the 8
    # live tokens are in the tail).
    d.BestOfK(8, 0.05, 1.0, weights="topm", top_m=4),
    d.BestOfK(8, 0.02, 0.2),
    d.BestOfK(8, 0.02, 0.2, solver="mirror", steps=1),
]


@pytest.mark.parametrize("decoder", TAILED, ids=repr)
def test_cuda_sampler_draws_a_long_tail_no_more_than_its_mass(decoder):
    """8 tokens at logits 0..2 and 151,928 at −24 (tail mass ~2e-7): over 204,800 draws the
    tail must come up about 0.04 times. A race whose exponentials could round to 0 drew it
    ~950 times (any token with E = 0 wins whatever its probability)."""
    scipy_stats = pytest.importorskip("scipy.stats")
    vocab, live, rows, rounds = 151936, 8, 256, 800
    z = torch.full((rows, vocab), -24.0)
    z[:, :live] = torch.linspace(0.0, 2.0, live)
    z = z.cuda()
    q = decoder.probs(z[:1].double().cpu())[0]
    generator = torch.Generator("cuda").manual_seed(5)
    samples = torch.cat([decoder.sample(z, generator=generator) for _ in range(rounds)]).cpu()
    draws = rows * rounds
    tail_draws = int((samples >= live).sum())
    tail_expected = float(q[live:].sum()) * draws
    # Poisson(tail_expected): a count this high has probability below 1e-6.
    assert tail_draws <= scipy_stats.poisson.ppf(1 - 1e-6, max(tail_expected, 1e-3)), (
        tail_draws, tail_expected
    )  # fmt: skip
    counts = torch.bincount(samples[samples < live], minlength=live).double()
    expected = q[:live] / q[:live].sum() * counts.sum()
    assert scipy_stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-4


def test_cuda_draw_many_picks_each_proposal_with_its_own_uniforms():
    """Top-p's and typical's proposals: 4 tokens per row, picked in the draw's last program,
    each the draw's two steps over its own Philox uniforms, against float64 on LM-sized rows
    (V = 151,936, τ = 0.8, the crowded rows among them), for three seeds."""
    from decoptim.core.kernels.draw import BLOCK, draw_many_from_logits, draw_seed
    from tests.core.kernels.philox_pairs import philox_pairs

    vocab, tau, draws = 151936, 0.8, 4
    z = torch.cat([crowded_rows(vocab), random_logits(59, vocab, 3)]).cuda()
    rows = z.shape[0]
    inv_tau = torch.full((rows,), 1 / tau, device="cuda")
    for seed in range(3):
        source = draw_seed(z.device, torch.Generator("cuda").manual_seed(seed))
        arrivals = torch.zeros(rows, dtype=torch.int32, device="cuda")
        tokens, _ = draw_many_from_logits(z, inv_tau, source, arrivals, draws)
        first, second = philox_pairs(source, rows * draws)
        assert_draws_are_the_two_step_picks(z.cpu(), tau, tokens.cpu(), first.cpu(),
                                            second.cpu(), BLOCK)  # fmt: skip


def test_cuda_top_p_edge_sample_equals_the_draw_over_its_probs():
    """The rows top-p's rejection sampler leaves (token −1) find the edge and draw from q's
    closed form in the solve: the same blocks and uniforms as the draw over the written q,
    over the same terms up to one rounding of the normaliser; rows drawn already keep their
    token."""
    from decoptim.core.kernels.draw import draw_from_probs, draw_seed
    from decoptim.core.kernels.streaming import row_stats
    from decoptim.core.kernels.top_p import sample_at_the_edge

    decoder = d.TopP(0.9, temperature=0.8)
    z = random_logits(64, 151936, 6).cuda()
    inv_tau = torch.full((64,), 1 / 0.8, device="cuda")
    p = torch.full((64,), 0.9, device="cuda")
    drawn_already = torch.arange(0, 64, 3, device="cuda")
    for seed in range(4):
        tokens = torch.full((64,), -1, device="cuda")
        tokens[drawn_already] = drawn_already
        source = draw_seed(z.device, torch.Generator("cuda").manual_seed(seed))
        sample_at_the_edge(z, inv_tau, p, row_stats(z, inv_tau), source, tokens, True)
        written_draw = draw_from_probs(decoder.probs(z), torch.Generator("cuda").manual_seed(seed))
        left = torch.ones(64, dtype=torch.bool, device="cuda")
        left[drawn_already] = False
        assert torch.equal(tokens[drawn_already], drawn_already)
        assert torch.equal(tokens[left], written_draw[left])


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99999, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_top_p_accept_pass_keeps_the_first_proposal_inside_the_nucleus(p, dtype):
    """Top-p's accept pass against float64, on LM-like rows at V = 151,936 (bfloat16 rows:
    many ties) and on rows built to be hard."""
    from decoptim.core.kernels.draw import draw_seed
    from decoptim.core.kernels.top_p import _propose_and_accept

    z = torch.cat([random_logits(12, 151936, 8).to(dtype).float(), crowded_rows(151936)]).cuda()
    rows = len(z)
    inv_tau = torch.full((rows,), 1 / 0.8, device="cuda")
    ps = torch.full((rows,), p, device="cuda")
    for seed in range(3):
        source = draw_seed(z.device, torch.Generator("cuda").manual_seed(seed))
        arrivals = torch.zeros(2, rows, device="cuda", dtype=torch.int32)
        kept, _, proposals, _ = _propose_and_accept(z, inv_tau, ps, source, arrivals)
        assert_first_proposal_inside_the_top_p_cut_kept(z, 0.8, p, proposals, kept)


@pytest.mark.parametrize("mass", [0.5, 0.9, 1.0])
def test_cuda_typical_accept_pass_keeps_the_first_proposal_inside_the_set(mass):
    """Typical's rejection sampler: the accept pass on the key −|x − E_p[x]|, against
    float64, on LM-like and hard rows at V = 151,936."""
    from decoptim.core.kernels.draw import draw_seed
    from decoptim.core.kernels.top_p import TYPICAL, _propose_and_accept, _typical_centre

    z = torch.cat([random_logits(12, 151936, 10), crowded_rows(151936, 1)]).cuda()
    rows = len(z)
    inv_tau = torch.full((rows,), 1 / 0.8, device="cuda")
    masses = torch.full((rows,), mass, device="cuda")
    _, centre = _typical_centre(z, inv_tau)
    for seed in range(3):
        source = draw_seed(z.device, torch.Generator("cuda").manual_seed(seed))
        arrivals = torch.zeros(2, rows, device="cuda", dtype=torch.int32)
        kept, _, proposals, _ = _propose_and_accept(
            z, inv_tau, masses, source, arrivals, centre, TYPICAL.value
        )  # fmt: skip
        assert_first_proposal_inside_the_typical_set_kept(z, 0.8, mass, proposals, kept)


@pytest.mark.parametrize("p", [0.597, 0.5999])
def test_cuda_top_p_accept_pass_rejects_tokens_just_outside_the_nucleus(p):
    """Four live tokens far apart in a row of 151,936, masses 0.3, 0.2, 0.3, 0.2: the tied
    0.2s have 0.6 above them, just more than p, so they are outside (a target 1% high let
    them in, in the interpreter's version of this check)."""
    from decoptim.core.kernels.draw import draw_seed
    from decoptim.core.kernels.top_p import _propose_and_accept

    z = torch.full((256, 151936), -torch.inf)
    z[:, [10, 50000, 100000, 151935]] = torch.tensor([0.3, 0.2, 0.3, 0.2]).log()
    z = z.cuda()
    ones, ps = torch.ones(256, device="cuda"), torch.full((256,), p, device="cuda")
    source = draw_seed(z.device, torch.Generator("cuda").manual_seed(0))
    arrivals = torch.zeros(2, 256, device="cuda", dtype=torch.int32)
    kept, _, proposals, _ = _propose_and_accept(z, ones, ps, source, arrivals)
    assert_first_proposal_inside_the_top_p_cut_kept(z, 1.0, p, proposals, kept)
    assert torch.isin(proposals, torch.tensor([50000, 151935], device="cuda")).any()


@pytest.mark.parametrize("p", [0.2, 0.9])
def test_cuda_top_p_rejection_sampler_follows_probs_on_a_long_row(p):
    """Top-p's sample proposes 4 tokens from the whole softmax and keeps the first inside
    the nucleus. 16 head tokens and 151,920 tied at −8 (~73% of the mass): at p = 0.2 the
    nucleus is 8 head tokens holding 20% of the mass, so 0.8⁴ ≈ 41% of rows keep none and
    take the edge's draw; at p = 0.9 it reaches into the tail, whose ties are all kept.
    Chi-square over the nucleus, the tail as one cell."""
    scipy_stats = pytest.importorskip("scipy.stats")
    vocab, head, rows, rounds = 151936, 16, 256, 40
    z = torch.full((rows, vocab), -8.0)
    z[:, :head] = torch.linspace(1.0, -1.0, head)
    z = z.cuda()
    q = d.TopP(p).probs(z[:1].double().cpu())[0]
    generator = torch.Generator("cuda").manual_seed(7)
    samples = torch.cat([d.TopP(p).sample(z, generator=generator) for _ in range(rounds)]).cpu()
    assert (q[samples] > 0).all(), samples[q[samples] == 0]
    draws = rows * rounds
    # The tail's tokens are tied: count them as one cell.
    counts = torch.bincount(samples.clamp(max=head), minlength=head + 1).double()
    mass = torch.cat([q[:head], q[head:].sum()[None]])
    live = mass > 0
    expected = mass[live] / mass[live].sum() * draws
    assert scipy_stats.chisquare(counts[live].numpy(), expected.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 0.35, 1e-8, torch.tensor([0.5, 1.5] * 32)])
def test_cuda_softmax_sample_equals_the_draw_over_its_probs(temperature):
    """Softmax's sample draws from exp((z − block max)/τ) in registers, with the same
    uniforms as the draw over the written q: the same tokens, bar float32 rounding of q's
    normalisation and of the blocks' rescaling, which may move a uniform across an edge."""
    from decoptim.core.kernels.draw import draw_from_probs
    from decoptim.core.kernels.table import route_name

    decoder = d.Softmax(temperature)
    z = random_logits(64, 151936, 7).cuda()
    assert route_name(decoder, z) == "softmax"
    same = 0
    for seed in range(4):
        drawn = decoder.sample(z, generator=torch.Generator("cuda").manual_seed(seed))
        written_draw = draw_from_probs(decoder.probs(z), torch.Generator("cuda").manual_seed(seed))
        same += int((drawn == written_draw).sum())
    assert same >= 4 * 64 - 2, same


@pytest.mark.parametrize(
    "decoder",
    [d.MinP(0.1, 0.45), d.MinP(0.3, 2.3), d.MinP(torch.tensor([0.05, 0.2] * 32), 1.3),
     d.Epsilon(3e-4, 0.8), d.Eta(3e-4, 0.8), d.Eta(0.05, 1.2), d.TopK(103, 0.7),
     d.TopK(torch.tensor([1, 62, 5000, 151936] * 16))],
    ids=repr,
)  # fmt: skip
def test_cuda_floor_route_keeps_the_torch_paths_tokens_and_samples_as_the_draw(decoder):
    """Min-p, epsilon, eta and top-k draw from exp((z − max z)/τ) above their floor. On rows
    whose tempered scores crowd min-p's cut, or tie top-k's k-th after rounding, the kernel
    keeps exactly the tokens the float32 torch path on the same GPU keeps; its draws equal
    the draw over the written q."""
    from decoptim.core.kernels.draw import draw_from_probs
    from decoptim.core.kernels.table import route_name

    z = random_logits(64, 151936, 8).cuda()
    if isinstance(decoder.support, d.MinPSupport):
        # Rows 0–7: z = 2 + τ·x for x on the 64 float32 neighbours either side of log p.
        p = per_row_values(decoder.support.p, 64)
        tau = per_row_values(decoder.temperature, 64)
        for row in range(8):
            cut = torch.log(torch.tensor(p[row], dtype=torch.float32))
            step = torch.nextafter(cut, torch.tensor(0.0)) - cut
            x = cut + torch.arange(-64, 65, dtype=torch.float32) * step
            z[row] = -30.0
            z[row, 0] = 2.0
            z[row, 1:130] = (2.0 + tau[row] * x).cuda()
    if isinstance(decoder.support, d.TopKSupport):
        # Rows 0–7: 200 logits one float32 step apart below the max, which (z − max z)/τ
        # rounds into ties.
        start = torch.tensor(-7.3)
        step = torch.nextafter(start, start + 1) - start
        z[:8] = -40.0
        z[:8, 0] = 2.0
        z[:8, 1:201] = (start + torch.arange(200) * step).cuda()
    assert route_name(decoder, z) == "floor"
    q, q_torch = decoder.probs(z), torch_path_probs(decoder, z)
    if isinstance(decoder.support, (d.EpsilonSupport, d.EtaSupport)):
        # Their cuts are float32 sums over the row (eta's holds the entropy), summed in a
        # different order by the kernel and by torch: a token within rounding of the cut
        # may be kept by one and not the other.
        assert_same_support_up_to_the_cut(decoder, z, q, q_torch)
    else:
        assert torch.equal(q > 0, q_torch > 0)
        torch.testing.assert_close(q, q_torch, atol=2e-6, rtol=1e-4)
    same = 0
    for seed in range(4):
        drawn = decoder.sample(z, generator=torch.Generator("cuda").manual_seed(seed))
        written_draw = draw_from_probs(q, torch.Generator("cuda").manual_seed(seed))
        assert (q.gather(1, drawn[:, None]) > 0).all()
        same += int((drawn == written_draw).sum())
    assert same >= 4 * 64 - 2, same


@pytest.mark.parametrize(
    "support",
    [d.TopKSupport(50) & d.TopPSupport(0.9), d.TopPSupport(0.5) & d.TopKSupport(2000),
     d.TopKSupport(100) & d.MinPSupport(0.05) & d.TopPSupport(0.95)],
    ids=repr,
)  # fmt: skip
def test_cuda_top_k_intersections_keep_the_torch_paths_tokens(support):
    """Top-k ∩ top-p (∩ min-p) among the top k: the same tokens as the torch path on the
    same GPU but at top-p's cut, within float32 rounding (k ≤ 1024: the candidates' branch,
    float32 sums; k = 2000: torch.topk's, float64 sums), q to float32 rounding on the
    tokens both keep, draws inside the support."""
    from decoptim.core.kernels.table import route_name

    decoder = d.SimplexDecoder(d.Shannon(), support, 0.8)
    z = random_logits(64, 151936, 9).cuda() * 2
    assert route_name(decoder, z) == "top_k_intersection"
    q, q_torch = decoder.probs(z), torch_path_probs(decoder, z)
    p = next(part.p for part in support.parts if isinstance(part, d.TopPSupport))
    k_max = next(part.k_max for part in support.parts if isinstance(part, d.TopKSupport))
    if k_max > 1024:  # torch.topk's branch: exactly the torch path's tokens
        assert torch.equal(q > 0, q_torch > 0)
    assert_same_support_up_to_the_top_p_cut(z, 0.8, p, q, q_torch)
    drawn = decoder.sample(z, generator=torch.Generator("cuda").manual_seed(0))
    assert (q.gather(1, drawn[:, None]) > 0).all()


def torch_path_probs(decoder, z):
    """The decoder's q on the same device through its torch ops, kernels switched off."""
    from decoptim.core.kernels import set_kernels_enabled

    set_kernels_enabled(False)
    try:
        return decoder.probs(z)
    finally:
        set_kernels_enabled(True)


def assert_same_support_up_to_the_cut(decoder, z, q, q_reference, reach=2e-4):
    """q and q_reference (an epsilon or eta decoder's, [rows, V]) keep the same tokens but
    those whose float64 log-probability lies within `reach` of the float64 cut, and agree
    on the tokens both keep, renormalised there. (float32 torch puts eta's cut up to 7e-5
    from float64's on the rows of random_logits(64, 151936, 8).)"""
    x = z.double() / torch.tensor(per_row_values(decoder.temperature, len(z)), device=z.device,
                                  dtype=torch.float64)[:, None]  # fmt: skip
    log_p = torch.log_softmax(x, dim=-1)
    log_eps = torch.log(torch.tensor(per_row_values(decoder.support.epsilon, len(z)),
                                     device=z.device, dtype=torch.float64))[:, None]  # fmt: skip
    cut = log_eps
    if isinstance(decoder.support, d.EtaSupport):
        entropy = -torch.special.xlogy(log_p.exp(), log_p.exp()).sum(-1, keepdim=True)
        cut = torch.minimum(log_eps, 0.5 * log_eps - entropy)
    differ = (q > 0) != (q_reference > 0)
    distance = (log_p - cut).abs()[differ]
    assert (distance <= reach).all(), distance.max()
    both = (q > 0) & (q_reference > 0)
    on_both = [torch.where(both, p, 0.0) for p in (q, q_reference)]
    on_both = [p / p.sum(-1, keepdim=True) for p in on_both]
    torch.testing.assert_close(*on_both, atol=2e-6, rtol=1e-4)


def per_row_values(value, rows: int) -> list[float]:
    """A scalar or per-row parameter as a list of `rows` Python floats."""
    if isinstance(value, torch.Tensor):
        return value.expand(rows).tolist()
    return [float(value)] * rows


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(weights="rank", top_m=16),
        dict(weights="topm", top_m=8, scores="raw"),
        dict(weights="topm", top_m=32, reference="raw", temperature=0.7),
        dict(weights="prob"),
        dict(weights="prob", solver="mirror", steps=3, scores="raw"),
        dict(weights="prob", solver="mirror", steps=1, temperature=1.3),
    ],
    ids=repr,
)
def test_fused_bok_per_row_parameters_equal_cpu(kwargs):
    z = random_logits(4, 5000, 5)
    z[0, :10] = -torch.inf  # masked tokens
    per_row = dict(
        k=torch.tensor([1, 4, 8, 16]),
        beta=torch.tensor([0.0, 0.5, 2.0, 20.0]),
        lam=torch.tensor([0.1, 0.3, 1.0, 2.0]),
    )
    decoder = d.BestOfK(**per_row, **kwargs)
    q_gpu = decoder.probs(z.cuda()).cpu()
    torch.testing.assert_close(q_gpu, decoder.probs(z), atol=2e-6, rtol=1e-4)
    assert (q_gpu[0, :10] == 0).all()


def test_kernel_paths_handle_ties_and_masked_tokens():
    z = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, -torch.inf], [0.0] * 5 + [-torch.inf]])
    for decoder in (d.TopP(0.7), d.Sparsemax(), d.Entmax(1.5), d.Entmax(1.2)):
        torch.testing.assert_close(
            decoder.probs(z.cuda()).cpu(), decoder.probs(z), atol=2e-6, rtol=0
        )
    assert (d.TopP(0.7).probs(z.cuda()).cpu()[0] > 0).tolist() == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "decoder",
    [
        d.BestOfK(8, 2.0, 0.2, weights="topm", top_m=64),
        d.BestOfK(8, 2.0, 0.2, weights="rank", top_m=256),
        d.BestOfK(8, 2.0, 0.2, weights="prob"),
        d.BestOfK(8, 2.0, 0.2, weights="prob", solver="mirror"),
        d.Sparsemax(40.0),
        d.Entmax(1.5, 20.0),
        d.TopP(0.9),
        d.TopP(0.999, temperature=3.0),
    ],
    ids=repr,
)
def test_crowded_rows_take_the_in_kernel_fallback_and_equal_cpu(decoder):
    """Rows with more candidates than the gather slots hold are solved from the whole row."""
    z = random_logits(4, 20000, 6)
    z[0] = 0.25  # every token is a candidate
    z[1, :3000] = z[1].max() + 1  # thousands of tokens tied at the top, all in one split
    z[2] = z[2].round()  # ties everywhere
    q_gpu = decoder.probs(z.cuda()).cpu()
    torch.testing.assert_close(q_gpu, decoder.probs(z), atol=2e-6, rtol=1e-4)
    drawn = decoder.sample(z.cuda(), generator=torch.Generator("cuda").manual_seed(1)).cpu()
    assert (q_gpu.gather(1, drawn[:, None]) > 0).all(), drawn


@pytest.mark.parametrize("decoder", [d.Sparsemax(4.0), d.Entmax(1.5, 3.0)], ids=repr)
def test_cuda_tsallis_draws_an_overflowing_row_as_its_probs(decoder):
    """Sparsemax and entmax draw inside their solve; a row with more tied candidates than
    a gather slot holds is drawn over its blocks: three tokens far apart and 3,000 ties at
    V = 151,936, 256 rows per call, chi-square with the ties as one category."""
    scipy_stats = pytest.importorskip("scipy.stats")
    vocab, spots = 151936, torch.tensor([5, 60000, 100000])
    z = torch.full((256, vocab), -torch.inf)
    z[:, spots] = torch.tensor([1.0, 0.6, 0.3])
    z[:, 140000:143000] = 0.0
    q = decoder.probs(z[:1].double())[0]
    assert (q[140000:143000] > 0).all()
    expected = torch.cat([q[spots], q[140000:143000].sum()[None]])
    generator = torch.Generator("cuda").manual_seed(9)
    z = z.cuda()
    drawn = torch.cat([decoder.sample(z, generator=generator) for _ in range(20)]).cpu()
    assert (q[drawn] > 0).all()
    counts = torch.cat([(drawn[:, None] == spots).sum(0), (drawn >= 140000).sum()[None]])
    pvalue = scipy_stats.chisquare(counts.double().numpy(), (expected * len(drawn)).numpy())
    assert pvalue.pvalue > 1e-3, (counts, expected * len(drawn))


def test_fused_bok_breaks_head_ties_toward_the_lower_id_like_the_cpu():
    z = torch.zeros(2, 3000)
    z[0, 100:200] = 5.0  # 100 tied tokens for 8 head places
    z[1, ::7] = 2.0
    decoder = d.BestOfK(8, 20.0, 0.2, weights="rank", top_m=8)
    q_gpu = decoder.probs(z.cuda()).cpu()
    torch.testing.assert_close(q_gpu, decoder.probs(z), atol=2e-6, rtol=1e-4)
    assert q_gpu[0, 100:108].min() > q_gpu[0, 108:200].max()


def test_bok_routes_to_the_kernels_it_has():
    from decoptim.core.kernels.table import route_name

    z = random_logits(2, 1000, 7).cuda()
    assert route_name(d.BestOfK(8, 0.02, 0.2), z) == "bok_prob"
    assert route_name(d.BestOfK(8, 0.02, 0.2, solver="mirror"), z) == "bok_prob"
    assert route_name(d.BestOfK(8, 0.02, 0.2, weights="rank", top_m=64), z) == "bok_topm"
    # Not fused: other mirror step sizes, top-M mirror, tensor weights, float64.
    assert route_name(d.BestOfK(8, 0.02, 0.2, solver="mirror", step_size=1.0), z) == "torch"
    assert route_name(d.BestOfK(8, 0.02, 0.2, solver="mirror", weights="topm"), z) == "torch"
    assert route_name(d.BestOfK(8, 0.02, 0.2, weights=torch.rand(1000)), z) == "torch"
    assert route_name(d.BestOfK(8, 0.02, 0.2), z.double()) == "torch"


def test_cuda_bok_with_a_support_takes_the_torch_path_and_equals_cpu():
    """No kernel covers BoK on a top-k or min-p support: the torch path on the GPU (with a
    warning once), the same q as on the CPU, nothing off the support."""
    z = random_logits(8, 32000, 9)
    for support in (d.TopKSupport(50), d.MinPSupport(0.05)):
        decoder = d.BestOfK(8, 2.0, 0.2, support=support)
        q_gpu = decoder.probs(z.cuda()).cpu()
        q_cpu = decoder.probs(z)
        torch.testing.assert_close(q_gpu, q_cpu, atol=2e-6, rtol=1e-4)
        assert (q_gpu[q_cpu == 0] == 0).all()
        drawn = decoder.sample(z.cuda(), generator=torch.Generator("cuda").manual_seed(0))
        assert (q_cpu.gather(1, drawn.cpu()[:, None]) > 0).all()


KERNEL_ROUTES = [
    d.Softmax(0.9),
    d.TopP(0.9),
    d.Typical(0.9),
    d.MinP(0.1),
    d.TopK(50),
    d.SimplexDecoder(d.Shannon(), d.TopKSupport(50) & d.TopPSupport(0.9)),
    d.Epsilon(3e-4),
    d.TopP(1.0),
    d.Sparsemax(),
    d.Entmax(1.5),
    d.Entmax(1.3),
    d.BestOfK(8, 0.02, 0.2),
    d.BestOfK(8, 0.02, 0.2, solver="mirror"),
    d.BestOfK(8, 2.0, 0.2, weights="topm", top_m=64),
    d.BestOfK(8, 0.5, 1.0, weights="rank", top_m=6),
]


@pytest.mark.parametrize("decoder", KERNEL_ROUTES, ids=repr)
def test_cuda_kernels_read_nan_as_minus_inf(decoder):
    """With validate=False a NaN logit drops out like −inf on the kernel paths too."""
    z = random_logits(8, 32000, 6)
    z[:, ::7] = torch.nan
    z[3, :5000] = torch.nan
    masked = torch.where(torch.isnan(z), -torch.inf, z)
    decoder.validate = False
    try:
        got = decoder.probs(z.cuda())
        drawn = decoder.sample(z.cuda(), generator=torch.Generator("cuda").manual_seed(0))
    finally:
        decoder.validate = True
    expected = decoder.probs(masked.cuda())
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-5)
    assert (expected.gather(1, drawn[:, None]) > 0).all()


@pytest.mark.parametrize("middle, light", [(-4.0, -16.0), (-2.0, -16.0)])
@pytest.mark.parametrize("p", [1.0, 0.99999, 0.9999])
def test_cuda_top_p_near_one_keeps_what_float64_keeps(middle, light, p):
    """Three tied groups in float16 (7 heavy, 5,150 middling, 10,100 light tokens): the
    kernel's cut agrees with the float64 rule wherever the light group's mass is more than
    1e-6 from 1 − p."""
    from tests.core.test_supports import three_group_row

    z = three_group_row(middle, light).float()
    light_mass = float(torch.softmax(z.double(), -1)[0, -10100:].sum())
    if abs(light_mass - (1 - p)) <= 1e-6:
        pytest.fail(f"the case is at the cut: light mass {light_mass}")  # a bad parameter set
    got = d.TopP(p).probs(z.cuda()).cpu() > 0
    assert torch.equal(got, d.TopP(p).probs(z.double()) > 0), int(got.sum())


def test_cuda_sparsemax_shifts_before_scaling():
    z = torch.tensor([[1e6, 1e6 - 0.25, 1e6 - 0.5, 0.0]]).cuda()
    expected = torch.tensor([[5 / 12, 1 / 3, 1 / 4, 0.0]])
    torch.testing.assert_close(d.Sparsemax(3.0).probs(z).cpu(), expected, atol=2e-7, rtol=0)
    torch.testing.assert_close(
        d.Entmax(1.5, 3.0).probs(z).cpu(), d.Entmax(1.5, 3.0).probs(z.cpu().double()).float()
    )


def assert_coordinated_samples_of_a_probe_row_follow_q(decoder, **options):
    """6 × 8,192 coordinated samples (groups of 8) of one row at V = 151,936, 40 live
    tokens and a long tail at −24, against q by chi-square: the live tokens, and the tail
    as one category where it holds enough mass (else at most 3 draws of it)."""
    scipy_stats = pytest.importorskip("scipy.stats")
    rows = 8192
    probe = torch.full((151936,), -24.0)
    probe[:40] = torch.linspace(-2.0, 2.0, 40)
    batch = probe.cuda().expand(rows, -1).contiguous()
    q = decoder.probs(batch[:1].cpu().double())[0]
    # Six batches of other groups (`first_group`): a run's seed is mixed with the group ids,
    # so the same ids under another seed give the same set of codes, permuted.
    groups = rows // 8
    batches = [d.group_codes(groups, 8, seed=5, device="cuda", first_group=groups * b)
               for b in range(6)]  # fmt: skip
    drawn = torch.cat(
        [decoder.sample_coordinated(batch, codes, **options)[0] for codes in batches]
    ).cpu()
    live = torch.nonzero(q[:40] > 0).flatten()
    assert torch.isin(drawn[drawn < 40], live).all()
    counts = torch.cat([(drawn[:, None] == live).sum(0), (drawn >= 40).sum()[None]]).double()
    expected = torch.cat([q[live], q[40:].sum()[None]]) * len(drawn)
    if expected[-1] < 5:  # the tail's mass is ~0
        assert counts[-1] <= 3, counts[-1]
        counts, expected = counts[:-1], expected[:-1] / expected[:-1].sum() * counts[:-1].sum()
    assert scipy_stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-4


@pytest.mark.parametrize(
    "decoder",
    [d.Softmax(0.8), d.TopP(0.9, 1.1), d.MinP(0.05, 0.7), d.Typical(0.9), d.TopK(50, 0.9),
     d.SimplexDecoder(d.Shannon(), d.TopKSupport(50) & d.TopPSupport(0.9)), d.Sparsemax(0.7),
     d.Entmax(1.5, 0.5)],
    ids=repr,
)  # fmt: skip
def test_cuda_coordinated_draw_over_the_closed_form_is_the_written_draw_and_exact(decoder):
    """A route's draw with codes as its randomness (q never written) against the coordinated
    draw over the written q at V = 151,936: the same tokens bar a code within rounding of
    an edge; then 6 × 8,192 coordinated samples of one row (groups of 8) against q by
    chi-square, and the long tail drawn no more often than its mass."""
    from decoptim.core.kernels.draw import draw_coordinated
    from decoptim.core.kernels.table import route_name

    z = random_logits(64, 151936, 12).cuda()
    assert route_name(decoder, z) != "torch"
    codes = d.group_codes(8, 8, seed=5, device="cuda")
    tokens, new = decoder.sample_coordinated(z, codes)
    q_z = decoder.probs(z)
    expected, expected_new = draw_coordinated(q_z, codes)
    same = tokens == expected
    assert int(same.sum()) >= 63, (tokens, expected)
    share = (q_z / q_z.sum(-1, keepdim=True)).gather(1, tokens[:, None])[:, 0].double()
    assert ((new.value - expected_new.value).abs()[same] <= 1e-5 / share[same]).all()
    assert torch.equal(new.step, codes.step + 1)
    assert_coordinated_samples_of_a_probe_row_follow_q(decoder)


@pytest.mark.parametrize("decoder", [d.TopP(0.9, 1.1), d.Typical(0.9)], ids=repr)
def test_cuda_coordinated_draw_by_rejection_is_the_cpu_path_and_exact(decoder):
    """`by_rejection=True` at V = 151,936 against the torch path's `coordinated_sample_in_set`
    over the kernel's written softmax and q: where a code's first pick was kept, the same
    tokens and next codes (bar a code within rounding of an edge; after a rejected pick the
    float32 rounding of its bucket is magnified by 1/p of its token, so those rows are
    checked for membership only); then the probe row's samples against q by chi-square."""
    z = random_logits(64, 151936, 12).cuda()
    codes = d.group_codes(8, 8, seed=5, device="cuda")
    tokens, new = decoder.sample_coordinated(z, codes, by_rejection=True)
    q_z, p_z = decoder.probs(z).cpu(), d.Softmax(decoder.temperature).probs(z).cpu()
    expected, expected_new = d.coordinated_sample_in_set(p_z, q_z, codes.to("cpu"))
    first, _ = d.coordinated_sample(p_z, codes.to("cpu"))
    kept = q_z.gather(1, first[:, None])[:, 0] > 0
    assert int(kept.sum()) >= 32, kept
    tokens, new = tokens.cpu(), new.to("cpu")
    same = tokens == expected
    assert int((same | ~kept).sum()) >= 63, (tokens, expected, kept)
    assert (q_z.gather(1, tokens[:, None]) > 0).all(), tokens
    compared = kept & same
    share = (p_z / p_z.sum(-1, keepdim=True)).gather(1, tokens[:, None])[:, 0].double()
    gap = (new.value - expected_new.value).abs()[compared]
    assert (gap <= 1e-5 / share[compared]).all(), gap
    assert torch.equal(new.step, codes.step.cpu() + 1)
    assert_coordinated_samples_of_a_probe_row_follow_q(decoder, by_rejection=True)


@pytest.mark.parametrize(
    "decoder",
    [d.BestOfK(8, 0.05, 1.0, weights="topm", top_m=4),
     d.BestOfK(8, 0.5, 1.0, weights="rank", top_m=64, temperature=4.0)],
    ids=repr,
)  # fmt: skip
def test_cuda_bok_topm_coordinated_draw_is_the_cpu_path_in_head_order_and_exact(decoder):
    """Best-of-K's top-M route draws a code over its head (in the head's order), then the
    tail: the CPU path's coordinated draw over q permuted that way picks the same tokens
    bar a code within rounding of an edge (V = 151,936); then 6 × 8,192 coordinated samples
    of one row, head and tail, against q by chi-square."""
    from decoptim.core.kernels.bok_topm import _head
    from decoptim.core.kernels.table import _bok_topm_problem, route_name

    z = (random_logits(64, 151936, 14) * 0.7).cuda()
    assert route_name(decoder, z) == "bok_topm"
    codes = d.group_codes(8, 8, seed=7, device="cuda")
    tokens, new = decoder.sample_coordinated(z, codes)
    q = decoder.probs(z).double()
    head, _ = _head(z, _bok_topm_problem(decoder, z))
    in_head = torch.zeros_like(q, dtype=torch.bool).scatter_(1, head.index, True)
    tail = torch.arange(z.shape[1], device="cuda").expand_as(q)[~in_head].reshape(len(z), -1)
    order = torch.cat([head.index, tail], 1).cpu()
    place, expected_new = d.coordinated_sample(q.cpu().gather(1, order), codes.to("cpu"))
    expected = order.gather(1, place[:, None])[:, 0]
    same = tokens.cpu() == expected
    assert int(same.sum()) >= 63, (tokens, expected)
    assert 0 < int(in_head.gather(1, tokens[:, None]).sum()) < len(z)
    share = (q / q.sum(-1, keepdim=True)).gather(1, tokens[:, None])[:, 0].cpu()
    assert ((new.value.cpu() - expected_new.value).abs()[same] <= 1e-5 / share[same]).all()
    assert torch.equal(new.step, codes.step + 1)
    assert_coordinated_samples_of_a_probe_row_follow_q(decoder)


@pytest.mark.parametrize(
    "decoder",
    [d.BestOfK(8, 2.0, 0.3), d.BestOfK(6, 1.0, 0.5, solver="mirror", steps=1, temperature=1.3)],
    ids=repr,
)  # fmt: skip
def test_cuda_bok_prob_coordinated_draw_is_the_cpu_path_in_head_order_and_exact(decoder):
    """Best-of-K w = p draws a code over its head (the tokens its gather kept, in id order),
    then the tail: the CPU path's coordinated draw over q permuted that way picks the same
    tokens bar a code within rounding of an edge (V = 151,936, the crowded rows among them,
    whose q is written in full and drawn in id order); then 6 × 8,192 coordinated samples
    of one row, head and tail, against q by chi-square."""
    from decoptim.core.kernels import table
    from decoptim.core.kernels.bok_prob import _solve
    from decoptim.core.kernels.bok_terms import GAP, INV_TAU_P, Z_MAX, C
    from decoptim.core.kernels.candidates import CAP

    z = torch.cat([crowded_rows(151936, 8), random_logits(59, 151936, 15) * 0.3]).cuda()
    assert table.route_name(decoder, z) == "bok_prob"
    codes = d.group_codes(8, 8, seed=7, device="cuda")
    tokens, new = decoder.sample_coordinated(z, codes)
    q = decoder.probs(z).double()
    _, candidates, _, terms, _, _ = _solve(z, *table._bok_prob_args(decoder, z))
    overflowed = (candidates.count > CAP).any(-1)
    terms = terms[:, :, None]
    slope = terms[:, INV_TAU_P.value] + terms[:, C.value]
    in_head = (slope * (z - terms[:, Z_MAX.value]) >= terms[:, GAP.value]) & ~overflowed[:, None]
    ids = torch.arange(z.shape[1], device="cuda").expand_as(q)
    order = torch.sort((~in_head).int(), dim=1, stable=True).indices  # head first, by id
    order = torch.where(overflowed[:, None], ids, order).cpu()
    place, expected_new = d.coordinated_sample(q.cpu().gather(1, order), codes.to("cpu"))
    expected = order.gather(1, place[:, None])[:, 0]
    same = tokens.cpu() == expected
    assert int(same.sum()) >= 63, (tokens, expected)
    assert 0 < int(in_head.gather(1, tokens[:, None]).sum()) < len(z)
    assert overflowed.any() and not overflowed.all(), overflowed
    share = (q / q.sum(-1, keepdim=True)).gather(1, tokens[:, None])[:, 0].cpu()
    assert ((new.value.cpu() - expected_new.value).abs()[same] <= 1e-5 / share[same]).all()
    assert torch.equal(new.step, codes.step + 1)
    assert_coordinated_samples_of_a_probe_row_follow_q(decoder)


def test_cuda_coordinated_draw_equals_the_cpu_path_and_stays_exact():
    """The CUDA kernel against the torch path from the same codes (tokens equal, codes to
    1e-11), then 200 steps on the GPU and a chi-square of the next tokens against q, and
    the long tail of V = 151,936 drawn no more than its mass."""
    scipy_stats = pytest.importorskip("scipy.stats")
    z = random_logits(64, 151936, 8)
    z[1, 10:] -= 30.0
    q = torch.softmax(z, -1)
    codes = d.group_codes(8, 8, seed=2)
    expected, expected_codes = d.coordinated_sample(q, codes)
    tokens, new = d.coordinated_sample(q.cuda(), codes.to("cuda"))
    assert torch.equal(tokens.cpu(), expected)
    # The paths sum in different orders: bucket edges differ by up to V·2⁻⁵² of the mass,
    # so a code by up to that over the chosen token's share q_t.
    chosen = (q.double() / q.double().sum(-1, keepdim=True)).gather(1, expected[:, None])[:, 0]
    assert ((new.value.cpu() - expected_codes.value).abs() <= 151936 * 2.0**-52 / chosen).all()
    rows = 8192
    codes = d.group_codes(rows // 8, 8, seed=3, device="cuda")
    flat = torch.full((rows, 64), 1 / 64, device="cuda")
    for _ in range(200):
        _, codes = d.coordinated_sample(flat, codes, validate=False)
    probe = torch.softmax(torch.randn(64, generator=torch.Generator().manual_seed(0)), -1)
    tokens, _ = d.coordinated_sample(probe.cuda().expand(rows, -1).contiguous(), codes)
    counts = torch.bincount(tokens.cpu(), minlength=64).double()
    expected = probe.double() / probe.double().sum() * rows
    assert scipy_stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3
    tail = torch.full((1, 151936), -24.0)
    tail[0, :8] = torch.linspace(0, 2, 8)
    q_tail = torch.softmax(tail, -1).cuda().expand(rows, -1).contiguous()
    drawn = torch.cat(
        [d.coordinated_sample(q_tail, d.group_codes(rows // 8, 8, seed=3, device="cuda",
                                                    first_group=rows // 8 * b))[0]
         for b in range(25)]
    )  # fmt: skip
    assert int((drawn >= 8).sum()) <= 3  # expected 0.04 of 204,800


@pytest.mark.parametrize("sigma", [3.0, 1.0, 0.05])
def test_cuda_top_p_and_typical_sets_are_the_same_on_every_run(sigma):
    """The top-p gather puts a token in its slot by an atomic count, so the slots' order is
    whatever order the GPU ran them in; the solve sums them in fixed point, so q is the same
    bit for bit on every run, and so are coordinated draws (V = 151,936, rows that settle
    after different numbers of profile passes), with the float64 reference's support."""
    generator = torch.Generator("cuda").manual_seed(7)
    z = torch.randn(64, 151_936, device="cuda", generator=generator) * sigma
    codes = d.group_codes(8, 8, seed=1, device="cuda")
    for decoder in (d.TopP(0.9, validate=False), d.Typical(0.9, validate=False)):
        q = decoder.probs(z)
        assert all(torch.equal(decoder.probs(z), q) for _ in range(4)), decoder
        tokens = decoder.sample_coordinated(z, codes)[0]
        for _ in range(3):
            assert torch.equal(decoder.sample_coordinated(z, codes)[0], tokens), decoder
        reference = decoder.probs(z.double().cpu())
        if isinstance(decoder, d.TopP):
            assert_same_support_up_to_the_top_p_cut(z.cpu(), 1.0, 0.9, q.cpu(), reference)
        else:
            assert_same_support_up_to_the_typical_edge(z.cpu(), 1.0, 0.9, q.cpu(), reference, 2e-4)
