"""One command for the GPU machine: check every GPU path against float64, then time it.

    python bench/gpu.py [--batch 64] [--vocab 151936] [--scaling]

1. Correctness: each decoder's CUDA output against the same decoder in float64 on the CPU,
   on fresh random logits, as max |q − q_ref| and the relative L1 error.
2. Timing (median of CUDA-event timings, inputs rotated over buffers larger than L2) of
   one decode step = probs + sample, next to: the floor (a device-to-device copy of the
   logits), plain softmax sampling, a full-sort top-p, and a straightforward per-row
   mirror-ascent loop with a host sync per step. Prints one table: time, GB/s (logits
   read once), and ratios to each of those.
`--scaling` adds tables of milliseconds for B ∈ {1, 8, 64, 256} × V ∈ {32k, 152k, 256k}, as
calls and replayed as CUDA graphs.
`--flashinfer` adds the side-by-side table of issue #20: each sampler against FlashInfer's
equivalent (its `*_from_logits` entry point where one exists, else its fused softmax then
`*_from_probs`) on the same logits in the same process, for B ∈ {1, 8, 64, 256}, as calls and
replayed as CUDA graphs (decoptim also as a call through `GraphedStep`). Where FlashInfer
does not import, its columns say so and the rest still runs
(`../shared/tools/flashinfer-slim.sh DIR` builds one that travels).
`--profile` adds, per decoder, the GPU time of its kernels (torch.profiler) and the time of
the same step replayed as a CUDA graph (no host-side launch cost), next to the plain call
and the call through `GraphedStep` (logits copied in, the graph replayed, the tokens
copied out).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
from datetime import date

import torch

import decoptim as d
from decoptim.core.kernels import set_kernels_enabled, triton_available
from decoptim.integrations.graphs import GraphedStep


def every_decoder(softmax_temperature: float) -> dict[str, d.Decoder]:
    """Every decoder the tables time, by row label, in the side-by-side table's order."""
    v = {"validate": False}
    return {
        "softmax": d.Softmax(softmax_temperature, **v),
        "top-k 50": d.TopK(50, **v),
        "top-p 0.9": d.TopP(0.9, **v),
        "min-p 0.1": d.MinP(0.1, **v),
        "top-k 50 & top-p 0.9": d.SimplexDecoder(
            d.Shannon(), d.TopKSupport(50) & d.TopPSupport(0.9), **v
        ),
        "typical 0.9": d.Typical(0.9, **v),
        "epsilon 3e-4": d.Epsilon(3e-4, **v),
        "eta 3e-4": d.Eta(3e-4, **v),
        "sparsemax": d.Sparsemax(**v),
        "entmax 1.5": d.Entmax(1.5, **v),
        "BoK exact top-64": d.BestOfK(8, 0.02, 0.2, weights="topm", top_m=64, **v),
        "BoK exact prob": d.BestOfK(8, 0.02, 0.2, weights="prob", **v),
        "BoK mirror 5": d.BestOfK(8, 0.02, 0.2, solver="mirror", **v),
    }


STEP_TABLE = ["softmax", "top-k 50", "top-p 0.9", "min-p 0.1", "sparsemax", "entmax 1.5",
              "BoK exact top-64", "BoK exact prob", "BoK mirror 5"]  # fmt: skip


def decoders() -> dict[str, d.Decoder]:
    """The step table's decoders, by row label."""
    every = every_decoder(0.8)
    return {name: every[name] for name in STEP_TABLE}


def softmax_sampling(z, generator):
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator)


def sorted_top_p(z, generator, p=0.9):
    sorted_logits, order = torch.sort(z, descending=False)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove = cumulative <= 1 - p
    remove[..., -1] = False
    remove = remove.scatter(-1, order, remove)
    return torch.multinomial(
        torch.softmax(z.masked_fill(remove, -torch.inf), -1), 1, generator=generator
    )


