"""Benchmarks: MATH500, GSM8K, HumanEval (local JSONL or the Hugging Face hub) and `arith`.

A task loads `Problem`s (an id, the user-facing prompt, the gold answer) and grades one
completion. Math prompts follow the paper (Qwen's default math prompt): the system message
"Please reason step by step, and put your final answer within \\boxed{}." through the chat
template when the tokenizer has one, appended to the problem otherwise.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..pipelines.answers import extract_answer, gsm8k_gold, is_equivalent
from . import arith
from .sandbox import check_sandbox, run_python

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    gold: str
    meta: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Graded:
    answer: str | None  # what was extracted (or the execution status, for code)
    correct: bool


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Rows of a JSONL file (plain or .gz); a bad line raises ValueError naming file:line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: malformed JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{number}: expected a JSON object, got {type(row).__name__}"
                )
            missing = [key for key in required if key not in row]
            if missing:
                raise ValueError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
            yield row


class Task:
    name = "task"
    chat = True  # use the tokenizer's chat template when it has one
    system: str | None = None

    def load(
        self, data: str | None = None, limit: int | None = None, seed: int = 0
    ) -> list[Problem]:
        raise NotImplementedError

    def grade(self, problem: Problem, completion: str) -> Graded:
        raise NotImplementedError

    def template(self) -> str:
        """A description of the prompt format, for the run manifest."""
        return f"chat={self.chat}, system={self.system!r}"


class MathTask(Task):
    name = "math500"
    system = MATH_INSTRUCTION
    hub = ("HuggingFaceH4/MATH-500", "test")

    def load(self, data=None, limit=None, seed=0):
        rows = read_jsonl(data, ("problem", "answer")) if data else _from_hub(*self.hub)
        problems = [
            Problem(
                str(r.get("unique_id", i)), r["problem"], r["answer"], {"level": r.get("level")}
            )
            for i, r in enumerate(rows)
        ]
        return problems[:limit] if limit else problems

    def grade(self, problem, completion):
        answer = extract_answer(completion)
        return Graded(answer, is_equivalent(answer, problem.gold))


class GSM8KTask(MathTask):
    name = "gsm8k"
    hub = ("openai/gsm8k", "test")

    def load(self, data=None, limit=None, seed=0):
        rows = read_jsonl(data, ("question", "answer")) if data else _from_hub(*self.hub, "main")
        problems = [
            Problem(f"gsm8k-{i}", r["question"], gsm8k_gold(r["answer"]))
            for i, r in enumerate(rows)
        ]
        return problems[:limit] if limit else problems


class ArithTask(Task):
    """Generated problems; `data` may name a difficulty as "difficulty=N" (default 1)."""

    name = "arith"
    chat = False
    system = None

    def __init__(self, difficulty: int = 1, count: int = 200):
        self.difficulty = difficulty
        self.count = count

    def load(self, data=None, limit=None, seed=0):
        difficulty = self.difficulty
        if data:
            key, _, value = str(data).partition("=")
            if key != "difficulty" or not value.isdigit():
                raise ValueError(f"arith takes --data difficulty=N, got {data!r}")
            difficulty = int(value)
        # Evaluation problems come from their own seed stream, apart from training's.
        problems = arith.make_problems(
            limit or self.count, seed=10_000 + seed, difficulty=difficulty
        )
        return [Problem(p.id, arith.prompt(p.question), str(p.answer)) for p in problems]

    def grade(self, problem, completion):
        answer = extract_answer(completion)
        return Graded(answer, answer is not None and answer.strip() == problem.gold)

    def template(self):
        return "plain text: 'Q: {question}\\nA:'"


class HumanEvalTask(Task):
    """Code completion; each completion runs with the tests in a sandboxed subprocess."""

    name = "humaneval"
    chat = False
    hub = ("openai/openai_humaneval", "test")

    def __init__(self, timeout: float = 5.0, unsafe_no_sandbox: bool | None = None):
        self.timeout = timeout
        self.unsafe_no_sandbox = unsafe_no_sandbox  # None: $DECOPTIM_UNSAFE_NO_SANDBOX

    def load(self, data=None, limit=None, seed=0):
        check_sandbox(self.unsafe_no_sandbox)  # refuse before any generation, not at grading
        fields = ("task_id", "prompt", "test", "entry_point")
        rows = read_jsonl(data, fields) if data else _from_hub(*self.hub)
        problems = [
            Problem(r["task_id"], r["prompt"], r["entry_point"], {"test": r["test"]}) for r in rows
        ]
        return problems[:limit] if limit else problems

    def grade(self, problem, completion):
        body = truncate_at_stops(completion, HUMANEVAL_STOPS)
        program = f"{problem.prompt}{body}\n\n{problem.meta['test']}\n\ncheck({problem.gold})\n"
        result = run_python(program, timeout=self.timeout, unsafe_no_sandbox=self.unsafe_no_sandbox)
        return Graded(result.status, result.passed)

    def template(self):
        return "completion: the function prompt as is"


def truncate_at_stops(text: str, stops: tuple[str, ...]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def _from_hub(name: str, split: str, config: str | None = None) -> list[dict]:
    try:
        from datasets import load_dataset
    except ImportError:
        raise RuntimeError(
            f"no --data path given and the `datasets` package is missing to fetch {name} "
            "from the Hugging Face hub; pass --data PATH to a local JSONL file"
        ) from None
    return list(load_dataset(name, config, split=split))


TASKS: dict[str, type[Task]] = {
    "math500": MathTask,
    "gsm8k": GSM8KTask,
    "humaneval": HumanEvalTask,
    "arith": ArithTask,
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got task={name!r}")
    return TASKS[name]()
