"""Summarise a run directory: a table per decoder × temperature and PNG plots.

Per config: accuracy of one sample (the mean over problems of the fraction of correct
samples), maj@k and pass@k for k in {1, 4, 16} (those ≤ n) and k = n, with 95% bootstrap intervals
over problems, the mean number of distinct final answers among the n samples, mean
generated tokens and seconds per sample. Answers are clustered by mathematical
equivalence for the vote; code tasks report no maj@k.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from ..pipelines.answers import is_equivalent
from ..pipelines.metrics import bootstrap, maj_at_k, pass_at_k
from ..pipelines.selection import cluster_answers
from .runner import MANIFEST, SAMPLES, read_records

KS = (1, 4, 16)


def _exact(a: str, b: str) -> bool:
    return a == b


def summarise(out: Path) -> tuple[dict, list[dict]]:
    manifest_path, samples_path = out / MANIFEST, out / SAMPLES
    if not manifest_path.exists() or not samples_path.exists():
        raise FileNotFoundError(f"{out} has no {MANIFEST} and {SAMPLES}: not a decoptim eval run")
    manifest = json.loads(manifest_path.read_text())
    records = read_records(samples_path)
    by_config: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_config[record["config"]].append(record)
    equivalent = _exact if manifest["task"] == "arith" else is_equivalent
    vote = manifest["task"] != "humaneval"
    rows = []
    for config in manifest["configs"]:
        group = by_config.get(config["id"], [])
        if not group:
            continue
        n = min(len(r["samples"]) for r in group)
        ks = sorted({k for k in KS if k <= n} | {n})
        row = {
            "config": config["id"],
            "decoder": group[0]["decoder"],
            "temperature": config["temperature"],
            "problems": len(group),
            "n": n,
        }
        accuracy, passes, majs, distinct = [], defaultdict(list), defaultdict(list), []
        row["problem_ids"] = [record["problem"] for record in group]
        for record in group:
            samples = record["samples"][:n]
            correct = [s["correct"] for s in samples]
            accuracy.append(sum(correct) / n)
            for k in ks:
                passes[k].append(pass_at_k(n, sum(correct), k))
            if vote:
                clusters = cluster_answers([s["answer"] for s in samples], equivalent)
                right = {c: correct[clusters.index(c)] for c in set(clusters) if c >= 0}
                distinct.append(len(right))
                for k in ks:
                    majs[k].append(maj_at_k(clusters, right, k, max_subsets=2000))
        row["accuracy"] = bootstrap(accuracy)
        row["per_problem"] = {"accuracy": accuracy}
        for k in ks:
            row[f"pass@{k}"] = bootstrap(passes[k])
            row[f"maj@{k}"] = bootstrap(majs[k]) if vote else None
            row["per_problem"][f"pass@{k}"] = passes[k]
            if vote:
                row["per_problem"][f"maj@{k}"] = majs[k]
        row["distinct"] = sum(distinct) / len(distinct) if distinct else math.nan
        row["tokens"] = sum(s["tokens"] for r in group for s in r["samples"]) / (len(group) * n)
        row["seconds_per_sample"] = sum(r["seconds_per_sample"] for r in group) / len(group)
        rows.append(row)
    return manifest, rows


def table(rows: list[dict]) -> str:
    ks = sorted({int(key.split("@")[1]) for row in rows for key in row if key.startswith("pass@")})
    header = ["decoder", "τ", "problems", "accuracy"]
    header += [f"maj@{k}" for k in ks] + [f"pass@{k}" for k in ks]
    header += ["distinct", "tokens", "s/sample"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["decoder"],
            f"{row['temperature']:g}",
            str(row["problems"]),
            str(row["accuracy"]),
        ]
        cells += [str(row.get(f"maj@{k}") or "—") for k in ks]
        cells += [str(row.get(f"pass@{k}") or "—") for k in ks]
        cells += [
            f"{row['distinct']:.2f}",
            f"{row['tokens']:.1f}",
            f"{row['seconds_per_sample']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        families[row["decoder"]].append(row)
    written = []
    ks = sorted({int(key.split("@")[1]) for row in rows for key in row if key.startswith("maj@")})
    k_max = max(ks) if ks else 1
    metrics = [("accuracy", "accuracy of one sample"), (f"maj@{k_max}", f"maj@{k_max}")]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, (key, title) in zip(axes, metrics, strict=True):
        for name, group in families.items():
            group = sorted(group, key=lambda r: r["temperature"])
            values = [r.get(key) for r in group]
            if any(v is None for v in values):
                continue
            temps = [r["temperature"] for r in group]
            means = [100 * v.mean for v in values]
            if len(group) == 1 and name == "greedy":
                axis.axhline(means[0], linestyle="--", color="gray", label=name)
                continue
            axis.errorbar(
                temps,
                means,
                yerr=[
                    [100 * (v.mean - v.low) for v in values],
                    [100 * (v.high - v.mean) for v in values],
                ],
                marker="o",
                capsize=3,
                label=name,
            )
        axis.set_xlabel("temperature τ")
        axis.set_ylabel(f"{title} (%)")
        axis.set_title(f"{title} vs temperature")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    path = out / "accuracy_vs_temperature.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)
    if ks:
        figure, axis = plt.subplots(figsize=(6.5, 4.5))
        for row in rows:
            values = [row.get(f"maj@{k}") for k in ks]
            if any(v is None for v in values):
                continue
            axis.plot(ks, [100 * v.mean for v in values], marker="o", label=row["config"])
        axis.set_xscale("log", base=2)
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.set_xlabel("k (samples voted)")
        axis.set_ylabel("maj@k (%)")
        axis.set_title("majority vote accuracy vs k")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="best")
        figure.tight_layout()
        path = out / "maj_vs_k.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written


def rows_without_per_problem(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("per_problem", "problem_ids")} for r in rows]


def write_report(out: Path, make_plots: bool = True) -> str:
    manifest, rows = summarise(out)
    text = table(rows)
    model = manifest.get("model", "?")
    head = (
        f"# decoptim report: {manifest['task']} with {model}\n\n"
        f"n = {manifest['n']} samples per problem, max {manifest['max_new_tokens']} new tokens, "
        f"seed {manifest['seed']}; accuracy, maj@k and pass@k in % with 95% bootstrap "
        f"intervals over problems.\n\n"
    )
    (out / "report.md").write_text(head + text + "\n")
    (out / "report.json").write_text(
        json.dumps(
            [
                {k: (vars(v) if hasattr(v, "mean") else v) for k, v in row.items()}
                for row in rows_without_per_problem(rows)
            ],
            indent=2,
        )
    )
    if make_plots and rows:
        plots(rows, out)
    return text
