"""What the trainers (arith_model, lora, gsm8k_model) share: their settings' base class (a
seed and a cache key), their seeding, SmolLM2's tokenizer, an optimizer step and how a
trained model is saved."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch

from .model_cache import cache_dir

TRAINING_RECORD = "decoptim_training.json"  # beside a trained model: how it was trained


@dataclass(frozen=True)
class TrainingConfig:
    """A trainer's settings (subclasses add theirs): `seed` seeds the training (`seeded`);
    PREFIX and every field's value name its cache directory (`key()`)."""

    seed: int = 0
    PREFIX: ClassVar[str] = "model"

    def key(self) -> str:
        return f"{self.PREFIX}-" + "-".join(f"{k}{v}" for k, v in asdict(self).items())


def seeded(config: TrainingConfig) -> random.Random:
    """Seeds torch with `config.seed`; returns the training data's own random stream,
    named by the config's PREFIX."""
    torch.manual_seed(config.seed)
    return random.Random(f"{config.PREFIX}-train:{config.seed}")


def smollm2_tokenizer(base: str | Path):
    """SmolLM2's tokenizer from `base`, with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    if tokenizer.pad_token is None:  # some transformers versions convert the GGUF without one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def optimizer_step(loss: torch.Tensor, optimizer, scheduler, parameters: list) -> None:
    """Backpropagates `loss`, clips the gradients' norm to 1 and steps both."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    scheduler.step()


def end_with_tokenizer_eos(model, tokenizer) -> None:
    """Trained to end with the tokenizer's EOS, whatever the converted config names."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def save_trained(folder: Path, model, tokenizer, record: dict) -> None:
    """The model and tokenizer in `folder`, and `record` as JSON in its TRAINING_RECORD."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / TRAINING_RECORD).write_text(json.dumps(record, indent=2))


def cached_or_built(config, cache: Path | None, artefact: str, build: Callable[[Path], Path]):
    """The cache directory of `config` (named by its key) when it holds `artefact` and the
    TRAINING_RECORD, else what `build(directory)` returns."""
    target = (cache or cache_dir()) / config.key()
    if (target / artefact).exists() and (target / TRAINING_RECORD).exists():
        return target
    return build(target)
