import math

import pytest

from decoptim.eval.report import summarise, write_report

from .runs import SOFTMAX, write_mixed_run, write_run


def test_report_numbers_on_a_fixture(tmp_path):
    out = tmp_path / "run"
    # a run from before coordination: no sampling key in the manifest (i.i.d.)
    configs = [{"id": "softmax@1", "decoder": SOFTMAX, "temperature": 1.0, "repr": ""}]
    answers = [["5", "5", "6", None], ["7", "8", "8", "9"], ["1", "1", "1", "1"]]
    write_run(out, configs, {"softmax@1": answers}, ["5", "7", "2"])
    _, rows = summarise(out)
    row = rows[0]
    assert math.isclose(row["accuracy"].mean, (2 / 4 + 1 / 4 + 0) / 3)
    assert math.isclose(row["pass@4"].mean, 2 / 3)
    # maj@4: problem 0 votes "5" (right), problem 1 votes "8" (wrong), problem 2 "1" (wrong).
    assert math.isclose(row["maj@4"].mean, 1 / 3)
    assert math.isclose(row["distinct"], (2 + 3 + 1) / 3)
    assert row["K_values"] == [4] and math.isclose(row["maj-limit"].mean, 1 / 3)
    text = write_report(out)
    assert "| softmax | i.i.d. | 1 | 3 |" in text
    for name in ("report.md", "report.json", "accuracy_vs_temperature.png", "maj_vs_k.png"):
        assert (out / name).stat().st_size > 0


def test_coordinated_rows_are_scored_per_group_and_iid_rows_at_k(tmp_path):
    out = tmp_path / "run"
    write_mixed_run(out)
    _, (iid, coordinated) = summarise(out)
    # coordinated: groups (7,1) (2,2) | (7,7) (7,3); 2-2 ties go to the group's first answer
    assert coordinated["sampling"] == "coordinated" and coordinated["K_values"] == [2]
    assert coordinated["per_problem"]["pass@2"] == [0.5, 1.0]
    assert coordinated["per_problem"]["maj@2"] == [0.5, 1.0]
    assert coordinated["per_problem"]["distinct@2"] == [1.5, 1.5]
    assert coordinated["per_problem"]["pass-ceiling@2"] == [0.5, 1.0]  # min(1, 2·a)
    assert coordinated["per_problem"]["maj-limit"] == [0.0, 1.0]  # "2" is the mode of p0
    assert "pass@4" not in coordinated and "maj@4" not in coordinated  # no i.i.d. estimator
    assert math.isclose(coordinated["pass@1"].mean, (1 / 4 + 3 / 4) / 2)  # k = 1 stays valid
    # i.i.d.: estimators over subsets at every k, including the run's K = 2
    assert iid["K_values"] == [2] and {"pass@1", "pass@2", "pass@4", "maj@4"} <= set(iid)
    assert iid["per_problem"]["pass@2"] == [0.5, 1.0]  # 1 − C(3,2)/C(4,2)
    assert iid["per_problem"]["maj@2"] == pytest.approx([1 / 3, 1.0])  # pairs won by "7": 2/6
    assert iid["per_problem"]["distinct@2"] == pytest.approx([5 / 6 + 1 / 2 + 1 / 2, 1.0])
    assert iid["per_problem"]["maj-limit"] == [0.0, 1.0]
    text = write_report(out)
    assert "| softmax | coord. K=2 | 1 | 2 | 50.0 [" in text
    main, at_k = text.split("## At K")
    lines = {line.split(" | ")[1]: line for line in main.splitlines() if "| softmax |" in line}
    assert lines["coord. K=2"].count("—") == 2 and "—" not in lines["i.i.d."]  # maj@4, pass@4
    k_line = next(line for line in at_k.splitlines() if "| coord. K=2 | 1 | 2 |" in line)
    # accuracy, maj@K, vote limit, pass@K, ceiling, distinct@K
    assert k_line.removesuffix(" |").split(" | ")[4:10] == [
        str(coordinated["accuracy"]),
        str(coordinated["maj@2"]),
        str(coordinated["maj-limit"]),
        str(coordinated["pass@2"]),
        str(coordinated["pass-ceiling@2"]),
        "1.50",
    ]
    for name in ("accuracy_vs_temperature.png", "maj_vs_k.png"):
        assert (out / name).stat().st_size > 0
