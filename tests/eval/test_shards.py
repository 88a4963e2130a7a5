"""--shard i/N: a deterministic partition of (config, chunk) work; shards read back, or
merged, give exactly the unsharded run's results."""

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from decoptim.cli import main
from decoptim.eval.compare import write_comparison
from decoptim.eval.grid import make_grid
from decoptim.eval.report import summarise
from decoptim.eval.runner import GeneratedSample, RunSettings, read_records, run_grid
from decoptim.eval.shards import (
    Shard,
    load_run,
    merge_run,
    run_progress,
    shard_of,
    split_run,
)
from decoptim.eval.tasks import ArithTask


@pytest.mark.parametrize("text", ["3/2", "0/0", "0/2", "2", "a/b", "-1/2", "1/2/3", ""])
def test_a_bad_shard_spec_is_an_error_naming_it(text):
    with pytest.raises(ValueError, match=f"--shard must be i/N .*got --shard {text!r}"):
        Shard.parse(text)


def test_good_shard_specs():
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard.parse(" 1 / 1 ")) == "1/1"
    assert Shard(3, 8).samples_name == "samples.shard-3-of-8.jsonl"


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_the_partition_is_exact_balanced_and_depends_only_on_the_pair(count):
    configs = [f"softmax@{t}" for t in (0.5, 0.7, 1.0)] + ["bok(k=8,beta=0.02,lam=0.2)@0.5"]
    chunks = range(20)
    owners = {
        (c, j): [i for i in range(1, count + 1) if Shard(i, count).owns(c, j)]
        for c in configs
        for j in chunks
    }
    assert all(len(found) == 1 for found in owners.values())  # each pair exactly once
    for config in configs:
        load = Counter(owners[(config, j)][0] for j in chunks)
        assert max(load.values()) - min(load.values()) <= 1 and len(load) == count
    # a pair's shard ignores what else is in the grid
    assert [shard_of("softmax@0.5", j, count) for j in chunks] == [
        owners[("softmax@0.5", j)][0] for j in chunks
    ]


def eval_args(model, out, *extra):
    args = ["eval", "--model", str(model), "--task", "arith", "--limit", "4", "--batch-size", "2"]
    args += ["--decoders", "softmax", "bok:k=4,beta=0.5,lam=0.5"]
    args += ["--temperatures", "1.0", "--coordinated", "--group-size", "2", "--n", "2"]
    return [
        *args,
        "--max-new-tokens",
        "8",
        "--seed",
        "3",
        "--out",
        str(out),
        "--no-progress",
        "--no-plots",
        *extra,
    ]


def without_timing(rows):
    return [{k: v for k, v in row.items() if k != "seconds_per_sample"} for row in rows]


