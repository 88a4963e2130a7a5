"""decoptim's command line: demo, decode, eval, report, compare, train-arith, train-lora.

    decoptim demo                                   # the embedded default (make demo)
    decoptim decode --model smollm2 --prompt "The capital of France is"
    decoptim eval --model arith --task arith --decoders softmax topp:p=0.9 \\
        --temperatures 0.7 1.5 --n 8 --out runs/arith
    decoptim eval --preset paper-table1 --model Qwen/Qwen2.5-Math-7B --task math500 \\
        --data math500.jsonl --n 16 --max-new-tokens 3072 --out runs/qwen
    decoptim eval --model arith --task arith --decoders softmax --temperatures 0.7 1.5 \\
        --n 16 --coordinated --group-size 8 --out runs/coord   # i.i.d. and coordinated
    decoptim report runs/arith
    decoptim compare runs/arith     # BoK minus its controls; coordinated minus i.i.d.
    decoptim train-arith --steps 550
    decoptim train-lora --steps 300 --difficulty 3      # SmolLM2 + an arith LoRA adapter
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import core as d
from .eval.sandbox import SandboxUnavailableError

# A next-token distribution with a clear favourite, a few plausible runners-up and a tail.
DEMO_TOKENS = ["Paris", "Lyon", "the", "France", "Marseille", "a", "Nice", "it", "Rome", "banana"]
DEMO_LOGITS = [4.0, 2.6, 2.4, 2.0, 1.7, 1.0, 0.8, 0.3, -0.5, -3.0]
DEMO_PROMPT = "The capital of France is"


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


def entropy(q: torch.Tensor) -> float:
    return max(0.0, -float(torch.special.xlogy(q, q).sum()))


def demo_table() -> str:
    logits = torch.tensor([DEMO_LOGITS])
    width = max(max(len(t) for t in DEMO_TOKENS), 6) + 1
    head = f"{'decoder':20}" + "".join(f"{t:>{width}}" for t in DEMO_TOKENS)
    head += f"{'|supp|':>8}{'H':>7}{'FW gap':>10}"
    lines = [head, "-" * len(head)]
    for name, decoder in demo_decoders().items():
        q = decoder.probs(logits)[0]
        gap = float(decoder.certificate(logits, q.unsqueeze(0)).gap[0])
        cells = "".join(f"{float(v):>{width}.3f}" for v in q)
        lines.append(f"{name:20}{cells}{int((q > 0).sum()):>8}{entropy(q):>7.3f}{gap:>10.1e}")
    return "\n".join(lines)


def one_step_view(
    model, tokenizer, prompt: str, decoders: dict[str, d.Decoder], top: int = 5
) -> str:
    """Every decoder's support size, entropy and top tokens for the next token of `prompt`."""
    from .integrations.transformers import format_prompt

    text = format_prompt(tokenizer, prompt, chat=False)
    encoded = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded.to(model.device)).logits[0, -1].float().cpu()
    lines = [f"{'decoder':20}{'|supp|':>8}{'H':>7}  top tokens (probability)", "-" * 100]
    for name, decoder in decoders.items():
        q = decoder.probs(logits)
        values, index = q.topk(top)
        tokens = "  ".join(
            f"{tokenizer.decode([int(i)])!r}:{float(v):.3f}"
            for v, i in zip(values, index, strict=True)
            if v > 0
        )
        lines.append(f"{name:20}{int((q > 0).sum()):>8}{entropy(q):>7.3f}  {tokens}")
    return "\n".join(lines)


def cmd_decode(args: argparse.Namespace) -> int:
    from .eval.backends import load_model
    from .eval.grid import parse_spec

    model, tokenizer, _ = load_model(args.model, args.device)
    if args.decoders:
        decoders = {s: parse_spec(s).build(args.temperature) for s in args.decoders}
    else:
        decoders = demo_decoders()
    print(f"next token after {args.prompt!r} ({args.model}):\n")
    print(one_step_view(model, tokenizer, args.prompt, decoders, args.top))
    return 0


