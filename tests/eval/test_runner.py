"""Resumable runs: kill -9 mid-run, resume, and get exactly the uninterrupted result."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decoptim.eval.grid import make_grid
from decoptim.eval.runner import (
    GeneratedSample,
    RunSettings,
    chunk_seed,
    code_sha256,
    read_records,
    run_grid,
    write_atomically,
)
from decoptim.eval.tasks import ArithTask


def eval_command(model, out, limit=12):
    return [
        sys.executable,
        "-m",
        "decoptim",
        "eval",
        "--model",
        str(model),
        "--task",
        "arith",
        "--decoders",
        "softmax",
        "bok:k=4,beta=0.5,lam=0.5",
        "--temperatures",
        "1.0",
        "--coordinated",
        "--group-size",
        "2",
        "--n",
        "4",
        "--max-new-tokens",
        "24",
        "--limit",
        str(limit),
        "--batch-size",
        "2",
        "--seed",
        "5",
        "--out",
        str(out),
        "--no-progress",
        "--no-plots",
    ]


CONFIGS = [
    "softmax@1",
    "softmax@1+coord(K=2)",
    "bok(k=4,beta=0.5,lam=0.5)@1",
    "bok(k=4,beta=0.5,lam=0.5)@1+coord(K=2)",
]


def final_samples(out):
    records = read_records(out / "samples.jsonl")
    keys = [(r["config"], r["problem"]) for r in records]
    assert len(keys) == len(set(keys)), "duplicated samples"
    return {(r["config"], r["problem"]): [s["text"] for s in r["samples"]] for r in records}


def test_resume_after_kill_9_equals_an_uninterrupted_run(tiny_arith_model, tmp_path):
    """i.i.d. and coordinated configs; the kill lands in a coordinated one, whose
    incomplete chunk must regenerate to the same samples."""
    reference = tmp_path / "reference"
    subprocess.run(
        eval_command(tiny_arith_model, reference), check=True, capture_output=True, timeout=300
    )
    expected = final_samples(reference)
    assert len(expected) == 4 * 12

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        eval_command(tiny_arith_model, interrupted),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples = interrupted / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if samples.exists() and samples.read_text().count("\n") >= 14:  # into softmax+coord
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    lines = samples.read_text().splitlines(keepends=True)
    assert 14 <= len(lines) < len(expected), "the run was not interrupted part-way"
    # Drop the last record, which leaves its chunk of two problems incomplete, and add a
    # torn line as a kill during a write leaves: resumption must cut it off and regenerate
    # the chunk with the same seed, writing only the missing record.
    assert json.loads(lines[-1])["config"] == "softmax@1+coord(K=2)"
    samples.write_text(
        "".join(lines[:-1]) + '{"config": "softmax@1+coord(K=2)", "problem": "arith-1-9", "sam'
    )
    subprocess.run(
        eval_command(tiny_arith_model, interrupted), check=True, capture_output=True, timeout=300
    )
    assert final_samples(interrupted) == expected
    manifest = json.loads((interrupted / "manifest.json").read_text())
    assert manifest["resumed"] == 1 and manifest["n"] == 4
    assert [c["id"] for c in manifest["configs"]] == CONFIGS
    assert [(c["sampling"], c["group_size"]) for c in manifest["configs"]] == [
        ("iid", None),
        ("coordinated", 2),
    ] * 2
    assert {"decoptim", "torch", "transformers"} <= set(manifest["versions"])
    assert manifest["code_sha256"] == code_sha256()
    assert "BestOfK(k=4, beta=0.5, lam=0.5" in manifest["configs"][3]["repr"]
    # coordinated groups are not the i.i.d. samples under another name
    assert expected[(CONFIGS[0], "arith-1-0")] != expected[(CONFIGS[1], "arith-1-0")]


def test_a_different_run_in_the_same_directory_is_refused(tiny_arith_model, tmp_path):
    out = tmp_path / "run"
    subprocess.run(
        eval_command(tiny_arith_model, out, limit=2), check=True, capture_output=True, timeout=300
    )
    changed = eval_command(tiny_arith_model, out, limit=2)
    changed[changed.index("--n") + 1] = "6"
    result = subprocess.run(changed, capture_output=True, text=True, timeout=300)
    assert (
        result.returncode == 2
        and "holds a different run" in result.stderr
        and "n: 4" in result.stderr
    )


def test_a_malformed_record_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"config": "a", "problem": "1"}\nnot json\n{"config": "a", "problem": "2"}\n')
    with pytest.raises(ValueError, match=r"samples.jsonl:2: malformed record"):
        read_records(path)


def test_coordinated_configs_reach_the_backend_with_their_group_size(tmp_path):
    calls = []

    def fake(prompts, spec, tau, n, max_new_tokens, seed, task, **options):
        calls.append((len(prompts), seed, options))
        return [[GeneratedSample("The answer is 3", 4, -1.0, -0.25)] * n for _ in prompts]

    task = ArithTask()
    problems = task.load(limit=3)
    grid = make_grid(["softmax"], [1.0]).with_coordinated(2)
    run_grid(fake, task, problems, grid, RunSettings(tmp_path, 4, 8, 9, 2, progress=False))
    coordinated = {"coordinated": True, "group_size": 2}
    assert calls == [
        (2, chunk_seed(9, "softmax@1", 0), {}),
        (1, chunk_seed(9, "softmax@1", 1), {}),
        (2, chunk_seed(9, "softmax@1+coord(K=2)", 0), coordinated),
        (1, chunk_seed(9, "softmax@1+coord(K=2)", 1), coordinated),
    ]
    assert len({seed for _, seed, _ in calls}) == 4
    calls.clear()
    rejection = make_grid(["topp:p=0.9"], [1.0], ("coordinated-rejection",), group_size=2)
    settings = RunSettings(tmp_path / "rejection", 4, 8, 9, 2, progress=False)
    run_grid(fake, task, problems[:1], rejection, settings)
    config = "topp(p=0.9)@1+coord(K=2,rejection)"
    assert calls == [(1, chunk_seed(9, config, 0), {**coordinated, "by_rejection": True})]
    with pytest.raises(ValueError, match="n=3 samples per problem must be a multiple of"):
        settings = RunSettings(tmp_path / "odd", 3, 8, 9, 2, progress=False)
        run_grid(fake, task, problems, grid, settings)
    assert not (tmp_path / "odd").exists()  # refused before anything is written


def test_a_backend_returning_too_few_samples_is_an_error(tmp_path):
    def short(prompts, spec, tau, n, max_new_tokens, seed, task, **options):
        return [[GeneratedSample("The answer is 3", 4, -1.0, -0.25)] * (n - 1) for _ in prompts]

    task = ArithTask()
    with pytest.raises(ValueError, match=r"returned 1 samples for problem arith-1-0 .* n=2"):
        run_grid(
            short,
            task,
            task.load(limit=1),
            make_grid(["softmax"], [1.0]),
            RunSettings(tmp_path, 2, 8, 0, 1, progress=False),
        )


@pytest.mark.parametrize("sizes", [(0, 8, 2), (4, 0, 2), (4, 8, 0)])
def test_run_settings_refuse_sizes_below_one(tmp_path, sizes):
    n, max_new_tokens, batch_size = sizes
    with pytest.raises(ValueError, match="n, max_new_tokens and batch_size must be >= 1"):
        RunSettings(tmp_path, n, max_new_tokens, 0, batch_size)
    assert not any(tmp_path.iterdir())


def test_run_settings_are_frozen_and_take_a_string_path(tmp_path):
    settings = RunSettings(str(tmp_path), 4, 8, 0, 2)
    assert settings.out == tmp_path and settings.manifest == {} and settings.shard is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n = 8  # type: ignore[misc]


def test_atomic_writes_replace_whole_or_leave_the_file_as_it_was(tmp_path):
    path = tmp_path / "manifest.json"
    write_atomically(path, "first")
    write_atomically(path, "second")
    assert path.read_text() == "second"
    with pytest.raises(UnicodeEncodeError):
        write_atomically(path, "half \ud800 written")  # fails in the middle of the write
    assert path.read_text() == "second" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_code_sha256_names_the_source_files_and_their_bytes(tmp_path):
    import shutil

    from decoptim.eval import runner

    package = tmp_path / "decoptim"
    shutil.copytree(Path(runner.__file__).resolve().parents[1], package)
    assert code_sha256(package) == code_sha256()
    for cache in package.rglob("__pycache__"):  # only the .py files count
        shutil.rmtree(cache)
    assert code_sha256(package) == code_sha256()
    edited = package / "core" / "supports.py"
    edited.write_text(edited.read_text() + "\n")
    after_edit = code_sha256(package)
    assert after_edit != code_sha256()
    edited.rename(package / "core" / "supports_renamed.py")
    assert code_sha256(package) not in (after_edit, code_sha256())