def naive_mirror(z, generator, k=8, beta=0.02, lam=0.2, steps=5):
    """Per row, per step, with a host sync each step (a convergence check), as is common."""
    out = []
    for row in z:
        log_p = torch.log_softmax(row, -1)
        log_q = log_p.clone()
        for _ in range(steps):
            q = log_q.exp()
            g = row - lam * (log_q - log_p + 1) + lam * beta * log_p.exp() * k * (1 - q) ** (k - 1)
            log_q = torch.log_softmax(log_q + g / lam, -1)
            if float((log_q - log_p).abs().max()) < 0:  # the host sync such loops do every step
                break
        out.append(torch.multinomial(log_q.exp(), 1, generator=generator))
    return torch.stack(out)


def time_ms(fn, inputs, repeats=50) -> float:
    """Median over `repeats` calls, rotating over `inputs`, with CUDA events."""
    for z in inputs:
        fn(z)
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
        z = inputs[i % len(inputs)]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(z)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def make_inputs(batch, vocab, count, seed):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(batch, vocab, device="cuda", generator=generator) * 3 for _ in range(count)]


def check(batch, vocab) -> list[tuple[str, float, float]]:
    rows = []
    z = make_inputs(batch, vocab, 1, seed=1234)[0]
    z64 = z.double().cpu()
    for name, decoder in decoders().items():
        q = decoder.probs(z).double().cpu()
        ref = decoder.probs(z64)
        assert torch.isfinite(q).all(), name
        err = (q - ref).abs()
        rows.append((name, float(err.max()), float(err.sum(-1).max() / ref.abs().sum(-1).max())))
    return rows


