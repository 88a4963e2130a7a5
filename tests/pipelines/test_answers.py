"""Answer extraction and equivalence on real MATH500 and GSM8K answers."""

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoptim.pipelines.answers import (
    as_number,
    extract_answer,
    fallback_equivalent,
    gsm8k_gold,
    has_math_verify,
    is_equivalent,
    last_boxed,
)
from tests.conftest import shared_data


def load(name):
    with open(shared_data(name)) as f:
        return [json.loads(line) for line in f]


def test_boxed_answers_of_every_math500_solution_are_recovered():
    rows = load("math500.jsonl")
    assert len(rows) == 500
    wrong = [(r["answer"], extract_answer(r["solution"])) for r in rows]
    wrong = [(gold, got) for gold, got in wrong if got != gold]
    assert wrong == []


def test_math500_answers_are_equivalent_to_their_rewrites():
    """Real gold answers against forms a model might write instead."""
    answers = {r["answer"] for r in load("math500.jsonl")}
    rewrites = [
        ("\\frac{1}{8}", ["\\dfrac{1}{8}", "1/8", "0.125", "$\\frac18$"]),
        ("\\frac{\\sqrt{21}}{5}", ["\\dfrac{\\sqrt{21}}{5}", "\\sqrt{21}/5"]),
        ("(6,31,-1)", ["(6, 31, -1)", "\\left(6,31,-1\\right)"]),
        ("\\frac{3}{2}", ["1.5", "3/2"]),
    ]
    for gold, forms in rewrites:
        assert gold in answers, gold
        for form in forms:
            assert is_equivalent(gold, form), (gold, form)


@pytest.mark.parametrize(
    "gold,candidate",
    [
        ("[2,5)", "[2, 5)"),
        ("(-\\infty,3]", "(-\\infty, 3]"),
        ("30^\\circ", "30"),
        ("30^\\circ", "30°"),
        ("10\\text{ cm}", "10"),
        ("1,000", "1000"),
        ("12,345", "12345"),
        ("\\text{(C)}", "C"),
        ("x^2+1", "1+x^2"),
        ("\\pi/2", "\\frac{\\pi}{2}"),
        ("-\\frac{3}{4}", "-0.75"),
    ],
)
def test_equivalent_variants(gold, candidate):
    assert is_equivalent(gold, candidate)


@pytest.mark.parametrize(
    "gold,candidate",
    [
        ("[2,5)", "(2,5)"),
        ("5", "6"),
        ("\\frac{1}{8}", "\\frac{1}{9}"),
        ("1,000", "100"),
        ("(1,2)", "(2,1)"),
        ("x^2+1", "x^2-1"),
    ],
)
def test_non_equivalent_variants(gold, candidate):
    assert not is_equivalent(gold, candidate)


def test_fallback_without_math_verify():
    assert fallback_equivalent("\\dfrac{3}{4}", "0.75")
    assert fallback_equivalent("$1{,}000$".replace("{,}", ","), "1000")
    assert fallback_equivalent("45^\\circ", "45")
    assert fallback_equivalent("\\text{5 apples}".replace("5 apples", "5"), "5.0")
    assert not fallback_equivalent("\\frac{1}{3}", "0.33")
    assert has_math_verify()  # the test environment installs it


def test_gsm8k_gold_and_extraction():
    rows = load("gsm8k_test.jsonl")
    assert len(rows) == 1319
    assert all(
        extract_answer(r["answer"]) == r["answer"].rsplit("####", 1)[1].strip() for r in rows
    )
    assert all(is_equivalent(extract_answer(r["answer"]), gsm8k_gold(r["answer"])) for r in rows)
    # The last-number fallback on the rationale alone (before ####) finds most answers too.
    found = sum(
        is_equivalent(extract_answer(r["answer"].rsplit("####", 1)[0]), gsm8k_gold(r["answer"]))
        for r in rows
    )
    assert found / len(rows) > 0.95
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no marker")


def test_extraction_rules_in_order():
    assert last_boxed("so \\boxed{\\frac{a}{\\sqrt{b}}} and \\boxed{x^{2}}") == "x^{2}"
    assert last_boxed("\\boxed{unclosed") is None
    assert extract_answer("Thus the answer is $\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert extract_answer("The final answer is: 42") == "42"
    assert extract_answer("The answer is \\boxed{7}. The answer is 8") == "7"
    assert extract_answer("reasoning...\n#### 1,234") == "1,234"
    assert extract_answer("she pays 3 + 4 = 7 dollars, then 2,500 more") == "2,500"
    assert extract_answer("no digits here") is None
    assert extract_answer("The answer is \t") is None  # whitespace only: nothing stated
    assert extract_answer("3 + 4 = 7. The answer is \n") == "7"
    assert extract_answer("") is None


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.sampled_from(["", "$", " "]))
@settings(max_examples=60, deadline=None)
def test_integers_are_equivalent_exactly_when_equal_as_math_verify_says(a, b, wrap):
    """Two integers skip math-verify (milliseconds a call): the answer must be its answer."""
    from math_verify import parse, verify

    x, y = f"{wrap}{a:,}{wrap}" if abs(a) > 999 else f"{wrap}{a}{wrap}", f"{b}"
    expected = bool(verify(parse(f"${a}$"), parse(f"${b}$")))
    assert is_equivalent(x, y) == expected == (a == b)


def _numeral(value: Fraction, form: str) -> str:
    if form == "fraction":
        return f"{value.numerator}/{value.denominator}"
    if form == "frac":
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
    text = f"{float(value):.8f}".rstrip("0")  # a decimal numeral near the value
    return text.replace("0.", ".", 1) if form == "bare" and text.startswith("0.") else text


@given(
    st.fractions(min_value=-50, max_value=50, max_denominator=12),
    st.sampled_from([0, Fraction(1, 10**7), Fraction(1, 10**6), Fraction(3, 10**6), 1]),
    st.sampled_from(["fraction", "frac", "decimal", "bare"]),
    st.sampled_from(["fraction", "decimal", "bare"]),
)
@settings(max_examples=120, deadline=None)
def test_numbers_clearly_apart_skip_math_verify_and_keep_its_verdict(value, gap, form_a, form_b):
    """Decimals and fractions more than 2e-6 apart are unequal without math-verify (which
    rounds floats to 6 decimals): on numbers near and far apart the verdict is its own."""
    from math_verify import parse, verify

    a, b = _numeral(value, form_a), _numeral(value + gap, form_b)
    pa, pb = parse(f"${a}$"), parse(f"${b}$")
    expected = fallback_equivalent(a, b) or bool(pa and pb and (verify(pa, pb) or verify(pb, pa)))
    assert is_equivalent(a, b) == expected, (a, b)


def test_numbers_beyond_float_range_compare_without_error():
    """A model's run of digits: exact numbers past float's range are ±inf as floats, and
    still compare exactly (a run one digit longer is another answer)."""
    long, longer, ratio = "9" * 400, "9" * 401, "-" + "9" * 400 + "/3"
    assert as_number(long) == math.inf and as_number(ratio) == -math.inf
    assert is_equivalent(long, long + ".0")
    assert not is_equivalent(long, longer)
