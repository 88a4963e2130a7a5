import json
import math

import pytest

from decoptim.eval.report import MAJ_SUBSETS, group_ks, summarise, write_report
from decoptim.pipelines.metrics import maj_at_k, pass_at_k, rerank_at_k, wvote_at_k

from .runs import SOFTMAX, write_mixed_run, write_run


def set_logprobs(out, scores: dict[str, list[list[float | None]]]) -> None:
    """Rewrite the `logprob_mean` of every sample: scores[config id][problem][sample]."""
    path = out / "samples.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        problem = int(record["problem"][1:])
        for sample, score in zip(record["samples"], scores[record["config"]][problem], strict=True):
            sample["logprob_mean"] = score
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# A coordinated group of 16 built so that its strided subgroups are known by hand: sample i
# answers 7 (right) when i % 4 == 0, 2 when i % 4 == 2, 1 when i is odd. Subgroups of 4
# (i ≡ r mod 4) are all-7, all-1, all-2, all-1; of 8 (even, odd): 7 2 7 2 7 2 7 2 and
# all-1. Contiguous quarters would each hold a 7 (pass@4 = 1): they are not groups.
STRIDED = ["7" if i % 4 == 0 else "2" if i % 4 == 2 else "1" for i in range(16)]
# logprob_mean: the 7s are the model's favourites (p = 1 per token), the 1s the least
STRIDED_SCORES = [0.0 if a == "7" else -1.0 if a == "2" else -2.0 for a in STRIDED]
COORD16 = {"sampling": "coordinated", "group_size": 16}
STUDY_CONFIGS = [
    {"id": "softmax@1", "decoder": SOFTMAX, "temperature": 1.0, "sampling": "iid"},
    {"id": "softmax@1+coord(K=16)", "decoder": SOFTMAX, "temperature": 1.0, **COORD16},
]


def write_strided_run(out):
    """Problem 0 holds the STRIDED group, problem 1 sixteen right answers, in both configs."""
    answers = [STRIDED, ["7"] * 16]
    write_run(out, STUDY_CONFIGS, {c["id"]: answers for c in STUDY_CONFIGS}, ["7", "7"])
    scores = [STRIDED_SCORES, [-0.5] * 16]
    set_logprobs(out, {c["id"]: scores for c in STUDY_CONFIGS})


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


def test_group_ks_are_the_divisors_among_4_to_64_and_the_group_size():
    assert group_ks(16) == [4, 8, 16] and group_ks(8) == [4, 8] and group_ks(2) == [2]
    assert (
        group_ks(12) == [4, 12] and group_ks(6) == [6] and group_ks(128) == [4, 8, 16, 32, 64, 128]
    )
    assert group_ks(1) == [1]


def test_coordinated_groups_of_16_are_scored_per_strided_subgroup(tmp_path):
    out = tmp_path / "run"
    write_strided_run(out)
    _, (iid, coordinated) = summarise(out)
    assert coordinated["K_values"] == [4, 8, 16] and iid["K_values"] == [4, 8, 16]
    p = coordinated["per_problem"]
    expected = {  # problem 0 by hand (see STRIDED); problem 1 is right everywhere
        "pass@4": 1 / 4,  # one subgroup of the four is all-7
        "maj@4": 1 / 4,
        "distinct@4": 1.0,
        "pass@8": 1 / 2,  # the even subgroup holds 7s, the odd one none
        "maj@8": 1 / 2,  # 7 2 7 2 7 2 7 2: a 4-4 tie, won by the 7 seen first
        "distinct@8": 3 / 2,
        "pass@16": 1.0,
        "maj@16": 0.0,  # eight 1s
        "distinct@16": 3.0,
        "rerank@4": 1 / 4,
        "rerank@8": 1 / 2,
        "rerank@16": 1.0,  # the 7s score highest
        "wvote@4": 1 / 4,
        "wvote@8": 1 / 2,
        "wvote@16": 1.0,  # 7: 4·1; 2: 4·e^-1 = 1.47; 1: 8·e^-2 = 1.08
        "pass-ceiling@4": 1.0,  # min(1, 4 · 1/4)
    }
    for key, value in expected.items():
        assert p[key] == [pytest.approx(value), 1.0], key
    assert p["distinct@16"][1] == 1.0 and p["accuracy"] == [0.25, 1.0]
    assert p["pass@1"] == [0.25, 1.0] and "pass@2" not in p  # 2 is not among {4, ..., 64, G}
    # i.i.d.: the subset estimators at the same K, on the same samples
    clusters = [{"7": 0, "1": 1, "2": 2}[a] for a in STRIDED]
    right = {0: True, 1: False, 2: False}
    correct = [a == "7" for a in STRIDED]
    for k in (4, 8, 16):
        q = iid["per_problem"]
        assert q[f"pass@{k}"][0] == pytest.approx(pass_at_k(16, 4, k))
        assert q[f"maj@{k}"][0] == maj_at_k(clusters, right, k, max_subsets=MAJ_SUBSETS)
        assert q[f"rerank@{k}"][0] == pytest.approx(rerank_at_k(correct, STRIDED_SCORES, k))
        assert q[f"wvote@{k}"][0] == wvote_at_k(
            clusters, right, STRIDED_SCORES, k, max_subsets=MAJ_SUBSETS
        )
        assert q[f"rerank@{k}"][1] == q[f"wvote@{k}"][1] == 1.0
    # rerank over i.i.d. subsets of 4: right unless the subset holds no 7
    assert iid["per_problem"]["rerank@4"][0] == pytest.approx(1 - 495 / 1820)
    text = write_report(out)
    main, at_k = text.split("## At K")
    coord_line = next(line for line in main.splitlines() if "coord. K=16" in line)
    assert "—" not in coord_line  # maj and pass at k = 1, 4, 8, 16: all per (sub)group
    sections = at_k.split("### K = ")[1:]
    assert [section.split("\n")[0] for section in sections] == ["4", "8", "16"]
    line = next(x for x in sections[0].splitlines() if "| coord. K=16 | 1 | 4 |" in x)
    cells = line.removesuffix(" |").split(" | ")
    assert cells[-2:] == [str(coordinated["rerank@4"]), str(coordinated["wvote@4"])]
    assert cells[-2] == "62.5 [25.0, 100.0]"


