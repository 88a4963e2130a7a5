"""Paired comparisons by problem: Best-of-K against its controls, coordinated against i.i.d.

For every Best-of-K config of a run, at the same temperature and the same sampling (i.i.d.,
or coordinated with the same group size), its controls are
- β = 0: `bok-beta0` with the same parameters but β (same λ, solver and weights);
- τ_eff: `bok-tau` with the same λ (and tempering of the scores and the reference), i.e.
  softmax at τ/(1 + 1/λ), BoK's sharpening alone;
- softmax at τ, the paper's baseline.
The first two are found from the decoder specs' structured fields: each control's name is
registered with what it controls (`decoptim.core.specs.Control`), and parameters are
compared with their defaults filled in.
Every coordinated config is paired with the i.i.d. config of the same decoder spec and τ
(matched on the manifest's structured fields, never on labels) for accuracy and, at every
k the report scores it at (each k in {4, 8, 16, 32, 64, G} dividing its group size G), for
maj@k, pass@k, distinct answers among k samples and the gold-free selections rerank@k and
wvote@k (when the run has log-probabilities): per group or strided subgroup of k for the
coordinated row (`decoptim.pipelines.metrics.subgroups`), the i.i.d. estimators at k for
the other. Each pair also gets the ratio of their mean seconds per sample (the backend's
generate wall time per sample, as recorded; coordinated / i.i.d., no interval).
Each difference is taken per problem (the same problems and prompts), then averaged, with a
95% bootstrap interval over problems (a problem carries all its groups). An interval that
excludes 0 is a difference this run resolves; one that straddles 0 is not.

Several runs of one grid on the same problems with other seeds (`pooled_rows`) are compared
as one: per config and problem, each metric is averaged over the runs first, so a problem
still carries all its samples and the intervals narrow as the runs add samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.specs import DecoderSpec, registered
from ..pipelines.metrics import Estimate, bootstrap
from .grid import COORDINATED, IID, REJECTION, is_coordinated
from .report import metric_ks, sampling_label, sampling_of, summarise_records
from .shards import load_run

CONTROLS = ("β=0", "τ_eff", "softmax")
IID_CONTROL = "i.i.d."
BY_REJECTION = "by rejection"  # the control of a coordinated draw over q's buckets
BOK_METRICS = ("accuracy", "maj", "pass")  # the kinds of metric compared against controls
AT_K = ("maj", "pass", "distinct", "rerank", "wvote")  # coordinated − i.i.d. at each k
METRIC_ORDER = ("accuracy", *AT_K)


@dataclass(frozen=True)
class Comparison:
    config: str  # the treated row's label: its decoder, and its sampling when coordinated
    temperature: float
    control: str  # one of CONTROLS, or IID_CONTROL for a coordinated row
    kind: str  # "accuracy", or the metric scored at k: "maj", "pass", "distinct", ...
    k: int | None  # None for accuracy
    difference: Estimate  # treated − control, per problem, averaged

    @property
    def metric(self) -> str:
        """The report's name of the metric: `kind`, or `kind@k`."""
        return metric_name(self.kind, self.k)


def metric_name(kind: str, k: int | None) -> str:
    return kind if k is None else f"{kind}@{k}"


def _spec(config: dict) -> DecoderSpec | None:
    """A manifest config's decoder spec; None for a decoder this process does not know (a
    plugin's, not loaded)."""
    try:
        return DecoderSpec.from_mapping(config["decoder"])
    except ValueError:
        return None


def control_kind(config: dict) -> str | None:
    """The kind of control ("β=0", "τ_eff") that manifest config `config`'s decoder is
    registered as, or None."""
    spec = _spec(config)
    control = registered(spec.name).control if spec is not None else None
    return control.kind if control is not None else None


def control_of(bok: dict, candidate: dict, control: str) -> bool:
    """Whether manifest config `candidate` is `bok`'s `control` (same temperature and
    sampling)."""
    if candidate["temperature"] != bok["temperature"]:
        return False
    if sampling_of(candidate) != sampling_of(bok):
        return False
    if control == "softmax":
        return candidate["decoder"] == {"name": "softmax"}
    treated, mine = _spec(bok), _spec(candidate)
    return treated is not None and mine is not None and mine.control_kind(treated) == control


