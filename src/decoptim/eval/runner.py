"""Run a grid of decoders × temperatures on a task, n samples per problem, resumably.

Output directory:
- `manifest.json`: model, task, data (with its sha256), every decoder's parameters, seeds,
  prompt template, package versions, git revision, command line;
- `samples.jsonl`: one line per (config, problem) holding its n samples, appended and
  fsync'd as each batch finishes.

Resuming: problems are cut into fixed chunks of `batch_size`, and each (config, chunk) is
generated with a seed derived from (seed, config, chunk). A rerun skips the (config,
problem) pairs already on disk, regenerates any chunk that is incomplete with the same seed
and writes only its missing lines, so an interrupted run (Ctrl-C, kill -9, a crash) ends
with exactly the samples of an uninterrupted one: none lost, none duplicated. A torn last
line (a kill during a write) is cut off before appending.

Sharded runs (`shard`, `decoptim.eval.shards`): shard i of N generates only its share of the
(config, chunk) pairs, with the same chunk seeds, into `manifest.shard-i-of-N.json` and
`samples.shard-i-of-N.jsonl`; the manifest lists the run's problem ids in order, which is
how the shards are read back as one run.

Coordinated configs (`+coord(K=...)` ids, `"sampling": "coordinated"` and `"group_size"`
in the manifest) hand `coordinated=True, group_size=K` to the generate function (and
`by_rejection=True` for `+coord(K=...,rejection)`, `"sampling": "coordinated-rejection"`), whose
groups depend only on the chunk seed and a prompt's place in the chunk, so an incomplete
chunk regenerates to the same samples. A record's n samples are then group-major: sample
g·K + i is sample i of group g.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .grid import Config, Grid
from .tasks import Problem, Task

if TYPE_CHECKING:
    from ..core.specs import DecoderSpec
    from .shards import Shard

SAMPLES = "samples.jsonl"
MANIFEST = "manifest.json"
# Fields that must agree between a run on disk and its resumption.
IDENTITY = (
    "backend",
    "model",
    "task",
    "task_options",
    "data",
    "data_sha256",
    "n",
    "max_new_tokens",
    "seed",
    "batch_size",
    "limit",
    "plugins",  # the decoder plugins' paths and sha256 (absent without plugins)
)


@dataclass
class GeneratedSample:
    text: str
    tokens: int
    logprob_sum: float | None  # the model's raw log-probability; None: the backend has none
    logprob_mean: float | None


# (prompts, decoder spec, temperature, n, max_new_tokens, seed, task) -> per prompt, n samples;
# coordinated configs add the keywords coordinated=True, group_size=K (n/K groups per prompt),
# and by_rejection=True where drawn by rejection.
GenerateFn = Callable[..., list[list[GeneratedSample]]]


@dataclass(frozen=True)
class GenerateRequest:
    """One generate call: n samples per prompt of at most `max_new_tokens` tokens, drawn by
    `spec` at `temperature` from `seed`, the prompts shown as `task` shows them; with
    `coordinated`, n/K coordinated groups of K = `group_size` per prompt, drawn by rejection
    over softmax's buckets with `by_rejection`."""

    prompts: Sequence[str]
    spec: DecoderSpec
    temperature: float
    n: int
    max_new_tokens: int
    seed: int
    task: Task
    coordinated: bool = False
    group_size: int | None = None
    by_rejection: bool = False


class Backend:
    """A generation backend: `describe()` (its manifest fields) and `sample(request)`; its
    `generate` is the harness's GenerateFn."""

    def describe(self) -> dict:
        raise NotImplementedError

    def sample(self, request: GenerateRequest) -> list[list[GeneratedSample]]:
        """Per prompt, its n samples."""
        raise NotImplementedError

    def generate(
        self,
        prompts: Sequence[str],
        spec: DecoderSpec,
        temperature: float,
        n: int,
        max_new_tokens: int,
        seed: int,
        task: Task,
        coordinated: bool = False,
        group_size: int | None = None,
        by_rejection: bool = False,
    ) -> list[list[GeneratedSample]]:
        request = GenerateRequest(
            prompts,
            spec,
            temperature,
            n,
            max_new_tokens,
            seed,
            task,
            coordinated,
            group_size,
            by_rejection,
        )
        return self.sample(request)