def test_selections_are_left_out_without_log_probabilities(tmp_path):
    out = tmp_path / "run"
    write_strided_run(out)
    scores = [STRIDED_SCORES, [-0.5] * 15 + [None]]  # one sample of one problem lacks it
    set_logprobs(out, {"softmax@1": scores, "softmax@1+coord(K=16)": [STRIDED_SCORES] * 2})
    _, (iid, coordinated) = summarise(out)
    assert not any(key.startswith(("rerank", "wvote")) for key in iid)
    assert "rerank@16" in coordinated and "wvote@16" in coordinated
    text = write_report(out)
    line = next(x for x in text.split("### K = 16")[1].splitlines() if "| i.i.d. | 1 | 16 |" in x)
    assert line.removesuffix(" |").split(" | ")[-2:] == ["—", "—"]


def test_code_tasks_get_rerank_but_no_vote(tmp_path):
    out = tmp_path / "run"
    configs = [{"id": "softmax@1", "decoder": SOFTMAX, "temperature": 1.0}]
    write_run(out, configs, {"softmax@1": [["a", "b", "a", "b"]]}, ["a"], task="humaneval")
    set_logprobs(out, {"softmax@1": [[-2.0, -1.0, -2.0, -1.0]]})
    _, (row,) = summarise(out)
    assert row["per_problem"]["rerank@4"] == [0.0] and "wvote@4" not in row
    assert row["K_values"] == [4]  # no coordinated config: K = n only


def test_a_registered_task_class_brings_its_own_vote(tmp_path, monkeypatch):
    from decoptim.eval.tasks import TASKS, Task

    seen = []

    class FirstLetter(Task):
        """Answers agree when they start with the same letter; options pick the letter case."""

        name = "first-letter"

        @classmethod
        def vote_equivalence(cls, options=None):
            seen.append(options)
            fold = str.lower if (options or {}).get("fold") else str

            def same(a, b):
                return a is not None and b is not None and fold(a[:1]) == fold(b[:1])

            return same

    class NoVote(Task):
        name = "no-vote"

        @classmethod
        def vote_equivalence(cls, options=None):
            return None

    monkeypatch.setitem(TASKS, FirstLetter.name, FirstLetter)
    monkeypatch.setitem(TASKS, NoVote.name, NoVote)
    configs = [{"id": "softmax@1", "decoder": SOFTMAX, "temperature": 1.0}]
    answers = {"softmax@1": [["x1", "y", "y", "X2"]]}
    runs = {}
    for task in ("arith", "first-letter", "no-vote"):
        runs[task] = tmp_path / task
        write_run(runs[task], configs, answers, ["x1"], task=task)
    _, (plain,) = summarise(runs["arith"])  # exact strings: four answers, three distinct
    assert plain["distinct@4"] == 3.0 and plain["per_problem"]["maj@4"] == [0.0]
    _, (row,) = summarise(runs["first-letter"])  # x1 ≁ X2 without the fold
    assert row["distinct@4"] == 3.0 and seen == [None]
    manifest = json.loads((runs["first-letter"] / "manifest.json").read_text())
    manifest["task_options"] = {"fold": True}
    (runs["first-letter"] / "manifest.json").write_text(json.dumps(manifest))
    _, (row,) = summarise(runs["first-letter"])  # x1 ~ X2: two clusters of two
    assert row["distinct@4"] == 2.0 and seen == [None, {"fold": True}]
    _, (row,) = summarise(runs["no-vote"])
    assert "maj@4" not in row and "wvote@4" not in row and "rerank@4" in row