def test_a_sharded_run_reads_and_merges_to_the_unsharded_run(tiny_arith_model, tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(eval_args(tiny_arith_model, whole)) == 0
    for i in (3, 1):
        assert main(eval_args(tiny_arith_model, parts, "--shard", f"{i}/3")) == 0
    assert "shard 1/3 done" in capsys.readouterr().out
    # shard 2 has not run: reading the run names it
    assert main(["report", str(parts), "--no-plots"]) == 2
    assert "shard(s) 2/3 have not started" in capsys.readouterr().err
    assert main(["merge", str(parts)]) == 2
    assert main(eval_args(tiny_arith_model, parts, "--shard", "2/3")) == 0

    files = sorted(p.name for p in parts.iterdir())
    assert files == sorted(
        [f"manifest.shard-{i}-of-3.json" for i in (1, 2, 3)]
        + [f"samples.shard-{i}-of-3.jsonl" for i in (1, 2, 3)]
    )
    shard_records = [read_records(parts / Shard(i, 3).samples_name) for i in (1, 2, 3)]
    assert all(shard_records) and sum(map(len, shard_records)) == 4 * 4  # configs × problems
    expected_manifest, expected = load_run(whole)
    _, records = load_run(parts)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds_per_sample"} for r in rs]  # noqa: E731
    assert strip(records) == strip(expected)  # same samples, same order

    _, rows = summarise(parts)
    _, expected_rows = summarise(whole)
    assert without_timing(rows) == without_timing(expected_rows)
    # the same text but for the wall-time ratios of coordinated against i.i.d. configs
    untimed = lambda text: re.sub(r"[\d.]+ \([^()]* s / [^()]* s\)", "", text)  # noqa: E731
    compared = write_comparison(parts, make_plot=False)
    assert untimed(compared) == untimed(write_comparison(whole, make_plot=False))

    assert main(["merge", str(parts)]) == 0
    merged = json.loads((parts / "manifest.json").read_text())
    assert [c["id"] for c in merged["configs"]] == [c["id"] for c in expected_manifest["configs"]]
    assert [m["shard"] for m in merged["merged_from"]] == ["1/3", "2/3", "3/3"]
    assert strip(read_records(parts / "samples.jsonl")) == strip(expected)
    # the merged files alone (shards elsewhere) are the same run
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("manifest.json", "samples.jsonl"):
        (alone / name).write_bytes((parts / name).read_bytes())
    assert without_timing(summarise(alone)[1]) == without_timing(expected_rows)


def fake(prompts, spec, tau, n, max_new_tokens, seed, task, **options):
    return [[GeneratedSample(f"The answer is {seed % 7}", 4, -1.0, -0.25)] * n for _ in prompts]


def run(out, shard=None, n=2):
    task = ArithTask()
    grid = make_grid(["softmax"], [0.5, 1.0])
    run_grid(fake, task, task.load(limit=5), grid, RunSettings(out, n, 8, 0, 2, {}, False, shard))


def test_runs_that_would_mix_are_refused_before_anything_is_written(tmp_path):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    run(plain)
    before = (plain / "samples.jsonl").read_bytes()
    with pytest.raises(ValueError, match="holds an unsharded run"):
        run(plain, Shard(1, 2))
    assert (plain / "samples.jsonl").read_bytes() == before
    assert not (plain / Shard(1, 2).manifest_name).exists()

    run(sharded, Shard(1, 2))
    with pytest.raises(ValueError, match="holds a run sharded 2 ways: continue it with --shard"):
        run(sharded)
    with pytest.raises(ValueError, match=r"holds shards of a run split 2 ways; got --shard 1/3"):
        run(sharded, Shard(1, 3))
    with pytest.raises(
        ValueError, match=r"shard 1/2 of a different run; use another --out \(n: 2 on disk, 4 now\)"
    ):
        run(sharded, Shard(2, 2), n=4)
    assert not (sharded / Shard(2, 2).manifest_name).exists()
    # shards of two splits: refused by name, whether continuing, sharding or reading
    (sharded / Shard(1, 3).manifest_name).write_text("{}")
    for attempt in (
        lambda: run(sharded),
        lambda: run(sharded, Shard(1, 2)),
        lambda: load_run(sharded),
    ):
        with pytest.raises(ValueError, match=r"holds shards of runs split 2 and 3 ways: manifest"):
            attempt()
    (sharded / Shard(1, 3).manifest_name).unlink()
    with pytest.raises(ValueError, match=r"shard\(s\) 2/2 have not started"):
        merge_run(sharded)
    with pytest.raises(ValueError, match="unsharded run's; merging would replace it"):
        (plain / Shard(1, 2).manifest_name).write_text("{}")
        merge_run(plain)


def both_halves(tmp_path: Path) -> Path:
    """A run split in two, both shards run to the end."""
    out = tmp_path / "run"
    run(out, Shard(1, 2))
    run(out, Shard(2, 2))
    return out


def test_merge_refuses_an_incomplete_or_misfiled_run(tmp_path):
    out = both_halves(tmp_path)
    second = out / Shard(2, 2).samples_name
    lines = second.read_text().splitlines(keepends=True)
    second.write_text("".join(lines[:-1]))  # shard 2 stopped one record short
    with pytest.raises(
        ValueError,
        match=r"1 of 10 \(config, problem\) records are missing; "
        r"shard 2/2 lacks 1",
    ):
        merge_run(out)
    assert not (out / "samples.jsonl").exists()  # nothing half-merged
    run(out, Shard(2, 2))  # resumes: the missing record only
    samples, count = merge_run(out)
    assert count == 10 and len(read_records(samples)) == 10
    # shard 1's records under shard 2's name are caught
    (out / Shard(2, 2).samples_name).write_text((out / Shard(1, 2).samples_name).read_text())
    with pytest.raises(ValueError, match=r"belongs to shard 1/2"):
        merge_run(out)


def test_shards_of_different_runs_are_not_read_as_one(tmp_path):
    out = both_halves(tmp_path)
    path = out / Shard(2, 2).manifest_name
    path.write_text(json.dumps({**json.loads(path.read_text()), "seed": 5}))
    with pytest.raises(
        ValueError, match=r"shard 2/2 is not the same run as shard 1/2 \(seed: 0 in shard 1/2, 5 in"
    ):
        load_run(out)


def test_an_unsharded_run_split_continues_as_shards_and_reads_as_one(tmp_path, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run(whole)
    run(cut)
    samples = cut / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[:6]))  # stopped 4 records short
    with pytest.raises(ValueError, match=r"split it first .*decoptim split .* 3\)"):
        run(cut, Shard(1, 3))

    assert main(["split", str(cut), "3"]) == 0
    assert "continue each with decoptim eval ... --shard i/3" in capsys.readouterr().out
    parts = [read_records(cut / Shard(i, 3).samples_name) for i in (1, 2, 3)]
    assert sorted(json.dumps(r) for p in parts for r in p) == sorted(
        json.dumps(r) for r in read_records(samples)
    )  # every record kept, once
    assert (cut / "samples.jsonl").read_text() == "".join(lines[:6])  # the old file stays
    with pytest.raises(ValueError, match="holds shard files already"):
        split_run(cut, 3)
    with pytest.raises(ValueError, match="holds a run sharded 3 ways"):
        run(cut)
    for i in (1, 2, 3):
        run(cut, Shard(i, 3))  # each generates only its missing records
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds_per_sample"} for r in rs]  # noqa: E731
    assert strip(load_run(cut)[1]) == strip(load_run(whole)[1])
    merge_run(cut)
    assert strip(read_records(samples)) == strip(read_records(whole / "samples.jsonl"))


