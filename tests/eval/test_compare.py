"""Paired BoK − control differences on a hand-made run whose answers are known."""

import json
import math

from decoptim.eval.compare import control_of, paired_differences, write_comparison

BOK = {"name": "bok", "k": 8, "beta": 0.5, "lam": 0.5, "solver": "exact"}
CONFIGS = {
    "bok@0.7": (BOK, 0.7),
    "bok-beta0@0.7": ({**BOK, "name": "bok-beta0"}, 0.7),
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
    "softmax@0.7": [0, 1, 0, 0],
    "softmax@0.9": [4, 4, 4, 4],
}


def write_run(out):
    out.mkdir()
    configs = [
        {"id": cid, "decoder": decoder, "temperature": tau}
        for cid, (decoder, tau) in CONFIGS.items()
    ]
    manifest = {"task": "arith", "model": "fixture", "n": 4, "max_new_tokens": 8, "seed": 0}
    (out / "manifest.json").write_text(json.dumps({**manifest, "configs": configs}))
    lines = []
    for cid, counts in CORRECT.items():
        for problem, right in enumerate(counts):
            answers = ["7"] * right + ["1"] * (4 - right)
            samples = [
                {
                    "text": a,
                    "answer": a,
                    "correct": a == "7",
                    "tokens": 2,
                    "logprob_sum": -1.0,
                    "logprob_mean": -0.5,
                }
                for a in answers
            ]
            record = {
                "config": cid,
                "decoder": cid.split("@")[0],
                "temperature": 0.7,
                "problem": f"p{problem}",
                "gold": "7",
                "seconds_per_sample": 0.1,
                "samples": samples,
            }
            lines.append(json.dumps(record))
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")


def test_controls_are_matched_by_lambda_parameters_and_temperature():
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
    write_run(out)
    found = {(c.control, c.metric): c.difference for c in paired_differences(out)}
    assert math.isclose(found[("β=0", "accuracy")].mean, 0.0)
    assert math.isclose(found[("τ_eff", "accuracy")].mean, 0.25)  # one more right of 4, each
    assert found[("τ_eff", "accuracy")].low > 0  # the same +0.25 on every problem
    assert math.isclose(found[("softmax", "accuracy")].mean, (4 + 2 + 2 + 4) / 16)
    # majority of 4: BoK right on every problem (ties 2-2 go to the earliest answer, "7")
    assert math.isclose(found[("softmax", "maj@4")].mean, 1.0)
    text = write_comparison(out)
    assert "**+25.0 [+25.0, +25.0]**" in text
    assert (out / "compare.md").exists() and (out / "compare.png").stat().st_size > 0
