"""What each decoder buys at K samples per point of single-sample accuracy: maj@K and pass@K
against accuracy, one point per (decoder, τ), i.i.d. dashed with open markers, coordinated
solid with filled ones, τ rising along each line. The top row holds the plain decoders; the
bottom row Best-of-K, its β = 0 and τ_eff controls, and softmax i.i.d. in grey as the curve
that temperature alone draws. Reads a run's report.json (`decoptim report` writes it).

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
    for points in lines.values():
        points.sort(key=lambda r: r["temperature"])
    if not lines:
        raise SystemExit(f"no config of {args.run} is scored at K={args.k}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    is_bok = lambda decoder: decoder.startswith("bok")  # noqa: E731 (and its controls)
    groups = [
        ("plain decoders", {key: v for key, v in lines.items() if not is_bok(key[0])}),
        ("Best-of-K and its controls", {key: v for key, v in lines.items() if is_bok(key[0])}),
    ]
    groups = [(title, group) for title, group in groups if group]
    reference = lines.get(("softmax", "iid"))
    most_problems = max(r["problems"] for points in lines.values() for r in points)
    figure, axes = plt.subplots(
        len(groups), 2, figsize=(17, 6 * len(groups)), squeeze=False, layout="constrained"
    )
    for row_axes, (title, group) in zip(axes, groups, strict=True):
        decoders = list(dict.fromkeys(decoder for decoder, _ in group))
        colours = {d: plt.cm.tab10(i % 10) for i, d in enumerate(decoders)}
        for axis, metric in zip(row_axes, (f"maj@{args.k}", f"pass@{args.k}"), strict=True):
            if reference and ("softmax", "iid") not in group:
                axis.plot(
                    [100 * r["accuracy"]["mean"] for r in reference],
                    [100 * r[metric]["mean"] for r in reference],
                    ":", color="grey", marker=".", label="softmax · i.i.d. (temperature alone)",
                )  # fmt: skip
            for (decoder, sampling), points in group.items():
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
                    axis.annotate(
                        f"{r['temperature']:g}{partial}", (xi, yi), fontsize=7, alpha=0.6
                    )  # fmt: skip
            axis.set_xlabel("accuracy of one sample (%)")
            axis.set_ylabel(f"{metric} (%)")
            axis.set_title(f"{title}: {metric} against accuracy")
            axis.grid(alpha=0.3)
        row_axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.suptitle(
        f"{args.run.name}: solid/filled coordinated, dashed/open i.i.d.; labels: τ, and the "
        "problems where fewer"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110, bbox_inches="tight")  # the legends sit outside
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
