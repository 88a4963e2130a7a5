"""The transformers integration: exact distributions inside generate, pitfalls guarded,
log-probabilities recorded, and K samples through self-consistency on a real model."""

import pytest
import torch

import decoptim as d

transformers = pytest.importorskip("transformers")
from transformers import GenerationConfig, LogitsProcessorList  # noqa: E402

from decoptim.integrations import transformers as dt  # noqa: E402
from decoptim.pipelines.selection import self_consistency  # noqa: E402
from tests.conftest import random_logits, tiny_llama  # noqa: E402

DECODERS = [
    d.Softmax(0.7),
    d.TopK(5),
    d.TopP(0.8, temperature=1.3),
    d.MinP(0.1),
    d.Sparsemax(),
    d.BestOfK(8, 0.02, 0.2),
    d.BestOfK(4, 2.0, 0.3, weights="topm", top_m=4, solver="mirror"),
]


@pytest.fixture(scope="module")
def tiny_model():
    model = tiny_llama(64, layers=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaked logits, so truncation actually bites
    return model


@pytest.fixture(scope="module")
def smollm2():
    from decoptim.eval.model_cache import load_smollm2

    return load_smollm2()


def generate_through(model, processor_for, input_ids, steps, **extra):
    """model.generate's output for `steps` new tokens after `input_ids` (no EOS, pad 0, the
    logits returned), through the processor `processor_for(config)` builds."""
    config = dt.neutral_generation_config(
        model.generation_config,
        max_new_tokens=steps,
        return_dict_in_generate=True,
        output_logits=True,
        pad_token_id=0,
        eos_token_id=None,
        **extra,
    )
    return model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        generation_config=config,
        logits_processor=LogitsProcessorList([processor_for(config)]),
    )


def sampled_distributions(model, decoder, input_ids, steps=3, **extra):
    def processor(config):
        return dt.DecoderLogitsProcessor(decoder, config)

    return generate_through(model, processor, input_ids, steps, output_scores=True, **extra)


@pytest.mark.parametrize("decoder", DECODERS, ids=repr)
def test_generate_samples_from_exactly_decoder_probs(tiny_model, decoder):
    input_ids = torch.randint(3, 64, (3, 5), generator=torch.Generator().manual_seed(1))
    out = sampled_distributions(tiny_model, decoder, input_ids, num_return_sequences=2)
    for scores, logits in zip(out.scores, out.logits, strict=True):
        torch.testing.assert_close(
            torch.softmax(scores, -1), decoder.probs(logits), atol=1e-6, rtol=0
        )


def test_per_row_parameters_follow_the_rows(tiny_model):
    decoder = d.TopK(torch.tensor([1, 3, 10, 64]))
    input_ids = torch.randint(3, 64, (4, 4), generator=torch.Generator().manual_seed(2))
    out = sampled_distributions(tiny_model, decoder, input_ids, steps=1)
    support = (torch.softmax(out.scores[0], -1) > 0).sum(-1)
    assert support.tolist()[:2] == [1, 3] and support[3] == 64


def test_model_defaults_would_change_the_distribution(tiny_model):
    """Without the neutral config, transformers' default top_k=50 and a temperature bite."""
    with pytest.raises(ValueError, match=r"top_k=None \(transformers uses 50\)"):
        dt.check_generation_config(GenerationConfig(do_sample=True))
    risky = GenerationConfig(do_sample=True, temperature=0.7, top_k=50, top_p=0.9, min_p=0.05)
    with pytest.raises(ValueError) as error:
        dt.DecoderLogitsProcessor(d.Softmax(), risky)
    for field in ("temperature=0.7", "top_k=50", "top_p=0.9", "min_p=0.05"):
        assert field in str(error.value)
    dt.check_generation_config(dt.neutral_generation_config(risky))
    # And it matters: the raw defaults make generate sample from something else.
    config = GenerationConfig(
        do_sample=True,
        max_new_tokens=1,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        pad_token_id=0,
        temperature=0.5,
    )
    input_ids = torch.randint(3, 64, (2, 4), generator=torch.Generator().manual_seed(3))
    out = tiny_model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        generation_config=config,
        logits_processor=LogitsProcessorList([dt.DecoderLogitsProcessor(d.Softmax())]),
    )
    assert not torch.allclose(torch.softmax(out.scores[0], -1), torch.softmax(out.logits[0], -1))


