"""Top-p's rejection sampler: how many proposals per row, timed and counted.

    python bench/top_p_proposals.py [--proposals 2 4 8] [--batches 1 8 64 256] [--p 0.9 0.5]

For each p, batch and proposal count: the replayed `TopP(p).sample` step (ms, CUDA graph,
inputs rotated over buffers larger than L2, as bench/gpu.py times it), and over 20 calls how
many rows had none of their proposals inside the nucleus and took the edge's passes (the
accept pass alone, counted on the host). Logits: N(0, 3²), V = 151,936, fp32.
"""

from __future__ import annotations

import argparse

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as d
from decoptim.core.kernels import top_p


def rows_left(inputs: list[torch.Tensor], p: float, calls: int = 20) -> int:
    """Rows, over `calls` accept passes, whose proposals all fell outside the nucleus."""
    batch = inputs[0].shape[0]
    inv_tau = torch.ones(batch, device="cuda")
    ps = torch.full((batch,), p, device="cuda")
    generator = torch.Generator("cuda").manual_seed(0)
    left = 0
    for call in range(calls):
        seed = torch.randint(0, 2**31 - 1, (2,), device="cuda", generator=generator)
        arrivals = torch.zeros(2, batch, device="cuda", dtype=torch.int32)
        tokens, _, _, _ = top_p._propose_and_accept(inputs[call % len(inputs)], inv_tau, ps,
                                                 seed, arrivals)  # fmt: skip
        left += int((tokens < 0).sum())
    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--p", type=float, nargs="+", default=[0.9, 0.5])
    parser.add_argument("--vocab", type=int, default=151_936)
    args = parser.parse_args()
    default = top_p.PROPOSALS
    print(f"# {torch.cuda.get_device_name()}, V = {args.vocab}, fp32, torch {torch.__version__}")
    print(f"(the library's default: {default} proposals)")
    try:
        for p in args.p:
            decoder = d.TopP(p, validate=False)
            print(f"\n## p = {p}\n\n| B | proposals | replay ms | rows left / rows drawn |")
            print("|---:|---:|---:|---:|")
            for batch in args.batches:
                inputs = gpu.make_inputs(batch, args.vocab, 6, seed=batch)
                for proposals in args.proposals:
                    top_p.PROPOSALS = proposals
                    replay = gpu.graph_replay_ms(decoder.sample, inputs)
                    left = rows_left(inputs, p)
                    print(f"| {batch} | {proposals} | {replay} | {left} / {20 * batch} |")
    finally:
        top_p.PROPOSALS = default


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit("top_p_proposals.py needs a CUDA device")
    main()