def iid_twin_of(coordinated: dict, candidate: dict) -> bool:
    """Whether manifest config `candidate` is the i.i.d. config with `coordinated`'s decoder
    spec (name and parameters) and temperature."""
    return (
        sampling_of(candidate)[0] == IID
        and candidate["decoder"] == coordinated["decoder"]
        and candidate["temperature"] == coordinated["temperature"]
    )


def buckets_twin_of(rejection: dict, candidate: dict) -> bool:
    """Whether manifest config `candidate` is the coordinated config (over q's buckets) with
    the decoder spec, temperature and group size of `rejection`, a config drawn by rejection."""
    return (
        sampling_of(candidate) == (COORDINATED, sampling_of(rejection)[1])
        and candidate["decoder"] == rejection["decoder"]
        and candidate["temperature"] == rejection["temperature"]
    )


def row_label(row: dict) -> str:
    return row["decoder"] + (f" · {sampling_label(row)}" if is_coordinated(row["sampling"]) else "")


def _difference(mine: dict, theirs: dict, kind: str, k: int | None) -> Estimate | None:
    """Mean over shared problems of mine − theirs on metric `kind` at `k`, with a bootstrap
    interval."""
    metric = metric_name(kind, k)
    if metric not in mine["per_problem"] or metric not in theirs["per_problem"]:
        return None
    a = dict(zip(mine["problem_ids"], mine["per_problem"][metric], strict=True))
    b = dict(zip(theirs["problem_ids"], theirs["per_problem"][metric], strict=True))
    shared = sorted(set(a) & set(b))
    return bootstrap([a[p] - b[p] for p in shared]) if shared else None


