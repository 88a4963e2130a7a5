"""How many tokens top-p's last bracket holds on language-model rows: a float64 torch
emulation of the edge's profile levels (8 thresholds each, as `kernels/top_p.py` narrows
them) on SmolLM2-135M-Instruct's next-token logits along GSM8K answers (the rows of
`bench/coordination_order.py`), in fp32 and rounded to bf16, at τ = 0.7, 1.0 and 1.5 and
p = 0.9; per setting the most tokens one of the gather's splits would hold (a split
overflows above `candidates.CAP`), the rows that would overflow and the mean bracket size
(docs/performance.md, "Stop 45", call 2). Runs on a CPU.

    python bench/top_p_bracket_rows.py [--rows 320]
"""

import argparse

import torch
from coordination_order import model_rows  # bench/, the script's folder, is on sys.path

from decoptim.core.kernels.candidates import CAP, gather_splits
from decoptim.core.kernels.streaming import BLOCK, chunk_for

THRESHOLDS = 8


def last_bracket(x: torch.Tensor, p: float, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] around the edge of one row x = z/τ (float64) after `levels` profiles."""
    e = torch.exp(x - x.max())
    target = p * e.sum()
    lo, hi = x.max() + torch.log((1 - p) / p * target / x.numel()).clamp_min(-200.0), x.max()
    j = torch.arange(THRESHOLDS)
    for _ in range(levels):
        theta = torch.where(j == THRESHOLDS - 1, lo, hi - j * (hi - lo) / (THRESHOLDS - 1))
        mass = torch.stack([e[x >= t].sum() for t in theta])
        first = int(torch.where(mass >= target, j, THRESHOLDS - 1).min())
        lo, hi = theta[first], theta[first - 1] if first > 0 else hi
    return lo, hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=320)
    args = parser.parse_args()
    rows = model_rows(args.rows)
    vocab = rows.shape[1]
    # The gather's splits of a row, as `top_p._edge_terms` launches it.
    chunk = chunk_for(vocab, gather_splits(vocab), BLOCK)
    for dtype in (torch.float32, torch.bfloat16):
        for tau in (0.7, 1.0, 1.5):
            for levels in (4, 3, 2):
                worst, overflowing, total = 0, 0, 0
                for row in rows:
                    x = (row.to(dtype).float() / tau).double()
                    lo, hi = last_bracket(x, 0.9, levels)
                    inside = (x >= lo) & (x <= hi)
                    per_split = inside.split(chunk)
                    most = max(int(part.sum()) for part in per_split)
                    worst, overflowing = max(worst, most), overflowing + (most > CAP)
                    total += int(inside.sum())
                print(f"{str(dtype)[6:]} τ={tau} levels={levels}: at most {worst} per split, "
                      f"{overflowing}/{len(rows)} rows overflow, {total / len(rows):.1f} tokens "
                      f"in the bracket on average", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
