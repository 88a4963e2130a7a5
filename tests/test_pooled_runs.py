"""bench/pooled_runs.py on hand-made runs: per-problem differences averaged over runs, then
bootstrapped over problems; both coordinated samplings against the i.i.d. twin and each other."""

import importlib.util
import math
from pathlib import Path

from .eval.runs import MIXED_ANSWERS, MIXED_CONFIGS, write_run

ROOT = Path(__file__).resolve().parents[1]


def pooled_runs():
    spec = importlib.util.spec_from_file_location("pooled_runs", ROOT / "bench" / "pooled_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(out: Path, rejection_answers: list[list[str]]) -> None:
    rejection = {**MIXED_CONFIGS[1], "id": "softmax@1+coord(K=2,rejection)"}
    rejection["sampling"] = "coordinated-rejection"
    answers = {**MIXED_ANSWERS, rejection["id"]: rejection_answers}
    write_run(out, [*MIXED_CONFIGS, rejection], answers, ["7", "7"])


def test_differences_are_averaged_over_runs_per_problem(tmp_path):
    # accuracy per problem: i.i.d. 1/4 and 1; coordinated 1/4 and 3/4; by rejection
    # (1/2, 1/2) in the first run and (1, 1) in the second.
    write(tmp_path / "a", [["7", "7", "2", "2"], ["7", "3", "7", "3"]])
    write(tmp_path / "b", [["7", "7", "7", "7"], ["7", "7", "7", "7"]])
    module = pooled_runs()
    table = module.pooled([tmp_path / "a", tmp_path / "b"], ["accuracy"])
    row = next(line for line in table.splitlines() if "| accuracy |" in line)
    coordinated, rejection, between = [cell.split(" [")[0] for cell in row.split(" | ")[3:]]
    assert math.isclose(float(coordinated), 100 * (0.0 - 0.25) / 2)
    # by rejection − i.i.d.: problem 0 (0.25 + 0.75) / 2, problem 1 (−0.5 + 0) / 2
    assert math.isclose(float(rejection), 100 * (0.5 - 0.25) / 2)
    # coordinated − by rejection: problem 0 (−0.25 − 0.75) / 2, problem 1 (0.25 − 0.25) / 2
    assert math.isclose(float(between.rstrip(" |")), 100 * (-0.5 + 0.0) / 2)
    assert table.startswith("2 runs;")
