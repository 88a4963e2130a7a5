"""Hugging Face transformers integration: any decoptim decoder inside `model.generate`.

`DecoderLogitsProcessor(decoder)` returns log q (−inf off the support), so that
`generate(do_sample=True)`, which samples from softmax of the processed scores, draws from
exactly `decoder.probs(raw_logits)`, provided nothing else touches the scores. The
generation config's own warpers would: transformers fills an unset `top_k` with 50, and
runs temperature, top-k, top-p, min-p, typical, epsilon and eta warpers (and penalties)
*before* custom processors. `neutral_generation_config` switches all of them off, and
`check_generation_config` names any that is still on. `generate` does both for you.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from ..core import Decoder, manual_seed
from ..core.checks import check_logits
from ..core.coordinated import Codes, forced_scores, group_codes
from .graphs import GraphedStep

# Fields of GenerationConfig that change the distribution, and their neutral values.
NEUTRAL_SETTINGS: dict[str, object] = {
    "temperature": 1.0,
    "top_k": 0,  # 0 switches the warper off; None would be replaced by the default 50
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "guidance_scale": None,
    "exponential_decay_length_penalty": None,
    "min_length": 0,
    "min_new_tokens": None,
    "watermarking_config": None,
}


def _is_neutral(name: str, value: object) -> bool:
    neutral = NEUTRAL_SETTINGS[name]
    if value is None:
        # An unset top_k becomes 50 inside generate; every other unset field is neutral.
        return name != "top_k"
    if name == "guidance_scale":
        return value == 1
    if name in ("min_length", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size"):
        return value == 0
    if name in ("epsilon_cutoff", "eta_cutoff"):
        return not 0.0 < float(value) < 1.0
    if name in ("top_p", "typical_p"):
        return float(value) >= 1.0
    return value == neutral


def check_generation_config(config: GenerationConfig) -> None:
    """Raise ValueError naming every setting that would change the decoder's distribution."""
    offending = [
        f"{name}={getattr(config, name, None)!r}"
        + (" (transformers uses 50)" if name == "top_k" else "")
        for name in NEUTRAL_SETTINGS
        if hasattr(config, name) and not _is_neutral(name, getattr(config, name))
    ]
    if getattr(config, "num_beams", 1) not in (None, 1):
        offending.append(f"num_beams={config.num_beams!r}")
    if offending:
        raise ValueError(
            "generation config settings would change the decoder's distribution: "
            + ", ".join(offending)
            + "; use decoptim.integrations.transformers.neutral_generation_config()"
        )


def neutral_generation_config(
    base: GenerationConfig | None = None, **overrides
) -> GenerationConfig:
    """A copy of `base` with sampling on and every distribution-changing setting off."""
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    for name, value in NEUTRAL_SETTINGS.items():
        setattr(config, name, value)
    config.do_sample = True
    config.num_beams = 1
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def _unchecked(decoder: Decoder) -> Decoder:
    # The decoder without its logits check, for a captured step: the check's host sync
    # cannot be captured, so the processors run it before each replay instead.
    unchecked = copy.copy(decoder)
    unchecked.validate = False
    return unchecked


class DecoderLogitsProcessor(LogitsProcessor):
    """Turn raw next-token logits into log q for a decoptim decoder.

    With a neutral generation config, `generate(do_sample=True)` then samples from exactly
    `decoder.probs(logits)`. Pass `generation_config` to have it checked on construction.
    With `cuda_graph=True`, CUDA scores go through the decoder as a replayed CUDA graph
    (`GraphedStep`): the same kernels without their per-launch host work. The logits
    check, whose host sync cannot be captured, then runs before the replay.
    """

    def __init__(
        self,
        decoder: Decoder,
        generation_config: GenerationConfig | None = None,
        cuda_graph: bool = False,
    ):
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be a decoptim Decoder, got {type(decoder).__name__}")
        if generation_config is not None:
            check_generation_config(generation_config)
        self.decoder = decoder
        self._graphed = None
        if cuda_graph:
            unchecked = _unchecked(decoder)
            self._graphed = GraphedStep(lambda x: torch.log(unchecked.probs(x)))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._graphed is None or not scores.is_cuda:
            return torch.log(self.decoder.probs(scores))
        check_logits(scores, self.decoder.validate, name="scores")
        return self._graphed(scores)


