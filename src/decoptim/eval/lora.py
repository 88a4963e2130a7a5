"""SmolLM2-135M-Instruct fine-tuned on `arith` with a LoRA adapter: a pretrained testbed.

LoRA (Hu et al., 2021) freezes each targeted weight W and learns W + (α/r)·B·A with
A ∈ R^{r×in}, B ∈ R^{out×r}, B = 0 at the start. `train_smollm2_arith` trains the adapter
on freshly generated arith problems (seeded), saves it (`adapter.safetensors`, a few MB)
and, beside it, the merged model as an ordinary Hugging Face directory, so that every
backend (transformers, vLLM) loads it like any other model. `smollm2_arith_path` trains
once and caches the result; the model alias is `smollm2-arith`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from .arith_model import ArithFit, fit_on_arith
from .model_cache import build_atomically, smollm2_path
from .training import (
    cached_or_built,
    end_with_tokenizer_eos,
    save_trained,
    seeded,
    smollm2_tokenizer,
)

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (α/r)·B·A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got rank={rank}")
        self.base = base.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def _swap_modules(model: nn.Module, make) -> int:
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = make(name, child)
            if replacement is not None:
                setattr(parent, name, replacement)
                swapped += 1
    return swapped


def add_lora(model: nn.Module, rank: int, alpha: float, targets=TARGETS) -> int:
    """Freeze `model` and wrap every linear layer named in `targets`; returns how many."""
    model.requires_grad_(False)
    count = _swap_modules(
        model,
        lambda name, child: (
            LoRALinear(child, rank, alpha)
            if name in targets and isinstance(child, nn.Linear)
            else None
        ),
    )
    if count == 0:
        raise ValueError(f"no linear layer named one of {targets} in {type(model).__name__}")
    return count


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight, leaving a plain model."""
    _swap_modules(model, lambda _, child: child.merged() if isinstance(child, LoRALinear) else None)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.named_parameters() if "lora_" in k}


@dataclass(frozen=True)
class LoraTraining(ArithFit):
    difficulty: int = 3
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-3
    rank: int = 8
    alpha: float = 16.0
    PREFIX: ClassVar[str] = "smollm2-arith"


def train_smollm2_arith(
    out_dir: Path, config: LoraTraining = LoraTraining(), progress: bool = True
) -> Path:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    rng = seeded(config)
    base = smollm2_path()
    tokenizer = smollm2_tokenizer(base)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True).to(device)
    layers = add_lora(model, config.rank, config.alpha)
    start = time.time()
    loss = fit_on_arith(
        model,
        tokenizer,
        rng,
        config,
        weight_decay=0.0,
        bos="",  # the eval prompt is tokenized without a BOS
        desc="train smollm2-arith LoRA",
        progress=progress,
    )
    model.eval()
    adapter = lora_state_dict(model)
    merge_lora(model)
    model.cpu()
    end_with_tokenizer_eos(model, tokenizer)

    def write(folder: Path) -> None:
        save_file(adapter, str(folder / "adapter.safetensors"))
        record = {
            **asdict(config),
            "adapted_layers": layers,
            "adapter_parameters": sum(t.numel() for t in adapter.values()),
            "seconds": round(time.time() - start, 1),
            "final_loss": loss,
            "device": device.type,
        }
        save_trained(folder, model, tokenizer, record)

    return build_atomically(out_dir, write)


def smollm2_arith_path(
    config: LoraTraining = LoraTraining(), cache: Path | None = None, progress: bool = True
) -> Path:
    """Directory of SmolLM2 + the merged arith adapter for `config`, training on first use."""

    def build(target: Path) -> Path:
        return train_smollm2_arith(target, config, progress)

    return cached_or_built(config, cache, "adapter.safetensors", build)
