"""Best-of-K w = p's sample (exact, mirror 5, mirror 1) against an earlier decoptim in the
same process: replayed as CUDA graphs (old/new/old/new) and as eager calls, at B = 1, 8,
64 and 256 on randn·3 rows and at B = 64 and 256 on flat rows (randn·0.5, whose samples
mostly fall in the tail), with q's agreement and the new tokens' support (docs/
performance.md: "Stop 43", call 3, against stop 42's d9988cd; "Stop 44", calls 2–4,
against stop 43's e2b8473; "Stop 45", call 5, against ebf51f4).

    mkdir -p OLD && git archive REV src/decoptim | tar -x -C OLD \
        && mv OLD/src/decoptim OLD/decoptim_old
    DECOPTIM_OLD=OLD python bench/bok_prob_ab.py
"""

import gpu  # bench/, the script's folder, is on sys.path
import torch

import decoptim as new

old = gpu.earlier_decoptim()

V = 151936


def decoders(pkg):
    v = {"validate": False}
    return {
        "exact": pkg.BestOfK(8, 0.02, 0.2, weights="prob", **v),
        "mirror 5": pkg.BestOfK(8, 0.02, 0.2, solver="mirror", **v),
        "mirror 1": pkg.BestOfK(8, 0.02, 0.2, solver="mirror", steps=1, **v),
    }


olds, news = decoders(old), decoders(new)
print(torch.cuda.get_device_name(), torch.__version__)
for batch in (1, 8, 64, 256):
    g = torch.Generator(device="cuda").manual_seed(batch)
    z = torch.randn(batch, V, device="cuda", generator=g) * 3
    copy = min(gpu.replay_ms(lambda x: x.clone(), [z], 60) for _ in range(2))
    for name in news:
        q_old, q_new = olds[name].probs(z), news[name].probs(z)
        tokens = news[name].sample(z, generator=torch.Generator("cuda").manual_seed(1))
        valid = bool((q_new.gather(1, tokens[:, None]) > 0).all())
        r_old, r_new = gpu.alternated_replay_ms(
            lambda x, dec=olds[name]: dec.sample(x), lambda x, dec=news[name]: dec.sample(x), [z]
        )
        eager_old = gpu.time_ms(lambda x, dec=olds[name]: dec.sample(x), [z], 30)
        eager_new = gpu.time_ms(lambda x, dec=news[name]: dec.sample(x), [z], 30)
        print(
            f"B={batch:4d} {name:9s} copy {copy:.4f} | replay old {r_old[0]:.4f}/{r_old[1]:.4f} "
            f"new {r_new[0]:.4f}/{r_new[1]:.4f} = {min(r_new) / copy:.2f}x copy "
            f"(old {min(r_old) / copy:.2f}x) | eager old {eager_old:.3f} new "
            f"{eager_new:.3f} | q equal {torch.equal(q_old, q_new)} "
            f"max|dq| {float((q_old - q_new).abs().max()):.1e} | tokens in support {valid}",
            flush=True,
        )
# Flat rows (randn·0.5): most samples fall in the tail, so the tail's draw runs on most rows.
for batch in (64, 256):
    z = torch.randn(batch, V, device="cuda") * 0.5
    copy = min(gpu.replay_ms(lambda x: x.clone(), [z], 60) for _ in range(2))
    for name in ("exact", "mirror 5"):
        q = news[name].probs(z)
        r_old, r_new = gpu.alternated_replay_ms(
            lambda x, dec=olds[name]: dec.sample(x), lambda x, dec=news[name]: dec.sample(x), [z]
        )
        tokens = news[name].sample(z, generator=torch.Generator("cuda").manual_seed(2))
        print(
            f"flat B={batch} {name}: copy {copy:.4f} old {min(r_old):.4f} new "
            f"{min(r_new):.4f} ms = {min(r_new) / copy:.2f}x copy | tokens in support "
            f"{bool((q.gather(1, tokens[:, None]) > 0).all())}",
            flush=True,
        )
