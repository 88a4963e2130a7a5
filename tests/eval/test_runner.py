"""Resumable runs: kill -9 mid-run, resume, and get exactly the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from decoptim.eval.runner import read_records


def eval_command(model, out, limit=24):
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
        "topp:p=0.9",
        "bok:k=4,beta=0.5,lam=0.5",
        "--temperatures",
        "1.0",
        "--n",
        "3",
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


def final_samples(out):
    records = read_records(out / "samples.jsonl")
    keys = [(r["config"], r["problem"]) for r in records]
    assert len(keys) == len(set(keys)), "duplicated samples"
    return {(r["config"], r["problem"]): [s["text"] for s in r["samples"]] for r in records}


def test_resume_after_kill_9_equals_an_uninterrupted_run(tiny_arith_model, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(
        eval_command(tiny_arith_model, reference), check=True, capture_output=True, timeout=300
    )
    expected = final_samples(reference)
    assert len(expected) == 3 * 24

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        eval_command(tiny_arith_model, interrupted),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples = interrupted / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if samples.exists() and samples.read_text().count("\n") >= 10:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = samples.read_text().count("\n")
    assert 0 < written < len(expected), "the run was not interrupted part-way"
    # A kill during a write leaves a torn line: resumption must cut it off, not choke on it.
    with open(samples, "a") as handle:
        handle.write('{"config": "softmax@1", "problem": "arith-1-9", "sam')
    subprocess.run(
        eval_command(tiny_arith_model, interrupted), check=True, capture_output=True, timeout=300
    )
    assert final_samples(interrupted) == expected
    manifest = json.loads((interrupted / "manifest.json").read_text())
    assert manifest["resumed"] == 1 and manifest["n"] == 3 and len(manifest["configs"]) == 3
    assert {"decoptim", "torch", "transformers"} <= set(manifest["versions"])
    assert "BestOfK(k=4, beta=0.5, lam=0.5" in manifest["configs"][2]["repr"]


def test_a_different_run_in_the_same_directory_is_refused(tiny_arith_model, tmp_path):
    out = tmp_path / "run"
    subprocess.run(
        eval_command(tiny_arith_model, out, limit=2), check=True, capture_output=True, timeout=300
    )
    changed = eval_command(tiny_arith_model, out, limit=2)
    changed[changed.index("--n") + 1] = "5"
    result = subprocess.run(changed, capture_output=True, text=True, timeout=300)
    assert (
        result.returncode == 2
        and "holds a different run" in result.stderr
        and "n: 3" in result.stderr
    )


def test_a_malformed_record_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"config": "a", "problem": "1"}\nnot json\n{"config": "a", "problem": "2"}\n')
    with pytest.raises(ValueError, match=r"samples.jsonl:2: malformed record"):
        read_records(path)
