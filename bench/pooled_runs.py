"""Coordinated minus i.i.d., pooled over runs of one grid drawn with different seeds.

    python bench/pooled_runs.py RUN [RUN ...] [--metrics accuracy maj@4 maj@8 ...]

`decoptim compare RUN` pairs each coordinated config with its i.i.d. twin per problem, in one
run. Runs that repeat a grid on the same problems with other `--seed`s narrow those
intervals: per problem, each difference is averaged over the runs, then bootstrapped over
problems. With two coordinated samplings of one decoder and τ in the runs (over q's buckets
and by rejection, `decoptim eval --coordinated --by-rejection`), the last column is the
difference between them, paired the same way. distinct@K is in answers, the rest in points.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from decoptim.eval.compare import bootstrap, iid_twin_of
from decoptim.eval.grid import COORDINATED, REJECTION
from decoptim.eval.report import summarise

Key = tuple[str, float]  # (decoder label, τ)


def per_problem(run: Path, metrics: list[str]) -> dict[tuple[str, Key, str], dict[str, float]]:
    """(sampling, (decoder, τ), metric) → problem → value, for every coordinated config of
    `run` with an i.i.d. twin, and for that twin (sampling "iid")."""
    manifest, rows = summarise(run)
    by_id = {row["config"]: row for row in rows}
    configs = [c for c in manifest["configs"] if c["id"] in by_id]
    values: dict[tuple[str, Key, str], dict[str, float]] = {}
    for config in configs:
        twin = next((c for c in configs if iid_twin_of(config, c)), None)
        if config.get("sampling") not in (COORDINATED, REJECTION) or twin is None:
            continue
        key = (by_id[config["id"]]["decoder"], config["temperature"])
        for sampling, row in (
            (config["sampling"], by_id[config["id"]]),
            ("iid", by_id[twin["id"]]),
        ):
            for metric in metrics:
                if metric in row["per_problem"]:
                    scores = row["per_problem"][metric]
                    values[(sampling, key, metric)] = dict(
                        zip(row["problem_ids"], scores, strict=True)
                    )
    return values


def pooled(runs: list[Path], metrics: list[str]) -> str:
    """The markdown table of coordinated − i.i.d. (and over q's buckets − by rejection)."""
    differences: dict[tuple[str, Key, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for run in runs:
        values = per_problem(run, metrics)
        for (sampling, key, metric), scores in values.items():
            pairs = [(sampling, "iid")] if sampling != "iid" else []
            if sampling == COORDINATED and (REJECTION, key, metric) in values:
                pairs.append((COORDINATED, REJECTION))
            for treated, control in pairs:
                other = values.get((control, key, metric))
                if other is None:
                    continue
                label = f"{treated} − {control}"
                for problem in scores.keys() & other.keys():
                    differences[(label, key, metric)][problem].append(
                        scores[problem] - other[problem]
                    )
    labels = [f"{COORDINATED} − iid", f"{REJECTION} − iid", f"{COORDINATED} − {REJECTION}"]
    lines = [
        f"{len(runs)} runs; per problem averaged over the runs, 95% bootstrap over problems",
        "",
        "| decoder | τ | metric | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    keys = sorted({key for _, key, _ in differences})
    for decoder, tau in keys:
        for metric in metrics:
            cells = []
            for label in labels:
                found = differences.get((label, (decoder, tau), metric))
                if not found:
                    cells.append("—")
                    continue
                estimate = bootstrap([sum(v) / len(v) for v in found.values()])
                scale = 1 if metric.startswith("distinct") else 100
                low, high = scale * estimate.low, scale * estimate.high
                cells.append(f"{scale * estimate.mean:+.2f} [{low:+.2f}, {high:+.2f}]")
            lines.append(f"| {decoder} | {tau:g} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of `decoptim eval`")
    parser.add_argument(
        "--metrics", nargs="+", default=["accuracy", "maj@4", "maj@8", "pass@8", "distinct@8"]
    )
    args = parser.parse_args()
    missing = [str(run) for run in args.runs if not any(run.glob("manifest*.json"))]
    if missing:
        raise SystemExit(f"not a run folder (no manifest): {', '.join(missing)}")
    print(pooled(args.runs, args.metrics))


if __name__ == "__main__":
    main()
