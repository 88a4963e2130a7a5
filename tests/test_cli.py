import json
import subprocess
import sys
from typing import ClassVar

import pytest

from decoptim.cli import DEMO_TOKENS, demo_decoders, demo_table, main


def test_demo_table_has_one_row_per_decoder():
    out = demo_table()
    for name in demo_decoders():
        assert name in out
    assert all(token in out for token in DEMO_TOKENS)
    assert "-0.000" not in out


def test_decode_one_step_view(tiny_arith_model, capsys):
    assert (
        main(
            [
                "decode",
                "--model",
                str(tiny_arith_model),
                "--prompt",
                "Q: Mia has 3 pens.",
                "--decoders",
                "softmax",
                "topk:k=2",
                "bok:k=4,beta=1.0,lam=0.5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "softmax" in out and "topk:k=2" in out and "|supp|" in out


def test_report_command_and_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a decoptim eval run" in capsys.readouterr().err


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "decoptim", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for command in ("demo", "decode", "eval", "report", "train-arith"):
        assert command in result.stdout


def test_demo_end_to_end_small(tmp_path, capsys):
    """What `make demo` runs, on fewer problems (trains the arith model once per machine)."""
    assert main(["demo", "--problems", "6", "--n", "2", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "greedy accuracy on 6 problems" in out and "' Paris'" in out
    assert "bok-tau(k=8,beta=0.05,lam=0.5)" in out and "| softmax | coord. K=1 |" in out
    assert (tmp_path / "demo" / "grid" / "accuracy_vs_temperature.png").exists()


def test_eval_coordinated_report_and_compare(tiny_arith_model, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--model", str(tiny_arith_model), "--task", "arith", "--decoders", "softmax"]
    common += ["--temperatures", "1.0", "--limit", "2", "--max-new-tokens", "4", "--no-progress"]
    assert (
        main(
            [
                "eval",
                *common,
                "--n",
                "4",
                "--coordinated",
                "--group-size",
                "2",
                "--out",
                str(out),
                "--no-plots",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "2 configs × 2 problems" in text
    assert "| softmax | coord. K=2 | 1 | 2 |" in text and "ceiling min(1, K·a)" in text
    assert main(["compare", str(out), "--no-plots"]) == 0
    assert "| softmax · coord. K=2 | 1 |" in capsys.readouterr().out


def test_eval_by_rejection_runs_its_own_configs_and_pairs_them(tiny_arith_model, tmp_path, capsys):
    out = tmp_path / "run"
    command = ["eval", "--model", str(tiny_arith_model), "--task", "arith", "--n", "4"]
    command += ["--decoders", "topp:p=0.9", "--temperatures", "1.3", "--limit", "2"]
    command += ["--max-new-tokens", "4", "--no-progress", "--no-plots", "--group-size", "2"]
    assert main([*command, "--coordinated", "--by-rejection", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 configs × 2 problems" in text
    assert "| topp(p=0.9) | coord. K=2 by rejection | 1.3 | 2 |" in text
    assert main(["compare", str(out), "--no-plots"]) == 0
    assert "| topp(p=0.9) · coord. K=2 by rejection | 1.3 |" in capsys.readouterr().out
    # another seed of the same grid, pooled with the first by compare
    other = tmp_path / "other"
    again = [*command, "--coordinated", "--by-rejection", "--seed", "1"]
    assert main([*again, "--out", str(other)]) == 0
    capsys.readouterr()
    pooled = tmp_path / "pooled"
    assert main(["compare", str(out), str(other), "--out", str(pooled), "--no-plots"]) == 0
    assert "Pooled over 2 runs" in capsys.readouterr().out
    assert (pooled / "compare.md").exists()
    assert main(["compare", str(out), str(other), "--no-plots"]) == 2
    assert "needs an output folder (--out)" in capsys.readouterr().err
    # a decoder that cannot draw by rejection is named before any model is loaded
    refused = ["eval", "--model", str(tmp_path / "no-model"), "--task", "arith"]
    refused += ["--decoders", "minp:p=0.1", "--by-rejection", "--n", "2"]
    assert main([*refused, "--out", str(tmp_path / "refused")]) == 2
    assert "by_rejection=True needs" in capsys.readouterr().err
    # and so is a backend that cannot
    served = ["eval", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]
    served += ["--model", "m", "--task", "arith", "--decoders", "topp:p=0.9", "--by-rejection"]
    assert main([*served, "--n", "2", "--out", str(tmp_path / "served")]) == 2
    assert "--backend transformers only" in capsys.readouterr().err


def test_eval_vllm_coordinated_is_refused_before_the_engine_starts(tmp_path, capsys, monkeypatch):
    pytest.importorskip("vllm")
    from decoptim.integrations import vllm as integration

    monkeypatch.delattr(integration, "coordinated_sampling_params", raising=False)
    command = ["eval", "--backend", "vllm", "--model", str(tmp_path / "no-model")]
    command += ["--task", "arith", "--decoders", "softmax", "--coordinated", "--n", "2"]
    assert main([*command, "--out", str(tmp_path / "run")]) == 2
    assert "coordinated sampling through --backend vllm needs" in capsys.readouterr().err


def test_eval_without_a_sandbox_refuses_with_a_message_not_a_traceback(monkeypatch, capsys):
    from decoptim.eval import sandbox, tasks

    def missing(unsafe_no_sandbox=None):
        if unsafe_no_sandbox:
            return None
        raise sandbox.SandboxUnavailableError("bubblewrap is missing: apt-get install bubblewrap")

    monkeypatch.setattr(tasks, "check_sandbox", missing)
    code = main(["eval", "--model", "smollm2", "--task", "humaneval", "--data", "x.jsonl",
                 "--decoders", "softmax", "--temperatures", "1", "--out", "unused"])  # fmt: skip
    assert code == 2
    assert "apt-get install bubblewrap" in capsys.readouterr().err
    code = main(["eval", "--model", "arith", "--task", "arith", "--unsafe-no-sandbox",
                 "--decoders", "softmax", "--temperatures", "1", "--out", "unused"])  # fmt: skip
    assert code == 2
    assert "--unsafe-no-sandbox only applies to --task humaneval" in capsys.readouterr().err


def test_the_custom_dataset_example_of_the_docs_runs_as_written(tmp_path):
    """docs/evaluation.md's `--task jsonl` block, on a dataset the project has never seen."""
    from tests.eval.doc_examples import evaluation_block, run_bash

    result = run_bash(evaluation_block("custom-dataset"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "runs" / "capitals"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "jsonl" and manifest["task_options"]["grader"] == "exact"
    assert manifest["task_options"]["answer_field"] == "capital"
    assert "What is the capital of {question}?" in manifest["prompt_template"]
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted({r["gold"] for r in records}) == ["Lima", "Paris", "Tokyo"]
    assert len(records) == 2 * 3 and all(len(r["samples"]) == 4 for r in records)
    assert "| topk(k=3) | i.i.d. | 0.7 | 3 |" in result.stdout


def test_eval_jsonl_end_to_end_with_numbers(tiny_arith_model, tmp_path, capsys):
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps({"a": a, "b": b, "total": a + b}) + "\n"
            for a, b in ((2, 3), (10, 7), (4, 4))
        )
    )
    out = tmp_path / "run"
    command = [
        "eval",
        "--model",
        str(tiny_arith_model),
        "--task",
        "jsonl",
        "--data",
        str(data),
        "--question-field",
        "a",
        "--answer-field",
        "total",
        "--grader",
        "number",
        "--prompt-template",
        "Q: Mia has {question} pens and {b} more. How many?\nA:",
        "--instruction",
        "",
        "--no-chat",
        "--decoders",
        "softmax",
        "--n",
        "2",
        "--max-new-tokens",
        "6",
        "--out",
        str(out),
        "--no-progress",
        "--no-plots",
    ]
    assert main(command) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task_options"] == {
        "question_field": "a",
        "answer_field": "total",
        "id_field": None,
        "grader": "number",
        "prompt_template": "Q: Mia has {question} pens and {b} more. How many?\nA:",
        "instruction": None,
        "chat": False,
    }
    assert manifest["problem_ids"] == ["line-1", "line-2", "line-3"]
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in records] == ["5", "17", "8"]
    # resuming with another grader is another run
    changed = [*command]
    changed[changed.index("number")] = "math"
    assert main(changed) == 2
    assert "holds a different run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--shard", "3/2"],
            "--shard must be i/N with 1 <= i <= N (shards are numbered from 1), got --shard '3/2'",
        ),
        (["--shard", "0/0"], "got --shard '0/0'"),
        (["--question-field", "q"], "--question-field applies to --task jsonl"),
        (["--base-url", "http://localhost:8000/v1"], "--base-url applies to --backend openai"),
        (["--tensor-parallel-size", "2"], "--tensor-parallel-size applies to --backend vllm"),
        (["--engine-arg", "enforce_eager=true"], "--engine-arg applies to --backend vllm"),
        (["--backend", "openai"], "--backend openai needs --base-url"),
        (
            [
                "--backend",
                "vllm",
                "--tensor-parallel-size",
                "2",
                "--engine-arg",
                "tensor-parallel-size=4",
            ],
            "--engine-arg tensor_parallel_size=4 repeats --tensor-parallel-size",
        ),
        (["--backend", "vllm", "--kv-cache-memory-bytes", "2.5G"], "must be a byte count"),
        (["--backend", "vllm", "--engine-arg", "no equals"], "must be KEY=VALUE"),
        (["--n", "4", "--coordinated", "--group-size", "3"], "n=4 samples per problem"),
        (["--n", "4", "--group-size", "2"], "--group-size 2 applies to coordinated configs"),
    ],
)
def test_eval_bad_flags_fail_before_anything_loads(tmp_path, capsys, extra, message):
    command = ["eval", "--model", str(tmp_path / "no-model"), "--task", "arith"]
    command += ["--decoders", "softmax", "--out", str(tmp_path / "run"), *extra]
    try:
        code = main(command)
    except SystemExit as exit_:
        code, err = exit_.code, str(exit_) + capsys.readouterr().err
    else:
        err = capsys.readouterr().err
    assert code not in (0, None) and message in err
    assert not (tmp_path / "run").exists()


def test_eval_against_an_unreachable_server_names_it_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("vllm")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    command = [
        "eval",
        "--backend",
        "openai",
        "--base-url",
        url,
        "--model",
        "smollm2",
        "--task",
        "arith",
        "--decoders",
        "softmax",
        "--retries",
        "1",
        "--retry-backoff",
        "0.05",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"decoptim eval: error: decoptim's probe failed: {url}/completions: no answer" in err
    assert "retry 1/1" in err and not (tmp_path / "run").exists()


def test_byte_counts_and_engine_args_parse_as_vllm_reads_them():
    from decoptim.cli import parse_bytes, parse_engine_arg

    assert parse_bytes("2G") == 2 * 2**30 and parse_bytes("1.5g") == 1_500_000_000
    assert parse_bytes("512M") == 2**29 and parse_bytes("1000") == 1000
    assert parse_engine_arg("enforce-eager=true") == ("enforce_eager", True)
    assert parse_engine_arg("dtype=bfloat16") == ("dtype", "bfloat16")
    assert parse_engine_arg("max_num_seqs=64") == ("max_num_seqs", 64)
    assert parse_engine_arg('hf_overrides={"a": 1}') == ("hf_overrides", {"a": 1})


class FakeEngine:
    """Stands in for vllm.LLM: records its keyword arguments, answers every request."""

    made: ClassVar[list[dict]] = []

    def __init__(self, **kwargs):
        from types import SimpleNamespace

        FakeEngine.made.append(kwargs)
        config = SimpleNamespace(
            hf_config=SimpleNamespace(architectures=["Fake"]),
            get_vocab_size=lambda: 7,
            dtype="float32",
        )
        self.llm_engine = SimpleNamespace(model_config=config)

    def get_tokenizer(self):
        from types import SimpleNamespace

        return SimpleNamespace(chat_template=None)

    def generate(self, texts, params, use_tqdm=False):
        from types import SimpleNamespace

        completion = SimpleNamespace(text="The answer is 3", token_ids=[1], cumulative_logprob=-1)
        return [SimpleNamespace(outputs=[completion] * p.n) for p in params]


def test_engine_arguments_reach_vllm_and_the_manifest(tmp_path, monkeypatch, capsys):
    vllm = pytest.importorskip("vllm")
    monkeypatch.setattr(vllm, "LLM", FakeEngine)
    FakeEngine.made.clear()
    out = tmp_path / "run"
    command = [
        "eval",
        "--backend",
        "vllm",
        "--model",
        "some/model",
        "--task",
        "arith",
        "--decoders",
        "softmax",
        "--n",
        "2",
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--tensor-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.5",
        "--kv-cache-memory-bytes",
        "2G",
        "--engine-arg",
        "enforce-eager=true",
        "--engine-arg",
        "max_num_seqs=16",
        "--out",
        str(out),
        "--no-progress",
        "--no-plots",
    ]
    assert main(command) == 0
    expected = {
        "max_model_len": 4096,
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.5,
        "kv_cache_memory_bytes": 2 * 2**30,
        "enforce_eager": True,
        "max_num_seqs": 16,
        "generation_config": "vllm",
    }
    made = FakeEngine.made[0]
    assert made["model"] == "some/model" and {k: made[k] for k in expected} == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine_args"] == expected
    # a key vLLM does not know fails before the engine starts
    FakeEngine.made.clear()
    assert (
        main(
            [
                *command[:-4],
                "--engine-arg",
                "tensor_paralel_size=2",
                "--out",
                str(tmp_path / "typo"),
            ]
        )
        == 2
    )
    assert "no engine argument(s) tensor_paralel_size" in capsys.readouterr().err
    assert not FakeEngine.made and not (tmp_path / "typo").exists()


def test_data_parallel_size_reaches_vllm_which_refuses_it_offline(tmp_path, capsys):
    """Not faked: vLLM 0.32's own LLM refuses data_parallel_size > 1 in one process, and the
    error it raises is what the user sees."""
    pytest.importorskip("vllm")
    command = [
        "eval",
        "--backend",
        "vllm",
        "--model",
        str(tmp_path / "no-model"),
        "--task",
        "arith",
        "--decoders",
        "softmax",
        "--data-parallel-size",
        "2",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(command) == 2
    assert "data_parallel_size=2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_eval_choices_come_from_the_registries(monkeypatch, tmp_path):
    from decoptim.cli import build_parser
    from decoptim.eval.grid import PRESETS
    from decoptim.eval.tasks import TASKS, ArithTask

    actions = {
        a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["eval"]._actions
    }
    assert list(actions["task"].choices) == list(TASKS)
    assert list(actions["preset"].choices) == list(PRESETS)

    class Shouting(ArithTask):
        name = "shouting"

    monkeypatch.setitem(TASKS, "shouting", Shouting)
    command = ["eval", "--model", str(tmp_path / "no-model"), "--task", "shouting"]
    command += ["--decoders", "softmax", "--grader", "exact", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match="--grader applies to --task jsonl"):
        main(command)  # a new task class is a --task choice, without jsonl's flags
