"""End to end: how much does a decoptim decoder slow down `model.generate`?

    python bench/generate.py [--batch 64] [--new-tokens 128] [--prompt-tokens 32]

Builds a model with SmolLM2-135M-Instruct's architecture (Llama, 30 layers, width 576,
vocabulary 49,152) with random weights, and times `generate` with plain sampling (neutral
generation config, no processor) against the same call with a `DecoderLogitsProcessor`
for several decoders. With no EOS token every run has the same length. Prints the time
per call (median of --repeats rounds, run round-robin after a warm-up round), the
slowdown and the spread (max − min over median) of each, and the same slowdown between
the fastest rounds: on a host shared with other work, the fastest round is the one least
disturbed, so that column is the steadier of the two.

A last round per decoder times the processor alone inside `generate`, with a device sync on
each side of every call (its GPU time and its host time, without overlap): the decoder's
own cost per step, and its share of plain sampling's median step. Unlike the slowdown
columns, this does not drown in the host's noise. Rows marked "graph" replay the decoder as
a CUDA graph (`DecoderLogitsProcessor(..., cuda_graph=True)`, as `decoptim`'s `generate`
does on CUDA).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

import decoptim as d
from decoptim.integrations.transformers import DecoderLogitsProcessor, neutral_generation_config

SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)


class TimedProcessor(LogitsProcessor):
    """Wall time of each call of `inner`, between device syncs."""

    def __init__(self, inner: LogitsProcessor):
        self.inner = inner
        self.seconds: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sync(scores.device)
        start = time.perf_counter()
        out = self.inner(input_ids, scores)
        sync(scores.device)
        self.seconds.append(time.perf_counter() - start)
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).to(device, dtype).eval()
    prompts = torch.randint(3, 49152, (args.batch, args.prompt_tokens), device=device)
    # No EOS token: every run generates exactly new_tokens tokens, so times compare.
    config = neutral_generation_config(
        model.generation_config, max_new_tokens=args.new_tokens, pad_token_id=2, eos_token_id=None
    )

    def processor(decoder: d.Decoder, cuda_graph: bool = False) -> DecoderLogitsProcessor:
        return DecoderLogitsProcessor(decoder, cuda_graph=cuda_graph and device == "cuda")

    top_p = d.TopP(0.9, validate=False)
    top_m = d.BestOfK(8, 0.02, 0.2, weights="topm", top_m=64, validate=False)
    prob = d.BestOfK(8, 0.02, 0.2, validate=False)
    cases = {
        "plain sampling": None,
        "Softmax(1.0)": processor(d.Softmax(1.0, validate=False)),
        "TopP(0.9)": processor(top_p),
        "MinP(0.1)": processor(d.MinP(0.1, validate=False)),
        "BoK exact top-64": processor(top_m),
        "BoK mirror 5": processor(d.BestOfK(8, 0.02, 0.2, solver="mirror", validate=False)),
        "BoK exact prob": processor(prob),
        "TopP(0.9), graph": processor(top_p, cuda_graph=True),
        "BoK top-64, graph": processor(top_m, cuda_graph=True),
        "BoK prob, graph": processor(prob, cuda_graph=True),
    }
    print(
        f"# {device} {torch.cuda.get_device_name() if device == 'cuda' else ''}, torch "
        f"{torch.__version__}; SmolLM2-135M architecture, random weights, {dtype}; batch "
        f"{args.batch}, {args.prompt_tokens} prompt + {args.new_tokens} new tokens"
    )
    processors = {name: LogitsProcessorList([p] if p else []) for name, p in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}

    def generate(processor: LogitsProcessorList) -> float:
        sync(prompts.device)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                generation_config=config,
                logits_processor=processor,
            )
        sync(prompts.device)
        assert out.shape[1] == args.prompt_tokens + args.new_tokens
        return time.perf_counter() - start

    # Round-robin over the decoders, so that drift in the machine's speed hits all alike.
    for repeat in range(args.repeats + 1):
        for name in cases:
            seconds = generate(processors[name])
            if repeat:  # the first round warms up kernels and caches
                times[name].append(seconds)
    own: dict[str, float] = {}
    for name, processor in processors.items():
        if processor:
            timed = TimedProcessor(processor[0])
            generate(LogitsProcessorList([timed]))
            own[name] = statistics.median(timed.seconds)
    results = {name: statistics.median(values) for name, values in times.items()}
    spread = {name: (max(v) - min(v)) / statistics.median(v) for name, v in times.items()}
    fastest = {name: min(values) for name, values in times.items()}
    base, fastest_base = results["plain sampling"], fastest["plain sampling"]
    plain_step = base / args.new_tokens
    print(
        f"{'decoder':20} {'s / generate':>13} {'ms / step':>10} {'slowdown':>9} {'spread':>7}"
        f" {'fastest s':>10} {'slowdown (fastest)':>19} {'decoder ms':>11} {'share':>7}"
    )
    for name, seconds in results.items():
        line = (
            f"{name:20} {seconds:13.3f} {1e3 * seconds / args.new_tokens:10.2f} "
            f"{100 * (seconds / base - 1):+8.1f}% {100 * spread[name]:6.1f}%"
            f" {fastest[name]:10.3f} {100 * (fastest[name] / fastest_base - 1):+18.1f}%"
        )
        if name in own:
            line += f" {1e3 * own[name]:11.3f} {100 * own[name] / plain_step:6.1f}%"
        print(line)


if __name__ == "__main__":
    main()
