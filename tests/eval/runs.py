"""Hand-made run directories (manifest.json + samples.jsonl) whose answers are known."""

import json
from pathlib import Path


def write_run(
    out: Path,
    configs: list[dict],
    answers: dict[str, list[list[str | None]]],
    golds: list[str],
    task: str = "arith",
) -> None:
    """`configs`: manifest entries (id, decoder, temperature, optional sampling and
    group_size); `answers[config id][problem]`: the final answer of each sample."""
    n = len(next(iter(answers.values()))[0])
    out.mkdir()
    manifest = {"task": task, "model": "fixture", "n": n, "max_new_tokens": 8, "seed": 0}
    (out / "manifest.json").write_text(json.dumps({**manifest, "configs": configs}))
    lines = []
    for config in configs:
        for problem, (row, gold) in enumerate(zip(answers[config["id"]], golds, strict=True)):
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
            record = {
                "config": config["id"],
                "decoder": config["id"].split("@")[0],
                "temperature": config["temperature"],
                "problem": f"p{problem}",
                "gold": gold,
                "seconds_per_sample": 0.5,
                "samples": samples,
            }
            lines.append(json.dumps(record))
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")


SOFTMAX = {"name": "softmax"}
COORDINATED = {"sampling": "coordinated", "group_size": 2}
MIXED_CONFIGS = [
    {"id": "softmax@1", "decoder": SOFTMAX, "temperature": 1.0, "sampling": "iid"},
    {"id": "softmax@1+coord(K=2)", "decoder": SOFTMAX, "temperature": 1.0, **COORDINATED},
]
# n = 4 samples per problem; the coordinated ones are two groups of K = 2, group-major
MIXED_ANSWERS = {
    "softmax@1": [["1", "7", "1", "2"], ["7", "7", "7", "7"]],
    "softmax@1+coord(K=2)": [["7", "1", "2", "2"], ["7", "7", "7", "3"]],
}


def write_mixed_run(out: Path) -> None:
    """softmax at τ = 1, i.i.d. and coordinated (K = 2), on two problems whose gold is 7."""
    write_run(out, MIXED_CONFIGS, MIXED_ANSWERS, ["7", "7"])
