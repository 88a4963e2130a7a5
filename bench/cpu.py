"""Time one decode step (probs + sample) for every decoder, next to two baselines.

    python bench/cpu.py [--quick] [--batch 1 8 64] [--vocab 32000 151936] [--devices cpu cuda]

Baselines: plain softmax sampling (softmax + multinomial) and a full-sort top-p (what
Hugging Face's TopPLogitsWarper and the PyTorch fallbacks do). Decoders run with
`validate=False`, as a trusted decode loop would. CUDA rows are added when a GPU is present.
Prints a table of median milliseconds and ratios to the two baselines.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import torch

import decoptim as d


def softmax_sampling(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator)


def sorted_top_p_sampling(z: torch.Tensor, generator: torch.Generator, p: float = 0.9):
    sorted_logits, order = torch.sort(z, descending=False)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove_sorted = cumulative <= 1 - p
    remove_sorted[..., -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    probs = torch.softmax(z.masked_fill(remove, -torch.inf), -1)
    return torch.multinomial(probs, 1, generator=generator)


def decoders() -> dict[str, d.Decoder]:
    fast = {"validate": False}
    table: dict[str, d.Decoder] = {
        "greedy": d.Greedy(**fast),
        "softmax": d.Softmax(0.7, **fast),
        "top-k 50": d.TopK(50, **fast),
        "top-p 0.9": d.TopP(0.9, **fast),
        "min-p 0.1": d.MinP(0.1, **fast),
        "typical 0.9": d.Typical(0.9, **fast),
        "epsilon 3e-4": d.Epsilon(3e-4, **fast),
        "eta 3e-4": d.Eta(3e-4, **fast),
        "sparsemax": d.Sparsemax(**fast),
        "entmax 1.5": d.Entmax(1.5, **fast),
    }
    table.update(extra_decoders())
    return table


def extra_decoders() -> dict[str, d.Decoder]:
    """Decoders beyond the classic ones (Best-of-K), when the package has them."""
    if not hasattr(d, "BestOfK"):
        return {}
    fast = {"validate": False}
    return {
        "BoK mirror 5": d.BestOfK(8, 0.02, 0.2, solver="mirror", **fast),
        "BoK exact prob": d.BestOfK(8, 0.02, 0.2, weights="prob", **fast),
        "BoK exact top-64": d.BestOfK(8, 0.02, 0.2, weights="topm", top_m=64, **fast),
    }


def median_ms(fn: Callable[[], object], device: torch.device, budget_s: float) -> float:
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget_s and len(times) < 50):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_case(device: torch.device, batch: int, vocab: int, budget: float):
    """Yield (name, milliseconds) for the baselines and every decoder on one input size."""
    generator = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(batch, vocab, device=device, generator=generator) * 3
    baselines = {"softmax sampling": softmax_sampling, "full-sort top-p": sorted_top_p_sampling}
    for name, fn in baselines.items():
        yield name, median_ms(lambda fn=fn: fn(z, generator), device, budget)
    for name, decoder in decoders().items():
        step = lambda dec=decoder: dec.sample(z, generator=generator)  # noqa: E731
        yield name, median_ms(step, device, budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--vocab", type=int, nargs="+", default=[32_000, 151_936])
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="B=8, V=32000 only")
    available = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--devices", nargs="+", default=available, choices=["cpu", "cuda"])
    args = parser.parse_args()
    if args.quick:
        args.batch, args.vocab = [8], [32_000]
    devices = [torch.device(name) for name in args.devices]
    print(f"# decoptim {d.__version__}, torch {torch.__version__}, {date.today()}")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        print(f"# {torch.cuda.get_device_name()}")
    header = (
        f"{'device':6} {'B':>4} {'V':>7} {'decoder':18} {'ms':>9} {'/softmax':>9} {'/sort-p':>8}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for vocab in args.vocab:
            for batch in args.batch:
                rows = list(bench_case(device, batch, vocab, args.budget))
                base, sort_p = rows[0][1], rows[1][1]
                for name, ms in rows:
                    print(
                        f"{device.type:6} {batch:4d} {vocab:7d} {name:18} {ms:9.3f} "
                        f"{ms / base:9.2f} {ms / sort_p:8.2f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
