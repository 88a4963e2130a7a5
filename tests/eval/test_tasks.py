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


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_jsonl_task_runs_a_dataset_it_has_never_seen(tmp_path):
    """Capital cities graded exactly, and numbers graded as numbers: no code for either."""
    from decoptim.eval.tasks import JsonlTask

    capitals = write_lines(
        tmp_path / "capitals.jsonl",
        [
            {"country": "France", "capital": "Paris", "id": "fr"},
            {"country": "Peru", "capital": "Lima", "id": "pe"},
        ],
    )
    task = get_task(
        "jsonl",
        question_field="country",
        answer_field="capital",
        grader="exact",
        prompt_template="Capital of {question} ({id})?",
        id_field="id",
    )
    problems = task.load(capitals)
    assert [(p.id, p.prompt, p.gold) for p in problems] == [
        ("fr", "Capital of France (fr)?", "Paris"),
        ("pe", "Capital of Peru (pe)?", "Lima"),
    ]
    france = problems[0]
    for reply in ("The answer is Paris.", "paris", "  'Paris'\nbecause...", "\\boxed{PARIS}"):
        assert task.grade(france, reply).correct, reply
    for reply in ("The answer is Lyon.", "Paris is the capital", ""):
        assert not task.grade(france, reply).correct, reply
    assert task.chat and "The answer is X" in task.system
    assert task.options()["grader"] == "exact" and task.options()["id_field"] == "id"

    numbers = write_lines(
        tmp_path / "numbers.jsonl",
        [
            {"q": "12 * 100?", "a": 1200},
            {"q": "half of 3?", "a": "1.5"},
        ],
    )
    task = JsonlTask(
        "q", "a", grader="number", prompt_template="Q: {question}\nA:", chat=False, instruction=""
    )
    problems = task.load(numbers)
    assert [p.id for p in problems] == ["line-1", "line-2"] and task.system is None
    assert task.grade(problems[0], "so it is 1,200.").correct
    assert task.grade(problems[0], "The answer is $1200.0").correct
    assert not task.grade(problems[0], "The answer is 1201").correct
    assert task.grade(problems[1], "The answer is 3/2.").correct
    assert [p.id for p in task.load(numbers, limit=1)] == ["line-1"]


def test_jsonl_votes_use_the_graders_equality():
    from decoptim.eval.tasks import vote_equivalence

    exact = vote_equivalence({"task": "jsonl", "task_options": {"grader": "exact"}})
    assert exact("Paris.", "paris") and not exact("Paris", "Lyon")
    number = vote_equivalence({"task": "jsonl", "task_options": {"grader": "number"}})
    assert number("1,200", "1200.0") and not number("12", "1200")
    assert vote_equivalence({"task": "jsonl", "task_options": {"grader": "code"}}) is None
    assert vote_equivalence({"task": "arith"})("3", "3")


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"country": "Peru"}', r"data.jsonl:2: missing field\(s\) capital"),
        (
            '{"country": "Peru", "capital": ["Lima"]}',
            r"data.jsonl:2: field 'capital' must be a string or a number, got list \['Lima'\]",
        ),
        (
            '{"country": null, "capital": "Lima"}',
            r"data.jsonl:2: field 'country' must be a string or a number, got NoneType None",
        ),
        ('{"country": "Peru", "capital": "  "}', r"data.jsonl:2: field 'capital' is empty"),
        (
            '{"country": "Peru", "capital": "Lima", "id": "fr"}',
            r"data.jsonl:2: field 'id' = 'fr' repeats line 1",
        ),
        ('{"country": "Peru", "capital": "Lima"', r"data.jsonl:2: malformed JSON"),
    ],
)
def test_jsonl_bad_lines_name_the_field_and_the_line(tmp_path, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text('{"country": "France", "capital": "Paris", "id": "fr"}\n' + line + "\n")
    task = get_task(
        "jsonl",
        question_field="country",
        answer_field="capital",
        grader="exact",
        id_field="id" if '"id"' in line else None,
    )
    with pytest.raises(ValueError, match=message):
        task.load(str(path))


def test_jsonl_bad_options_are_errors_naming_them(tmp_path):
    from decoptim.eval.tasks import JsonlTask

    numbers = write_lines(
        tmp_path / "numbers.jsonl",
        [{"question": "q", "answer": "7"}] * 3 + [{"question": "q", "answer": "seven"}],
    )
    with pytest.raises(
        ValueError,
        match=r"numbers.jsonl:4: field 'answer' must be a number "
        r"for grader 'number', got 'seven'",
    ):
        JsonlTask(grader="number").load(numbers)
    with pytest.raises(ValueError, match=r"numbers.jsonl:1: missing field\(s\) topic"):
        JsonlTask(prompt_template="{topic}: {question}").load(numbers)
    with pytest.raises(
        ValueError, match="grader must be one of math, number, exact, code, got grader='fuzzy'"
    ):
        JsonlTask(grader="fuzzy")
    with pytest.raises(ValueError, match=r"prompt_template must contain \{question\}"):
        JsonlTask(prompt_template="Solve it")
    with pytest.raises(ValueError, match=r"would show the gold answer \(\{answer\}\)"):
        JsonlTask(prompt_template="{question} = {answer}")
    with pytest.raises(ValueError, match=r"fields must be plain \{name\}, got \{0\}"):
        JsonlTask(prompt_template="{question} {0}")
    with pytest.raises(ValueError, match="needs --data FILE"):
        JsonlTask().load(None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        JsonlTask().load(str(tmp_path / "missing.jsonl"))


def test_jsonl_code_grader_runs_the_tests_in_the_sandbox(tmp_path):
    from decoptim.eval.tasks import JsonlTask

    path = write_lines(
        tmp_path / "code.jsonl",
        [
            {"prompt": "def add(a, b):\n", "tests": "assert add(2, 3) == 5"},
        ],
    )
    task = JsonlTask("prompt", "tests", grader="code")
    problem = task.load(path)[0]
    assert not task.chat and task.system is None
    assert task.grade(problem, "    return a + b\n").correct
    assert not task.grade(problem, "    return a - b\n").correct
    fenced = "Here:\n```python\ndef add(a, b):\n    return b + a\n```\n"
    assert task.grade(problem, fenced).correct


def test_task_classes_say_whether_they_run_code_and_how_they_vote():
    from decoptim.eval.tasks import TASKS, vote_equivalence
    from decoptim.pipelines.answers import is_equivalent

    assert [name for name, task in TASKS.items() if task.runs_code()] == ["humaneval"]
    assert TASKS["jsonl"].runs_code({"grader": "code"})
    assert not TASKS["jsonl"].runs_code({"grader": "exact"})
    assert TASKS["math500"].vote_equivalence() is is_equivalent
    assert TASKS["humaneval"].vote_equivalence() is None
    # a manifest of a task no longer registered votes as before: by math equivalence
    assert vote_equivalence({"task": "retired"}) is is_equivalent
    assert vote_equivalence({"task": "jsonl"}) is is_equivalent  # the default grader, math