def test_processor_rejects_a_non_decoder():
    with pytest.raises(TypeError, match="decoptim Decoder"):
        dt.DecoderLogitsProcessor(torch.softmax)


def test_graphed_processor_equals_the_eager_one():
    decoder = d.BestOfK(8, 0.02, 0.2, weights="topm", top_m=16)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    eager = dt.DecoderLogitsProcessor(decoder)
    graphed = dt.DecoderLogitsProcessor(decoder, cuda_graph=True)
    ids = torch.zeros(4, 1, dtype=torch.long, device=device)
    for seed in range(3):
        scores = random_logits(4, 5000, seed).to(device)
        assert torch.equal(graphed(ids, scores), eager(ids, scores))
    scores[1, 7] = torch.nan
    with pytest.raises(ValueError, match=r"contain NaN \(first at row 1\)"):
        graphed(ids, scores)


def test_graphed_coordinated_processor_equals_the_eager_one():
    """On CUDA the coordinated step replays as a graph, with the codes carried through it:
    the same forced tokens step after step; the logits check still runs before it."""
    decoder = d.TopP(0.9)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    eager = dt.CoordinatedLogitsProcessor(decoder, 4)
    graphed = dt.CoordinatedLogitsProcessor(decoder, 4, cuda_graph=True)
    ids = torch.zeros(8, 1, dtype=torch.long, device=device)
    for seed in range(3):
        scores = random_logits(8, 5000, seed).to(device)
        assert torch.equal(graphed(ids, scores), eager(ids, scores))
        assert all(torch.equal(a, b) for a, b in zip(graphed.codes, eager.codes, strict=True))
    assert graphed._graphed.eager is False
    scores[1, 7] = torch.nan
    with pytest.raises(ValueError, match=r"contain NaN \(first at row 1\)"):
        graphed(ids, scores)


