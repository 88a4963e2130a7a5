"""SmolLM2-135M-Instruct fully fine-tuned on GSM8K's training split: a third study testbed.

Every weight is trained (no adapter). Each training example is exactly what the harness
sends a model for `--task gsm8k` (`backends.task_prompt`: the chat template with the
instruction MATH_INSTRUCTION as the system message) followed by the target: the row's
worked solution with GSM8K's calculator annotations `<<48/2=24>>` removed and its final
`#### N` line replaced by "The answer is \\boxed{N}." (what the instruction asks for, and
what the task's grader extracts as N), then the tokenizer's EOS. The loss covers the target
tokens only. A row whose prompt and target exceed `max_length` tokens is left out and
counted in the training record (none of GSM8K's 7,473 training rows does at the default
512: the longest is 500).

Usage:

    decoptim train-gsm8k --data gsm8k_train.jsonl       # the cache; prints the directory
    decoptim train-gsm8k --data gsm8k_train.jsonl --epochs 1 --out runs/gsm8k-model
    decoptim eval --model smollm2-gsm8k --task gsm8k --data gsm8k_test.jsonl \
        --decoders softmax --temperatures 0.7 --n 8 --out runs/gsm8k

    from decoptim.eval.gsm8k_model import GSM8KTraining, train_smollm2_gsm8k
    train_smollm2_gsm8k("gsm8k_train.jsonl", Path("out"), GSM8KTraining(epochs=1))

The alias `smollm2-gsm8k` is the default configuration's model in the cache
(`smollm2_gsm8k_path`); when it is not built yet, it is trained from the file named by
$DECOPTIM_GSM8K_TRAIN, or the alias fails saying how to build it.

The output is a plain Hugging Face model directory (float32 weights, the tokenizer, a
generation config whose EOS and pad are the tokenizer's) plus `decoptim_training.json`:
the configuration, the data file's sha256 and row counts, steps, seconds, device and the
first, last and mean-of-the-last-50 losses.

Training: rows in a seeded shuffle per epoch, batches padded on the right to their longest
row, fused AdamW (no weight decay) with linear warm-up and cosine decay to zero, gradients clipped
to norm 1, bf16 autocast on CUDA over float32 weights. No attention mask is needed: padding
sits after every real token, and causal attention never looks ahead. The loop does not wait
on the GPU except when the progress bar reads the loss (every 25 steps). 3 epochs of the
7,473 rows are 351 steps of 64 rows (about 8.2 M tokens with the padding): 68 s on one H200
(2026-11-28, docs/results.md part two; loss 1.41 at the start, 0.61 over the last 50 steps).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..pipelines.answers import gsm8k_gold
from .model_cache import build_atomically, cache_dir, smollm2_path
from .runner import progress_bar
from .tasks import GSM8KTask, read_jsonl
from .training import (
    TRAINING_RECORD,
    TrainingConfig,
    end_with_tokenizer_eos,
    optimizer_step,
    save_trained,
    seeded,
    smollm2_tokenizer,
)

DATA_ENV = "DECOPTIM_GSM8K_TRAIN"
CALCULATOR = re.compile(r"<<[^<>]*>>")
LOSS_READOUT_EVERY = 25  # steps between the progress bar's loss readouts (each one syncs)
IGNORE = -100


@dataclass(frozen=True)
class GSM8KTraining(TrainingConfig):
    """The settings of a fine-tune (and `seed`); `key()` names its cache directory.

    `warmup` is the fraction of the steps spent warming up (at least one step); `limit`
    keeps the data file's first rows only (None: all of them).
    """

    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-4
    warmup: float = 0.03
    max_length: int = 512
    limit: int | None = None
    PREFIX: ClassVar[str] = "smollm2-gsm8k"

    def __post_init__(self) -> None:
        for name, least in (("seed", 0), ("epochs", 1), ("batch_size", 1), ("max_length", 2)):
            _check_int(name, getattr(self, name), least)
        if self.limit is not None:
            _check_int("limit", self.limit, 1)
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
            raise ValueError(
                f"learning_rate must be a number in (0, 1), got learning_rate={rate!r}"
            )
        warmup = self.warmup
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got warmup={warmup!r}")


def _check_int(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {name}={value!r}")


def gsm8k_target(answer_field: str) -> str:
    """The text the model learns for a GSM8K `answer` field: the worked solution without
    calculator annotations, its `#### N` line replaced by "The answer is \\boxed{N}."."""
    gold = gsm8k_gold(answer_field)  # ValueError when the field has no ####
    solution = CALCULATOR.sub("", answer_field.rsplit("####", 1)[0]).rstrip()
    final = f"The answer is \\boxed{{{gold}}}."
    return f"{solution}\n{final}" if solution else final


def training_prompt(tokenizer, question: str) -> str:
    """The text the harness sends for a GSM8K question (the task's own prompt building)."""
    from .backends import task_prompt

    return task_prompt(tokenizer, GSM8KTask(), question)


def encode_rows(
    tokenizer, rows: list[dict], max_length: int
) -> tuple[list[tuple[list[int], int]], int]:
    """(token ids, prompt length) per row that fits in `max_length` tokens, and how many did
    not fit. The ids are the prompt's, as the harness tokenizes it (no special tokens added),
    then the target's and the EOS."""
    prompts = [training_prompt(tokenizer, row["question"]) for row in rows]
    targets = [gsm8k_target(row["answer"]) for row in rows]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    examples, too_long = [], 0
    for head, tail in zip(prompt_ids, target_ids, strict=True):
        ids = [*head, *tail, tokenizer.eos_token_id]
        if len(ids) > max_length:
            too_long += 1
            continue
        examples.append((ids, len(head)))
    return examples, too_long


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """(input ids, labels), padded on the right to the longest example; the labels are
    IGNORE (-100) on the prompt and the padding, the token ids on the target."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, prompt_length) in enumerate(examples):
        tokens = torch.tensor(ids, dtype=torch.long)
        input_ids[row, : len(ids)] = tokens
        labels[row, prompt_length : len(ids)] = tokens[prompt_length:]
    return input_ids, labels


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_data_file(data_path: str | Path) -> Path:
    path = Path(data_path)
    if not path.is_file():
        what = "is a directory, not" if path.is_dir() else "does not exist; expected"
        raise FileNotFoundError(
            f"data file {path} {what} a JSONL file of GSM8K rows (question, answer)"
        )
    return path


def _schedule(total: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def train_smollm2_gsm8k(
    data_path: str | Path,
    out_dir: Path,
    config: GSM8KTraining = GSM8KTraining(),
    progress: bool = True,
    max_steps: int | None = None,
) -> Path:
    """Fine-tune every weight of SmolLM2 on the GSM8K rows of `data_path` and write the
    model to `out_dir` (atomically); returns `out_dir`. `max_steps` stops early (tests)."""
    from transformers import AutoModelForCausalLM

    data_path = check_data_file(data_path)
    if max_steps is not None:
        _check_int("max_steps", max_steps, 1)
    rows = list(read_jsonl(data_path, ("question", "answer")))
    if not rows:
        raise ValueError(f"data file {data_path} holds no rows")
    used = rows[: config.limit] if config.limit else rows

    rng = seeded(config)
    base = smollm2_path()
    tokenizer = smollm2_tokenizer(base)
    examples, too_long = encode_rows(tokenizer, used, config.max_length)
    if not examples:
        raise ValueError(
            f"no row of {data_path} fits in max_length={config.max_length} tokens "
            f"(prompt, target and EOS)"
        )

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = AutoModelForCausalLM.from_pretrained(
        base, local_files_only=True, dtype=torch.float32
    ).to(device)
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.epochs * per_epoch
    steps = min(total, max_steps) if max_steps else total
    warmup = max(1, round(config.warmup * total))
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, warmup))
    losses = torch.zeros(steps, device=device)
    bar = progress_bar(steps, "train smollm2-gsm8k", "step", progress)
    start = time.time()
    step = 0
    for _epoch in range(config.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for first in range(0, len(order), config.batch_size):
            if step == steps:
                break
            batch = [examples[i] for i in order[first : first + config.batch_size]]
            input_ids, labels = collate(batch, tokenizer.pad_token_id)
            if cuda:
                input_ids = input_ids.pin_memory().to(device, non_blocking=True)
                labels = labels.pin_memory().to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = model(input_ids=input_ids, labels=labels, use_cache=False).loss
            optimizer_step(loss, optimizer, scheduler, parameters)
            losses[step] = loss.detach()
            step += 1
            if bar is not None:
                if step % LOSS_READOUT_EVERY == 0 or step == steps:
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update(1)
    if bar is not None:
        bar.close()
    curve = losses.tolist()  # waits for the GPU
    seconds = time.time() - start

    model.eval().cpu()
    end_with_tokenizer_eos(model, tokenizer)
    record = {
        **asdict(config),
        "base_model": str(base),
        "data": str(data_path),
        "data_sha256": file_digest(data_path),
        "data_rows": len(rows),
        "rows_used": len(examples),
        "rows_too_long": too_long,
        "steps": steps,
        "planned_steps": total,
        "warmup_steps": warmup,
        "target_tokens": sum(len(ids) - length for ids, length in examples),
        "seconds": round(seconds, 1),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "autocast": "bfloat16" if cuda else None,
        "first_loss": curve[0],
        "last_loss": curve[-1],
        "mean_last_50_loss": sum(curve[-50:]) / len(curve[-50:]),
    }

    def write(folder: Path) -> None:
        save_trained(folder, model, tokenizer, record)

    return build_atomically(Path(out_dir), write)


def smollm2_gsm8k_path(
    data_path: str | Path | None = None,
    config: GSM8KTraining = GSM8KTraining(),
    cache: Path | None = None,
    progress: bool = True,
) -> Path:
    """Directory of SmolLM2 fine-tuned on GSM8K with `config`, training on first use.

    A cached model is returned as is, unless `data_path` is given and the model was
    trained on another file (a ValueError: remove the directory or train with --out).
    Without a cached model, `data_path` is required."""
    target = (cache or cache_dir()) / config.key()
    record = target / TRAINING_RECORD
    if record.exists() and (target / "config.json").exists():
        if data_path is not None:
            trained_on = json.loads(record.read_text()).get("data_sha256")
            if trained_on != file_digest(check_data_file(data_path)):
                raise ValueError(
                    f"the cached model {target} was trained on another data file than "
                    f"{data_path} (sha256 {trained_on}); remove it, or train with --out DIR"
                )
        return target
    if data_path is None:
        raise FileNotFoundError(_how_to_build(config))
    return train_smollm2_gsm8k(data_path, target, config, progress)


def _how_to_build(config: GSM8KTraining) -> str:
    return (
        f"smollm2-gsm8k is not built yet ({config.key()} is not in the cache) and training it "
        f"needs GSM8K's training split: run `decoptim train-gsm8k --data PATH` once (PATH a "
        f"JSONL file of question/answer rows, e.g. openai/gsm8k's train split), or set "
        f"${DATA_ENV}=PATH to train on first use"
    )


def smollm2_gsm8k_alias_path(cache: Path | None = None, progress: bool = True) -> Path:
    """The model behind the alias `smollm2-gsm8k`: the default configuration, trained from
    $DECOPTIM_GSM8K_TRAIN when it is not in the cache yet."""
    config = GSM8KTraining()
    target = (cache or cache_dir()) / config.key()
    if (target / TRAINING_RECORD).exists() and (target / "config.json").exists():
        return target
    data = os.environ.get(DATA_ENV)
    if not data:
        raise FileNotFoundError(_how_to_build(config))
    if not Path(data).is_file():
        raise FileNotFoundError(f"${DATA_ENV}={data} is not a file; {_how_to_build(config)}")
    return smollm2_gsm8k_path(data, config, cache, progress)
