import subprocess
import sys

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
    assert "bok-tau(k=8,beta=0.05,lam=0.5)" in out
    assert (tmp_path / "demo" / "grid" / "accuracy_vs_temperature.png").exists()
