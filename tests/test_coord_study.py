"""bench/coord_study.sh on the arith testbed (tiny: two problems): a run split into shards
runs them one after another on one GPU (or the CPU), merges, resumes from the split it
finds, and refuses a shard count other than that split's."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def coord_study(out: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "bench" / "coord_study.sh"), "arith", str(out), "--limit", "2"],
        env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shards_run_in_turn_merge_and_resume_from_their_split(tmp_path):
    done = coord_study(tmp_path, SHARDS="2")
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "arith"
    configs = json.loads((run / "manifest.json").read_text())["configs"]
    merged = records(run / "samples.jsonl")
    assert len(merged) == 2 * len(configs)  # every (config, problem) once
    assert {(r["config"], r["problem"]) for r in merged} == {
        (c["id"], p) for c in configs for p in {r["problem"] for r in merged}
    }
    assert "shard 1/2 on GPU 0" in done.stdout and "shard 2/2 on GPU 0" in done.stdout

    # A lost half of shard 2 is generated again on the next plain run (SHARDS from the split).
    shard = run / "samples.shard-2-of-2.jsonl"
    kept = shard.read_text().splitlines()
    shard.write_text("\n".join(kept[: len(kept) // 2]) + "\n")
    resumed = coord_study(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "shard 1/2" in resumed.stdout and "shard 2/2" in resumed.stdout
    lost = len(kept) - len(kept) // 2
    assert f"{lost} left" in resumed.stdout  # the status of the run it resumed
    again = records(run / "samples.jsonl")
    assert sorted((r["config"], r["problem"]) for r in again) == sorted(
        (r["config"], r["problem"]) for r in merged
    )

    refused = coord_study(tmp_path, SHARDS="3")
    assert refused.returncode == 2
    assert "split into 2 shards; SHARDS=3 cannot continue it" in refused.stderr
    bad = coord_study(tmp_path, GPUS="two")
    assert bad.returncode == 2 and "GPUS must be a whole number >= 1, got 'two'" in bad.stderr
