"""Paired BoK − control differences on a hand-made run whose answers are known."""

import json
import math

import pytest

from decoptim.eval.compare import (
    bok_differences,
    control_of,
    coordination_differences,
    cost_ratios,
    iid_twin_of,
    pooled_rows,
    rejection_differences,
    write_comparison,
)
from decoptim.eval.report import summarise
from decoptim.eval.shards import load_run

from .runs import COORDINATED, MIXED_ANSWERS, MIXED_CONFIGS, write_mixed_run, write_run
from .test_report import write_strided_run


def set_seconds(out, seconds: dict[str, list[float]]) -> None:
    """Rewrite each record's seconds_per_sample: seconds[config id][problem]."""
    path = out / "samples.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record["seconds_per_sample"] = seconds[record["config"]][int(record["problem"][1:])]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


BOK = {"name": "bok", "k": 8, "beta": 0.5, "lam": 0.5, "solver": "exact"}
CONFIGS = {
    "bok@0.7": (BOK, 0.7),
    "bok-beta0@0.7": ({**BOK, "name": "bok-beta0"}, 0.7),
    # the same λ, but raw scores: another effective temperature (listed first:
    # matched on λ alone, it would be τ_eff's control)
    "bok-tau-raw@0.7": ({"name": "bok-tau", "k": 8, "beta": 0.5, "lam": 0.5, "scores": "raw"}, 0.7),
    "bok-tau@0.7": ({"name": "bok-tau", "k": 8, "beta": 0.01, "lam": 0.5}, 0.7),
    "bok-tau-other-lam@0.7": ({"name": "bok-tau", "k": 8, "beta": 0.01, "lam": 0.1}, 0.7),
    "softmax@0.7": ({"name": "softmax"}, 0.7),
    "softmax@0.9": ({"name": "softmax"}, 0.9),
}
# correct samples out of 4 per problem, for each config
CORRECT = {
    "bok@0.7": [4, 3, 2, 4],
    "bok-beta0@0.7": [4, 3, 2, 4],
    "bok-tau@0.7": [3, 2, 1, 3],
    "bok-tau-other-lam@0.7": [0, 0, 0, 0],
    "bok-tau-raw@0.7": [0, 0, 0, 0],
    "softmax@0.7": [0, 1, 0, 0],
    "softmax@0.9": [4, 4, 4, 4],
}


def write_bok_run(out):
    configs = [
        {"id": cid, "decoder": decoder, "temperature": tau}
        for cid, (decoder, tau) in CONFIGS.items()
    ]
    answers = {
        cid: [["7"] * right + ["1"] * (4 - right) for right in counts]
        for cid, counts in CORRECT.items()
    }
    write_run(out, configs, answers, ["7"] * 4)


def test_controls_are_matched_by_structured_spec_fields_and_temperature():
    configs = [{"id": c, "decoder": d, "temperature": t} for c, (d, t) in CONFIGS.items()]
    bok = configs[0]
    matched = {
        control: [c["id"] for c in configs if control_of(bok, c, control)]
        for control in ("β=0", "τ_eff", "softmax")
    }
    assert matched == {
        "β=0": ["bok-beta0@0.7"],
        "τ_eff": ["bok-tau@0.7"],
        "softmax": ["softmax@0.7"],
    }


def test_paired_differences_per_problem(tmp_path):
    out = tmp_path / "run"
    write_bok_run(out)
    found = {(c.control, c.metric): c.difference for c in bok_differences(*summarise(out))}
    assert found[("τ_eff", "maj@4")] == next(
        c.difference
        for c in bok_differences(*summarise(out))
        if (c.control, c.kind, c.k) == ("τ_eff", "maj", 4)
    )
    assert math.isclose(found[("β=0", "accuracy")].mean, 0.0)
    assert math.isclose(found[("τ_eff", "accuracy")].mean, 0.25)  # one more right of 4, each
    assert found[("τ_eff", "accuracy")].low > 0  # the same +0.25 on every problem
    assert math.isclose(found[("softmax", "accuracy")].mean, (4 + 2 + 2 + 4) / 16)
    # majority of 4: BoK right on every problem (ties 2-2 go to the earliest answer, "7")
    assert math.isclose(found[("softmax", "maj@4")].mean, 1.0)
    text = write_comparison(out)
    assert "**+25.0 [+25.0, +25.0]**" in text and "Coordinated minus" not in text
    assert (out / "compare.md").exists() and (out / "compare.png").stat().st_size > 0