class CoordinatedLogitsProcessor(LogitsProcessor):
    """Draw the K samples of each prompt jointly (arithmetic codes, `decoptim.core.
    coordinated`), each one exactly from `decoder.probs(logits)`.

    Rows are read group-major, as `model.generate(num_return_sequences=n)` lays them out
    (n a multiple of k): row r is sample r % k of group r // k, and the n/k groups of a
    prompt follow each other (so the batch holds whole groups, and the rows of a group must
    share their prompt). The processor picks each row's token by its code and
    forces it: the scores it returns are 0 on that token and −inf elsewhere, so sampling
    (or greedy search) takes it. It carries the codes from step to step: use one instance
    per `generate` call. Group g of the call gets the seed `group_seeds(seed, first_group
    + g)`, so a prompt's samples do not depend on which prompts share its batch.
    `by_rejection` (top-p and typical): draw as `Decoder.sample_coordinated` does with it.
    With `cuda_graph=True`, CUDA scores go through the coordinated step as a replayed CUDA
    graph (`GraphedStep`, the codes as a second input): the same draws, since a code picks
    its token without random numbers, without the launches' host work. The logits check
    runs before the replay, as in `DecoderLogitsProcessor`.
    """

    def __init__(
        self,
        decoder: Decoder,
        k: int,
        seed: int = 0,
        first_group: int = 0,
        generation_config: GenerationConfig | None = None,
        by_rejection: bool = False,
        cuda_graph: bool = False,
    ):
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be a decoptim Decoder, got {type(decoder).__name__}")
        decoder.check_by_rejection(by_rejection)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got k={k!r}")
        if generation_config is not None:
            check_generation_config(generation_config)
            returned = generation_config.num_return_sequences or 1
            if returned % k:
                raise ValueError(
                    f"num_return_sequences={returned} in the generation config is not a "
                    f"multiple of k={k}: a group's rows are return sequences of one prompt"
                )
        self.decoder = decoder
        self.k = k
        self.seed = seed
        self.first_group = first_group
        self.by_rejection = by_rejection
        self.codes: Codes | None = None
        self._graphed = None
        if cuda_graph:
            unchecked = _unchecked(decoder)
            self._graphed = GraphedStep(
                lambda x, codes: unchecked.sample_coordinated(x, codes, by_rejection)
            )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = scores.shape[0]
        if self.codes is None:
            self.codes = self._start(input_ids, rows, scores.device)
        elif self.codes.value.numel() != rows:
            raise ValueError(
                f"this processor started with {self.codes.value.numel()} rows and now sees "
                f"{rows}: use one CoordinatedLogitsProcessor per generate call"
            )
        if self._graphed is None or not scores.is_cuda:
            tokens, self.codes = self.decoder.sample_coordinated(
                scores, self.codes, self.by_rejection
            )
        else:
            check_logits(scores, self.decoder.validate, name="scores")
            tokens, self.codes = self._graphed(scores, self.codes)
        return forced_scores(tokens, scores)

    def _start(self, input_ids: torch.Tensor, rows: int, device: torch.device) -> Codes:
        if rows % self.k:
            raise ValueError(
                f"{rows} rows is not a whole number of groups of k={self.k}: generate with "
                f"num_return_sequences={self.k} (rows are prompts × k)"
            )
        groups = rows // self.k
        prompts = input_ids.reshape(groups, self.k, -1)
        differs = (prompts != prompts[:, :1]).flatten(1).any(1)
        if bool(differs.any()):
            group = int(torch.nonzero(differs)[0])
            raise ValueError(
                f"rows {group * self.k}..{(group + 1) * self.k - 1} form group {group} but do not "
                "share one prompt: coordinated samples of a group must start from the same prefix"
            )
        return group_codes(groups, self.k, self.seed, device, self.first_group)


class RawLogProbRecorder(LogitsProcessor):
    """Record log softmax(raw logits) of each sampled token, without storing all logits.

    At step t the token chosen at step t − 1 is the last column of `input_ids`, so only the
    previous step's log-probabilities are kept ([rows, V]). Place it first in the list.
    """

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def token_logprobs(self, generated: torch.Tensor) -> torch.Tensor:
        """[rows, T] log-probabilities of `generated` ([rows, T]) under the raw model."""
        steps = list(self.steps)
        if self.previous is not None and len(steps) < generated.shape[1]:
            steps.append(self.previous.gather(-1, generated[:, len(steps) : len(steps) + 1])[:, 0])
        if not steps:
            return torch.zeros(generated.shape, dtype=torch.float32, device=generated.device)
        return torch.stack(steps, dim=1)


@dataclass
class PromptSamples:
    """The n samples drawn for one prompt."""

    prompt: str
    texts: list[str] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)
    logprob_sum: list[float] = field(default_factory=list)  # Σ log p_raw(token)
    logprob_mean: list[float] = field(default_factory=list)  # the same, per generated token
    lengths: list[int] = field(default_factory=list)  # generated tokens, EOS included