def _configs_with_rows(manifest: dict, rows: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    by_id = {row["config"]: row for row in rows}
    return [c for c in manifest["configs"] if c["id"] in by_id], by_id


def _scored(row: dict, kinds: tuple[str, ...]) -> list[tuple[str, int | None]]:
    """(kind, k) of every metric of `kinds` that `row` holds: accuracy, and each other kind
    at every k the report scored it at."""
    return [
        (kind, k)
        for kind in kinds
        for k in ([None] if kind == "accuracy" else metric_ks([row], kind))
    ]


def bok_differences(
    manifest: dict, rows: list[dict], kinds: tuple[str, ...] = BOK_METRICS
) -> list[Comparison]:
    """Every (BoK config, control, metric) difference among a run's summarised rows, for
    the metrics of `kinds` at every k the BoK row holds."""
    configs, by_id = _configs_with_rows(manifest, rows)
    results = []
    for bok in configs:
        if bok["decoder"]["name"] != "bok":
            continue
        mine = by_id[bok["id"]]
        for control in CONTROLS:
            match = next((c for c in configs if control_of(bok, c, control)), None)
            if match is None:
                continue
            for kind, k in _scored(mine, kinds):
                difference = _difference(mine, by_id[match["id"]], kind, k)
                if difference is not None:
                    results.append(
                        Comparison(
                            row_label(mine), bok["temperature"], control, kind, k, difference
                        )
                    )
    return results


@dataclass(frozen=True)
class CostRatio:
    config: str  # the coordinated row's label
    temperature: float
    coordinated: float  # mean seconds per sample over the shared problems
    iid: float

    @property
    def ratio(self) -> float:
        return self.coordinated / self.iid if self.iid > 0 else float("nan")


def _twins(manifest: dict, rows: list[dict]) -> list[tuple[dict, dict, dict]]:
    """(coordinated manifest config, its row, its i.i.d. twin's row) for every coordinated
    config of the run that has a twin."""
    configs, by_id = _configs_with_rows(manifest, rows)
    pairs = []
    for coordinated in configs:
        if sampling_of(coordinated)[1] is None:
            continue
        twin = next((c for c in configs if iid_twin_of(coordinated, c)), None)
        if twin is not None:
            pairs.append((coordinated, by_id[coordinated["id"]], by_id[twin["id"]]))
    return pairs


def cost_ratios(manifest: dict, rows: list[dict], records: list[dict]) -> list[CostRatio]:
    """For each coordinated config and its i.i.d. twin: the mean `seconds_per_sample` of
    each over the problems both hold, from the run's `records` (the backend's generate wall
    time per sample)."""
    seconds: dict[str, dict[str, float]] = {}
    for record in records:
        seconds.setdefault(record["config"], {})[record["problem"]] = record["seconds_per_sample"]
    results = []
    for coordinated, mine, theirs in _twins(manifest, rows):
        a, b = seconds.get(mine["config"], {}), seconds.get(theirs["config"], {})
        shared = sorted(set(a) & set(b))
        if shared:
            results.append(
                CostRatio(
                    row_label(mine),
                    coordinated["temperature"],
                    sum(a[p] for p in shared) / len(shared),
                    sum(b[p] for p in shared) / len(shared),
                )
            )
    return results


def coordination_differences(manifest: dict, rows: list[dict]) -> list[Comparison]:
    """Coordinated minus i.i.d. (same decoder spec and τ) for accuracy and, at every K of
    the coordinated row (its `K_values`), maj@K, pass@K, distinct@K, rerank@K and
    wvote@K (those both rows hold)."""
    return [
        comparison
        for coordinated, mine, theirs in _twins(manifest, rows)
        for comparison in _at_every_k(coordinated, mine, theirs, IID_CONTROL)
    ]


def rejection_differences(manifest: dict, rows: list[dict]) -> list[Comparison]:
    """Coordinated over q's buckets minus coordinated by rejection (same decoder spec, τ and
    group size), as `coordination_differences`: what the cheaper draw costs, paired by
    problem. Each comparison's config is the draw over q's buckets, its control BY_REJECTION."""
    configs, by_id = _configs_with_rows(manifest, rows)
    results = []
    for rejection in (c for c in configs if c.get("sampling") == REJECTION):
        twin = next((c for c in configs if buckets_twin_of(rejection, c)), None)
        if twin is not None:
            mine, theirs = by_id[twin["id"]], by_id[rejection["id"]]
            results += _at_every_k(twin, mine, theirs, BY_REJECTION)
    return results


def _at_every_k(config: dict, mine: dict, theirs: dict, control: str) -> list[Comparison]:
    at_k = [(kind, k) for k in mine["K_values"] for kind in AT_K]
    return [
        Comparison(row_label(mine), config["temperature"], control, kind, k, difference)
        for kind, k in [("accuracy", None), *at_k]
        if (difference := _difference(mine, theirs, kind, k)) is not None
    ]


def comparison_table(comparisons: list[Comparison], kind: str, k: int | None = None) -> str:
    """One markdown row per BoK config and temperature; one column per control; the metric
    `kind` at `k`."""
    cells: dict[tuple[str, float], dict[str, Estimate]] = {}
    for c in comparisons:
        if (c.kind, c.k) == (kind, k) and c.control in CONTROLS:
            cells.setdefault((c.config, c.temperature), {})[c.control] = c.difference
    lines = [
        f"| BoK config | τ | {metric_name(kind, k)}: − β=0 | − τ_eff | − softmax |",
        "|---|---|---|---|---|",
    ]
    for (bok, tau), row in cells.items():
        shown = [_signed(row[c], kind) if c in row else "—" for c in CONTROLS]
        lines.append(f"| {bok} | {tau:g} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def coordination_table(
    comparisons: list[Comparison], costs: Sequence[CostRatio] = (), control: str = IID_CONTROL
) -> str:
    """Coordinated − `control` (i.i.d., or by rejection): one table of accuracy and the cost
    ratio per coordinated config, then one table per K with maj@K, pass@K, distinct@K,
    rerank@K and wvote@K."""
    cells: dict[tuple[str, float], dict[tuple[str, int | None], Estimate]] = {}
    for c in comparisons:
        if c.control == control:
            cells.setdefault((c.config, c.temperature), {})[c.kind, c.k] = c.difference
    ratio = {(c.config, c.temperature): c for c in costs}
    lines = [
        f"| coordinated config | τ | accuracy | s/sample coord. / {control} |",
        "|---|---|---|---|",
    ]
    for (config, tau), row in cells.items():
        cost = ratio.get((config, tau))
        accuracy = row.get(("accuracy", None))
        shown = "—" if accuracy is None else _signed(accuracy, "accuracy")
        timing = (
            "—"
            if cost is None
            else f"{cost.ratio:.2f} ({cost.coordinated:.4g} s / {cost.iid:.4g} s)"
        )
        lines.append(f"| {config} | {tau:g} | {shown} | {timing} |")
    tables = ["\n".join(lines)]
    every_k = sorted({k for row in cells.values() for _, k in row if k is not None})
    for k in every_k:
        header = " | ".join(f"{kind}@{k}" for kind in AT_K)
        lines = [
            f"| coordinated config | τ | {header} |",
            "|---|---|" + "---|" * len(AT_K),
        ]
        for (config, tau), row in cells.items():
            if not any((kind, k) in row for kind in AT_K):
                continue
            shown = [_signed(row[kind, k], kind) if (kind, k) in row else "—" for kind in AT_K]
            lines.append(f"| {config} | {tau:g} | " + " | ".join(shown) + " |")
        tables.append(f"#### K = {k}\n\n" + "\n".join(lines))
    return "\n\n".join(tables)


def _signed(estimate: Estimate, kind: str) -> str:
    """A difference with its interval: in points for rates, in answers for distinct@K;
    bold when the interval excludes 0."""
    scale, digits = (1, 2) if kind == "distinct" else (100, 1)
    mean, low, high = (scale * v for v in (estimate.mean, estimate.low, estimate.high))
    text = f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
    resolved = estimate.low > 0 or estimate.high < 0
    return f"**{text}**" if resolved else text


def pooled_rows(runs: Sequence[tuple[dict, list[dict]]]) -> list[dict]:
    """One row per config of several runs' (manifest, rows) of one grid on the same problems
    with different seeds: each per-problem metric, its summary (the report's: a bootstrap
    estimate, distinct answers a plain mean), tokens and seconds per sample averaged over the
    runs. A ValueError names what differs: the task, the configs, a config's problems, or a
    repeated seed (the same samples twice would narrow the intervals for nothing)."""
    first, rows = runs[0]
    seeds: dict[object, int] = {}
    for index, (manifest, _) in enumerate(runs):
        if manifest["task"] != first["task"]:
            raise ValueError(f"run {index + 1} is on {manifest['task']}, run 1 on {first['task']}")
        seed = manifest.get("seed")
        if seed in seeds:
            raise ValueError(f"runs {seeds[seed] + 1} and {index + 1} both have seed={seed}")
        seeds[seed] = index
    by_config = [{row["config"]: row for row in run_rows} for _, run_rows in runs]
    configs = set(by_config[0])
    for index, found in enumerate(by_config[1:], 2):
        if set(found) != configs:
            different = sorted(set(found) ^ configs)
            raise ValueError(f"runs 1 and {index} hold different configs: {different}")
    pooled = []
    for row in rows:
        same = [found[row["config"]] for found in by_config]
        problems = row["problem_ids"]
        for index, other in enumerate(same[1:], 2):
            if sorted(other["problem_ids"]) != sorted(problems):
                raise ValueError(
                    f"{row['config']}: runs 1 and {index} hold different problems "
                    f"({len(problems)} and {len(other['problem_ids'])})"
                )
        keys = [k for k in row["per_problem"] if all(k in r["per_problem"] for r in same)]
        per_problem = {}
        for key in keys:
            values = [dict(zip(r["problem_ids"], r["per_problem"][key], strict=True)) for r in same]
            per_problem[key] = [math.fsum(v[p] for v in values) / len(same) for p in problems]
        merged = {k: v for k, v in row.items() if k not in row["per_problem"]}
        for key, values in per_problem.items():
            merged[key] = (
                sum(values) / len(values) if key.startswith("distinct") else bootstrap(values)
            )
        for key in ("tokens", "seconds_per_sample"):
            merged[key] = math.fsum(r[key] for r in same) / len(same)
        merged["per_problem"] = per_problem
        merged["runs"] = len(same)
        pooled.append(merged)
    return pooled


def _pooled_seconds(records: Sequence[list[dict]]) -> list[dict]:
    """Records carrying each (config, problem)'s seconds per sample averaged over the runs'
    `records`: what `cost_ratios` reads."""
    seconds: dict[tuple[str, str], list[float]] = {}
    for run_records in records:
        for record in run_records:
            key = (record["config"], record["problem"])
            seconds.setdefault(key, []).append(record["seconds_per_sample"])
    return [
        {"config": c, "problem": p, "seconds_per_sample": sum(v) / len(v)}
        for (c, p), v in seconds.items()
    ]


def write_comparison(
    runs: Path | Sequence[Path], make_plot: bool = True, out: Path | None = None
) -> str:
    """compare.md (and compare.png) in `out` (default: the run's folder): BoK minus each
    control, per metric, and coordinated minus i.i.d. Several runs of one grid with other
    seeds are pooled (`pooled_rows`); they need `out`."""
    runs = [runs] if isinstance(runs, Path) else list(runs)
    if out is None:
        if len(runs) > 1:
            raise ValueError("comparing several runs needs an output folder (--out)")
        out = runs[0]
    loaded = [load_run(run) for run in runs]
    summaries = [(manifest, summarise_records(manifest, records)) for manifest, records in loaded]
    manifest, rows = summaries[0]
    records = loaded[0][1]
    if len(runs) > 1:
        rows = pooled_rows(summaries)
        records = _pooled_seconds([run_records for _, run_records in loaded])
    sections = []
    bok = bok_differences(manifest, rows)
    for kind, k in sorted({(c.kind, c.k) for c in bok}, key=_metric_order):
        sections.append(
            f"### BoK against its controls: {metric_name(kind, k)}\n\n"
            + comparison_table(bok, kind, k)
        )
    coordination = coordination_differences(manifest, rows)
    if coordination:
        sections.append(
            "### Coordinated minus i.i.d. (same decoder and τ, at each K)\n\n"
            "Coordinated (coord. K=G, groups of G): per strided subgroup of K of each group "
            "(samples r, r + G/K, ...: an exact coordinated group of K) for every K in "
            "{4, 8, 16, 32, 64, G} dividing G; i.i.d.: the unbiased pass@K, maj@K and "
            "wvote@K over size-K subsets, rerank@K's exact expectation over them and the "
            "expected distinct answers among K of the n samples. rerank@K: the sample with "
            "the highest logprob_mean is right; wvote@K: the answer with the largest "
            "Σ exp(logprob_mean) is right (absent without log-probabilities). "
            "s/sample: the mean seconds_per_sample of the two configs' records over their "
            "shared problems (the wall time of the backend's generate per sample, in this "
            "run), coordinated / i.i.d., without an interval.\n\n"
            + coordination_table(coordination, cost_ratios(manifest, rows, records))
        )
    buckets = rejection_differences(manifest, rows)
    if buckets:
        sections.append(
            "### Over q's buckets minus by rejection (same decoder, τ and K)\n\n"
            "The two coordinated draws of one decoder (`--coordinated --by-rejection`), "
            "paired by problem as above: what the draw by rejection gives up.\n\n"
            + coordination_table(buckets, control=BY_REJECTION)
        )
    text = (
        "\n\n".join(sections)
        or "No pairs: the run holds no BoK config with a control and no coordinated config "
        "with its i.i.d. twin."
    )
    head = (
        f"# Paired comparisons: {manifest['task']} with {manifest.get('model')}\n\n"
        "Differences per problem, averaged, in points (%) (distinct@K: in answers), with 95% "
        "bootstrap intervals over problems; bold where the interval excludes 0.\n\n"
    )
    if len(runs) > 1:
        seeds = ", ".join(str(m.get("seed")) for m, _ in loaded)
        head += (
            f"Pooled over {len(runs)} runs ({', '.join(str(r) for r in runs)}; seeds {seeds}): "
            "each metric averaged per problem over the runs, then compared as one run.\n\n"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(head + text + "\n")
    if make_plot and rows:
        title = f"{manifest['task']} · {manifest.get('model')}"
        plot_controls(manifest, rows, out / "compare.png", title)
        if coordination or buckets:
            plot_coordination([*coordination, *buckets], out / "compare_coordinated.png", title)
    return head + text


def _metric_order(metric: tuple[str, int | None]) -> tuple[int, int]:
    kind, k = metric
    rank = METRIC_ORDER.index(kind) if kind in METRIC_ORDER else len(METRIC_ORDER)
    return (rank, k or 0)


def plot_coordination(comparisons: list[Comparison], path: Path, title: str) -> Path:
    """maj@K, pass@K and distinct@K differences against K with their 95% intervals: each
    coordinated config minus its i.i.d. twin (solid), and each draw over q's buckets minus
    the draw by rejection (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    lines = sorted({(c.config, c.temperature, c.control) for c in comparisons})
    every_k = sorted({c.k for c in comparisons if c.k is not None})
    for axis, kind in zip(axes, ("maj", "pass", "distinct"), strict=True):
        scale, unit = (1, "answers") if kind == "distinct" else (100, "points")
        for config, tau, control in lines:
            points = sorted(
                (c.k, c.difference)
                for c in comparisons
                if (c.config, c.temperature, c.control, c.kind) == (config, tau, control, kind)
            )
            if not points:
                continue
            ks = [k for k, _ in points]
            means = [scale * d.mean for _, d in points]
            below = [scale * (d.mean - d.low) for _, d in points]
            above = [scale * (d.high - d.mean) for _, d in points]
            axis.errorbar(
                ks,
                means,
                yerr=[below, above],
                marker="o",
                capsize=3,
                linestyle="-" if control == IID_CONTROL else "--",
                label=f"{config} @ {tau:g} − {control}",
            )
        axis.axhline(0.0, color="gray", linewidth=0.8)
        axis.set_xscale("log", base=2)
        axis.set_xticks(every_k, [str(k) for k in every_k])
        axis.set_xlabel("K (samples in a group)")
        axis.set_ylabel(f"{kind}@K difference ({unit})")
        axis.set_title(f"{kind}@K")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="best")
    figure.suptitle(f"{title}: coordinated minus its control, per problem, 95% intervals")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_controls(manifest: dict, rows: list[dict], path: Path, title: str) -> Path | None:
    """Accuracy, maj@n and pass@n vs τ for softmax, each BoK family and its τ_eff control
    (i.i.d. rows; the report's plots show coordinated against i.i.d.); β = 0 controls and
    mirror-solver rows are left out (they coincide with τ_eff and exact rows: see the
    tables)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["sampling"] == IID]
    if not rows:
        return None
    n = max(r["n"] for r in rows)
    configs = {config["id"]: config for config in manifest["configs"]}
    families: dict[str, list[dict]] = {}
    for row in rows:
        families.setdefault(row["decoder"], []).append(row)
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for axis, metric in zip(axes, ("accuracy", f"maj@{n}", f"pass@{n}"), strict=True):
        for name, group in families.items():
            config = configs[group[0]["config"]]
            kind = control_kind(config)
            if kind == "β=0" or config["decoder"].get("solver") == "mirror":
                continue
            group = sorted(group, key=lambda r: r["temperature"])
            if any(r.get(metric) is None for r in group):
                continue
            style = "--" if kind == "τ_eff" else "-"
            axis.plot(
                [r["temperature"] for r in group],
                [100 * r[metric].mean for r in group],
                style,
                marker="o",
                markersize=3,
                label=name,
            )
        axis.set_xlabel("temperature τ")
        axis.set_ylabel(f"{metric} (%)")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="lower left")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
