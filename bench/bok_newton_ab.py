"""Best-of-K's exact solve (w = p, and the top-64 head) against an earlier decoptim in the
same process: the sample replayed as CUDA graphs (old/new/old/new, the best of each) at
B = 1, 8, 64 and 256 on randn·3 rows, with each package's q against the float64 torch path
(docs/performance.md, "Stop 45": the outer Newton steps that stop once t is settled).

    mkdir -p OLD && git archive REV src/decoptim | tar -x -C OLD \
        && mv OLD/src/decoptim OLD/decoptim_old
    DECOPTIM_OLD=OLD python bench/bok_newton_ab.py
"""

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as new

old = gpu.earlier_decoptim()

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
        r_old, r_new = gpu.alternated_replay_ms(
            lambda x, dec=olds[name]: dec.sample(x), lambda x, dec=news[name]: dec.sample(x), [z]
        )
        t_old, t_new = min(r_old), min(r_new)
        print(
            f"B={batch:4d} {name:16s} copy {copy:.4f} | replay old {r_old[0]:.4f}/{r_old[1]:.4f} "
            f"new {r_new[0]:.4f}/{r_new[1]:.4f} = {t_new / copy:.2f}x copy "
            f"(old {t_old / copy:.2f}x) | max|q − float64| old {error(q_old, reference):.1e} new "
            f"{error(q_new, reference):.1e}",
            flush=True,
        )