def test_coordinated_is_paired_with_its_iid_twin_per_problem(tmp_path):
    out = tmp_path / "run"
    write_mixed_run(out)  # per-problem values in test_report
    found = {c.metric: c for c in coordination_differences(*summarise(out))}
    assert set(found) == {"accuracy", "maj@2", "pass@2", "distinct@2", "rerank@2", "wvote@2"}
    assert {c.control for c in found.values()} == {"i.i.d."}
    assert found["accuracy"].config == "softmax · coord. K=2"
    assert math.isclose(found["accuracy"].difference.mean, (0 - 0.25) / 2)
    assert math.isclose(found["maj@2"].difference.mean, (0.5 - 1 / 3 + 0) / 2, rel_tol=1e-6)
    assert math.isclose(found["pass@2"].difference.mean, 0.0)
    assert math.isclose(found["distinct@2"].difference.mean, (1.5 - 11 / 6 + 0.5) / 2)
    text = write_comparison(out)
    assert "| softmax · coord. K=2 | 1 | -12.5 [" in text
    assert "+0.08 [" in text  # distinct@2 in answers, not points
    assert (out / "compare.png").exists()
    assert (out / "compare_coordinated.png").stat().st_size > 0


def write_seeded(out, rejection_answers, seed):
    """The mixed run plus softmax coordinated by rejection, its manifest at `seed`."""
    rejection = {**MIXED_CONFIGS[1], "id": "softmax@1+coord(K=2,rejection)"}
    rejection["sampling"] = "coordinated-rejection"
    answers = {**MIXED_ANSWERS, rejection["id"]: rejection_answers}
    write_run(out, [*MIXED_CONFIGS, rejection], answers, ["7", "7"])
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "seed": seed}))


def test_both_coordinated_draws_are_paired_with_the_same_iid_twin(tmp_path):
    # The draw by rejection is a sampling of its own: its own row and label, the i.i.d.
    # config of the same decoder and τ as its twin.
    out = tmp_path / "run"
    write_seeded(out, [["7", "7", "2", "2"], ["7", "3", "7", "3"]], seed=0)
    found = {(c.config, c.metric): c for c in coordination_differences(*summarise(out))}
    assert {config for config, _ in found} == {
        "softmax · coord. K=2",
        "softmax · coord. K=2 by rejection",
    }
    by_rejection = found[("softmax · coord. K=2 by rejection", "accuracy")]
    assert by_rejection.control == "i.i.d."
    # accuracy 1/2 and 1/2 by rejection against 1/4 and 1 i.i.d.
    assert math.isclose(by_rejection.difference.mean, (0.25 - 0.5) / 2)
    assert "| softmax · coord. K=2 by rejection | 1 |" in write_comparison(out)


def test_runs_with_other_seeds_are_pooled_per_problem(tmp_path):
    # accuracy per problem: i.i.d. 1/4 and 1, coordinated 1/4 and 3/4 in both runs; by
    # rejection (1/2, 1/2) in the first and (1, 1) in the second: pooled, (3/4, 3/4).
    runs = [tmp_path / "a", tmp_path / "b"]
    write_seeded(runs[0], [["7", "7", "2", "2"], ["7", "3", "7", "3"]], seed=0)
    write_seeded(runs[1], [["7", "7", "7", "7"], ["7", "7", "7", "7"]], seed=1)
    text = write_comparison(runs, make_plot=False, out=tmp_path / "pooled")
    assert "Pooled over 2 runs" in text and "seeds 0, 1" in text
    assert (tmp_path / "pooled" / "compare.md").read_text().startswith("# Paired comparisons")
    summaries = [summarise(run) for run in runs]
    pooled = {row["config"]: row for row in pooled_rows(summaries)}
    by_rejection = pooled["softmax@1+coord(K=2,rejection)"]
    assert by_rejection["runs"] == 2
    assert by_rejection["per_problem"]["accuracy"] == [0.75, 0.75]
    assert math.isclose(by_rejection["accuracy"].mean, 0.75)
    manifest = summaries[0][0]
    found = {
        (c.config, c.metric): c.difference.mean
        for c in coordination_differences(manifest, list(pooled.values()))
    }
    assert math.isclose(found[("softmax · coord. K=2 by rejection", "accuracy")], (0.5 - 0.25) / 2)
    assert math.isclose(found[("softmax · coord. K=2", "accuracy")], (0.0 - 0.25) / 2)
    # the draw over q's buckets minus the one by rejection, the same way: (1/4 − 3/4, 0) / 2
    direct = rejection_differences(manifest, list(pooled.values()))
    accuracy = next(c for c in direct if c.metric == "accuracy")
    assert (accuracy.config, accuracy.control) == ("softmax · coord. K=2", "by rejection")
    assert math.isclose(accuracy.difference.mean, -0.25)
    assert "### Over q's buckets minus by rejection" in text
    assert "| softmax · coord. K=2 | 1 | -25.0 [" in text