def format_prompt(
    tokenizer, prompt: str, chat: bool | None = None, system: str | None = None
) -> str:
    """Apply the tokenizer's chat template (when it has one and `chat` is not False)."""
    use_chat = getattr(tokenizer, "chat_template", None) is not None if chat is None else chat
    if not use_chat:
        return prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    decoder: Decoder,
    n: int = 1,
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    chat: bool | None = None,
    system: str | None = None,
    progress: bool = False,
    cuda_graph: bool = True,
    coordinated: bool = False,
    group_size: int | None = None,
    by_rejection: bool = False,
) -> list[PromptSamples]:
    """Draw `n` samples per prompt from `decoder` applied to the model's raw logits.

    Prompts go through the chat template when the tokenizer has one (`chat=None`), are
    left-padded, and are processed `batch_size` prompts (batch_size × n rows) per call.
    `decoptim.manual_seed(seed + call index)` runs before each call (torch's generators and
    the seed streams of sampling inside CUDA graphs), so a run is reproducible for the same
    seed and batch size, within a process too. On CUDA the decoder's step is replayed as a
    CUDA graph unless `cuda_graph=False` (see `DecoderLogitsProcessor` and
    `CoordinatedLogitsProcessor`).

    With `coordinated=True` the samples of each prompt are drawn jointly in groups of
    `group_size` (default n; n must be a multiple of it) by `CoordinatedLogitsProcessor`:
    each sample is still exactly a draw from the decoder, and each group covers more
    distinct continuations. Prompt j's groups depend on `seed` and j only, not on the
    batch size. `by_rejection=True` (top-p and typical, with `coordinated`) draws them by
    rejection over softmax's buckets (`Decoder.sample_coordinated`).
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not one string")
    for name, value in (("n", n), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    eos_ids = _eos_ids(model, tokenizer)
    config = neutral_generation_config(
        model.generation_config,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
        return_dict_in_generate=True,
    )
    check_generation_config(config)
    if not isinstance(coordinated, bool):
        raise TypeError(f"coordinated must be a bool, got {coordinated!r}")
    group_size = n if group_size is None else group_size
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got group_size={group_size!r}")
    if coordinated and n % group_size:
        raise ValueError(f"n={n} is not a multiple of group_size={group_size}")
    processor = DecoderLogitsProcessor(decoder, cuda_graph=cuda_graph)  # checks the decoder
    decoder.check_by_rejection(by_rejection)
    if by_rejection and not coordinated:
        raise ValueError("by_rejection=True draws coordinated groups: pass coordinated=True")
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    results: list[PromptSamples] = []
    batches = range(0, len(prompts), batch_size)
    iterator = _progress(batches, progress)
    try:
        for call, start in enumerate(iterator):
            chunk = list(prompts[start : start + batch_size])
            texts = [format_prompt(tokenizer, p, chat, system) for p in chunk]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = {k: v.to(model.device) for k, v in encoded.items()}
            recorder = RawLogProbRecorder()
            if coordinated:  # carries its codes through the call: a new one per call
                first = start * (n // group_size)
                processor = CoordinatedLogitsProcessor(
                    decoder, group_size, seed, first, by_rejection=by_rejection,
                    cuda_graph=cuda_graph,
                )  # fmt: skip
            manual_seed(seed + call)  # torch and the graph seed streams
            with torch.no_grad():
                out = model.generate(
                    **encoded,
                    generation_config=config,
                    logits_processor=LogitsProcessorList([recorder, processor]),
                )
            generated = out.sequences[:, encoded["input_ids"].shape[1] :]
            logprobs = recorder.token_logprobs(generated)
            results.extend(_collect(chunk, generated, logprobs, n, eos_ids, tokenizer))
    finally:
        tokenizer.padding_side = previous_side
    return results


def _eos_ids(model, tokenizer) -> list[int]:
    """The generation config's EOS ids and the tokenizer's: a sample ends at any of them."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError(
            "neither the model's generation config nor the tokenizer names an EOS token"
        )
    return ids


def _collect(prompts, generated, logprobs, n, eos_ids, tokenizer) -> list[PromptSamples]:
    is_eos = torch.isin(generated, torch.tensor(eos_ids, device=generated.device))
    steps = generated.shape[1]
    first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), steps)
    lengths = torch.clamp(first_eos + 1, max=steps)
    keep = torch.arange(steps, device=generated.device)[None, :] < lengths[:, None]
    sums = torch.where(keep, logprobs, 0.0).sum(1)
    # One copy to the host for the whole batch: indexing device tensors row by row would
    # wait on the GPU three times per sample (measured: 6,400 syncs per GSM8K batch).
    generated, lengths, sums = generated.tolist(), lengths.tolist(), sums.tolist()
    out = []
    for i, prompt in enumerate(prompts):
        samples = PromptSamples(prompt)
        for row in range(i * n, (i + 1) * n):
            length = lengths[row]
            ids = generated[row][:length]
            samples.token_ids.append(ids)
            samples.texts.append(tokenizer.decode(ids, skip_special_tokens=True))
            samples.lengths.append(length)
            total = sums[row]
            samples.logprob_sum.append(total)
            samples.logprob_mean.append(total / length if length else math.nan)
        out.append(samples)
    return out


def _progress(batches: range, enabled: bool):
    if not enabled:
        return batches
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return batches
    return tqdm(batches, desc="generate", unit="batch")


__all__ = [
    "CoordinatedLogitsProcessor",
    "DecoderLogitsProcessor",
    "PromptSamples",
    "RawLogProbRecorder",
    "check_generation_config",
    "format_prompt",
    "generate",
    "neutral_generation_config",
]
