"""docs/decoders.md's "Write your own decoder": the example plugin from Python, the CLI and a
TOML grid, run as written; the samples come from the user's decoder."""

import json
import shutil
from pathlib import Path

import pytest

import decoptim as d
from decoptim.cli import main
from decoptim.eval.grid import load_grid_file
from tests.core.test_specs import EXAMPLE, fresh_registry  # noqa: F401  (a fixture, used by name)
from tests.eval.doc_examples import marked_block, run_bash

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "decoders.md"


def decoders_block(marker: str) -> str:
    """The fenced block after `<!-- test: {marker} -->` in docs/decoders.md."""
    return marked_block(DOC, marker)


@pytest.mark.usefixtures("fresh_registry")
def test_the_example_is_short_and_the_python_block_runs(monkeypatch):
    code = [line for line in EXAMPLE.read_text().splitlines() if line.strip()]
    assert len(code) <= 15
    monkeypatch.chdir(ROOT)
    exec(decoders_block("my-decoder-python"), {})
    assert "mine" in d.core.specs.NAMES


def test_the_cli_block_runs_as_written_and_records_the_plugin(tmp_path):
    (tmp_path / "docs" / "examples").mkdir(parents=True)
    shutil.copy(EXAMPLE, tmp_path / "docs" / "examples")
    result = run_bash(decoders_block("my-decoder-cli"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs" / "mine" / "manifest.json").read_text())
    [plugin] = manifest["plugins"]
    assert plugin["plugin"] == "docs/examples/my_decoder.py"
    assert plugin["sha256"] == d.core.specs.hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    [entry] = [c for c in manifest["configs"] if c["decoder"]["name"] == "mine"]
    assert entry["id"] == "mine(k=5)@0.7" and entry["decoder"] == {"name": "mine", "k": 5}
    assert "TopKSupport(k=5) & Band(width=3.0)" in entry["repr"]
    assert "mine(k=5)" in result.stdout


@pytest.mark.usefixtures("fresh_registry")
def test_the_cli_samples_come_from_the_users_decoder(
    tiny_arith_model,
    tmp_path,
    capsys,
):
    """`mine:k=1` keeps one token per step: every sample is greedy's, where softmax's vary."""
    out = tmp_path / "run"
    command = ["eval", "--plugin", str(EXAMPLE), "--model", str(tiny_arith_model)]
    command += ["--task", "arith", "--decoders", "mine:k=1,width=50", "greedy", "softmax"]
    command += ["--temperatures", "1.0", "--limit", "3", "--n", "4", "--max-new-tokens", "8"]
    command += ["--no-progress", "--no-plots", "--out", str(out)]
    assert main(command) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]

    def texts(config: str) -> dict:
        chosen = [r for r in records if r["config"] == config]
        return {r["problem"]: [s["text"] for s in r["samples"]] for r in chosen}

    greedy, mine, softmax = texts("greedy"), texts("mine(k=1,width=50)@1"), texts("softmax@1")
    assert len(mine) == 3
    for problem, samples in mine.items():
        assert samples == [greedy[problem][0]] * 4
    assert any(len(set(samples)) > 1 for samples in softmax.values())


@pytest.mark.usefixtures("fresh_registry")
def test_the_cli_names_a_missing_plugin_and_an_unknown_decoder(
    tmp_path,
    capsys,
):
    command = ["eval", "--model", str(tmp_path / "no-model"), "--task", "arith"]
    command += ["--out", str(tmp_path / "run")]
    assert main([*command, "--plugin", str(tmp_path / "gone.py"), "--decoders", "softmax"]) == 2
    assert "plugin '" in (err := capsys.readouterr().err) and "gone.py': no such file" in err
    assert main([*command, "--decoders", "mine:k=5"]) == 2
    assert "unknown decoder 'mine'" in capsys.readouterr().err


@pytest.mark.usefixtures("fresh_registry")
def test_the_grid_block_reads_with_the_plugin(tmp_path, monkeypatch):
    grid_file = tmp_path / "mine.toml"
    grid_file.write_text(decoders_block("my-decoder-grid"))
    with pytest.raises(ValueError, match="unknown decoder 'mine'"):
        load_grid_file(str(grid_file))
    monkeypatch.setenv("DECOPTIM_PLUGINS", str(EXAMPLE))
    d.core.specs.load_plugins()
    grid = load_grid_file(str(grid_file))
    ids = [c.id for c in grid.configs(4)]
    assert ids == ["mine(k=5,width=2.5)@0.7", "mine(k=5,width=2.5)@1", "softmax@0.7", "softmax@1"]
    assert "Band(width=2.5)" in grid.configs(4)[0].manifest_entry()["repr"]
