"""Top-p's and typical's edge against an earlier decoptim in the same process: each step
replayed as CUDA graphs (old, new, old, new), at B = 8, 64 and 256, V = 151,936, on randn·σ
rows and on rows with a head (randn·2 plus 12 on 8 tokens of each row, which then hold
about half the mass), with how far the new q is from the old and how many coordinated
tokens are the same (docs/performance.md, "Stop 48", against `3928ae5`; "Stop 49", calls
1, 3 and 4, each against the commit before its change).

    mkdir -p OLD && git archive REV src/decoptim | tar -x -C OLD \
        && mv OLD/src/decoptim OLD/decoptim_old
    DECOPTIM_OLD=OLD python bench/top_p_edge_ab.py [--batches 8 64 256] [--rows ...]
        [--steps ...]

Steps: coordinated top-p 0.9 and typical 0.9 (the default draw over q's buckets, which finds
the edge on every row; groups of 8), their probs, and plain top-p 0.9 (by rejection, the
edge only for the rows it leaves).
"""

import argparse
import statistics

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as new

V = 151_936
STEPS = ["coordinated top-p", "coordinated typical", "top-p probs", "typical probs",
         "top-p sample"]  # fmt: skip
ROWS = {"randn·3": 3.0, "randn·1": 1.0, "randn·0.3": 0.3, "randn·0.05": 0.05, "with a head": None}


def logits(batch: int, kind: str) -> torch.Tensor:
    generator = torch.Generator("cuda").manual_seed(batch)
    sigma = ROWS[kind]
    if sigma is not None:
        return torch.randn(batch, V, device="cuda", generator=generator) * sigma
    z = torch.randn(batch, V, device="cuda", generator=generator) * 2
    head = torch.randint(0, V, (batch, 8), device="cuda", generator=generator)
    return z.scatter_add(1, head, torch.full((batch, 8), 12.0, device="cuda"))


def steps(pkg, batch: int) -> dict:
    """The STEPS of package `pkg` at `batch` rows, by name."""
    unchecked = {"validate": False}
    top_p, typical = pkg.TopP(0.9, **unchecked), pkg.Typical(0.9, **unchecked)
    codes = pkg.group_codes(max(1, batch // 8), min(8, batch), seed=1, device="cuda")
    return {
        "coordinated top-p": lambda x: top_p.sample_coordinated(x, codes)[0],
        "coordinated typical": lambda x: typical.sample_coordinated(x, codes)[0],
        "top-p probs": top_p.probs,
        "typical probs": typical.probs,
        "top-p sample": top_p.sample,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=STEPS)
    args = parser.parse_args()
    old = gpu.earlier_decoptim()
    print(torch.cuda.get_device_name(), torch.__version__)
    print("| rows | B | step | old ms | new ms | new / old | agreement |")
    print("|---|---:|---|---:|---:|---:|---|")
    for kind in args.rows:
        for batch in args.batches:
            z = logits(batch, kind)
            olds, news = steps(old, batch), steps(new, batch)
            for name in args.steps:
                new_step = news[name]
                old_ms, new_ms = gpu.alternated_replay_ms(olds[name], new_step, [z])
                a, b = statistics.median(old_ms), statistics.median(new_ms)
                if name.endswith("probs"):
                    q_old, q_new = olds[name](z), new_step(z)
                    same = torch.equal(q_old > 0, q_new > 0)
                    agreement = (f"max |Δq| {float((q_old - q_new).abs().max()):.1e}, "
                                 f"support {'equal' if same else 'differs'}")  # fmt: skip
                elif name.startswith("coordinated"):
                    equal = int((olds[name](z) == new_step(z)).sum())
                    agreement = f"{equal}/{batch} tokens equal"
                else:
                    agreement = ""
                print(f"| {kind} | {batch} | {name} | {a:.4f} | {b:.4f} | {b / a:.2f} | "
                      f"{agreement} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
