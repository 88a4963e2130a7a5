"""Best-of-K against its controls, paired by problem: is the gain coverage or sharpening?

For every Best-of-K config of a run, at the same temperature, its controls are
- β = 0: `bok-beta0` with the same parameters but β (same λ, solver and weights);
- τ_eff: `bok-tau` with the same λ, i.e. softmax at τ/(1 + 1/λ), BoK's sharpening alone;
- softmax at τ, the paper's baseline.
Each difference BoK − control is taken per problem (the same problems and prompts), then
averaged, with a 95% bootstrap interval over problems. An interval that excludes 0 is a
difference this run resolves; one that straddles 0 is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..pipelines.metrics import Estimate, bootstrap
from .report import summarise

CONTROLS = ("β=0", "τ_eff", "softmax")


@dataclass(frozen=True)
class Comparison:
    bok: str  # the BoK row's decoder label
    temperature: float
    control: str  # one of CONTROLS
    metric: str
    difference: Estimate  # BoK − control, per problem, averaged


def _params(config: dict, drop: tuple[str, ...] = ()) -> tuple:
    decoder = config["decoder"]
    return tuple(sorted((k, str(v)) for k, v in decoder.items() if k not in ("name", *drop)))


def control_of(bok: dict, candidate: dict, control: str) -> bool:
    """Whether manifest config `candidate` is `bok`'s `control` (same temperature)."""
    if candidate["temperature"] != bok["temperature"]:
        return False
    name = candidate["decoder"]["name"]
    if control == "β=0":
        return name == "bok-beta0" and _params(candidate, ("beta",)) == _params(bok, ("beta",))
    if control == "τ_eff":
        return name == "bok-tau" and candidate["decoder"].get("lam") == bok["decoder"].get("lam")
    return name == "softmax" and len(candidate["decoder"]) == 1


def paired_differences(out: Path, metrics: tuple[str, ...] | None = None) -> list[Comparison]:
    """Every (BoK config, control, metric) difference that the run in `out` holds."""
    manifest, rows = summarise(out)
    by_id = {row["config"]: row for row in rows}
    configs = [c for c in manifest["configs"] if c["id"] in by_id]
    results = []
    for bok in configs:
        if bok["decoder"]["name"] != "bok":
            continue
        mine = by_id[bok["id"]]
        chosen = metrics or tuple(mine["per_problem"])
        for control in CONTROLS:
            match = next((c for c in configs if control_of(bok, c, control)), None)
            if match is None:
                continue
            theirs = by_id[match["id"]]
            shared = sorted(set(mine["problem_ids"]) & set(theirs["problem_ids"]))
            for metric in chosen:
                if metric not in mine["per_problem"] or metric not in theirs["per_problem"]:
                    continue
                a = dict(zip(mine["problem_ids"], mine["per_problem"][metric], strict=True))
                b = dict(zip(theirs["problem_ids"], theirs["per_problem"][metric], strict=True))
                results.append(
                    Comparison(
                        mine["decoder"],
                        bok["temperature"],
                        control,
                        metric,
                        bootstrap([a[p] - b[p] for p in shared]),
                    )
                )
    return results


def comparison_table(comparisons: list[Comparison], metric: str) -> str:
    """One markdown row per BoK config and temperature; one column per control."""
    cells: dict[tuple[str, float], dict[str, Estimate]] = {}
    for c in comparisons:
        if c.metric == metric:
            cells.setdefault((c.bok, c.temperature), {})[c.control] = c.difference
    lines = [
        f"| BoK config | τ | {metric}: − β=0 | − τ_eff | − softmax |",
        "|---|---|---|---|---|",
    ]
    for (bok, tau), row in cells.items():
        shown = [_signed(row[c]) if c in row else "—" for c in CONTROLS]
        lines.append(f"| {bok} | {tau:g} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def _signed(estimate: Estimate) -> str:
    text = f"{100 * estimate.mean:+.1f} [{100 * estimate.low:+.1f}, {100 * estimate.high:+.1f}]"
    resolved = estimate.low > 0 or estimate.high < 0
    return f"**{text}**" if resolved else text


def write_comparison(out: Path, make_plot: bool = True) -> str:
    """compare.md (and compare.png) in `out`: BoK minus each control, per metric."""
    manifest, rows = summarise(out)
    comparisons = paired_differences(out)
    metrics = sorted({c.metric for c in comparisons}, key=_metric_order)
    text = "\n\n".join(f"### {m}\n\n" + comparison_table(comparisons, m) for m in metrics)
    head = (
        f"# Best-of-K against its controls: {manifest['task']} with {manifest.get('model')}\n\n"
        "BoK minus control, per problem, in points (%), with 95% bootstrap intervals over "
        "problems; bold where the interval excludes 0.\n\n"
    )
    (out / "compare.md").write_text(head + text + "\n")
    if make_plot and rows:
        plot_controls(rows, out / "compare.png", f"{manifest['task']} · {manifest.get('model')}")
    return head + text


def _metric_order(metric: str) -> tuple[int, int]:
    kind, _, k = metric.partition("@")
    return ({"accuracy": 0, "maj": 1, "pass": 2}[kind], int(k or 0))


def plot_controls(rows: list[dict], path: Path, title: str) -> Path:
    """Accuracy, maj@n and pass@n vs τ for softmax, each BoK family and its τ_eff control."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(r["n"] for r in rows)
    families: dict[str, list[dict]] = {}
    for row in rows:
        families.setdefault(row["decoder"], []).append(row)
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for axis, metric in zip(axes, ("accuracy", f"maj@{n}", f"pass@{n}"), strict=True):
        for name, group in families.items():
            if name.startswith("bok-beta0") or "mirror" in name:
                continue  # β=0 rows coincide with τ_eff; mirror rows with exact (see tables)
            group = sorted(group, key=lambda r: r["temperature"])
            if any(r.get(metric) is None for r in group):
                continue
            style = "--" if name.startswith("bok-tau") else "-"
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