def test_recorded_logprobs_equal_teacher_forcing(tiny_model):
    recorder = dt.RawLogProbRecorder()
    config = dt.neutral_generation_config(
        tiny_model.generation_config,
        max_new_tokens=6,
        pad_token_id=0,
        eos_token_id=None,
        return_dict_in_generate=True,
    )
    input_ids = torch.randint(3, 64, (2, 4), generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    out = tiny_model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        generation_config=config,
        logits_processor=LogitsProcessorList([recorder, dt.DecoderLogitsProcessor(d.TopK(8))]),
    )
    generated = out.sequences[:, 4:]
    recorded = recorder.token_logprobs(generated)
    with torch.no_grad():
        logits = tiny_model(out.sequences).logits[:, 3:-1]
    forced = torch.log_softmax(logits, -1).gather(-1, generated.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(recorded, forced, atol=1e-4, rtol=1e-4)


PROMPTS = [
    "What is 3 + 4? Put the final answer in \\boxed{}.",
    "What is 10 - 6? Put the final answer in \\boxed{}.",
]


def test_real_model_first_step_equals_decoder_probs(smollm2):
    model, tokenizer = smollm2
    assert model.config.vocab_size == 49152
    prompts = [dt.format_prompt(tokenizer, p) for p in PROMPTS]
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    for decoder in (d.TopP(0.9, temperature=0.8), d.BestOfK(8, 0.05, 0.5), d.MinP(0.05)):
        config = dt.neutral_generation_config(
            model.generation_config,
            max_new_tokens=1,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
        )
        out = model.generate(
            **encoded,
            generation_config=config,
            logits_processor=LogitsProcessorList([dt.DecoderLogitsProcessor(decoder, config)]),
        )
        torch.testing.assert_close(
            torch.softmax(out.scores[0], -1), decoder.probs(out.logits[0]), atol=1e-6, rtol=0
        )


def test_real_model_seeded_run_is_reproducible(smollm2):
    model, tokenizer = smollm2
    run = lambda seed: dt.generate(  # noqa: E731
        model, tokenizer, PROMPTS, d.TopP(0.95), n=2, max_new_tokens=12, seed=seed, batch_size=2
    )
    first, again, other = run(7), run(7), run(8)
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    assert [s.texts for s in first] != [s.texts for s in other]


@pytest.mark.parametrize(
    "decoder", [d.Softmax(0.7), d.TopP(0.9), d.BestOfK(8, 0.02, 0.2)], ids=repr
)
def test_real_model_k_samples_through_self_consistency(smollm2, decoder):
    model, tokenizer = smollm2
    k, max_new = 4, 40
    results = dt.generate(
        model, tokenizer, PROMPTS, decoder, n=k, max_new_tokens=max_new, seed=0, batch_size=2
    )
    assert [r.prompt for r in results] == PROMPTS
    for samples in results:
        assert len(samples.texts) == len(samples.token_ids) == len(samples.lengths) == k
        for ids, length, total, mean in zip(
            samples.token_ids,
            samples.lengths,
            samples.logprob_sum,
            samples.logprob_mean,
            strict=True,
        ):
            assert 1 <= length == len(ids) <= max_new
            assert total <= 0 and abs(mean - total / length) < 1e-9
            assert tokenizer.eos_token_id not in ids[:-1]
        vote = self_consistency(samples.texts)
        assert 0 <= vote.votes <= k and vote.distinct <= k
        if vote.answer is not None:
            assert vote.votes >= 1


def test_generate_rejects_bad_arguments(smollm2):
    model, tokenizer = smollm2
    with pytest.raises(TypeError, match="sequence of strings"):
        dt.generate(model, tokenizer, "one prompt", d.Softmax())
    with pytest.raises(ValueError, match="n must be an int >= 1, got n=0"):
        dt.generate(model, tokenizer, ["a"], d.Softmax(), n=0)
    with pytest.raises(ValueError, match=r"by_rejection=True draws coordinated groups"):
        dt.generate(model, tokenizer, ["a"], d.TopP(0.9), by_rejection=True)
    with pytest.raises(ValueError, match=r"by_rejection=True needs a decoder whose q is"):
        dt.generate(model, tokenizer, ["a"], d.Softmax(), coordinated=True, by_rejection=True)


# --- coordinated samples -----------------------------------------------------------------


def coordinated_run(model, decoder, prompts, k, steps=3, seed=0, first_group=0, **options):
    def processor(config):
        return dt.CoordinatedLogitsProcessor(decoder, k, seed, first_group, config, **options)

    out = generate_through(model, processor, prompts, steps, num_return_sequences=k)
    return out.sequences[:, prompts.shape[1] :], out.logits


@pytest.mark.parametrize(
    "decoder", [d.Softmax(1.0), d.TopP(0.9), d.BestOfK(8, 0.02, 0.2)], ids=repr
)
def test_coordinated_generate_stratifies_each_group_and_matches_the_core(tiny_model, decoder):
    k, groups = 8, 24
    prompts = torch.randint(3, 64, (groups, 4), generator=torch.Generator().manual_seed(4))
    tokens, logits = coordinated_run(tiny_model, decoder, prompts, k)
    # Step 1: the rows of a group share their prompt, so each token's count in the group
    # is ⌊k·q⌋ or ⌈k·q⌉.
    q = decoder.probs(logits[0]).double().reshape(groups, k, -1)[:, 0]
    counts = torch.stack([torch.bincount(t, minlength=64) for t in tokens[:, 0].reshape(groups, k)])
    assert (counts >= torch.floor(k * q - 1e-6)).all() and (
        counts <= torch.ceil(k * q + 1e-6)
    ).all()
    # The same draws as the core's, step by step, from the same codes (rows that drew the
    # model's EOS, id 2, are padded afterwards).
    codes = d.group_codes(groups, k, seed=0)
    for step, step_logits in enumerate(logits):
        expected, codes = decoder.sample_coordinated(step_logits, codes)
        alive = (tokens[:, :step] != 2).all(1)
        assert torch.equal(tokens[alive, step], expected[alive]), step


def test_coordinated_generate_by_rejection_matches_the_core(tiny_model):
    """`by_rejection=True` through generate: the core's draws by rejection, step by step, and
    a decoder without a set of fixed mass (or a non-bool) refused by name."""
    decoder, k, groups = d.TopP(0.8), 8, 6
    prompts = torch.randint(3, 64, (groups, 4), generator=torch.Generator().manual_seed(7))
    tokens, logits = coordinated_run(tiny_model, decoder, prompts, k, by_rejection=True)
    codes = d.group_codes(groups, k, seed=0)
    plain_codes = codes
    differs = False
    for step, step_logits in enumerate(logits):
        expected, codes = decoder.sample_coordinated(step_logits, codes, by_rejection=True)
        alive = (tokens[:, :step] != 2).all(1)
        assert torch.equal(tokens[alive, step], expected[alive]), step
        over_q, plain_codes = decoder.sample_coordinated(step_logits, plain_codes)
        differs |= not torch.equal(over_q, expected)
    assert differs  # the option changed the draws
    with pytest.raises(ValueError, match=r"by_rejection=True needs a decoder whose q is"):
        dt.CoordinatedLogitsProcessor(d.MinP(0.1), k, by_rejection=True)
    with pytest.raises(TypeError, match=r"by_rejection must be a bool"):
        dt.CoordinatedLogitsProcessor(decoder, k, by_rejection="yes")


def test_coordinated_generate_draws_each_sample_from_q(tiny_model):
    """Randomised probability integral transform: with F the CDF of q (token order) and V
    uniform, F(t − 1) + V·q_t is uniform iff t ~ q. Sample 0 of 400 groups over 3 steps."""
    scipy_stats = pytest.importorskip("scipy.stats")
    decoder, k, groups = d.Softmax(1.3), 4, 400
    prompts = torch.randint(3, 64, (groups, 3), generator=torch.Generator().manual_seed(5))
    tokens, logits = coordinated_run(tiny_model, decoder, prompts, k, seed=3)
    generator = torch.Generator().manual_seed(6)
    transformed = []
    for step, step_logits in enumerate(logits):
        q = decoder.probs(step_logits).double()[::k]
        chosen = tokens[::k, step]
        below = (
            torch.cumsum(q, -1).gather(-1, chosen[:, None])[:, 0]
            - q.gather(-1, chosen[:, None])[:, 0]
        )
        transformed.append(
            below
            + torch.rand(groups, generator=generator, dtype=torch.float64)
            * q.gather(-1, chosen[:, None])[:, 0]
        )
    assert scipy_stats.kstest(torch.cat(transformed).numpy(), "uniform").pvalue > 1e-3


def test_coordinated_processor_rejects_bad_layouts(tiny_model):
    prompts = torch.randint(3, 64, (2, 4), generator=torch.Generator().manual_seed(6))
    processor = dt.CoordinatedLogitsProcessor(d.Softmax(), 3)
    with pytest.raises(ValueError, match=r"4 rows is not a whole number of groups of k=3"):
        processor(prompts.repeat(2, 1), torch.zeros(4, 64))
    with pytest.raises(ValueError, match=r"rows 0..1 form group 0 but do not share one prompt"):
        dt.CoordinatedLogitsProcessor(d.Softmax(), 2)(prompts, torch.zeros(2, 64))
    with pytest.raises(
        ValueError, match=r"num_return_sequences=2 in the generation config is not a multiple"
    ):
        dt.CoordinatedLogitsProcessor(
            d.Softmax(), 4, generation_config=dt.neutral_generation_config(num_return_sequences=2)
        )
    with pytest.raises(ValueError, match=r"k must be an int >= 1, got k=0"):
        dt.CoordinatedLogitsProcessor(d.Softmax(), 0)
    processor = dt.CoordinatedLogitsProcessor(d.Softmax(), 2)
    processor(prompts.repeat_interleave(2, 0), torch.zeros(4, 64))
    with pytest.raises(ValueError, match=r"one CoordinatedLogitsProcessor per generate call"):
        processor(prompts, torch.zeros(2, 64))


def test_real_model_coordinated_run_is_reproducible(smollm2):
    # (Whether prompts share a batch changes the model's logits through padding, so groups
    # are compared across batch compositions in the core's tests, on fixed logits.)
    model, tokenizer = smollm2
    run = lambda seed: dt.generate(  # noqa: E731
        model, tokenizer, PROMPTS, d.Softmax(1.0), n=4, max_new_tokens=10, seed=seed,
        batch_size=2, coordinated=True,
    )  # fmt: skip
    first, again, other = run(0), run(0), run(1)
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    assert [s.token_ids for s in first] != [s.token_ids for s in other]
    for samples in first:
        assert len(samples.texts) == 4 and all(1 <= n <= 10 for n in samples.lengths)
    # two groups of 2 per prompt: group 1 of prompt 0 is global group 1, as in any batch
    halves = dt.generate(
        model, tokenizer, PROMPTS, d.Softmax(1.0), n=4, max_new_tokens=10, seed=0,
        batch_size=2, coordinated=True, group_size=2,
    )  # fmt: skip
    assert [len(s.texts) for s in halves] == [4, 4]
    with pytest.raises(ValueError, match=r"n=4 is not a multiple of group_size=3"):
        dt.generate(model, tokenizer, PROMPTS, d.Softmax(), n=4, coordinated=True, group_size=3)
