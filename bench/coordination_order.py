"""How much coverage coordinated top-p and typical keep when drawn by rejection.

    python bench/coordination_order.py [--rows 160] [--groups 1000] [--k 8]

With `sample_coordinated(..., by_rejection=True)` top-p and typical pick each code's token
from softmax's buckets and keep it inside the set, a rejected code picking again
(`coordinated_sample_in_set`): on a GPU that costs about a plain sample, where drawing over
q's own buckets (`coordinated_sample`, the default) needs the set's edge first. Both are
exact; they spread a group differently. This script measures the difference on real next-token rows:
SmolLM2-135M-Instruct's logits along GSM8K test answers (teacher-forced, chat template),
`--rows` positions. For each decoder × τ and each row, `--groups` groups of K samples drawn
i.i.d., over q's buckets, and by rejection over softmax's, and per method:

- distinct tokens in a group (mean over groups and rows);
- covered: the share of groups that take every token with q ≥ 1/K (over rows that have
  one; drawing over q's buckets guarantees it);
- spread: the mean over tokens with q ≥ 1/K of |count in a group − K·q| (stratified draws
  keep it below 1).

Prints a markdown table; a CPU run takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path

import torch

import decoptim as d
from decoptim.eval.backends import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test.jsonl"
SETTINGS = [
    ("top-p 0.9", d.TopP, 0.9),
    ("top-p 0.95", d.TopP, 0.95),
    ("typical 0.9", d.Typical, 0.9),
]


def model_rows(count: int) -> torch.Tensor:
    """`count` next-token logit rows of SmolLM2 along GSM8K answers, float64 [count, V]."""
    model, tokenizer, _ = load_model("smollm2", "cpu")
    rows = []
    with DATA.open() as lines:
        for line in lines:
            item = json.loads(line)
            chat = [{"role": "user", "content": item["question"]},
                    {"role": "assistant", "content": item["answer"]}]  # fmt: skip
            text = tokenizer.apply_chat_template(chat, tokenize=False)
            ids = tokenizer(text, return_tensors="pt").input_ids
            with torch.no_grad():
                logits = model(ids).logits[0, -min(64, ids.shape[1] - 1) :]
            rows.append(logits.double())
            if sum(len(r) for r in rows) >= count:
                break
    return torch.cat(rows)[:count]


def group_figures(tokens: torch.Tensor, q: torch.Tensor, k: int) -> tuple[float, float, float]:
    """(mean distinct tokens, share covering every q ≥ 1/k token, mean |count − k·q|) of
    groups `tokens` [groups, k] drawn from the row q [V]; NaN where no token has q ≥ 1/k."""
    distinct = (tokens.sort(1).values.diff(dim=1) != 0).sum(1).double().add(1).mean()
    heavy = torch.nonzero(q >= 1.0 / k).flatten()
    if heavy.numel() == 0:
        return float(distinct), float("nan"), float("nan")
    counts = (tokens[:, :, None] == heavy).sum(1).double()  # [groups, heavy]
    covered = (counts > 0).all(1).double().mean()
    spread = (counts - k * q[heavy]).abs().mean()
    return float(distinct), float(covered), float(spread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 1.0])
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    print(f"commit {commit}, {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}; {args.rows} rows, {args.groups} groups of {args.k}")  # fmt: skip
    z = model_rows(args.rows)
    codes = d.group_codes(args.groups, args.k, seed=0)
    generator = torch.Generator().manual_seed(0)
    print("\n| decoder | τ | method | distinct / group | covered | spread |")
    print("|---|---:|---|---:|---:|---:|")
    for name, decoder_type, mass in SETTINGS:
        for tau in args.temperatures:
            decoder = decoder_type(mass, tau)
            q_rows, p_rows = decoder.probs(z), d.Softmax(tau).probs(z)
            figures: dict[str, list[tuple[float, float, float]]] = {}
            for q, p in zip(q_rows, p_rows, strict=True):
                independent = torch.multinomial(
                    q, args.groups * args.k, replacement=True, generator=generator
                )
                drawn = {
                    "i.i.d.": independent,
                    "over q's buckets": d.coordinated_sample(q, codes)[0],
                    "by rejection over softmax's": d.coordinated_sample_in_set(p, q, codes)[0],
                }
                for method, tokens in drawn.items():
                    row = group_figures(tokens.reshape(args.groups, args.k), q, args.k)
                    figures.setdefault(method, []).append(row)
            for method, rows in figures.items():
                table = torch.tensor(rows)
                distinct, covered, spread = table.nanmean(0).tolist()
                print(f"| {name} | {tau} | {method} | {distinct:.3f} | {covered:.4f} | "
                      f"{spread:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
