import subprocess
import sys

from decoptim.cli import DEMO_TOKENS, demo_decoders, main


def test_demo_prints_one_row_per_decoder(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for name in demo_decoders():
        assert name in out
    assert all(token in out for token in DEMO_TOKENS)
    assert "-0.000" not in out


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "decoptim", "demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "FW gap" in result.stdout
