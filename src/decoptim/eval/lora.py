"""SmolLM2-135M-Instruct fine-tuned on `arith` with a LoRA adapter: a pretrained testbed.

LoRA (Hu et al., 2021) freezes each targeted weight W and learns W + (α/r)·B·A with
A ∈ R^{r×in}, B ∈ R^{out×r}, B = 0 at the start; the adapter is peft's (`with_lora`:
LoraConfig and get_peft_model, no dropout, no bias; merged by merge_and_unload).
`train_smollm2_arith` trains the adapter on freshly generated arith problems (seeded),
saves it (`adapter.safetensors`, peft's state dict, a few MB) and, beside it, the merged
model as an ordinary Hugging Face directory, so that every backend (transformers, vLLM)
loads it like any other model. `smollm2_arith_path` trains once and caches the result; the
model alias is `smollm2-arith`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch

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


def with_lora(model, rank: int, alpha: float, targets=TARGETS):
    """`model` as a peft model with a fresh LoRA adapter (rank `rank`, scale alpha/rank) on
    every linear layer named in `targets`; only the adapter is trainable. peft raises a
    ValueError for a rank below 1 or targets that name no layer."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def adapter_weights(adapted) -> dict[str, torch.Tensor]:
    """The adapter's tensors (peft's state dict: lora_A and lora_B per layer), on the CPU."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(adapted)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


@dataclass(frozen=True)
class LoraTraining(ArithFit):
    difficulty: int = 3
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-3
    rank: int = 8
    alpha: float = 16.0
    PREFIX: ClassVar[str] = "smollm2-arith"
    BOS: ClassVar[str] = ""  # the eval prompt is tokenized without a BOS
    WEIGHT_DECAY: ClassVar[float] = 0.0

    def key(self) -> str:
        # "-peft": since the adapter is peft's, its A matrices start from other draws of the
        # same seed than the former hand-written LoRA's, so the trained weights differ from
        # those cached under the old key.
        return super().key() + "-peft"


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
    adapted = with_lora(model, config.rank, config.alpha)
    fit = fit_on_arith(adapted, tokenizer, rng, config, "train smollm2-arith LoRA", progress)
    adapted.eval()
    adapter = adapter_weights(adapted)
    layers = len(adapted.targeted_module_names)
    model = adapted.merge_and_unload().cpu()
    end_with_tokenizer_eos(model, tokenizer)
    record = {
        **asdict(config),
        "adapted_layers": layers,
        "adapter_parameters": sum(t.numel() for t in adapter.values()),
        **fit,
    }

    def write(folder: Path) -> None:
        save_file(adapter, str(folder / "adapter.safetensors"))
        save_trained(folder, model, tokenizer, record)

    return build_atomically(out_dir, write)


def smollm2_arith_path(
    config: LoraTraining = LoraTraining(), cache: Path | None = None, progress: bool = True
) -> Path:
    """Directory of SmolLM2 + the merged arith adapter for `config`, training on first use."""

    def build(target: Path) -> Path:
        return train_smollm2_arith(target, config, progress)

    return cached_or_built(config, cache, "adapter.safetensors", build)
