"""Benchmarks: MATH500, GSM8K, HumanEval (local JSONL or the Hugging Face hub), `arith`, and
`jsonl`: any JSONL dataset, given its question and answer fields and a grader.

A task loads `Problem`s (an id, the user-facing prompt, the gold answer) and grades one
completion. Math prompts follow the paper (Qwen's default math prompt): the system message
"Please reason step by step, and put your final answer within \\boxed{}." through the chat
template when the tokenizer has one, appended to the problem otherwise.
"""

from __future__ import annotations

import gzip
import json
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from ..core.checks import shown
from ..pipelines.answers import (
    as_number,
    extract_answer,
    gsm8k_gold,
    is_equivalent,
    same_number,
    same_text,
    stated_answer,
)
from . import arith
from .sandbox import check_sandbox, run_python

Equivalence: TypeAlias = Callable[[str | None, str | None], bool]
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
    for _, row in numbered_rows(path, required):
        yield row


def numbered_rows(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each row of a JSONL file, as `read_jsonl` checks them."""
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
            yield number, row


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

    def options(self) -> dict | None:
        """The task's settings beyond its name, for the run manifest (None: it has none)."""
        return None

    # The constructor's keywords that `decoptim eval` takes from same-named flags.
    flag_options: tuple[str, ...] = ()

    @classmethod
    def runs_code(cls, options: dict | None = None) -> bool:
        """Whether the task, with these constructor options, runs model-written code (and so
        takes `unsafe_no_sandbox`)."""
        return False

    @classmethod
    def vote_equivalence(cls, options: dict | None = None) -> Equivalence | None:
        """When two answers count as the same in a vote (None: no vote), for a run of this
        task with `options` as its manifest's task_options."""
        return is_equivalent


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

    @classmethod
    def vote_equivalence(cls, options=None):
        return _same_string


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

    @classmethod
    def runs_code(cls, options=None):
        return True

    @classmethod
    def vote_equivalence(cls, options=None):
        return None


GRADERS = ("math", "number", "exact", "code")
# Per grader: the instruction given by default (the system message, or appended to the prompt
# without a chat template) and whether prompts go through the chat template.
DEFAULT_INSTRUCTIONS: dict[str, str | None] = {
    "math": MATH_INSTRUCTION,
    "number": "End your reply with 'The answer is N.', N a number.",
    "exact": "End your reply with 'The answer is X.', X your answer alone.",
    "code": None,
}
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


def text_answer(completion: str) -> str | None:
    """The answer of a reply graded by `exact`: the one stated ("The answer is X", \\boxed{X}),
    else the reply's first non-empty line."""
    stated = stated_answer(completion)
    if stated is not None:
        return stated
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    return lines[0] if lines else None


class JsonlTask(Task):
    """Any JSONL dataset: one problem per line, its question and gold answer in named fields.

    `prompt_template` is a `str.format` template: `{question}` is the question field, and any
    other `{name}` is that field of the line. `instruction` (default: the grader's, see
    DEFAULT_INSTRUCTIONS; "" for none) is the system message through the chat template, or
    appended to the prompt without one. Graders:
    - `math`: the final answer extracted as for math500, equivalent by math-verify;
    - `number`: the final answer extracted the same way, equal as a number (the gold must be
      one);
    - `exact`: the stated answer ("The answer is X", \\boxed{X}; else the first line) equal to
      the gold after trimming whitespace, quotes and a final period, ignoring case;
    - `code`: the answer field holds test code; the program (the prompt and the completion cut
      at the usual stop sequences, or the completion's fenced code block when it has one)
      runs with the tests in the sandbox and passes when it exits with status 0.
    Problem ids are the `id_field` when given (each must be unique), else `line-N`.
    """

    name = "jsonl"
    flag_options = (
        "question_field",
        "answer_field",
        "id_field",
        "grader",
        "prompt_template",
        "instruction",
        "chat",
    )

    def __init__(
        self,
        question_field: str = "question",
        answer_field: str = "answer",
        grader: str = "math",
        prompt_template: str = "{question}",
        instruction: str | None = None,
        chat: bool | None = None,
        id_field: str | None = None,
        timeout: float = 5.0,
        unsafe_no_sandbox: bool | None = None,
    ):
        if grader not in GRADERS:
            raise ValueError(f"grader must be one of {', '.join(GRADERS)}, got grader={grader!r}")
        for option, value in (
            ("question_field", question_field),
            ("answer_field", answer_field),
            ("id_field", id_field),
        ):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{option} must be a field name, got {option}={value!r}")
        self.question_field = question_field
        self.answer_field = answer_field
        self.id_field = id_field
        self.grader = grader
        self.prompt_template = prompt_template
        self.fields = template_fields(prompt_template)
        if "question" not in self.fields:
            raise ValueError(
                f"prompt_template must contain {{question}} (the {question_field!r} field), got "
                f"prompt_template={prompt_template!r}"
            )
        if question_field == answer_field:
            raise ValueError(
                f"question_field and answer_field must differ, both are {question_field!r}"
            )
        if answer_field in self.fields - {"question"}:
            raise ValueError(
                f"prompt_template={prompt_template!r} would show the gold answer "
                f"({{{answer_field}}})"
            )
        self.system = DEFAULT_INSTRUCTIONS[grader] if instruction is None else instruction or None
        self.chat = grader != "code" if chat is None else chat
        self.timeout = timeout
        self.unsafe_no_sandbox = unsafe_no_sandbox

    def load(self, data=None, limit=None, seed=0):
        if not data:
            raise ValueError("--task jsonl needs --data FILE (a JSONL file; .gz allowed)")
        if self.grader == "code":
            check_sandbox(self.unsafe_no_sandbox)  # refuse before any generation
        extra = sorted(self.fields - {"question"})
        required = tuple(dict.fromkeys([self.question_field, self.answer_field, *extra]))
        required += (self.id_field,) if self.id_field else ()
        problems, lines = [], {}
        for number, row in numbered_rows(data, required):
            where = f"{data}:{number}"
            values = {name: _field_text(row, name, where) for name in extra}
            question = _field_text(row, self.question_field, where)
            gold = _field_text(row, self.answer_field, where)
            if self.grader == "number" and as_number(gold) is None:
                raise ValueError(
                    f"{where}: field {self.answer_field!r} must be a number for grader "
                    f"'number', got {shown(gold)}"
                )
            key = _field_text(row, self.id_field, where) if self.id_field else f"line-{number}"
            if key in lines:
                raise ValueError(
                    f"{where}: field {self.id_field!r} = {shown(key)} repeats line {lines[key]}"
                )
            lines[key] = number
            prompt = self.prompt_template.format_map({**values, "question": question})
            problems.append(Problem(key, prompt, gold))
        if not problems:
            raise ValueError(f"{data} holds no problems")
        return problems[:limit] if limit else problems

    def grade(self, problem, completion):
        if self.grader == "code":
            fenced = _FENCE.search(completion)
            code = (
                fenced.group(1)
                if fenced
                else problem.prompt + truncate_at_stops(completion, HUMANEVAL_STOPS)
            )
            result = run_python(
                f"{code}\n\n{problem.gold}\n",
                timeout=self.timeout,
                unsafe_no_sandbox=self.unsafe_no_sandbox,
            )
            return Graded(result.status, result.passed)
        extract = text_answer if self.grader == "exact" else extract_answer
        answer = extract(completion)
        return Graded(answer, GRADER_EQUIVALENCE[self.grader](answer, problem.gold))

    def template(self):
        return f"{self.prompt_template!r}, chat={self.chat}, instruction={self.system!r}"

    def options(self):
        return {
            "question_field": self.question_field,
            "answer_field": self.answer_field,
            "id_field": self.id_field,
            "grader": self.grader,
            "prompt_template": self.prompt_template,
            "instruction": self.system,
            "chat": self.chat,
        }

    @classmethod
    def runs_code(cls, options=None):
        return (options or {}).get("grader", GRADERS[0]) == "code"

    @classmethod
    def vote_equivalence(cls, options=None):
        return GRADER_EQUIVALENCE.get((options or {}).get("grader", GRADERS[0]))


def template_fields(template: str) -> set[str]:
    """The field names of a `str.format` template; ValueError for anything but plain
    `{name}` fields (positional, attribute, index or nested fields)."""
    if not isinstance(template, str):
        raise ValueError(f"prompt_template must be a string, got {shown(template)}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"prompt_template={template!r}: {error}") from None
    names = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not re.fullmatch(r"[^\W\d]\w*", name) or spec or conversion:
            raise ValueError(
                f"prompt_template={template!r}: fields must be plain {{name}}, got "
                f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            )
        names.add(name)
    return names


def _field_text(row: dict, name: str, where: str) -> str:
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(
            f"{where}: field {name!r} must be a string or a number, got "
            f"{type(value).__name__} {shown(value)}"
        )
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: field {name!r} is empty")
    return text


def _same_string(a: str | None, b: str | None) -> bool:
    return a is not None and a == b


# Per grader (and for the jsonl task's votes): when two answers count as the same.
GRADER_EQUIVALENCE: dict[str, Equivalence] = {
    "math": is_equivalent,
    "number": same_number,
    "exact": same_text,
}


def vote_equivalence(manifest: dict) -> Equivalence | None:
    """How a run's answers are clustered for votes (None: code, no vote), from its manifest:
    its task class's `vote_equivalence` (the base Task's for a task no longer registered)."""
    task = TASKS.get(manifest["task"], Task)
    return task.vote_equivalence(manifest.get("task_options"))


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
    "jsonl": JsonlTask,
}


def get_task(name: str, **options) -> Task:
    """A task by name; `options` go to its constructor (the `jsonl` task's fields, grader,
    template, ...)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got task={name!r}")
    return TASKS[name](**options)
