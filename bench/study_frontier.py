"""What each decoder buys at K samples per point of single-sample accuracy: maj@K and pass@K
against accuracy, one point per (decoder, τ), i.i.d. dashed with open markers, coordinated
solid with filled ones, τ rising along each line. Reads a run's report.json (`decoptim
report` writes it).

    python bench/study_frontier.py runs/study2/arith --k 8 --out docs/results/arith-frontier.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory holding report.json")
    parser.add_argument("--k", type=int, default=8, help="K of maj@K and pass@K (default 8)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    report = args.run / "report.json"
    if not report.exists():
        raise SystemExit(f"{report} does not exist: run `decoptim report {args.run}` first")
    rows = json.loads(report.read_text())
    lines: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        if f"pass@{args.k}" in row and row["decoder"] != "greedy":
            lines[(row["decoder"], row["sampling"])].append(row)
    if not lines:
        raise SystemExit(f"no config of {args.run} is scored at K={args.k}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decoders = list(dict.fromkeys(decoder for decoder, _ in lines))
    colours = {d: plt.cm.tab10(i % 10) for i, d in enumerate(decoders)}
    most_problems = max(r["problems"] for points in lines.values() for r in points)
    figure, axes = plt.subplots(1, 2, figsize=(14, 6))
    for axis, metric in zip(axes, (f"maj@{args.k}", f"pass@{args.k}"), strict=True):
        for (decoder, sampling), points in lines.items():
            points.sort(key=lambda r: r["temperature"])
            coordinated = sampling == "coordinated"
            x = [100 * r["accuracy"]["mean"] for r in points]
            y = [100 * r[metric]["mean"] for r in points]
            axis.plot(
                x, y, "-" if coordinated else "--", color=colours[decoder],
                marker="o", markerfacecolor=colours[decoder] if coordinated else "white",
                label=f"{decoder} · {'coordinated' if coordinated else 'i.i.d.'}",
            )  # fmt: skip
            for r, xi, yi in zip(points, x, y, strict=True):
                # a configuration not yet run on every problem says on how many it stands
                partial = f" ({r['problems']})" if r["problems"] < most_problems else ""
                axis.annotate(f"{r['temperature']:g}{partial}", (xi, yi), fontsize=7, alpha=0.6)
        axis.set_xlabel("accuracy of one sample (%)")
        axis.set_ylabel(f"{metric} (%)")
        axis.set_title(f"{metric} against accuracy (labels: τ, and the problems where fewer)")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=7)
    figure.suptitle(f"{args.run.name}: solid/filled coordinated, dashed/open i.i.d.")
    figure.tight_layout(rect=(0, 0.2, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
