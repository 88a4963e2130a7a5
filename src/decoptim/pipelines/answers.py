r"""Final-answer extraction and equivalence for math tasks.

Extraction, in order of preference (the last occurrence wins within each rule):
1. the content of the last `\boxed{...}` (or `\fbox{...}`), nested braces included;
2. the text after the last "The answer is" / "the final answer is" (up to the line's end);
3. the text after GSM8K's `####`;
4. the last number in the text (integers with thousands separators, decimals, fractions).

Equivalence uses `math-verify` (symbolic and numeric, LaTeX-aware) when it is installed.
Without it, the fallback normalises both strings (drops `$`, `\left`/`\right`, `\!`,
`\text{...}` wrappers, degree signs, thousands separators, spaces, a trailing period;
`\dfrac`/`\tfrac` become `\frac`) and then compares them as numbers when both parse as
one (`a/b` and `\frac{a}{b}` included, relative tolerance 1e-9), else as strings.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"(?:final\s+)?answer\s+is\s*:?\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in `text`, balancing nested braces."""
    starts = [m.end() for m in _BOX.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def stated_answer(text: str) -> str | None:
    """The answer a text states explicitly: the last `\\boxed{}`, else the text after the last
    "The answer is" (rules 1 and 2 of the module docstring), or None."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    stated = list(_ANSWER_IS.finditer(text))
    lines = stated[-1].group(1).strip().splitlines() if stated else []
    if lines:  # "The answer is" followed by nothing but whitespace states no answer
        answer = lines[0].strip()
        inner = last_boxed(answer)
        answer = (inner if inner is not None else answer).strip().rstrip(".").strip("$ ")
        if answer:
            return answer
    return None


def extract_answer(text: str) -> str | None:
    """The final answer stated in a model's output (see the module docstring), or None."""
    if not text:
        return None
    answer = stated_answer(text)
    if answer is not None:
        return answer
    if "####" in text:
        answer = text.rsplit("####", 1)[1].strip().splitlines()
        if answer and answer[0].strip():
            return answer[0].strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def gsm8k_gold(answer_field: str) -> str:
    """The gold number of a GSM8K `answer` field (after `####`), thousands separators removed."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer has no '####': {answer_field[-80:]!r}")
    return answer_field.rsplit("####", 1)[1].strip().replace(",", "")


def normalize(answer: str) -> str:
    """Light canonical form used by the fallback comparison."""
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|mbox|textbf)\{\s*([^{}]*)\}", r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\degree", "", s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    s = s.replace(" ", "").rstrip(".")
    return s


_DECIMAL = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")


def _as_number(s: str) -> Fraction | float | None:
    """A normalised answer as a number: exactly (a Fraction) when written as a decimal
    numeral, `a/b` or `\\frac{a}{b}`, else as a float when Python reads one (1e5, inf)."""
    match = re.fullmatch(r"\\frac\{(-?\d+)\}\{(-?\d+)\}|(-?\d+)/(-?\d+)", s)
    if match:
        num, den = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
        return Fraction(int(num), int(den)) if int(den) != 0 else None
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    try:
        return float(s)
    except ValueError:
        return None


def as_number(answer: str | None) -> float | None:
    """An answer as a number (thousands separators, `$`, a trailing period, `a/b` and
    `\\frac{a}{b}` allowed), or None when it is not one."""
    if answer is None:
        return None
    value = _as_number(normalize(answer))
    if value is None:
        return None
    try:
        return float(value)
    except OverflowError:  # an exact number beyond float's range (a model's run of digits)
        return math.inf if value > 0 else -math.inf


def same_number(a: str | None, b: str | None) -> bool:
    """Whether two answers are the same number (relative tolerance 1e-9)."""
    x, y = as_number(a), as_number(b)
    if x is None or y is None:
        return False
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


def normalize_text(answer: str) -> str:
    """A text answer for exact comparison: surrounding whitespace, quotes and a final
    period removed, inner whitespace collapsed, case folded."""
    text = " ".join(answer.split()).strip("\"'` ").rstrip(".").strip()
    return text.casefold()


def same_text(a: str | None, b: str | None) -> bool:
    """Exact equality of two text answers after `normalize_text`."""
    return a is not None and b is not None and normalize_text(a) == normalize_text(b)


# math-verify rounds a float to 6 decimals before comparing (its verify's float_rounding):
# two numbers further apart than this are different whatever the rounding does.
_CLEARLY_APART = Fraction(2, 10**6)


def _exact_number(s: str) -> Fraction | None:
    value = _as_number(s)
    return value if isinstance(value, Fraction) else None


def fallback_equivalent(a: str, b: str) -> bool:
    return normalize(a) == normalize(b) or same_number(a, b)


@functools.lru_cache(maxsize=1)
def _math_verify():
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    return parse, verify


# Clustering compares each answer with every earlier cluster's representative, and the
# same pair comes back once per configuration of a problem: 21,700 GSM8K records hold 413k
# distinct pairs asked 1.7M times. At 65,536 entries the cache evicted a pair before the
# next configuration asked again (`decoptim report` 6.8 min; 2.2 min at this size).
@functools.lru_cache(maxsize=2**20)
def is_equivalent(a: str | None, b: str | None) -> bool:
    """Mathematical equivalence of two answer strings (math-verify, else the fallback)."""
    if a is None or b is None:
        return False
    if fallback_equivalent(a, b):
        return True
    x, y = _exact_number(normalize(a)), _exact_number(normalize(b))
    if x is not None and y is not None and abs(x - y) > _CLEARLY_APART:
        return False  # math-verify would take milliseconds to agree
    backend = _math_verify()
    if backend is None:
        return False
    pa, pb = _parsed(a), _parsed(b)
    if not pa or not pb:
        return False
    verify = backend[1]
    try:
        return bool(verify(pa, pb) or verify(pb, pa))
    except Exception:  # math-verify raises on inputs its grammar cannot read
        return False


@functools.lru_cache(maxsize=65536)
def _parsed(answer: str) -> list | None:
    """math-verify's parse of one answer, kept: clustering compares each answer with every
    earlier cluster's, and parsing is most of a comparison's cost."""
    try:
        return _math_verify()[0](f"${answer}$")
    except Exception:  # math-verify raises on inputs its grammar cannot read
        return None


def has_math_verify() -> bool:
    return _math_verify() is not None
