"""Command line: `decoptim demo` (more commands arrive with the evaluation harness)."""

from __future__ import annotations

import argparse
import sys

import torch

from . import core as d

# A next-token distribution with a clear favourite, a few plausible runners-up and a tail.
DEMO_TOKENS = ["Paris", "Lyon", "the", "France", "Marseille", "a", "Nice", "it", "Rome", "banana"]
DEMO_LOGITS = [4.0, 2.6, 2.4, 2.0, 1.7, 1.0, 0.8, 0.3, -0.5, -3.0]


def demo_decoders() -> dict[str, d.Decoder]:
    bok = d.BestOfK(k=8, beta=0.02, lam=0.2)
    strong = d.BestOfK(k=8, beta=2.0, lam=0.2, weights="topm", top_m=4)
    return {
        "greedy": d.Greedy(),
        "softmax τ=1": d.Softmax(1.0),
        "softmax τ=0.5": d.Softmax(0.5),
        "top-k 3": d.TopK(3),
        "top-p 0.8": d.TopP(0.8),
        "min-p 0.2": d.MinP(0.2),
        "typical 0.8": d.Typical(0.8),
        "epsilon 0.05": d.Epsilon(0.05),
        "eta 0.05": d.Eta(0.05),
        "sparsemax": d.Sparsemax(),
        "entmax α=1.5": d.Entmax(1.5),
        "BoK β=.02 λ=.2": bok,
        "  its β=0 control": bok.beta_zero_control(),
        "  its τ_eff control": bok.matched_temperature_control(),
        "BoK β=2 λ=.2 top-4": strong,
        "BoK mirror (same)": d.BestOfK(8, 2.0, 0.2, weights="topm", top_m=4, solver="mirror"),
    }


def demo_table() -> str:
    logits = torch.tensor([DEMO_LOGITS])
    width = max(len(t) for t in DEMO_TOKENS)
    head = f"{'decoder':20}" + "".join(f"{t:>{max(width, 6) + 1}}" for t in DEMO_TOKENS)
    head += f"{'|supp|':>8}{'H':>7}{'FW gap':>10}"
    lines = [head, "-" * len(head)]
    for name, decoder in demo_decoders().items():
        q = decoder.probs(logits)[0]
        gap = float(decoder.certificate(logits, q.unsqueeze(0)).gap[0])
        entropy = 0.0 - float(torch.special.xlogy(q, q).sum()) + 0.0
        cells = "".join(f"{float(v):>{max(width, 6) + 1}.3f}" for v in q)
        lines.append(f"{name:20}{cells}{int((q > 0).sum()):>8}{entropy:>7.3f}{gap:>10.1e}")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    print("decoptim demo: one next-token step, every decoder as a simplex problem\n")
    print(
        "logits: " + ", ".join(f"{t}={z:g}" for t, z in zip(DEMO_TOKENS, DEMO_LOGITS, strict=True))
    )
    print()
    print(demo_table())
    print(
        "\n|supp|: tokens with q > 0; H: entropy (nats); FW gap: Frank–Wolfe certificate of the"
        "\nproblem each decoder solves (≈0 means optimal). The mirror row is the paper's 5-step"
        "\nsolver on a strong coverage setting: its gap shows where it stopped."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decoptim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="print every decoder's distribution for fixed logits")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