def test_split_refuses_what_it_cannot_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to split"):
        split_run(tmp_path, 2)
    with pytest.raises(ValueError, match="the shard count must be >= 1, got 0"):
        split_run(tmp_path, 0)
    out = both_halves(tmp_path)
    merge_run(out)
    with pytest.raises(ValueError, match="holds shard files already"):
        split_run(out, 2)
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("manifest.json", "samples.jsonl"):
        (alone / name).write_bytes((out / name).read_bytes())
    with pytest.raises(ValueError, match="is a merged run's"):
        split_run(alone, 2)
    stray = tmp_path / "stray"
    run(stray)
    with open(stray / "samples.jsonl", "a") as handle:
        handle.write(json.dumps({"config": "softmax@0.5", "problem": "nowhere"}) + "\n")
    with pytest.raises(ValueError, match=r"problem 'nowhere', which .* does not list"):
        split_run(stray, 2)


def test_status_counts_records_done_and_left_per_shard_and_config(tmp_path, capsys):
    # 2 configs × 5 problems in chunks of 2: 10 records.
    plain = tmp_path / "plain"
    run(plain)
    samples = plain / "samples.jsonl"
    samples.write_text("".join(samples.read_text().splitlines(keepends=True)[:6]))
    progress = run_progress(plain)
    assert (progress.done, progress.planned) == (6, 10) and progress.shards == {}
    assert list(progress.configs.values()) == [(5, 5), (1, 5)]

    sharded = tmp_path / "sharded"
    run(sharded, Shard(1, 3))  # shards 2 and 3 have not started: still read
    progress = run_progress(sharded)
    configs = list(progress.configs)
    planned = Counter(shard_of(c, chunk, 3) for c in configs for chunk in (0, 0, 1, 1, 2))
    assert progress.shards == {
        Shard(1, 3): (planned[1], planned[1]),
        Shard(2, 3): (0, planned[2]),
        Shard(3, 3): (0, planned[3]),
    }
    assert (progress.done, progress.planned) == (planned[1], 10)

    assert main(["status", str(sharded)]) == 0
    out = capsys.readouterr().out
    assert f"{planned[1]} of 10 (config, problem) records" in out
    assert f"{10 - planned[1]} left" in out
    assert f"shard 1/3: {planned[1]} of {planned[1]} (done)" in out
    assert f"shard 2/3: 0 of {planned[2]} ({planned[2]} left)" in out
    assert "2 of 2 configs unfinished" in out
    run(sharded, Shard(2, 3))
    run(sharded, Shard(3, 3))
    assert main(["status", str(sharded)]) == 0
    out = capsys.readouterr().out
    assert "10 of 10 (config, problem) records (100.0%), 0 left" in out
    assert "unfinished" not in out

    assert main(["status", str(tmp_path)]) == 2
    assert "has no manifest.json (nor shard files)" in capsys.readouterr().err


def test_status_into_a_closed_pipe_stops_quietly(tmp_path, monkeypatch, capsys):
    # `decoptim status DIR | head`: the reader leaves before the output is written.
    run(tmp_path / "plain")
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        assert main(["status", str(tmp_path / "plain")]) == 1
        monkeypatch.undo()
    assert "Traceback" not in capsys.readouterr().err
