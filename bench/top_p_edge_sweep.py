"""The coordinated top-p and typical step (which finds the set's edge: profile passes, a
gather, a solve, a draw) against an earlier decoptim in the same process, then a sweep of
the profile pass's launch (block and warps), replayed as CUDA
graphs on randn·3 rows at V = 151,936 (docs/performance.md, "Stop 45"); with
`--launch-sweep`, sweeps of the launches of the edge's gather, solve and profile passes
(`--launches`, LAUNCHES below) for both steps ("Stop 51").

    mkdir -p OLD && git archive REV src/decoptim | tar -x -C OLD \
        && mv OLD/src/decoptim OLD/decoptim_old
    DECOPTIM_OLD=OLD python bench/top_p_edge_sweep.py [--batches 8 64 256] [--sweep 64 256]
    python bench/top_p_edge_sweep.py --batches --sweep --launch-sweep 8 64 256 \
        [--launches gather solve profile levels] \
        [--rows randn·3 randn·1 ...]

Per row of the A/B: ms of the old and the new step (old/new/old/new, the best of each),
the new step over the replayed copy of the logits, and how many rows drew the same token
as the old package (the passes' float32 sums are added in another order, so a token at
the edge may differ where the mass at the cut is within rounding of p).
"""

from __future__ import annotations

import argparse
import itertools
import unittest.mock

import gpu  # bench/, the script's folder, is on sys.path
import top_p_edge_ab
import torch
import triton

import decoptim as new
from decoptim.core.kernels import top_p

V = 151_936
ROWS = {"top-p 0.9": lambda pkg: pkg.TopP(0.9, validate=False),
        "typical 0.9": lambda pkg: pkg.Typical(0.9, validate=False)}  # fmt: skip


def logits_and_codes(batch: int, kind: str = "randn·3"):
    """Rows of `kind` (`top_p_edge_ab.ROWS`) and the codes of groups of 8 (the B = 8 rows one
    group)."""
    codes = new.group_codes(max(1, batch // 8), min(8, batch), seed=1, device="cuda")
    return top_p_edge_ab.logits(batch, kind), codes


def step(decoder, codes):
    return lambda x: decoder.sample_coordinated(x, codes)[0]


def best_of(fn, z, rounds=2):
    return min(gpu.replay_ms(fn, [z], 60) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="*", default=[8, 64, 256])
    parser.add_argument("--sweep", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--launch-sweep", type=int, nargs="*", default=[])
    parser.add_argument(
        "--launches", nargs="+", choices=sorted(LAUNCHES), default=["gather", "solve"]
    )
    parser.add_argument("--rows", nargs="+", choices=list(top_p_edge_ab.ROWS), default=["randn·3"])
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, "triton", triton.__version__)
    old = gpu.earlier_decoptim(required=False)
    for batch in args.batches:
        z, codes = logits_and_codes(batch)
        copy = best_of(lambda x: x.clone(), z)
        for name, make in ROWS.items():
            fresh = step(make(new), codes)
            if old is None:
                t = best_of(fresh, z)
                print(f"B={batch:4d} {name}: copy {copy:.4f} new {t:.4f} ms = {t / copy:.2f}x")
                continue
            stale = step(make(old), old.group_codes(max(1, batch // 8), min(8, batch), seed=1,
                                                    device="cuda"))  # fmt: skip
            same = int((fresh(z) == stale(z)).sum())
            times = [best_of(f, z, 1) for f in (stale, fresh, stale, fresh)]
            t_old, t_new = min(times[0::2]), min(times[1::2])
            print(
                f"B={batch:4d} {name}: copy {copy:.4f} | old {times[0]:.4f}/{times[2]:.4f} "
                f"new {times[1]:.4f}/{times[3]:.4f} ms = {t_new / copy:.2f}x copy (old "
                f"{t_old / copy:.2f}x) | same token {same}/{batch}",
                flush=True,
            )
    defaults = top_p.WIDE_GRID_BLOCK, top_p.PROFILE_WARPS
    for batch in args.sweep:
        z, codes = logits_and_codes(batch)
        fresh = step(new.TopP(0.9, validate=False), codes)
        results = {}
        for _ in range(2):
            for setting in itertools.product((256, 512, 1024), (4, 8)):
                top_p.WIDE_GRID_BLOCK, top_p.PROFILE_WARPS = setting
                results[setting] = min(results.get(setting, 9.0), best_of(fresh, z, 1))
        top_p.WIDE_GRID_BLOCK, top_p.PROFILE_WARPS = defaults
        ranked = sorted(results.items(), key=lambda item: item[1])
        print(f"sweep B={batch} coordinated top-p 0.9 (block/warps): ms, best first")
        print("  " + ", ".join(f"{b}/{w} {t:.4f}" for (b, w), t in ranked))
    for kind, batch in itertools.product(args.rows, args.launch_sweep):
        launch_sweep(batch, args.launches, kind)


# The launches `--launch-sweep` tries, each setting at every B, the others at the library's
# settings: the edge's gather (tokens per block, warps, pipelined stages; in place of both
# the library's narrow- and wide-grid ones), its solve (warps), and its profile passes where
# the grid is narrow (levels, thresholds, block; warps).
GATHERS = [top_p.GatherLaunch(*s) for s in itertools.product((512, 1024, 2048), (4, 8), (1, 2, 3))]
PASSES = [
    top_p.ProfilePasses(levels, 8, block) for levels in (2, 3, 4) for block in (512, 1024, 2048)
]
LEVELS = [passes for passes in PASSES if passes.block == 1024]
LAUNCHES = {
    "gather": (("GATHER", "WIDE_GATHER"), [(gather, gather) for gather in GATHERS]),
    "solve": (("SOLVE_WARPS",), [(4,), (8,), (16,)]),
    "profile": (("EDGE_PASSES", "PROFILE_WARPS"), list(itertools.product(PASSES, (4, 8)))),
    "levels": (("EDGE_PASSES",), [(passes,) for passes in LEVELS]),
}


def shown(setting: tuple) -> str:
    return " & ".join("/".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in setting)


def launch_sweep(batch: int, launches: list[str], kind: str) -> None:
    """Each step replayed with every setting of the named LAUNCHES on rows of `kind`, two
    rounds; the tokens of each setting against the library's own."""
    z, codes = logits_and_codes(batch, kind)
    for names, settings in (LAUNCHES[launch] for launch in launches):
        defaults = tuple(getattr(top_p, name) for name in names)
        for row_name, make in ROWS.items():
            fresh = step(make(new), codes)
            reference = fresh(z)
            results, same = {}, {}
            for _, setting in itertools.product(range(2), settings):
                with unittest.mock.patch.multiple(top_p, **dict(zip(names, setting, strict=True))):
                    results[setting] = min(results.get(setting, 9.0), best_of(fresh, z, 1))
                    same[setting] = int((fresh(z) == reference).sum())
            ranked = sorted(results.items(), key=lambda item: item[1])
            print(
                f"{kind} B={batch} coordinated {row_name}, {' & '.join(names)} (library's "
                f"{shown(defaults)}): ms, best first, [same tokens of {batch}]"
            )
            print("  " + ", ".join(f"{shown(s)} {t:.4f} [{same[s]}]" for s, t in ranked),
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