def _grid(args: argparse.Namespace):
    from dataclasses import replace

    from .eval.grid import PRESETS, load_grid_file, make_grid

    chosen = [x for x in (args.preset, args.grid, args.decoders) if x]
    if len(chosen) != 1:
        raise SystemExit("give exactly one of --preset, --grid or --decoders")
    if args.preset:
        if args.preset not in PRESETS:
            raise SystemExit(f"--preset must be one of {sorted(PRESETS)}, got {args.preset!r}")
        grid = PRESETS[args.preset]()
        if args.temperatures:
            grid = replace(grid, temperatures=tuple(float(t) for t in args.temperatures))
    elif args.grid:
        grid = load_grid_file(args.grid)
    else:
        grid = make_grid(args.decoders, args.temperatures or [1.0])
    if args.coordinated:
        grid = grid.with_coordinated(args.group_size)
    elif args.group_size is not None:
        if not grid.has_coordinated():
            raise SystemExit(
                f"--group-size {args.group_size} applies to coordinated configs, and this grid "
                "has none: add --coordinated (or sampling in the grid file)"
            )
        grid = replace(grid, group_size=args.group_size)
    grid.configs(args.n)  # a bad group size fails here, before any model is loaded
    return grid


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.backends import TransformersBackend, VllmBackend, coordinated_params_function
    from .eval.report import write_report
    from .eval.runner import file_sha256, run_grid
    from .eval.tasks import get_task

    grid = _grid(args)
    task = get_task(args.task)
    if args.unsafe_no_sandbox:
        if args.task != "humaneval":
            raise ValueError("--unsafe-no-sandbox only applies to --task humaneval")
        from .eval.tasks import HumanEvalTask

        task = HumanEvalTask(unsafe_no_sandbox=True)
    problems = task.load(args.data, args.limit, args.seed)
    if args.backend == "vllm":
        if args.device:
            raise SystemExit("--device applies to --backend transformers; vLLM picks its own")
        if grid.has_coordinated():
            coordinated_params_function()  # fails before the engine starts if missing
        backend = VllmBackend(args.model, max_model_len=args.max_model_len)
    else:
        backend = TransformersBackend(args.model, args.device)
    manifest = {
        **backend.describe(),
        "data": args.data,
        "data_sha256": file_sha256(args.data),
        "limit": args.limit,
    }
    print(
        f"decoptim eval: {len(grid.configs(args.n))} configs × {len(problems)} problems × "
        f"n={args.n} -> {args.out}",
        flush=True,
    )
    run_grid(
        backend.generate,
        task,
        problems,
        grid,
        Path(args.out),
        args.n,
        args.max_new_tokens,
        args.seed,
        args.batch_size,
        manifest,
        progress=not args.no_progress,
    )
    print(write_report(Path(args.out), make_plots=not args.no_plots))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .eval.report import write_report

    print(write_report(Path(args.dir), make_plots=not args.no_plots))
    print(f"\nwritten: {Path(args.dir) / 'report.md'} and the PNG plots beside it")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .eval.compare import write_comparison

    print(write_comparison(Path(args.dir), make_plot=not args.no_plots))
    print(f"\nwritten: {Path(args.dir) / 'compare.md'} and compare.png")
    return 0


def cmd_train_arith(args: argparse.Namespace) -> int:
    from .eval.arith_model import ArithTraining, arith_model_path, train_arith_model

    config = ArithTraining(seed=args.seed, difficulty=args.difficulty, steps=args.steps)
    path = train_arith_model(Path(args.out), config) if args.out else arith_model_path(config)
    print(path)
    return 0


