"""The backends hand coordination to the engines: transformers' generate, vLLM's params."""

from types import SimpleNamespace

import pytest

from decoptim.core.specs import parse_spec
from decoptim.eval.backends import TransformersBackend, VllmBackend
from decoptim.eval.tasks import ArithTask


def test_transformers_backend_draws_coordinated_groups_through_generate(tiny_arith_model):
    from decoptim.integrations.transformers import generate

    backend = TransformersBackend(str(tiny_arith_model), "cpu")
    task = ArithTask()
    prompts = [p.prompt for p in task.load(limit=2)]
    spec = parse_spec("topk:k=20")
    drawn = backend.generate(prompts, spec, 1.3, 4, 6, 11, task, coordinated=True, group_size=2)
    direct = generate(
        backend.model,
        backend.tokenizer,
        prompts,
        spec.build(1.3),
        n=4,
        max_new_tokens=6,
        seed=11,
        batch_size=2,
        coordinated=True,
        group_size=2,
    )
    assert [[s.text for s in samples] for samples in drawn] == [r.texts for r in direct]
    iid = backend.generate(prompts, spec, 1.3, 4, 6, 11, task)
    assert [[s.text for s in samples] for samples in iid] != [r.texts for r in direct]
    with pytest.raises(ValueError, match="n=4 is not a multiple of group_size=3"):
        backend.generate(prompts, spec, 1.3, 4, 6, 11, task, coordinated=True, group_size=3)


class FakeLLM:
    """Records the requests; completes each with its prompt and its request number."""

    def __init__(self):
        self.requests = []

    def get_tokenizer(self):
        return SimpleNamespace(chat_template=None)

    def generate(self, texts, params, use_tqdm=False):
        self.requests += list(zip(texts, params, strict=True))
        return [
            SimpleNamespace(
                outputs=[
                    SimpleNamespace(text=f"{t}|{i}", token_ids=[1, 2], cumulative_logprob=-1.0)
                ]
            )
            for i, t in enumerate(texts)
        ]


@pytest.fixture
def vllm_integration():
    pytest.importorskip("vllm")
    from decoptim.integrations import vllm as integration

    return integration


def test_vllm_backend_refuses_coordinated_configs_without_the_integration(
    vllm_integration, monkeypatch
):
    monkeypatch.delattr(vllm_integration, "coordinated_sampling_params", raising=False)
    backend = VllmBackend("fake", llm=FakeLLM())
    with pytest.raises(ValueError, match="coordinated sampling through --backend vllm needs"):
        backend.generate(["Q"], parse_spec("softmax"), 1.0, 4, 8, 0, ArithTask(), True, 2)


def test_vllm_backend_sends_one_request_per_coordinated_sample(vllm_integration, monkeypatch):
    """The path for `coordinated_sampling_params` (written in another change of
    decoptim.integrations.vllm), here with a stand-in that has its documented signature."""
    calls = []

    def stand_in(spec, temperature, n, group_size, seed, first_group, **fields):
        calls.append((spec.name, temperature, n, group_size, seed, first_group, fields))
        return [("params", first_group + i // group_size, i % group_size) for i in range(n)]

    monkeypatch.setattr(vllm_integration, "coordinated_sampling_params", stand_in, raising=False)
    llm = FakeLLM()
    backend = VllmBackend("fake", llm=llm)
    out = backend.generate(["A", "B"], parse_spec("softmax"), 0.8, 4, 8, 5, ArithTask(), True, 2)
    fields = {"max_tokens": 8, "logprobs": 0}
    assert calls == [("softmax", 0.8, 4, 2, 5, 0, fields), ("softmax", 0.8, 4, 2, 5, 2, fields)]
    # group-major per prompt: prompt B's groups are 2 and 3
    assert [params for _, params in llm.requests[4:]] == [
        ("params", 2, 0),
        ("params", 2, 1),
        ("params", 3, 0),
        ("params", 3, 1),
    ]
    assert [[s.text for s in samples] for samples in out] == [
        ["A|0", "A|1", "A|2", "A|3"],
        ["B|4", "B|5", "B|6", "B|7"],
    ]
    assert out[0][0].tokens == 2 and out[0][0].logprob_mean == -0.5

    def too_few(spec, temperature, n, group_size, seed, first_group, **fields):
        return stand_in(spec, temperature, n, group_size, seed, first_group, **fields)[:-1]

    monkeypatch.setattr(vllm_integration, "coordinated_sampling_params", too_few)
    with pytest.raises(ValueError, match="gave 3 SamplingParams for n=4"):
        backend.generate(["A"], parse_spec("softmax"), 0.8, 4, 8, 5, ArithTask(), True, 2)
