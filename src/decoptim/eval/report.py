"""Summarise a run directory: a table per decoder × temperature and PNG plots.

Per config: accuracy of one sample (the mean over problems of the fraction of correct
samples), maj@k and pass@k (i.i.d. configs: k in {1, 4, 16} up to n, k = n and every K
of the run; coordinated configs: k = 1 and their own K, both below), with 95% bootstrap
intervals over problems, the mean number of distinct final answers among the n samples,
mean generated tokens and seconds per sample. Answers are
clustered by mathematical equivalence for the vote; code tasks report no maj@k.

The K of a run: for each coordinated group size G, every k in {4, 8, 16, 32, 64, G} that
divides G (`group_ks`). Coordinated configs are scored by group (`decoptim.pipelines.metrics`):
at each such k, pass@k, maj@k and distinct answers per strided subgroup of k of each group
of G (samples r, r + G/k, ...: each is an exact coordinated group of k, see
`decoptim.pipelines.metrics.subgroups`), averaged over a problem's subgroups; of the i.i.d.
estimators only the k = 1 ones (accuracy, pass@1, maj@1) are kept, as they need only each
sample's marginal. i.i.d. configs get their estimators at every K ≤ n (only k = n when the
run has no coordinated config). Every config also gets, at each K: pass@K next to its
ceiling min(1, K·a) (any sampler that keeps the marginals), maj@K next to the vote's limit
(the most frequent of the n answers right, an estimate from n samples), distinct answers
among K samples (the expected number among K of the n for i.i.d. configs), and the
gold-free selections from each sample's `logprob_mean`: rerank@K (the sample the model
scores highest) and wvote@K (the answer with the largest Σ exp(logprob_mean); not for code
tasks), per (sub)group or as the expectation over size-K subsets. Those two are left out
of a config unless every one of its samples has a `logprob_mean` (None on backends that
return none).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ..pipelines import metrics
from ..pipelines.selection import cluster_answers
from .grid import IID, REJECTION, is_coordinated
from .runner import progress_bar
from .shards import load_run
from .tasks import vote_equivalence

KS = (1, 4, 16)
STRIDED_KS = (4, 8, 16, 32, 64)  # subgroup sizes scored in coordinated groups (and G)
MAJ_SUBSETS = 2000  # size-k subsets per problem for the i.i.d. maj@k and wvote@k when more
SELECTIONS = ("rerank", "wvote")  # gold-free selections from logprob_mean


def sampling_of(config: dict) -> tuple[str, int | None]:
    """(sampling, group size) of a manifest config; runs before coordination are i.i.d."""
    sampling = config.get("sampling", IID)
    return sampling, (config.get("group_size") if is_coordinated(sampling) else None)


def group_sizes(manifest: dict) -> list[int]:
    """The coordinated group sizes K of a run, smallest first."""
    return sorted({k for c in manifest["configs"] if (k := sampling_of(c)[1]) is not None})


def group_ks(group_size: int) -> list[int]:
    """The k at which a coordinated config with groups of `group_size` G is scored: every k
    in {4, 8, 16, 32, 64, G} that divides G (its strided subgroups of k are exact groups)."""
    return sorted({k for k in (*STRIDED_KS, group_size) if group_size % k == 0})


def run_ks(manifest: dict) -> list[int]:
    """Every K of a run: the union of `group_ks` over its coordinated group sizes."""
    return sorted({k for size in group_sizes(manifest) for k in group_ks(size)})


def has_scores(records: list[dict], n: int) -> bool:
    """Whether every sample (of the first n per record) has a `logprob_mean`."""
    return all(
        isinstance(s.get("logprob_mean"), (int, float)) for r in records for s in r["samples"][:n]
    )


def problem_metrics(
    samples: list[dict],
    ks: list[int],
    ceilings: list[int],
    group_size: int | None,
    equivalent: Callable[[str, str], bool] | None,
    scored: bool = False,
) -> dict[str, float]:
    """One problem's metrics: accuracy, pass@k (and maj@k, distinct answers, the vote's
    limit when `equivalent` is given) for k in `ks`, the pass@K ceiling and distinct@K for
    K in `ceilings`, and with `scored` rerank@K (and wvote@K with `equivalent`) for K in
    `ceilings`. With `group_size` (coordinated samples), every k > 1 is scored per strided
    subgroup of k of each group (k must divide `group_size`)."""
    n = len(samples)
    correct = [bool(s["correct"]) for s in samples]
    scores = [s.get("logprob_mean") for s in samples] if scored else []
    accuracy = sum(correct) / n
    values = {"accuracy": accuracy}
    clusters: list[int] = []
    right: dict[int, bool] = {}
    if equivalent is not None:
        clusters = cluster_answers([s["answer"] for s in samples], equivalent)
        right = {c: correct[clusters.index(c)] for c in set(clusters) if c >= 0}
        values["maj-limit"] = metrics.vote_limit(clusters, right)
        values["distinct"] = len(right)
    for k in ks:
        g = group_size if group_size is not None and k > 1 else None
        values[f"pass@{k}"] = (
            metrics.group_pass(correct, g, k) if g else metrics.pass_at_k(n, sum(correct), k)
        )
        if equivalent is not None:
            values[f"maj@{k}"] = (
                metrics.group_maj(clusters, right, g, k)
                if g
                else metrics.maj_at_k(clusters, right, k, max_subsets=MAJ_SUBSETS)
            )
    for k in ceilings:
        g = group_size if group_size is not None and k > 1 else None
        values[f"pass-ceiling@{k}"] = metrics.pass_ceiling(accuracy, k)
        if equivalent is not None:
            values[f"distinct@{k}"] = (
                metrics.group_distinct(clusters, g, k)
                if g
                else metrics.expected_distinct(clusters, k)
            )
        if scored:
            values[f"rerank@{k}"] = (
                metrics.group_rerank(correct, scores, g, k)
                if g
                else metrics.rerank_at_k(correct, scores, k)
            )
            if equivalent is not None:
                values[f"wvote@{k}"] = (
                    metrics.group_wvote(clusters, right, scores, g, k)
                    if g
                    else metrics.wvote_at_k(clusters, right, scores, k, max_subsets=MAJ_SUBSETS)
                )
    return values


def summarise(out: Path) -> tuple[dict, list[dict]]:
    manifest, records = load_run(out)
    return manifest, summarise_records(manifest, records)


def summarise_records(manifest: dict, records: list[dict]) -> list[dict]:
    """One row per config of the manifest that has records (see the module docstring)."""
    by_config: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_config[record["config"]].append(record)
    equivalent = vote_equivalence(manifest)
    every_k = run_ks(manifest)
    rows = []
    # Minutes on a large run (every sample's answer clustered): a bar on a terminal only.
    bar = progress_bar(len(manifest["configs"]), "scoring", "config", sys.stderr.isatty())
    for config in manifest["configs"]:
        if bar is not None:
            bar.update()
        group = by_config.get(config["id"], [])
        if not group:
            continue
        n = min(len(r["samples"]) for r in group)
        sampling, k = sampling_of(config)
        if k is not None:
            ceilings = group_ks(k)
            ks = sorted({1, *ceilings})
        else:
            ceilings = [size for size in every_k if size <= n] or [n]
            ks = sorted({size for size in KS if size <= n} | {n} | set(ceilings))
        scored = has_scores(group, n)
        per_problem: dict[str, list[float]] = defaultdict(list)
        for record in group:
            values = problem_metrics(record["samples"][:n], ks, ceilings, k, equivalent, scored)
            for key, value in values.items():
                per_problem[key].append(value)
        row = {
            "config": config["id"],
            "decoder": group[0]["decoder"],
            "sampling": sampling,
            "group_size": k,
            "temperature": config["temperature"],
            "problems": len(group),
            "n": n,
            "K_values": ceilings,  # the K of the K table
        }
        for key, values in per_problem.items():  # distinct answers: counts, not rates
            row[key] = (
                sum(values) / len(values)
                if key.startswith("distinct")
                else metrics.bootstrap(values)
            )
        if "distinct" not in row:
            row["distinct"] = math.nan
        row["tokens"] = sum(s["tokens"] for r in group for s in r["samples"]) / (len(group) * n)
        row["seconds_per_sample"] = sum(r["seconds_per_sample"] for r in group) / len(group)
        row["problem_ids"] = [record["problem"] for record in group]
        row["per_problem"] = dict(per_problem)
        rows.append(row)
    if bar is not None:
        bar.close()
    return rows


def sampling_label(row: dict) -> str:
    if not is_coordinated(row["sampling"]):
        return "i.i.d."
    how = " by rejection" if row["sampling"] == REJECTION else ""
    return f"coord. K={row['group_size']}{how}"


def table(rows: list[dict]) -> str:
    """One line per config: the i.i.d. estimators at every k, or a coordinated config's
    per-group values at k = K (— where an estimator does not apply)."""
    ks = metric_ks(rows, "pass")
    header = ["decoder", "sampling", "τ", "problems", "accuracy"]
    header += [f"maj@{k}" for k in ks] + [f"pass@{k}" for k in ks]
    header += ["distinct", "tokens", "s/sample"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["decoder"],
            sampling_label(row),
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


def k_table(rows: list[dict], k: int | None = None) -> str:
    """Every config at each of its K (or at `k` only): pass@K beside its ceiling, maj@K
    beside the vote's limit, distinct answers, and the gold-free selections."""
    header = ["decoder", "sampling", "τ", "K", "accuracy", "maj@K", "vote limit", "pass@K"]
    header += ["ceiling min(1, K·a)", "distinct@K", "rerank@K", "wvote@K"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        sizes = row["K_values"] if k is None else [k] if k in row["K_values"] else []
        for size in sizes:
            distinct = row.get(f"distinct@{size}")
            cells = [
                row["decoder"],
                sampling_label(row),
                f"{row['temperature']:g}",
                str(size),
                str(row["accuracy"]),
                str(row.get(f"maj@{size}") or "—"),
                str(row.get("maj-limit") or "—"),
                str(row[f"pass@{size}"]),
                str(row[f"pass-ceiling@{size}"]),
                "—" if distinct is None else f"{distinct:.2f}",
                *(str(row.get(f"{name}@{size}") or "—") for name in SELECTIONS),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def k_tables(rows: list[dict]) -> str:
    """`k_table` once per K of the run, smallest first, each under its heading."""
    every_k = sorted({k for row in rows for k in row["K_values"]})
    return "\n\n".join(f"### K = {k}\n\n" + k_table(rows, k) for k in every_k)


def metric_ks(rows: list[dict], metric: str) -> list[int]:
    """The k of every `metric@k` ("maj" or "pass") that some row holds."""
    prefix = metric + "@"
    return sorted(
        {int(key[len(prefix) :]) for row in rows for key in row if key.startswith(prefix)}
    )


def plot_k(rows: list[dict]) -> int:
    """The K of the plots: the run's smallest group size, or n without coordinated rows."""
    sizes = [r["group_size"] for r in rows if r["group_size"] is not None]
    return min(sizes) if sizes else max(r["n"] for r in rows)


def _line_style(sampling: str, mixed: bool) -> tuple[str, str]:
    """(marker, line style) of a sampling's curves: i.i.d. dashed squares where a plot also
    holds coordinated curves, coordinated solid circles, by rejection dash-dotted triangles."""
    if sampling == REJECTION:
        return "^", "-."
    return ("s", "--") if mixed and not is_coordinated(sampling) else ("o", "-")


def plots(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = plot_k(rows)
    mixed = any(is_coordinated(r["sampling"]) for r in rows)
    colours = {
        name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(r["decoder"] for r in rows))
    }
    with_coord = {r["decoder"] for r in rows if is_coordinated(r["sampling"])}
    families: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        families[(row["decoder"], sampling_label(row))].append(row)
    written = []
    panels = [
        ("accuracy", None, "accuracy of one sample"),
        (f"maj@{k}", "maj-limit", f"maj@{k} (dotted: the vote's limit)"),
        (f"pass@{k}", f"pass-ceiling@{k}", f"pass@{k} (dotted: ceiling min(1, {k}·a))"),
    ]
    panels += [
        (f"{name}@{k}", None, f"{name}@{k} (from logprob_mean)")
        for name in SELECTIONS
        if any(f"{name}@{k}" in r for r in rows)
    ]
    columns = 3
    lines = -(-len(panels) // columns)
    figure, grid = plt.subplots(lines, columns, figsize=(17, 4.8 * lines), squeeze=False)
    axes = list(grid.flat)
    for axis, (key, bound, title) in zip(axes, panels, strict=False):
        for (name, sampling), group in families.items():
            group = sorted(group, key=lambda r: r["temperature"])
            values = [r.get(key) for r in group]
            if any(v is None for v in values):
                continue
            temps = [r["temperature"] for r in group]
            label = f"{name} · {sampling}" if mixed else name
            colour = colours[name]
            if len(group) == 1 and name == "greedy":
                axis.axhline(100 * values[0].mean, linestyle="--", color="gray", label=name)
                continue
            coordinated = is_coordinated(group[0]["sampling"])
            marker, style = _line_style(group[0]["sampling"], mixed)
            axis.errorbar(
                temps,
                [100 * v.mean for v in values],
                yerr=[
                    [100 * (v.mean - v.low) for v in values],
                    [100 * (v.high - v.mean) for v in values],
                ],
                marker=marker,
                linestyle=style,
                color=colour,
                capsize=3,
                label=label,
            )
            # one bound per decoder (both samplings estimate it): the coordinated family's
            ceiling = [r.get(bound) for r in group] if bound else [None]
            if all(c is not None for c in ceiling) and (coordinated or name not in with_coord):
                axis.plot(temps, [100 * c.mean for c in ceiling], ":", color=colour, alpha=0.8)
        axis.set_xlabel("temperature τ")
        axis.set_ylabel(f"{key} (%)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    spare = axes[len(panels) :]
    for axis in spare:
        axis.axis("off")
    if spare:  # the legend gets a panel of its own
        spare[0].legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="center")
    else:
        axes[0].legend(fontsize=7, loc="best")
    if mixed:
        figure.suptitle("solid: coordinated groups of K; dashed: i.i.d.", fontsize=10)
    figure.tight_layout()
    path = out / "accuracy_vs_temperature.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)
    if metric_ks(rows, "maj"):
        path = out / "maj_vs_k.png"
        plot_maj_vs_k(rows, path, colours, mixed)
        written.append(path)
    return written


PER_PROBLEM_KEYS = ("per_problem", "problem_ids")


def plot_maj_vs_k(rows: list[dict], path: Path, colours: dict[str, str], mixed: bool) -> None:
    """maj@k against k, one panel per temperature, one line per decoder and sampling (a
    decoder keeps its colour; solid: coordinated, dashed: i.i.d.)."""
    import matplotlib.pyplot as plt

    temperatures = sorted({r["temperature"] for r in rows if metric_ks([r], "maj")})
    columns = min(len(temperatures), 4)
    lines = -(-len(temperatures) // columns)
    figure, axes = plt.subplots(
        lines, columns, figsize=(5 * columns, 4 * lines), squeeze=False, sharey=True
    )
    ticks = metric_ks(rows, "maj")
    for axis, tau in zip(axes.flat, temperatures, strict=False):
        for row in rows:
            ks = metric_ks([row], "maj")
            if row["temperature"] != tau or not ks:
                continue
            style = _line_style(row["sampling"], mixed)[1]
            axis.plot(
                ks,
                [100 * row[f"maj@{j}"].mean for j in ks],
                style,
                marker="o",
                markersize=3,
                color=colours[row["decoder"]],
                label=f"{row['decoder']} · {sampling_label(row)}" if mixed else row["decoder"],
            )
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [str(j) for j in ticks])
        axis.set_xlabel("k (samples voted)")
        axis.set_title(f"τ = {tau:g}", fontsize=10)
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(temperatures) :]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel("maj@k (%)")
    axes.flat[0].legend(fontsize=6, loc="best")
    title = "majority vote accuracy vs k"
    figure.suptitle(title + (" (solid: coordinated, dashed: i.i.d.)" if mixed else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def rows_without_per_problem(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in PER_PROBLEM_KEYS} for r in rows]


def write_report(out: Path, make_plots: bool = True) -> str:
    manifest, rows = summarise(out)
    text = table(rows)
    model = manifest.get("model", "?")
    head = (
        f"# decoptim report: {manifest['task']} with {model}\n\n"
        f"n = {manifest['n']} samples per problem, max {manifest['max_new_tokens']} new tokens, "
        f"seed {manifest['seed']}; accuracy, maj@k and pass@k in % with 95% bootstrap "
        f"intervals over problems. i.i.d. rows: pass@k by the unbiased estimator, maj@k over "
        f"size-k subsets of the n samples. Coordinated rows (coord. K): pass@k and maj@k per "
        f"group of K and per strided subgroup of k of each group (k dividing K, each an "
        f"exact coordinated group of k), averaged over a problem's groups; the i.i.d. "
        f"estimators do not apply to them beyond k = 1.\n\n"
    )
    k_head = (
        "\n\n## At K samples: pass@K against its ceiling, maj@K against the vote's limit\n\n"
        "One table per K. A coordinated row (coord. K=G: groups of G) is scored at every K "
        "in {4, 8, 16, 32, 64, G} that divides G, per strided subgroup of K of each group "
        "(samples r, r + G/K, r + 2G/K, ...: an exact coordinated group of K), averaged over "
        "the problem's subgroups; i.i.d. rows by their estimators at the same K. "
        "ceiling: the mean over problems of min(1, K·a_p), a_p the problem's accuracy; no "
        "sampler that keeps each sample's distribution passes more. vote limit: the mean over "
        "problems of whether the most frequent of the n answers is right (ties: the fraction "
        "of tied answers that are right), an estimate from n samples of maj@K as K grows. "
        "distinct@K: distinct answers per (sub)group (coordinated) or expected among K of "
        "the n (i.i.d.). Gold-free selection from each sample's logprob_mean (the model's "
        "mean log-probability per token): rerank@K, the sample scored highest is right "
        "(ties: the earlier sample); wvote@K, the answer with the largest Σ exp(logprob_mean) "
        "over its samples is right (exact ties: the answer seen first); per (sub)group, or "
        "the expectation over size-K subsets of the n (i.i.d.: rerank exact by rank, wvote "
        f"over all subsets or {MAJ_SUBSETS} random ones); — where the backend recorded no "
        "log-probabilities.\n\n"
    )
    body = text + (k_head + k_tables(rows) if rows else "")
    (out / "report.md").write_text(head + body + "\n")
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
    return body
