import json
import math

from decoptim.eval.report import summarise, write_report


def write_fixture(out):
    configs = [{"id": "softmax@1", "decoder": {"name": "softmax"}, "temperature": 1.0, "repr": ""}]
    out.mkdir()
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "task": "arith",
                "model": "fixture",
                "n": 4,
                "max_new_tokens": 8,
                "seed": 0,
                "configs": configs,
            }
        )
    )
    answers = [["5", "5", "6", None], ["7", "8", "8", "9"], ["1", "1", "1", "1"]]
    golds = ["5", "7", "2"]
    lines = []
    for i, (row, gold) in enumerate(zip(answers, golds, strict=True)):
        samples = [
            {
                "text": str(a),
                "answer": a,
                "correct": a == gold,
                "tokens": 3,
                "logprob_sum": -1.0,
                "logprob_mean": -0.3,
            }
            for a in row
        ]
        lines.append(
            json.dumps(
                {
                    "config": "softmax@1",
                    "decoder": "softmax",
                    "temperature": 1.0,
                    "problem": f"p{i}",
                    "gold": gold,
                    "seconds_per_sample": 0.5,
                    "samples": samples,
                }
            )
        )
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")


def test_report_numbers_on_a_fixture(tmp_path):
    out = tmp_path / "run"
    write_fixture(out)
    _, rows = summarise(out)
    row = rows[0]
    assert math.isclose(row["accuracy"].mean, (2 / 4 + 1 / 4 + 0) / 3)
    assert math.isclose(row["pass@4"].mean, 2 / 3)
    # maj@4: problem 0 votes "5" (right), problem 1 votes "8" (wrong), problem 2 "1" (wrong).
    assert math.isclose(row["maj@4"].mean, 1 / 3)
    assert math.isclose(row["distinct"], (2 + 3 + 1) / 3)
    text = write_report(out)
    assert "| softmax | 1 | 3 |" in text
    for name in ("report.md", "report.json", "accuracy_vs_temperature.png", "maj_vs_k.png"):
        assert (out / name).stat().st_size > 0
