"""Best-of-K's exact solve (w = p, and the top-64 head) against an earlier decoptim in the
same process: the sample replayed as CUDA graphs (old/new/old/new, the best of each) at
B = 1, 8, 64 and 256 on randn·3 rows, with each package's q against the float64 torch path
(docs/performance.md, "Stop 45": the outer Newton steps that stop once t is settled).

    mkdir -p OLD && git archive REV src/decoptim | tar -x -C OLD \
        && mv OLD/src/decoptim OLD/decoptim_old
    DECOPTIM_OLD=OLD python bench/bok_newton_ab.py
"""

import os
import sys

import gpu  # bench/, the script's folder, is on sys.path
import torch

sys.path.insert(0, os.environ.get("DECOPTIM_OLD", ".gpu/oldpkg"))
import decoptim_old as old

import decoptim as new

V = 151_936


def decoders(pkg):
    v = {"validate": False}
    return {
        "exact prob": pkg.BestOfK(8, 0.02, 0.2, weights="prob", **v),
        "exact prob β=2": pkg.BestOfK(8, 2.0, 0.2, weights="prob", **v),
        "exact top-64": pkg.BestOfK(8, 0.02, 0.2, weights="topm", top_m=64, **v),
        "exact top-64 β=2": pkg.BestOfK(8, 2.0, 0.2, weights="topm", top_m=64, **v),
    }


def error(q, reference):
    return float((q.double() - reference).abs().max())


olds, news = decoders(old), decoders(new)
print(torch.cuda.get_device_name(), torch.__version__)
for batch in (1, 8, 64, 256):
    z = torch.randn(batch, V, device="cuda", generator=torch.Generator("cuda").manual_seed(batch))
    z *= 3
    copy = min(gpu.replay_ms(lambda x: x.clone(), [z], 60) for _ in range(2))
    for name in news:
        reference = news[name].probs(z.double())
        q_old, q_new = olds[name].probs(z), news[name].probs(z)
        r = []
        for _ in range(2):
            r.append(gpu.replay_ms(lambda x, dec=olds[name]: dec.sample(x), [z], 60))
            r.append(gpu.replay_ms(lambda x, dec=news[name]: dec.sample(x), [z], 60))
        t_old, t_new = min(r[0::2]), min(r[1::2])
        print(
            f"B={batch:4d} {name:16s} copy {copy:.4f} | replay old {r[0]:.4f}/{r[2]:.4f} "
            f"new {r[1]:.4f}/{r[3]:.4f} = {t_new / copy:.2f}x copy (old {t_old / copy:.2f}x)"
            f" | max|q − float64| old {error(q_old, reference):.1e} new "
            f"{error(q_new, reference):.1e}",
            flush=True,
        )
