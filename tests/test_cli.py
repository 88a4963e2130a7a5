import subprocess
import sys

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


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--n", "4", "--coordinated", "--group-size", "3"], "n=4 samples per problem"),
        (["--n", "4", "--group-size", "2"], "--group-size 2 applies to coordinated configs"),
    ],
)
def test_eval_bad_coordination_fails_before_loading_a_model(tmp_path, capsys, extra, message):
    command = ["eval", "--model", str(tmp_path / "no-model"), "--task", "arith"]
    command += ["--decoders", "softmax", "--out", str(tmp_path / "run"), *extra]
    try:
        code = main(command)
    except SystemExit as exit_:
        code, err = 1, str(exit_)
    else:
        err = capsys.readouterr().err
    assert code != 0 and message in err
    assert not (tmp_path / "run").exists()


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