def test_pooling_refuses_runs_that_differ(tmp_path):
    runs = [tmp_path / name for name in "abc"]
    for run, seed in zip(runs, (0, 0, 2), strict=True):
        write_seeded(run, [["7"] * 4, ["7"] * 4], seed)
    with pytest.raises(ValueError, match="runs 1 and 2 both have seed=0"):
        pooled_rows([summarise(run) for run in runs[:2]])
    with pytest.raises(ValueError, match=r"needs an output folder \(--out\)"):
        write_comparison([runs[0], runs[2]])
    fewer = tmp_path / "fewer"
    write_run(fewer, MIXED_CONFIGS, MIXED_ANSWERS, ["7", "7"])
    manifest = json.loads((fewer / "manifest.json").read_text())
    (fewer / "manifest.json").write_text(json.dumps({**manifest, "seed": 5}))
    with pytest.raises(ValueError, match=r"runs 1 and 2 hold different configs: \['softmax@1"):
        pooled_rows([summarise(runs[0]), summarise(fewer)])


def test_twins_and_controls_are_matched_on_structured_fields():
    topk = {"name": "topk", "k": 5}
    coordinated = {"id": "x", "decoder": topk, "temperature": 0.7, **COORDINATED}
    candidates = {
        "same": {"decoder": {"name": "topk", "k": 5}, "temperature": 0.7, "sampling": "iid"},
        "old run": {"decoder": {"name": "topk", "k": 5}, "temperature": 0.7},  # no key: iid
        "other k": {"decoder": {"name": "topk", "k": 50}, "temperature": 0.7},
        "other τ": {"decoder": topk, "temperature": 0.9},
        "coordinated": {"decoder": topk, "temperature": 0.7, **COORDINATED},
    }
    assert [name for name, c in candidates.items() if iid_twin_of(coordinated, c)] == [
        "same",
        "old run",
    ]
    # a coordinated BoK's controls are coordinated with the same group size
    bok = {"decoder": BOK, "temperature": 0.7, **COORDINATED}
    beta0 = {"decoder": {**BOK, "name": "bok-beta0"}, "temperature": 0.7}
    assert not control_of(bok, beta0, "β=0")
    assert control_of(bok, {**beta0, **COORDINATED}, "β=0")
    assert not control_of(bok, {**beta0, "sampling": "coordinated", "group_size": 4}, "β=0")


def test_coordinated_and_iid_are_paired_at_every_strided_k(tmp_path):
    out = tmp_path / "run"
    write_strided_run(out)  # per-problem values in test_report
    manifest, rows = summarise(out)
    iid, coordinated = rows
    found = {c.metric: c.difference for c in coordination_differences(manifest, rows)}
    kinds = ("maj", "pass", "distinct", "rerank", "wvote")
    assert set(found) == {"accuracy"} | {f"{kind}@{k}" for kind in kinds for k in (4, 8, 16)}
    for metric, difference in found.items():
        mine, theirs = coordinated["per_problem"][metric], iid["per_problem"][metric]
        assert difference.mean == pytest.approx(sum(mine) / 2 - sum(theirs) / 2), metric
    # pass@4: 1/4 per subgroup of 4 against 1 − C(12,4)/C(16,4) over subsets, problem 0
    assert found["pass@4"].mean == pytest.approx((0.25 - (1 - 495 / 1820)) / 2)
    assert found["accuracy"].mean == 0.0 and found["pass@16"].mean == 0.0
    text = write_comparison(out)
    assert [x.split("\n")[0] for x in text.split("#### K = ")[1:]] == ["4", "8", "16"]
    header = "| coordinated config | τ | maj@8 | pass@8 | distinct@8 | rerank@8 | wvote@8 |"
    assert header in text
    assert "| softmax · coord. K=16 | 1 | +0.0 [+0.0, +0.0] | 1.00 (0.5 s / 0.5 s) |" in text


def test_cost_ratio_is_coordinated_over_iid_seconds_per_sample_on_shared_problems(tmp_path):
    out = tmp_path / "run"
    write_strided_run(out)
    set_seconds(out, {"softmax@1": [0.5, 1.5], "softmax@1+coord(K=16)": [0.75, 2.25]})
    (cost,) = cost_ratios(*summarise(out), load_run(out)[1])
    assert (cost.config, cost.temperature) == ("softmax · coord. K=16", 1.0)
    assert (cost.coordinated, cost.iid, cost.ratio) == (1.5, 1.0, 1.5)
    assert "| 1.50 (1.5 s / 1 s) |" in write_comparison(out, make_plot=False)
    # only the problems both configs hold count
    path = out / "samples.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # drop i.i.d. problem 1
    (cost,) = cost_ratios(*summarise(out), load_run(out)[1])
    assert (cost.coordinated, cost.iid) == (0.75, 0.5)