def timings(batch, vocab, naive: bool) -> list[tuple[str, float]]:
    buffers = max(2, int(3 * 50e6 // (batch * vocab * 4)) + 1)  # > L2 in total
    inputs = make_inputs(batch, vocab, min(buffers, 8), seed=7)
    generator = torch.Generator(device="cuda").manual_seed(0)
    rows = [
        ("copy (floor)", time_ms(lambda z: z.clone(), inputs)),
        ("softmax sampling", time_ms(lambda z: softmax_sampling(z, generator), inputs)),
        ("full-sort top-p", time_ms(lambda z: sorted_top_p(z, generator), inputs)),
    ]
    if naive:
        rows.append(("naive mirror loop", time_ms(lambda z: naive_mirror(z, generator), inputs, 5)))
    for name, decoder in decoders().items():
        rows.append(
            (name, time_ms(lambda z, dec=decoder: dec.sample(z, generator=generator), inputs))
        )
        if name.startswith("BoK"):
            set_kernels_enabled(False)
            rows.append(
                (
                    name + " (torch)",
                    time_ms(lambda z, dec=decoder: dec.sample(z, generator=generator), inputs, 10),
                )
            )
            set_kernels_enabled(True)
    rows += [(name, time_ms(step, inputs)) for name, step in bok_sampling_variants(generator)]
    flat = [z * 0.01 for z in inputs]
    top_m = decoders()["BoK exact top-64"]
    rows.append(
        ("BoK exact top-64, flat rows", time_ms(lambda z: top_m.sample(z, generator), flat))
    )
    return rows


def bok_sampling_variants(generator):
    """BoK top-M's `sample` draws without writing q (head or tail by a race in registers,
    the tail's draw only on rows whose token falls there). For comparison: q written, then
    the draw over it."""
    from decoptim.core.kernels.draw import draw_from_probs

    decoder = decoders()["BoK exact top-64"]
    return [("BoK exact top-64 (q, then draw)",
             lambda z: draw_from_probs(decoder.probs(z), generator))]  # fmt: skip


def print_table(batch, vocab, rows):
    floor = dict(rows)["copy (floor)"]
    base = dict(rows)["softmax sampling"]
    sort_p = dict(rows)["full-sort top-p"]
    naive = dict(rows).get("naive mirror loop")
    gbytes = batch * vocab * 4 / 1e9
    print(f"\nB = {batch}, V = {vocab} ({gbytes * 1e3:.1f} MB of fp32 logits)")
    head = f"{'step':26} {'ms':>9} {'GB/s':>8} {'/copy':>7} {'/softmax':>9} {'/sort-p':>8}"
    head += f" {'/naive':>8}" if naive else ""
    print(head)
    print("-" * len(head))
    for name, ms in rows:
        line = (
            f"{name:26} {ms:9.4f} {gbytes / (ms / 1e3):8.0f} {ms / floor:7.2f} "
            f"{ms / base:9.2f} {ms / sort_p:8.2f}"
        )
        line += f" {ms / naive:8.3f}" if naive else ""
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--flashinfer", action="store_true")
    parser.add_argument("--only-flashinfer", action="store_true", help="skip the other tables")
    parser.add_argument(
        "--samplers",
        help="comma-separated rows of the side-by-side table to time (default: all of them), "
        f"from: {', '.join(every_decoder(1.0))}",
    )
    args = parser.parse_args()
    samplers = None
    if args.samplers is not None:
        rows = list(every_decoder(1.0))
        samplers = [name.strip() for name in args.samplers.split(",")]
        unknown = [name for name in samplers if name not in rows]
        if unknown:
            parser.error(f"--samplers: unknown rows {unknown}; choose from {rows}")
        if not (args.flashinfer or args.only_flashinfer):
            parser.error("--samplers picks rows of the side-by-side table: add --flashinfer")
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device")
    print(
        f"# decoptim {d.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}, "
        f"triton kernels: {triton_available()}, {date.today()}"
    )
    if args.flashinfer or args.only_flashinfer:
        flashinfer_table(args.vocab, samplers)
        if args.only_flashinfer:
            return
    print("\n## correctness against float64 (fresh random logits, B=16)")
    print(f"{'decoder':22} {'max |q - ref|':>14} {'rel L1':>10}")
    for name, max_err, rel in check(16, args.vocab):
        print(f"{name:22} {max_err:14.2e} {rel:10.2e}")
    print("\n## timing of one decode step (probs + sample)")
    print_table(args.batch, args.vocab, timings(args.batch, args.vocab, naive=True))
    if args.profile:
        profile_table(args.batch, args.vocab)
    if args.scaling:
        scaling_table()


def profile_table(batch, vocab) -> None:
    """Where a step's time goes: launches and Python on the host, or kernels on the GPU."""
    from torch.profiler import ProfilerActivity, profile

    inputs = make_inputs(batch, vocab, 4, seed=7)
    print(f"\n## where the time goes, B = {batch}, V = {vocab} (ms per step)\n")
    print(
        "| step | call | CUDA graph replay | call through GraphedStep | GPU kernels | launches "
        "| top kernels (µs) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    steps = {"softmax sampling": lambda z: softmax_sampling(z, None)}
    steps.update({name: dec.sample for name, dec in decoders().items()})
    steps.update(bok_sampling_variants(None))
    flat = [z * 0.01 for z in inputs]  # the head holds ~0.1%: every row runs the tail's draw
    steps["BoK exact top-64, flat rows"] = decoders()["BoK exact top-64"].sample
    for name, step in steps.items():
        rows = flat if name.endswith("flat rows") else inputs
        call = time_ms(step, rows)
        replay = graph_replay_ms(step, rows)
        graphed = time_ms(GraphedStep(step), rows)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step(rows[0])
            torch.cuda.synchronize()
        kernels = [e for e in prof.key_averages() if e.device_time_total > 0]
        gpu_ms = sum(e.device_time_total for e in kernels) / 10 / 1e3
        launches = sum(e.count for e in kernels) / 10
        top = sorted(kernels, key=lambda e: -e.device_time_total)[:4]
        names = ", ".join(f"{e.key[:28]} {e.device_time_total / 10:.0f}" for e in top)
        print(
            f"| {name} | {call:.3f} | {replay} | {graphed:.3f} | {gpu_ms:.3f} | {launches:.0f} "
            f"| {names} |"
        )


def replay_ms(step, inputs, repeats=50) -> float:
    """`step(static)` captured once as a CUDA graph, its replay timed as `time_ms` times a
    call; RuntimeError where the step is not capturable."""
    static = inputs[0].clone()
    step(static)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(static)
    return time_ms(lambda _z: graph.replay(), inputs, repeats)


def earlier_decoptim(required: bool = True):
    """The earlier decoptim that an A/B bench compares with: the package `decoptim_old` in
    the folder $DECOPTIM_OLD (`git archive REV src/decoptim`, renamed as each A/B bench's
    docstring shows), or None where that is unset and not `required`."""
    folder = os.environ.get("DECOPTIM_OLD")
    if not folder:
        if required:
            sys.exit("DECOPTIM_OLD: set it to the folder that holds decoptim_old (see the "
                     "bench's docstring)")  # fmt: skip
        return None
    sys.path.insert(0, folder)
    return importlib.import_module("decoptim_old")


def alternated_replay_ms(old_step, new_step, inputs, rounds: int = 2, repeats: int = 60):
    """Replayed ms of `old_step` and `new_step`, alternated old, new, old, new, ... `rounds`
    times each, so that both see the same drift: (old readings, new readings)."""
    olds, news = [], []
    for _ in range(rounds):
        olds.append(replay_ms(old_step, inputs, repeats))
        news.append(replay_ms(new_step, inputs, repeats))
    return olds, news


def graph_replay_ms(step, inputs) -> str:
    try:
        return f"{replay_ms(step, inputs):.4f}"
    except RuntimeError as error:  # not capturable (a host sync inside the step)
        return f"n/a ({str(error)[:40]})"


def side_by_side_decoders() -> dict[str, d.Decoder]:
    """The samplers of issue #20's table, in decoptim (τ = 1, as FlashInfer's rows)."""
    return every_decoder(1.0)


def flashinfer_steps() -> tuple[dict, str]:
    """FlashInfer's equivalent of each side-by-side sampler (missing where it has none), and
    its version or why it is absent. Fixed seed and offset: capturable, and the timing does
    not depend on the random numbers."""
    try:
        import flashinfer
        import flashinfer.sampling as fi
    except Exception as error:  # not installed, or no compiler for its JIT
        return {}, f"FlashInfer absent ({type(error).__name__}: {str(error)[:60]})"
    rng = {"seed": 1234, "offset": 0}

    def probs(z):
        return fi.softmax(z, temperature=1.0)

    steps = {
        "softmax": lambda z: fi.sampling_from_logits(z, **rng),
        "top-k 50": lambda z: fi.top_k_sampling_from_probs(probs(z), 50, **rng),
        "top-p 0.9": lambda z: fi.top_p_sampling_from_probs(probs(z), 0.9, **rng),
        "min-p 0.1": lambda z: fi.min_p_sampling_from_probs(probs(z), 0.1, **rng),
        # "joint": the "top_k_first" default takes a fast path through FlashInfer's top-k
        # module, whose JIT build takes several minutes more on a fresh machine.
        "top-k 50 & top-p 0.9": lambda z: fi.top_k_top_p_sampling_from_logits(
            z, 50, 0.9, filter_apply_order="joint", **rng
        ),
    }
    try:  # the first call JIT-compiles FlashInfer's sampling module (~90 s)
        trial = torch.randn(2, 1000, device="cuda")
        for step in steps.values():
            step(trial)
    except Exception as error:
        return {}, f"FlashInfer {flashinfer.__version__} failed ({str(error)[:80]})"
    return steps, f"FlashInfer {flashinfer.__version__}"


def flashinfer_table(vocab: int, samplers: list[str] | None = None) -> None:
    """decoptim against FlashInfer, ms per step, for B ∈ {1, 8, 64, 256}: as calls, and
    replayed as CUDA graphs; decoptim also as a call through `GraphedStep`; with each
    replay's ratio to the copy of the logits. `samplers` keeps those rows only."""
    import warnings

    fi_steps, fi_version = flashinfer_steps()
    print(f"\n## side by side with FlashInfer, V = {vocab}, fp32 ({fi_version})\n")
    print("ms per step: call / CUDA-graph replay; ×copy is the replayed step over the replayed")
    print("copy of the logits; 'via GraphedStep' is the call through `GraphedStep(decoder.sample)`")
    print("(logits copied in, the graph replayed, the tokens copied out); 'fi' is FlashInfer's")
    print("equivalent ('—' where it has none).\n")
    print("| B | sampler | decoptim call | decoptim via GraphedStep | decoptim replay | ×copy "
          "| fi call | fi replay | ×copy | decoptim / fi (replay) |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ours = side_by_side_decoders()
    if samplers is not None:
        ours = {name: ours[name] for name in samplers}
    for batch in (1, 8, 64, 256):
        buffers = max(2, min(8, int(3 * 50e6 // (batch * vocab * 4)) + 1))
        inputs = make_inputs(batch, vocab, buffers, seed=7)
        copy_call = time_ms(lambda z: z.clone(), inputs)
        copy_replay = graph_replay_ms(lambda z: z.clone(), inputs)
        print(f"| {batch} | copy | {copy_call:.4f} | | {copy_replay} | 1.00 | | | | |", flush=True)
        floor = float(copy_replay)
        for name, decoder in ours.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the composite's "no kernel table entry" note
                call = time_ms(decoder.sample, inputs, 30)
                graphed_step = GraphedStep(decoder.sample)
                graphed = time_ms(graphed_step, inputs, 30)
                replay = graph_replay_ms(decoder.sample, inputs)
            graphed_cell = "n/a (ran eagerly)" if graphed_step.eager else f"{graphed:.4f}"
            cells = [f"{call:.4f}", graphed_cell, replay, _ratio(replay, floor)]
            step = fi_steps.get(name)
            if step is None:
                cells += ["—", "—", "—", "—"]
            else:
                fi_call = time_ms(step, inputs, 30)
                fi_replay = graph_replay_ms(step, inputs)
                cells += [f"{fi_call:.4f}", fi_replay, _ratio(fi_replay, floor)]
                cells.append(_ratio(replay, _number(fi_replay)))
            print(f"| {batch} | {name} | " + " | ".join(cells) + " |", flush=True)


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return float("nan")


def _ratio(cell: str, base: float) -> str:
    value = _number(cell) / base
    return "n/a" if value != value else f"{value:.2f}"


SCALING = ["softmax", "top-p 0.9", "min-p 0.1", "sparsemax", "entmax 1.5",
           "BoK exact top-64", "BoK mirror 5", "BoK exact prob"]  # fmt: skip


def scaling_table() -> None:
    """Milliseconds per decode step for B ∈ {1, 8, 64, 256} × V ∈ {32k, 152k, 256k}: as
    calls, and replayed as CUDA graphs (the kernels without the host's launch cost)."""
    table = decoders()
    header = "| V | B | copy | softmax sampling | full-sort top-p | " + " | ".join(SCALING) + " |"
    rule = "|---" * (5 + len(SCALING)) + "|"
    replayed = []
    print("\n## scaling: ms per decode step (probs + sample), as calls\n")
    print(header + "\n" + rule)
    for vocab in (32_000, 151_936, 256_000):
        for batch in (1, 8, 64, 256):
            buffers = max(2, min(8, int(3 * 50e6 // (batch * vocab * 4)) + 1))
            inputs = make_inputs(batch, vocab, buffers, seed=7)
            steps = [
                lambda z: z.clone(),
                lambda z: softmax_sampling(z, None),
                lambda z: sorted_top_p(z, None),
            ] + [table[name].sample for name in SCALING]
            calls = [f"{time_ms(step, inputs, 30):.3f}" for step in steps]
            replayed.append([graph_replay_ms(step, inputs) for step in steps])
            print(f"| {vocab} | {batch} | " + " | ".join(calls) + " |", flush=True)
    print("\n## scaling: ms per decode step (probs + sample), replayed as CUDA graphs\n")
    print(header + "\n" + rule)
    sizes = [(v, b) for v in (32_000, 151_936, 256_000) for b in (1, 8, 64, 256)]
    for (vocab, batch), cells in zip(sizes, replayed, strict=True):
        print(f"| {vocab} | {batch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
