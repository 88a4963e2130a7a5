"""Sharded runs: `--shard i/N` splits a run's work among N processes or machines.

The work of a run is its (config, problem chunk) pairs, chunks of `batch_size` problems as the
runner cuts them. Shard i of N (numbered from 1) generates the pairs `shard_of` assigns to it:
each config's chunks go round robin over the shards, starting at an offset hashed from the
config's id. The assignment depends on the config id, the chunk and N only, so it is the same
on every machine, every shard gets a fair share of every config, and a config added later
moves no work. A pair is generated with the same seed as in an unsharded run, so the samples
are the same.

A shard writes its own files beside the others: `manifest.shard-i-of-N.json` and
`samples.shard-i-of-N.jsonl`, each resumable as an unsharded run's. Shards may share one
directory (a shared file system) or run in separate ones whose files are copied together
afterwards. `load_run` reads a directory of shards as one run, records in the order of an
unsharded run (config, then problem), so that `decoptim report` and `compare` give the
unsharded run's results; `merge_run` (`decoptim merge`) writes that run as `manifest.json` and
`samples.jsonl`, once every shard is complete.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .runner import IDENTITY, MANIFEST, SAMPLES, check_same_run, read_records, write_atomically

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_BAD_SPEC = "--shard must be i/N with 1 <= i <= N (shards are numbered from 1), got --shard '"
_MANIFEST_NAME = re.compile(r"manifest\.shard-(\d+)-of-(\d+)\.json")
# What every shard of one run must agree on, beyond the runner's identity fields.
SHARD_IDENTITY = (*IDENTITY, "problem_ids")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1 to `count`) of a run split `count` ways."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name, value in (("index", self.index), ("count", self.count)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"shard {name} must be an int, got {name}={value!r}")
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(_BAD_SPEC + f"{self.index}/{self.count}'")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """A shard from its command-line form `i/N`; ValueError naming the value otherwise."""
        found = _SPEC.fullmatch(text) if isinstance(text, str) else None
        if found is None or not 1 <= int(found.group(1)) <= int(found.group(2)):
            raise ValueError(_BAD_SPEC + f"{text}'")
        return cls(int(found.group(1)), int(found.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def manifest_name(self) -> str:
        return f"manifest.shard-{self.index}-of-{self.count}.json"

    @property
    def samples_name(self) -> str:
        return f"samples.shard-{self.index}-of-{self.count}.jsonl"

    def owns(self, config_id: str, chunk: int) -> bool:
        return shard_of(config_id, chunk, self.count) == self.index


def shard_of(config_id: str, chunk: int, count: int) -> int:
    """The shard (1 to `count`) that generates chunk `chunk` of config `config_id`."""
    offset = int(hashlib.sha256(config_id.encode()).hexdigest()[:8], 16)
    return (offset + chunk) % count + 1


def shards_in(out: Path) -> dict[Shard, Path]:
    """The shards that have a manifest in `out`, by shard."""
    found = {}
    for path in sorted(out.glob("manifest.shard-*-of-*.json")):
        name = _MANIFEST_NAME.fullmatch(path.name)
        if name is None:
            continue
        try:
            found[Shard(int(name.group(1)), int(name.group(2)))] = path
        except ValueError:
            raise ValueError(f"{path}: not a shard's manifest name (shard {name.group(1)} "
                             f"of {name.group(2)})") from None  # fmt: skip
    return found


def _split(out: Path, shards: dict[Shard, Path]) -> int | None:
    """N, the split of the shards in `out` (None: no shards); ValueError when they are of
    runs split different ways."""
    counts = sorted({shard.count for shard in shards})
    if len(counts) > 1:
        raise ValueError(
            f"{out} holds shards of runs split {' and '.join(map(str, counts))} ways: "
            + ", ".join(path.name for path in shards.values())
        )
    return counts[0] if counts else None


def check_directory(out: Path, shard: Shard | None, manifest: dict) -> None:
    """Refuse, before anything is written, a run that would mix with another in `out`: an
    unsharded run beside shards or a merge, a shard beside an unsharded run, shards of
    different splits, or a shard of another run (its identity differs from another shard's)."""
    shards = shards_in(out)
    split = _split(out, shards)
    plain = out / MANIFEST
    merged = plain.exists() and "merged_from" in json.loads(plain.read_text())
    if shard is None:
        if shards or merged:
            split = split or len(_read(plain)["merged_from"])
            raise ValueError(
                f"{out} holds a run sharded {split} ways: continue it with --shard i/{split} "
                "(then `decoptim merge`), or use another --out"
            )
        return
    if plain.exists() and not merged:
        raise ValueError(
            f"{out} holds an unsharded run ({MANIFEST}): split it first to continue it in "
            f"shards (decoptim split {out} {shard.count}), or use another --out"
        )
    if split is not None and split != shard.count:
        raise ValueError(f"{out} holds shards of a run split {split} ways; got --shard {shard}")
    for other, path in shards.items():
        if other != shard:  # its own manifest: the runner's resumption check
            check_same_run(
                _read(path),
                manifest,
                f"{out} holds shard {other} of a different run; use another --out",
                SHARD_IDENTITY,
            )


def load_run(out: Path) -> tuple[dict, list[dict]]:
    """(manifest, records) of a run directory: its shards read as one run when it has shard
    files (all N of them must have started), else `manifest.json` and `samples.jsonl`."""
    shards = shards_in(out)
    if shards:
        return _combine(out, shards, complete=False)
    manifest_path, samples_path = out / MANIFEST, out / SAMPLES
    if not manifest_path.exists() or not samples_path.exists():
        raise FileNotFoundError(
            f"{out} has no {MANIFEST} and {SAMPLES} (nor shard files): not a decoptim eval run"
        )
    return _read(manifest_path), read_records(samples_path)


@dataclass(frozen=True)
class Progress:
    """How far a run is: (records done, records planned) per config and, for a sharded run,
    per shard (in the order of its manifest and its split)."""

    configs: dict[str, tuple[int, int]]
    shards: dict[Shard, tuple[int, int]]

    @property
    def done(self) -> int:
        return sum(done for done, _ in self.configs.values())

    @property
    def planned(self) -> int:
        return sum(planned for _, planned in self.configs.values())


def run_progress(out: Path) -> Progress:
    """The (config, problem) records `out` holds against those its manifest plans: read from
    the shard files when it has them (shards not started count as empty), else from the
    unsharded run's. Unlike `load_run`, a split whose shards have not all started is read."""
    shards = shards_in(out)
    if shards:
        count = _split(out, shards)
        ordered = sorted(shards, key=lambda shard: shard.index)
        manifests = [_read(shards[shard]) for shard in ordered]
        files = [out / shard.samples_name for shard in ordered]
    elif (out / MANIFEST).exists():
        count, manifests, files = None, [_read(out / MANIFEST)], [out / SAMPLES]
    else:
        raise FileNotFoundError(
            f"{out} has no {MANIFEST} (nor shard files): not a decoptim eval run"
        )
    configs = list(dict.fromkeys(c["id"] for m in manifests for c in m["configs"]))
    problems = manifests[0]["problem_ids"]
    batch = manifests[0]["batch_size"]
    done_keys = {(r["config"], r["problem"]) for path in files for r in read_records(path)}
    per_config = {}
    per_shard = {Shard(i, count): [0, 0] for i in range(1, count + 1)} if count else {}
    for config in configs:
        done = 0
        for position, problem in enumerate(problems):
            have = (config, problem) in done_keys
            done += have
            if count:
                tally = per_shard[Shard(shard_of(config, position // batch, count), count)]
                tally[0] += have
                tally[1] += 1
        per_config[config] = (done, len(problems))
    return Progress(per_config, {shard: tuple(tally) for shard, tally in per_shard.items()})


def merge_run(out: Path) -> tuple[Path, int]:
    """Write the complete run of `out`'s shards as `manifest.json` and `samples.jsonl` (the
    shard files stay); returns the samples path and the number of records."""
    shards = shards_in(out)
    if not shards:
        raise ValueError(
            f"{out} holds no shard files (manifest.shard-i-of-N.json): nothing to merge"
        )
    plain = out / MANIFEST
    if plain.exists() and "merged_from" not in _read(plain):
        raise ValueError(f"{plain} is an unsharded run's; merging would replace it")
    manifest, records = _combine(out, shards, complete=True)
    samples = out / SAMPLES
    write_atomically(samples, "".join(json.dumps(record) + "\n" for record in records))
    write_atomically(plain, json.dumps(manifest, indent=2, default=str))
    return samples, len(records)


def split_run(out: Path, count: int) -> list[tuple[Shard, int]]:
    """Split `out`'s unsharded run, finished or not, into `count` shards that continue it:
    each shard's files hold the records it owns, and `manifest.json` is marked as merged from
    them (its `samples.jsonl` stays, the records as they were). Returns (shard, records) pairs.
    The shards then resume with `--shard i/count` and read back, or merge, as one run."""
    if count < 1:
        raise ValueError(f"the shard count must be >= 1, got {count}")
    if shards_in(out):
        raise ValueError(
            f"{out} holds shard files already: continue them with --shard, or, if an earlier "
            "split was cut short, delete its manifest.shard-* and samples.shard-* files first"
        )
    manifest = _read(out / MANIFEST) if (out / MANIFEST).exists() else None
    if manifest is None or not (out / SAMPLES).exists():
        raise FileNotFoundError(f"{out} has no {MANIFEST} and {SAMPLES}: nothing to split")
    if "merged_from" in manifest:
        raise ValueError(f"{out / MANIFEST} is a merged run's, its shards are elsewhere")
    position = {problem: i for i, problem in enumerate(manifest["problem_ids"])}
    owned: dict[Shard, list[dict]] = {Shard(i, count): [] for i in range(1, count + 1)}
    for record in read_records(out / SAMPLES):
        if record["problem"] not in position:
            raise ValueError(
                f"{out / SAMPLES}: a record of problem {record['problem']!r}, which "
                f"{out / MANIFEST} does not list: not this run's record"
            )
        chunk = position[record["problem"]] // manifest["batch_size"]
        owned[Shard(shard_of(record["config"], chunk, count), count)].append(record)
    for shard, records in owned.items():
        write_atomically(out / shard.samples_name, "".join(json.dumps(r) + "\n" for r in records))
        shard_manifest = {**manifest, "shard": str(shard)}
        write_atomically(out / shard.manifest_name, json.dumps(shard_manifest, indent=2))
    marked = {**manifest, "merged_from": [{"shard": str(s), "split": True} for s in owned]}
    write_atomically(out / MANIFEST, json.dumps(marked, indent=2, default=str))
    return [(shard, len(records)) for shard, records in owned.items()]


def _combine(out: Path, shards: dict[Shard, Path], complete: bool) -> tuple[dict, list[dict]]:
    count = _split(out, shards)
    missing = [Shard(i, count) for i in range(1, count + 1) if Shard(i, count) not in shards]
    if missing:
        raise ValueError(
            f"{out}: shard(s) {', '.join(map(str, missing))} have not started (no "
            f"{missing[0].manifest_name}): run them with --shard i/{count}, or copy their "
            "files into this directory"
        )
    manifests = {shard: _read(shards[shard]) for shard in sorted(shards, key=lambda s: s.index)}
    first = manifests[Shard(1, count)]
    for shard, manifest in manifests.items():
        check_same_run(
            first,
            manifest,
            f"{out}: shard {shard} is not the same run as shard 1/{count}",
            SHARD_IDENTITY,
            (f"in shard 1/{count}", f"in shard {shard}"),
        )
    if not first.get("problem_ids"):
        raise ValueError(f"{shards[Shard(1, count)]} lists no problem_ids")
    configs = list({c["id"]: c for m in manifests.values() for c in m["configs"]}.values())
    config_index = {config["id"]: i for i, config in enumerate(configs)}
    problem_index = {problem: i for i, problem in enumerate(first["problem_ids"])}
    records, seen = [], set()
    for shard in manifests:
        path = out / shard.samples_name
        for record in read_records(path):
            key = (record["config"], record["problem"])
            if key[0] not in config_index or key[1] not in problem_index:
                raise ValueError(f"{path}: a record of an unknown config or problem {key}")
            owner = shard_of(key[0], problem_index[key[1]] // first["batch_size"], count)
            if owner != shard.index or key in seen:
                raise ValueError(
                    f"{path}: the record of {key} belongs to shard {owner}/{count}"
                    + (" and is there already" if key in seen else "")
                    + ": a shard's files under another shard's name?"
                )
            seen.add(key)
            records.append(record)
    records.sort(key=lambda r: (config_index[r["config"]], problem_index[r["problem"]]))
    if complete:
        _check_complete(out, configs, first, count, seen)
    merged_from = [
        {
            "shard": str(shard),
            **{
                k: m.get(k)
                for k in ("started", "resumed", "machine", "git_revision", "code_sha256", "command")
            },
        }
        for shard, m in manifests.items()
    ]
    return {**first, "configs": configs, "shard": None, "merged_from": merged_from}, records


def _check_complete(out: Path, configs: list[dict], first: dict, count: int, seen: set) -> None:
    lacking: dict[int, list[tuple[str, str]]] = {}
    for config in configs:
        for position, problem in enumerate(first["problem_ids"]):
            if (config["id"], problem) not in seen:
                owner = shard_of(config["id"], position // first["batch_size"], count)
                lacking.setdefault(owner, []).append((config["id"], problem))
    if lacking:
        total = len(configs) * len(first["problem_ids"])
        parts = [
            f"shard {i}/{count} lacks {len(keys)} (first: {keys[0][0]} on {keys[0][1]})"
            for i, keys in sorted(lacking.items())
        ]
        raise ValueError(
            f"{out}: {sum(map(len, lacking.values()))} of {total} (config, problem) records "
            f"are missing; {'; '.join(parts)}. Finish those shards (run them again with the "
            "same --shard) and merge again"
        )


def _read(path: Path) -> dict:
    return json.loads(path.read_text())