def cmd_train_lora(args: argparse.Namespace) -> int:
    from .eval.lora import LoraTraining, smollm2_arith_path, train_smollm2_arith

    config = LoraTraining(
        seed=args.seed, difficulty=args.difficulty, steps=args.steps, rank=args.rank
    )
    path = train_smollm2_arith(Path(args.out), config) if args.out else smollm2_arith_path(config)
    print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .eval.arith_model import arith_model_path
    from .eval.backends import TransformersBackend, load_model
    from .eval.grid import demo_grid, make_grid
    from .eval.report import write_report
    from .eval.runner import read_records, run_grid
    from .eval.tasks import ArithTask

    start = time.time()
    print("decoptim demo\n\n1. One next-token step, every decoder as a simplex problem\n")
    print(
        "logits: " + ", ".join(f"{t}={z:g}" for t, z in zip(DEMO_TOKENS, DEMO_LOGITS, strict=True))
    )
    print()
    print(demo_table())
    print(
        "\n|supp|: tokens with q > 0; H: entropy (nats); FW gap: Frank–Wolfe certificate of the"
        "\nproblem each decoder solves (≈0: optimal). The mirror row is the paper's 5-step solver"
        "\non a strong coverage setting; its gap shows where it stopped.\n"
    )

    print("2. The same view on a real model: SmolLM2-135M-Instruct (49,152-token vocabulary)\n")
    model, tokenizer, _ = load_model("smollm2", "cpu")
    print(one_step_view(model, tokenizer, DEMO_PROMPT, demo_decoders()))
    del model

    print("\n3. K samples per problem on `arith`, with the project's own small model\n")
    arith_model_path()  # trains on first use (about a minute on 2 cores), then cached
    backend = TransformersBackend("arith", "cpu")
    task = ArithTask()
    problems = task.load(limit=args.problems)
    out = Path(args.out)
    greedy = run_grid(
        backend.generate,
        task,
        problems,
        make_grid(["greedy"], [1.0]),
        out / "greedy",
        1,
        40,
        0,
        args.problems,
        {**backend.describe(), "data": None, "data_sha256": None, "limit": args.problems},
        progress=False,
    )
    correct = sum(r["samples"][0]["correct"] for r in read_records(greedy))
    print(f"greedy accuracy on {len(problems)} problems: {correct}/{len(problems)}\n")
    manifest = {**backend.describe(), "data": None, "data_sha256": None, "limit": args.problems}
    # two coordinated groups per problem: the pass@K ceiling, estimated from each problem's
    # n samples, is then more than that problem's pass@n
    run_grid(
        backend.generate,
        task,
        problems,
        demo_grid(args.n // 2 if args.n % 2 == 0 else None),
        out / "grid",
        args.n,
        40,
        0,
        50,
        manifest,
        progress=True,
    )
    print(write_report(out / "grid"))
    print(
        f"\nreport and plots: {out / 'grid'}/report.md, accuracy_vs_temperature.png, maj_vs_k.png"
    )
    print(f"demo finished in {time.time() - start:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decoptim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the embedded default: one-step views and an arith run")
    demo.add_argument("--problems", type=int, default=60)
    demo.add_argument("--n", type=int, default=8)
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(run=cmd_demo)

    decode = commands.add_parser("decode", help="every decoder on the next token of a prompt")
    decode.add_argument("--model", default="smollm2", help="path, hub id, or smollm2 / arith")
    decode.add_argument("--prompt", default=DEMO_PROMPT)
    decode.add_argument("--decoders", nargs="*", help="decoder specs (default: the demo set)")
    decode.add_argument("--temperature", type=float, default=1.0)
    decode.add_argument("--top", type=int, default=5)
    decode.add_argument("--device", default=None)
    decode.set_defaults(run=cmd_decode)

    ev = commands.add_parser("eval", help="run decoders × temperatures on a task")
    ev.add_argument(
        "--model", required=True, help="path, hub id, or smollm2 / arith / smollm2-arith"
    )
    ev.add_argument("--task", required=True, choices=["math500", "gsm8k", "humaneval", "arith"])
    ev.add_argument("--data", help="JSONL(.gz) path; arith takes difficulty=N")
    ev.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="humaneval: run model-written code WITHOUT bubblewrap (see docs/sandbox.md); "
        "never on a machine with anything to lose",
    )
    ev.add_argument(
        "--decoders", nargs="+", help="decoder specs, e.g. topk:k=50 bok:k=8,beta=0.02,lam=0.2"
    )
    ev.add_argument("--temperatures", nargs="+", type=float)
    ev.add_argument("--grid", help="a TOML grid file")
    ev.add_argument("--preset", help="paper-table1, bok-study or demo")
    ev.add_argument(
        "--coordinated",
        action="store_true",
        help="also draw every decoder × τ as coordinated groups (the i.i.d. configs stay)",
    )
    ev.add_argument(
        "--group-size",
        type=int,
        help="K of the coordinated groups, the K of their pass@K and maj@K; must divide "
        "--n (default: n, one group per problem)",
    )
    ev.add_argument("--n", type=int, default=16)
    ev.add_argument("--max-new-tokens", type=int, default=512)
    ev.add_argument("--limit", type=int, help="first N problems only")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch-size", type=int, default=8, help="problems per generate call")
    ev.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    ev.add_argument("--device", default=None, help="transformers only (default: cuda if any)")
    ev.add_argument(
        "--max-model-len", type=int, default=4096, help="vllm only: prompt + generation tokens"
    )
    ev.add_argument("--out", required=True)
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--no-plots", action="store_true")
    ev.set_defaults(run=cmd_eval)

    report = commands.add_parser("report", help="tables and plots for a run directory")
    report.add_argument("dir")
    report.add_argument("--no-plots", action="store_true")
    report.set_defaults(run=cmd_report)

    compare = commands.add_parser(
        "compare",
        help="Best-of-K minus its β=0, τ_eff and softmax controls, and coordinated minus "
        "i.i.d. at the same decoder and τ, paired by problem",
    )
    compare.add_argument("dir")
    compare.add_argument("--no-plots", action="store_true")
    compare.set_defaults(run=cmd_compare)

    train = commands.add_parser("train-arith", help="train the project's arith model (cached)")
    train.add_argument("--steps", type=int, default=550)
    train.add_argument("--difficulty", type=int, default=1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="a directory (default: the cache)")
    train.set_defaults(run=cmd_train_arith)

    lora = commands.add_parser(
        "train-lora", help="fine-tune SmolLM2 on arith with a LoRA adapter (cached)"
    )
    lora.add_argument("--steps", type=int, default=300)
    lora.add_argument("--difficulty", type=int, default=3)
    lora.add_argument("--rank", type=int, default=8)
    lora.add_argument("--seed", type=int, default=0)
    lora.add_argument("--out", help="a directory (default: the cache; alias smollm2-arith)")
    lora.set_defaults(run=cmd_train_lora)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, SandboxUnavailableError) as error:
        print(f"decoptim {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
