"""Answer extraction and grading on tricky outputs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeval.grading import AnswerKind, extract, is_correct, last_boxed, normalize

INT, N, M, C = AnswerKind.INTEGER, AnswerKind.NUMBER, AnswerKind.MATH, AnswerKind.CHOICE


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("<think>maybe 12</think>So \\boxed{70}.", INT, "70"),
        ("\\boxed{070}", INT, "70"),  # AIME: leading zeros dropped
        ("\\boxed{1000}", INT, None),  # out of AIME's range
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", M, "\\frac{1}{\\sqrt{2}}"),  # nested braces
        ("first \\boxed{1} then \\boxed{\\{2, 3\\}}", M, "\\{2,3\\}"),  # the last box counts
        ("\\boxed{\\text{(B)}}", C, "B"),
        ("Answer: (C)", C, "C"),
        ("The answer is D.", C, "D"),
        ("**A**", C, "A"),
        ("so we pay \\$1,234.", N, "1234"),
        ("\\boxed{\\$18.00}", N, "18"),
        ("#### 72", N, "72"),
        ("The final answer is 5 apples", N, "5"),
        ("<think>12 + 30 is 42 but wait", N, None),  # reasoning never closed: no answer
        ("<think>hmm</think>\n\nThe final answer is $\\boxed{42", N, "42"),  # forced, unclosed box
        ("no numbers here", N, None),
        ("", INT, None),
        ("\\boxed{x = 3}", M, "3"),
        ("\\boxed{90^\\circ}", M, "90"),
        ("\\boxed{\\dfrac{3}{4}}", M, "\\frac{3}{4}"),
    ],
)
def test_tricky_outputs(text: str, kind: AnswerKind, expected: str | None) -> None:
    assert extract(text, kind) == expected


def test_last_boxed_is_brace_balanced() -> None:
    assert last_boxed("\\boxed{a{b{c}}d} tail") == "a{b{c}}d"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("nothing") is None


@pytest.mark.parametrize(
    ("answer", "reference", "kind", "ok"),
    [
        ("70", "070", INT, True),
        ("1234", "1,234", N, True),
        ("\\frac{3}{4}", "\\dfrac{3}{4}", M, True),
        ("\\frac{3}{4}", "\\frac34", M, True),
        ("B", "B", C, True),
        ("A", "B", C, False),
        (None, "5", N, False),
    ],
)
def test_is_correct(answer: str | None, reference: str, kind: AnswerKind, ok: bool) -> None:
    assert is_correct(answer, reference, kind) is ok


@given(n=st.integers(-(10**9), 10**9))
def test_any_boxed_integer_round_trips(n: int) -> None:
    assert extract(f"</think>The final answer is $\\boxed{{{n}}}$.", N) == str(n)
    assert normalize(f"{n:,}", N) == str(n)


@given(n=st.integers(0, 999))
def test_aime_answers_normalize_to_their_integer(n: int) -> None:
    assert extract(f"\\boxed{{{n:03d}}}", INT) == str(n)
