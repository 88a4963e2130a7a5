import gzip
import json

import pytest

from decoptim.eval import arith
from decoptim.eval.tasks import ArithTask, GSM8KTask, HumanEvalTask, MathTask, get_task, read_jsonl
from tests.conftest import shared_data


def test_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "1+1", "answer": "2"}\n\n{"problem": "oops"\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: malformed JSON"):
        MathTask().load(str(path))
    path.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field\(s\) answer"):
        MathTask().load(str(path))
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object"):
        list(read_jsonl(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MathTask().load(str(tmp_path / "missing.jsonl"))
    gz = tmp_path / "rows.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(json.dumps({"question": "q", "answer": "so #### 1,200"}) + "\n")
    assert GSM8KTask().load(str(gz))[0].gold == "1200"


def test_real_benchmarks_load_and_grade():
    math = MathTask().load(str(shared_data("math500.jsonl")))
    assert len(math) == 500
    first = math[0]
    assert MathTask().grade(first, f"... so \\boxed{{{first.gold}}}").correct
    assert not MathTask().grade(first, "I give up").correct
    gsm = GSM8KTask().load(str(shared_data("gsm8k_test.jsonl")), limit=5)
    assert [p.gold for p in gsm][:1] == ["18"]
    assert GSM8KTask().grade(gsm[0], "She makes $18 every day. The answer is 18.").correct


def test_humaneval_runs_completions_in_the_sandbox():
    path = shared_data("HumanEval.jsonl.gz")
    task = HumanEvalTask(timeout=5)
    problems = task.load(str(path), limit=6)
    solutions = {r["task_id"]: r["canonical_solution"] for r in read_jsonl(path)}
    for problem in problems:
        assert task.grade(problem, solutions[problem.id] + "\ndef trailing():\n    pass").correct
        assert not task.grade(problem, "    return None\n").correct
    assert task.grade(problems[0], "    while True:\n        pass\n").answer == "timeout"


def test_arith_is_seeded_exact_and_adjustable():
    one = ArithTask().load(limit=50, seed=3)
    assert one == ArithTask().load(limit=50, seed=3)
    assert one != ArithTask().load(limit=50, seed=4)
    harder = ArithTask().load("difficulty=3", limit=50)
    assert max(p.prompt.count("Then") for p in harder) >= 1
    problem = one[0]
    assert ArithTask().grade(problem, f"x. The answer is {problem.gold}.").correct
    assert not ArithTask().grade(problem, f"The answer is {int(problem.gold) + 1}.").correct
    for p in arith.make_problems(200, seed=1, difficulty=3):
        steps = [s for s in p.solution.split(". ") if "=" in s]
        for step in steps:
            left, right = step.rstrip(".").split("=")
            assert eval(left) == int(right) >= 0  # every intermediate count is right
        assert p.solution.endswith(f"The answer is {p.answer}.")
    with pytest.raises(ValueError, match="difficulty=N"):
        ArithTask().load("hard")
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("mmlu")