def chunk_seed(seed: int, config: str, chunk: int) -> int:
    digest = hashlib.sha256(f"{seed}:{config}:{chunk}".encode()).hexdigest()
    return int(digest[:8], 16)


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """Records of samples.jsonl; a torn final line is dropped (and cut off when `repair`)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        if repair:
            with open(path, "r+b") as handle:
                handle.truncate(cut)
        data = data[:cut]
    records = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: malformed record ({error.msg})") from None
    return records


def git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def code_sha256(package: Path | None = None) -> str:
    """sha256 over decoptim's own source files (each one's path and bytes): it names the code
    that ran where the git revision cannot (a tree copied beside a stale `.git`, an
    installed wheel, uncommitted edits). `python -c "from decoptim.eval.runner import
    code_sha256; print(code_sha256())"` in a checkout gives the value to compare."""
    package = package or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("decoptim", "torch", "transformers", "math_verify", "vllm"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        found[name] = getattr(module, "__version__", "unknown")
    return found


def file_sha256(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a staging file in the same directory, flushed and
    fsync'd, then os.replace'd over `path` (and the directory fsync'd where it can be)."""
    staging = path.with_name(path.name + ".tmp")
    try:
        with open(staging, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def check_same_run(
    before: dict,
    now: dict,
    refusal: str,
    keys: Sequence[str] = IDENTITY,
    sides: tuple[str, str] = ("on disk", "now"),
) -> None:
    """Raise ValueError(`refusal` and the clashes) when manifests `before` and `now` differ
    on any of `keys`: each clash as `key: value <sides[0]>, value <sides[1]>`."""

    def short(value: object) -> str:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."

    clashes = [
        f"{k}: {short(before.get(k))} {sides[0]}, {short(now.get(k))} {sides[1]}"
        for k in keys
        if before.get(k) != now.get(k)
    ]
    if clashes:
        raise ValueError(f"{refusal} ({'; '.join(clashes)})")


def write_manifest(out: Path, manifest: dict, name: str = MANIFEST) -> None:
    """Write `manifest` as `out/name`; a manifest already there must be the same run's
    (`IDENTITY`), whose configs, start and resumption count it keeps."""
    path = out / name
    previous = json.loads(path.read_text()) if path.exists() else None
    if previous is not None:
        check_same_run(previous, manifest, f"{out} holds a different run; use another --out")
        known = {c["id"] for c in previous["configs"]}
        manifest["configs"] = previous["configs"] + [
            c for c in manifest["configs"] if c["id"] not in known
        ]
        manifest["started"] = previous.get("started", manifest["started"])
        manifest["resumed"] = previous.get("resumed", 0) + 1
    write_atomically(path, json.dumps(manifest, indent=2, default=str))


@dataclass(frozen=True)
class RunSettings:
    """How `run_grid` runs: where to (`out`), n samples per (config, problem) of at most
    `max_new_tokens` tokens each, the run's seed, problems per generate call, the caller's
    manifest fields (backend, model, data, ...), a progress bar or not, and `shard`'s share
    of the work only when given."""

    out: Path
    n: int
    max_new_tokens: int
    seed: int
    batch_size: int
    manifest: dict = field(default_factory=dict)
    progress: bool = True
    shard: Shard | None = None

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(
                "n, max_new_tokens and batch_size must be >= 1, "
                f"got {self.n}, {self.max_new_tokens}, {self.batch_size}"
            )

    @property
    def manifest_name(self) -> str:
        """The run's manifest file: its shard's, or `MANIFEST`."""
        return self.shard.manifest_name if self.shard else MANIFEST

    @property
    def samples_name(self) -> str:
        """The run's samples file: its shard's, or `SAMPLES`."""
        return self.shard.samples_name if self.shard else SAMPLES


def run_grid(
    generate: GenerateFn,
    task: Task,
    problems: list[Problem],
    grid: Grid,
    settings: RunSettings,
) -> Path:
    """Generate and grade every missing (config, problem), of `settings.shard`'s share only
    when given; returns the samples file."""
    from .shards import check_directory

    if not problems:
        raise ValueError("the task loaded no problems")
    # grid.configs checks n against the group sizes, before anything is written
    configs = grid.configs(settings.n)
    settings.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        **settings.manifest,
        "task": task.name,
        "task_options": task.options(),
        "n": settings.n,
        "max_new_tokens": settings.max_new_tokens,
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "prompt_template": task.template(),
        "configs": [config.manifest_entry() for config in configs],
        "problem_ids": [problem.id for problem in problems],
        "shard": str(settings.shard) if settings.shard else None,
        "versions": versions(),
        "git_revision": git_revision(),
        "code_sha256": code_sha256(),
        "command": " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    check_directory(settings.out, settings.shard, manifest)
    write_manifest(settings.out, manifest, settings.manifest_name)
    samples_path = settings.out / settings.samples_name
    done = {(r["config"], r["problem"]) for r in read_records(samples_path, repair=True)}
    chunks = [
        problems[i : i + settings.batch_size] for i in range(0, len(problems), settings.batch_size)
    ]
    work = [
        (config, index, chunk)
        for config in configs
        for index, chunk in enumerate(chunks)
        if settings.shard is None or settings.shard.owns(config.id, index)
    ]
    owned = {(config.id, p.id) for config, _, chunk in work for p in chunk}
    bar = progress_bar(len(owned), "eval", "problem", settings.progress, len(done & owned))
    try:
        for config, index, chunk in work:
            options = (
                {"coordinated": True, "group_size": config.group_size} if config.coordinated else {}
            )
            if config.by_rejection:
                options["by_rejection"] = True
            missing = [p for p in chunk if (config.id, p.id) not in done]
            if not missing:
                continue
            if bar is not None:
                bar.set_description(_shortened(config.id, 48))
            start = time.perf_counter()
            outputs = generate(
                [p.prompt for p in chunk],
                config.spec,
                config.temperature,
                settings.n,
                settings.max_new_tokens,
                chunk_seed(settings.seed, config.id, index),
                task,
                **options,
            )
            per_sample = (time.perf_counter() - start) / (len(chunk) * settings.n)
            lines = []
            for problem, samples in zip(chunk, outputs, strict=True):
                if (config.id, problem.id) in done:
                    continue
                if len(samples) != settings.n:
                    raise ValueError(
                        f"the backend returned {len(samples)} samples for problem "
                        f"{problem.id} of {config.id}, expected n={settings.n}"
                    )
                record = _record(config, problem, samples, task, per_sample)
                lines.append(json.dumps(record) + "\n")
                done.add((config.id, problem.id))
            with open(samples_path, "a", encoding="utf-8") as handle:
                handle.write("".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
            if bar is not None:
                bar.update(len(lines))
    finally:
        if bar is not None:
            bar.close()
    return samples_path


def _shortened(text: str, width: int) -> str:
    """`text`, or its start and end around an ellipsis when longer than `width`."""
    if len(text) <= width:
        return text
    half = (width - 1) // 2
    return text[:half] + "…" + text[len(text) - (width - 1 - half) :]


def _record(
    config: Config,
    problem: Problem,
    samples: Sequence[GeneratedSample],
    task: Task,
    per_sample: float,
) -> dict:
    graded = [task.grade(problem, s.text) for s in samples]
    return {
        "config": config.id,
        "decoder": config.spec.label,
        "temperature": config.temperature,
        "problem": problem.id,
        "gold": problem.gold,
        "seconds_per_sample": per_sample,
        "samples": [
            {
                "text": s.text,
                "answer": g.answer,
                "correct": g.correct,
                "tokens": s.tokens,
                "logprob_sum": s.logprob_sum,
                "logprob_mean": s.logprob_mean,
            }
            for s, g in zip(samples, graded, strict=True)
        ],
    }


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar with ETA, or None when disabled or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True)
