"""Grading on tricky outputs, one table per task kind.

The cases are written from what the reference graders document — math-verify/lighteval (equivalence of fractions,
decimals, radicals, sets, intervals, tuples, percentages, units and degrees; the gold parsed as LaTeX; letters
found after "Answer:"), Qwen2.5-Math's evaluation (last `\\boxed{}`, then "the answer is", then the last number;
choices cleaned of brackets and LaTeX) and lm-eval's GSM8K filters (`#### N`, the last number; commas, `$` and a
trailing period ignored) — plus edgeval's own extraction rules (only the text after `</think>` answers; an
unfinished reasoning answers only through a box; budget forcing's unclosed box is read to the end).
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeval.core import mathcheck
from edgeval.core.grading import (
    AnswerKind,
    GradingError,
    Verdict,
    extract,
    grade,
    is_correct,
    judge,
    kind_of,
    last_boxed,
    normalize,
)

THINK = "<think>\nLet me work it out.\n</think>\n\n"
FORCED = "<think>\nstill going when the budget ran out\n</think>\n\nThe final answer is $\\boxed{"

MATH500 = [
    ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{\\sqrt2}", "\\sqrt{2}", True),
    ("\\boxed{x^{2}+1}", "x^2+1", True),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac34", True),
    ("\\boxed{0.75}", "\\frac{3}{4}", True),
    ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", True),
    ("\\boxed{0.33}", "\\frac{1}{3}", False),
    ("\\boxed{90^\\circ}", "90", True),
    ("\\boxed{90}", "90^\\circ", True),
    ("\\boxed{x = 3}", "3", True),
    ("\\boxed{(1, 2)}", "(1,2)", True),
    ("\\boxed{(2, 1)}", "(1,2)", False),
    ("\\boxed{\\{1,2,3\\}}", "\\{3,2,1\\}", True),
    ("\\boxed{[2, 5)}", "[2,5)", True),
    ("\\boxed{[2, 5]}", "[2,5)", False),
    ("\\boxed{(-\\infty, 3]}", "(-\\infty,3]", True),
    ("\\boxed{x \\in [2,5]}", "[2,5]", True),
    ("\\boxed{2\\pi}", "2 \\pi", True),
    ("\\boxed{\\pi}", "3.14", False),
    ("\\boxed{1+\\sqrt{5}}", "\\sqrt{5}+1", True),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\dfrac{\\sqrt3}{2}", True),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}", True),
    ("\\boxed{11\\sqrt2}", "11\\sqrt{2}", True),
    ("\\boxed{-\\frac{1}{3}}", "\\frac{-1}{3}", True),
    ("\\boxed{10\\%}", "10", True),
    ("\\boxed{5\\text{ cm}}", "5", True),
    ("\\boxed{5 \\text{ inches}}", "5", True),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", True),
    ("\\boxed{1,000}", "1000", True),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    ("\\boxed{\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
    ("\\boxed{y = 2x + 3}", "y=2x+3", True),
    ("first \\boxed{1} then \\boxed{2}", "2", True),
    ("first \\boxed{2} then \\boxed{1}", "2", False),
    ("<think>\\boxed{5}</think> The answer is \\boxed{6}", "6", True),
    ("<think>so it is \\boxed{5}</think> The answer is 6.", "5", False),
    ("<think>the result is 42 and so", "42", False),
    ("<think>hmm\n\\boxed{42}", "42", True),
    (FORCED + "\\frac{1}{2}", "\\frac12", True),
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}", True),
    ("Final answer: $x^2 + 2x + 1$", "(x+1)^2", True),
    ("\\boxed{(x+1)^2}", "x^2+2x+1", True),
    ("\\boxed{x^2+2x}", "x^2+2x+1", False),
    ("\\boxed{\\frac{9}{4}}", "2.25", True),
    ("\\boxed{2.250}", "\\frac94", True),
    ("\\boxed{\\infty}", "\\infty", True),
    ("\\boxed{-\\infty}", "\\infty", False),
    ("\\boxed{3\\sqrt{3}}", "\\sqrt{27}", True),
    ("\\boxed{\\sqrt{27}}", "3\\sqrt{3}", True),
    ("\\boxed{4}", "\\sqrt{16}", True),
    ("\\boxed{5}", "\\sqrt{16}", False),
    ("\\boxed{\\$18}", "18", True),
    ("\\boxed{}", "5", False),
    ("no answer at all", "5", False),
    ("The answer is 5", "5", True),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3, \\pi)}", "\\left( 3, \\frac{\\pi}{2} \\right)", False),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", True),
    ("\\boxed{1+2i}", "1 + 2i", True),
    ("\\boxed{2i+1}", "1+2i", True),
    ("\\boxed{1-2i}", "1+2i", False),
    ("\\boxed{3, 5}", "3, 5", True),
    ("\\boxed{5, 3}", "3, 5", True),
    ("\\boxed{−2}", "-2", True),
    ("\\fbox{7}", "7", True),
    ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", True),
    ("\\boxed{4.67}", "\\frac{14}{3}", False),
    ("\\boxed{a+b}", "b+a", True),
    ("\\boxed{x}", "y", False),
    (THINK + "So $\\boxed{\\frac{7}{2}}$.", "3.5", True),
    (THINK + "The final answer is $\\boxed{\\frac{7}{2}}$. I hope it is correct.", "\\frac72", True),
]

AIME25 = [
    ("\\boxed{70}", "70", True),
    ("\\boxed{070}", "70", True),
    ("\\boxed{70}", "070", True),
    ("\\boxed{070}", "070", True),
    ("\\boxed{71}", "70", False),
    ("\\boxed{70.0}", "70", True),
    ("\\boxed{\\frac{140}{2}}", "70", True),
    ("\\boxed{1000}", "0", False),
    ("The answer is 204.", "204", True),
    ("**Answer:** 204", "204", True),
    ("Answer: $204$", "204", True),
    ("so 5 + 3 = 8. Final: 8", "8", True),
    ("<think>the sum is 204</think>The answer is \\boxed{204}", "204", True),
    ("<think>the sum is 204", "204", False),
    ("<think>wait\n\\boxed{204}", "204", True),
    (FORCED + "204", "204", True),
    (FORCED + "20", "204", False),
    ("\\boxed{204} but wait \\boxed{205}", "205", True),
    ("\\boxed{204} but wait \\boxed{205}", "204", False),
    ("\\boxed{ 33 }", "33", True),
    ("\\boxed{\\text{33}}", "33", True),
    ("\\boxed{33.5}", "33", False),
    ("\\boxed{-33}", "33", False),
    ("\\boxed{2^{5}}", "32", True),
    ("\\boxed{2^5}", "33", False),
    ("\\boxed{\\binom{5}{2}}", "10", True),
    ("\\boxed{5\\sqrt{2}}", "7", False),
    ("The answer is $\\boxed{113}$.", "113", True),
    ("\\boxed{113}.", "113", True),
    ("\\boxed{0}", "0", True),
    ("\\boxed{000}", "0", True),
    ("\\boxed{999}", "999", True),
    ("\\boxed{12 \\text{ ways}}", "12", True),
    ("\\boxed{\\$12}", "12", True),
    ("$\\boxed{25}$", "25", True),
    ("\\[ \\boxed{25} \\]", "25", True),
    ("Thus \\(m+n = 25\\).", "25", True),
    ("1, 2, then 3", "3", True),
    ("1, 2, then 3", "2", False),
    ("no answer", "3", False),
    ("", "3", False),
    (THINK, "3", False),
    (THINK + "The answer is **588**.", "588", True),
    (THINK + "Therefore $m+n=\\boxed{588}$", "588", True),
    (THINK + "\\boxed{588}", "589", False),
    ("\\boxed{\\textbf{588}}", "588", True),
    ("\\boxed{588}\n\nCheck: 500 + 88 = 588 and 12 remain.", "588", True),
    ("The answer is 62 and not 63", "62", True),
    ("\\boxed{62}\n\nAnswer: 63", "62", True),
    ("\\boxed{6 \\cdot 7}", "42", True),
    ("\\boxed{45 - 3}", "42", True),
    ("\\boxed{41.9999}", "42", False),
    ("\\boxed{42}", "42.0", True),
    ("\\boxed{\\dfrac{84}{2}}", "42", True),
    ("\\boxed{84/2}", "42", True),
    ("\\boxed{4 2}", "42", True),
    ("\\boxed{42^\\circ}", "42", True),
    ("\\boxed{42\\%}", "42", True),
    ("\\boxed{m+n}", "42", False),
    ("\\boxed{x = 42}", "42", True),
    ("$$\\boxed{\\mathbf{42}}$$", "42", True),
    ("The final answer is $\\boxed{42", "42", True),
]

GPQA = [
    ("\\boxed{A}", "A", True),
    ("\\boxed{a}", "A", True),
    ("\\boxed{\\text{C}}", "C", True),
    ("\\boxed{\\textbf{C}}", "C", True),
    ("\\boxed{(C)}", "C", True),
    ("\\boxed{C}", "D", False),
    ("Answer: (b)", "B", True),
    ("ANSWER: a", "A", True),
    ("Answer: D", "D", True),
    ("answer: d", "D", True),
    ('{"answer": "C"}', "C", True),
    ('```json\n{"answer": "c"}\n```', "C", True),
    ('{"reasoning": "A is wrong", "answer": "D"}', "D", True),
    ('{"answer":"b","reason":"the others fail"}', "B", True),
    ("The answer is B.", "B", True),
    ("The correct answer is (D).", "D", True),
    ("The final answer is **C**", "C", True),
    ("**Answer: C**", "C", True),
    ("Therefore, the answer is option C.", "C", True),
    ("I think it's B, but A could also work. Final answer: A", "A", True),
    ("(A) is wrong, (B) is wrong, so (C)", "C", True),
    ("A is tempting, but the right choice is D", "D", True),
    ("I believe the answer is B", "B", True),
    ("<think>It's B</think>\\boxed{C}", "B", False),
    ("<think>It must be B", "B", False),
    ("<think>long\n\\boxed{B}", "B", True),
    ("<think>x</think>\n\nThe answer is $\\boxed{D", "D", True),
    ("\\boxed{\\text{(B) } 42}", "B", True),
    ("\\boxed{B. 42 kg}", "B", True),
    ("Answer: B) 2.5 eV", "B", True),
    ("The answer is a bit unclear, but I pick (C).", "C", True),
    ("Option C", "C", True),
    ("option c", "C", True),
    ("choice B", "B", True),
    ("C.", "C", True),
    ("c", "C", True),
    ("A", "A", True),
    ("I am not sure.", "A", False),
    ("A good question. The answer is B.", "B", True),
    ("Both A and B are wrong; D", "D", True),
    ("None of the above", "A", False),
    ("The answer is E", "A", False),
    ("\\boxed{B}\\boxed{C}", "C", True),
    ("\\boxed{B}\\boxed{C}", "B", False),
    ("$\\boxed{\\mathrm{B}}$", "B", True),
    ("\\boxed{\\text{B}}.", "B", True),
    ("**B**", "B", True),
    ("**(B)**", "B", True),
    ("Answer:**B**", "B", True),
    ("Answer - B", "B", True),
    ("ANSWER IS B", "B", True),
    ("answer=c", "C", True),
    ("My answer is $\\boxed{C}$", "C", True),
    ("Final Answer: The final answer is C. I hope it is correct.", "C", True),
    (THINK + "Comparing the energies, (B) fits.\n\nAnswer: B", "B", True),
    (THINK + "Answer: B", "C", False),
    (THINK, "B", False),
    ("", "B", False),
    ("\\boxed{B}", "b", True),
    ("The answer is (A) because B and C contradict the data.", "A", True),
    ("\\boxed{\\textbf{(D)}}", "D", True),
    ("[D]", "D", True),
]

GSM8K = [
    ("#### 72", "72", True),
    ("The answer is 72.", "72", True),
    ("\\boxed{72}", "72", True),
    ("\\boxed{\\$72}", "72", True),
    ("\\boxed{72 \\text{ dollars}}", "72", True),
    ("\\boxed{72.00}", "72", True),
    ("\\boxed{1,234}", "1234", True),
    ("so we pay $1,234.", "1234", True),
    ("so she earns $18 per day", "18", True),
    ("\\boxed{18.5}", "18.5", True),
    ("\\boxed{18.50}", "18.5", True),
    ("\\boxed{-5}", "-5", True),
    ("\\boxed{−5}", "-5", True),
    ("\\boxed{5}", "-5", False),
    ("\\boxed{\\frac{3}{2}}", "1.5", True),
    ("\\boxed{3/2}", "1.5", True),
    ("\\boxed{50\\%}", "50", True),
    ("The answer is 3 hours.", "3", True),
    ("The final answer is 5 apples", "5", True),
    ("\\boxed{x = 12}", "12", True),
    ("\\boxed{12}", "13", False),
    ("<think>12 + 30 = 42</think>\n\\boxed{42}", "42", True),
    ("<think>12 + 30 = 42", "42", False),
    ("<think>so\n\\boxed{42}", "42", True),
    (FORCED + "42", "42", True),
    ("first 10 then 20", "20", True),
    ("first 10 then 20", "10", False),
    ("Total: 1,000,000", "1000000", True),
    ("\\boxed{1000000}", "1,000,000", True),
    ("\\boxed{42}.", "42", True),
    ("42.", "42", True),
    ("It costs $0.75.", "0.75", True),
    ("\\boxed{.75}", "0.75", True),
    ("\\boxed{6\\text{ cups}}", "6", True),
    ("\\boxed{6 cups}", "6", True),
    ("\\boxed{\\$ 6}", "6", True),
    ("\\boxed{6,000}", "6000", True),
    ("\\boxed{6.000}", "6", True),
    ("**Answer:** 15", "15", True),
    ("Answer: 15 minutes", "15", True),
    ("The answer is: 15", "15", True),
    ("#### 15\n\nThe answer is 16", "16", True),
    ("\\boxed{15} minutes, i.e. 0.25 hours", "15", True),
    ("Let me compute: 3 + 4 = 7", "7", True),
    ("3 + 4 = 7, so 7 cookies remain... wait 8", "8", True),
    ("no numbers here", "5", False),
    ("", "5", False),
    ("\\boxed{}", "5", False),
    ("\\boxed{1 234}", "1234", True),
    ("\\boxed{2.5\\text{ hours}}", "2.5", True),
    ("\\boxed{\\frac{5}{2}}", "2.5", True),
    ("\\boxed{5/0}", "5", False),
    ("\\boxed{10^{3}}", "1000", True),
    ("\\boxed{10^{3}}", "3", False),
    (THINK + "She has 5 + 7 = 12 eggs left.", "12", True),
    (THINK + "She has 5 + 7 = 12 eggs left.", "7", False),
    (THINK + "The answer is $\\boxed{\\$1,080}$.", "1080", True),
    ("\\boxed{1080.0}", "1080", True),
    ("\\boxed{1,080.50}", "1080.5", True),
    ("\\boxed{1080.5}", "1080", False),
    ("#### $ 36", "36", True),
    ("The answer is 36 and the remainder 0", "36", True),
]

ARITH = [
    ("\\boxed{376}", "376", True),
    ("47 × 8 = 376", "376", True),
    ("\\boxed{-12}", "-12", True),
    ("\\boxed{−12}", "-12", True),
    ("The answer is -12.", "-12", True),
    ("The answer is 12", "-12", False),
    ("\\boxed{(-12)}", "-12", True),
    ("\\boxed{0}", "0", True),
    ("\\boxed{-0}", "0", True),
    ("\\boxed{376.0}", "376", True),
    ("\\boxed{1,980}", "1980", True),
    ("$\\boxed{1980}$", "1980", True),
    ("\\boxed{1980}\n\n47 + 8 = 55", "1980", True),
    ("<think>47*8 = 376</think>376", "376", True),
    ("<think>47*8 = 376</think>", "376", False),
    ("<think>47*8=376", "376", False),
    ("<think>done\n\\boxed{376}", "376", True),
    (FORCED + "376", "376", True),
    (FORCED + "37", "376", False),
    ("\\boxed{376}$. Check: 376 / 8 = 47", "376", True),
    ("376", "376", True),
    (" 376 ", "376", True),
    ("three hundred seventy-six", "376", False),
    ("\\boxed{376 + 0}", "376", True),
    ("\\boxed{47 \\times 8}", "376", True),
    ("\\boxed{400 - 24}", "376", True),
    ("\\boxed{375}", "376", False),
    ("\\boxed{37.6}", "376", False),
    ("\\boxed{3760}", "376", False),
    ("-12", "12", False),
    ("\\boxed{-(12)}", "-12", True),
    ("What is 47 * 8? It is 376.", "376", True),
    ("What is 47 * 8? It is 376. Double check: 8 * 47 = 376.", "376", True),
    ("47 * 8 = 376, not 366", "376", False),
    ("\\boxed{ -15 }", "-15", True),
    ("\\boxed{+15}", "15", True),
    ("\\boxed{15}", "-15", False),
    ("The result of 93 - 108 is -15.", "-15", True),
    ("The result of 93 - 108 is −15.", "-15", True),
    ("93 - 108 = - 15", "-15", False),
    ("**-15**", "-15", True),
    ("\\(\\boxed{-15}\\)", "-15", True),
    ("\\[\\boxed{-15}\\]", "-15", True),
    ("Answer: -15", "-15", True),
    ("answer: -15.", "-15", True),
    ("The final answer is $\\boxed{-15}$.", "-15", True),
    ("The final answer is $\\boxed{-15", "-15", True),
    (THINK + "\\boxed{162}", "162", True),
    (THINK + "\\boxed{162}", "163", False),
    (THINK + "81 + 81 = 162", "162", True),
    (THINK + "81 + 81 = 162 and 2 * 81 = 162 too", "162", True),
    ("<think>81 + 81 = 162</think>\n\nThe answer is 160", "162", False),
    ("\\boxed{162.00}", "162", True),
    ("\\boxed{1.62 \\times 10^{2}}", "162", True),
    ("\\boxed{162\\ }", "162", True),
    ("\\boxed{\\mathbf{162}}", "162", True),
    ("\\boxed{\\text{162}}", "162", True),
    ("\\boxed{16 2}", "162", True),
    ("\\boxed{162,}", "162", True),
    ("\\boxed{}\n162", "162", True),
    ("\\boxed{x}", "162", False),
    ("\\boxed{9^{9^{9^{9}}}}", "162", False),
]

TABLES = {"math500": MATH500, "aime25": AIME25, "gpqa-diamond": GPQA, "gsm8k": GSM8K, "arith": ARITH}


@pytest.mark.parametrize(
    ("task", "text", "reference", "ok"),
    [pytest.param(task, *case, id=f"{task}-{i}") for task, table in TABLES.items() for i, case in enumerate(table)],
)
def test_reference_grader_cases(task: str, text: str, reference: str, ok: bool) -> None:
    assert grade(task, text, reference) is ok


def test_every_table_holds_at_least_sixty_tricky_outputs() -> None:
    assert {task: len(table) >= 60 for task, table in TABLES.items()} == dict.fromkeys(TABLES, True)


def test_equivalent_answers_cast_one_vote() -> None:
    votes = {judge("math500", t, "\\frac{1}{2}").answer for t in ("\\boxed{0.5}", "\\boxed{\\frac12}", "\\boxed{1/2}")}
    assert len(votes) == 1
    wrong = {judge("math500", t, "3").answer for t in ("\\boxed{\\sqrt2}", "\\boxed{\\sqrt{2}}")}
    assert len(wrong) == 1
    assert judge("gsm8k", "no number", "5").answer is None


def test_a_slow_comparison_is_a_wrong_answer_not_a_hang() -> None:
    started = time.perf_counter()
    assert grade("math500", "\\boxed{9^{9^{9^{9}}}}", "5") is False
    assert time.perf_counter() - started < 10


def test_grading_off_the_main_thread_keeps_its_deadline() -> None:
    verdicts: list[bool] = []

    def work() -> None:
        verdicts.append(grade("math500", "\\boxed{0.5}", "\\frac{1}{2}"))
        verdicts.append(grade("math500", "\\boxed{\\sqrt2}", "\\sqrt{2}"))
        verdicts.append(grade("math500", "\\boxed{9^{9^{9^{9}}}}", "5"))

    thread = threading.Thread(target=work)
    started = time.perf_counter()
    thread.start()
    thread.join(30)
    assert verdicts == [True, True, False]
    assert time.perf_counter() - started < 10


def test_a_late_comparison_kills_the_helper_and_the_next_one_starts_a_fresh_one() -> None:
    assert mathcheck.equivalent("1", "1") == (True, "1")  # started, sympy imported
    first = mathcheck._checker().proc
    assert mathcheck.equivalent("5", "9^{9^{9^{9}}}", deadline_s=0.5) == (False, None)
    assert mathcheck._checker().proc is None
    assert mathcheck.equivalent("\\frac{1}{2}", "0.5") == (True, "1/2")
    assert mathcheck._checker().proc is not first


def test_kind_of_knows_tasks_and_kinds() -> None:
    assert kind_of("arith:3:7") is AnswerKind.NUMBER
    assert kind_of("math") is AnswerKind.MATH
    assert kind_of(AnswerKind.CHOICE) is AnswerKind.CHOICE
    with pytest.raises(GradingError, match="mystery"):
        kind_of("mystery")


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
        ("\\boxed{\\dfrac{3}{4}}", M, "0.75"),
    ],
)
def test_extraction(text: str, kind: AnswerKind, expected: str | None) -> None:
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
        ("0.75", "\\dfrac{3}{4}", M, True),
        ("B", "B", C, True),
        ("A", "B", C, False),
        (None, "5", N, False),
    ],
)
def test_is_correct_compares_normal_forms(answer: str | None, reference: str, kind: AnswerKind, ok: bool) -> None:
    assert is_correct(answer, reference, kind) is ok


@given(n=st.integers(-(10**9), 10**9))
def test_any_boxed_integer_round_trips(n: int) -> None:
    assert extract(f"</think>The final answer is $\\boxed{{{n}}}$.", N) == str(n)
    assert normalize(f"{n:,}", N) == str(n)


@given(n=st.integers(0, 999))
def test_aime_answers_normalize_to_their_integer(n: int) -> None:
    assert extract(f"\\boxed{{{n:03d}}}", INT) == str(n)


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_grades_without_raising(text: str) -> None:
    for task in TABLES:
        assert grade(task, text, "5") in (True, False)


TWO_53 = 2**53


@pytest.mark.parametrize("kind", [N, M])
@pytest.mark.parametrize(
    ("written", "reference", "stored"),
    [
        ("12345678901234567891", "12345678901234567890", "12345678901234567891"),  # found on real model text
        (str(TWO_53 + 1), str(TWO_53), str(TWO_53 + 1)),  # the first integer a float cannot hold
        (str(TWO_53 - 1), str(TWO_53), str(TWO_53 - 1)),  # below 2^53, where floats are still exact
        (f"{TWO_53 + 1:,}", str(TWO_53 + 3), str(TWO_53 + 1)),  # with commas
        (str(-(10**30) - 1), str(-(10**30)), str(-(10**30) - 1)),
        ("\\frac{24691357802469135782}{2}", "12345678901234567890", "12345678901234567891"),  # an exact quotient
    ],
)
def test_integers_past_two_to_the_53_are_compared_and_stored_exactly(
    kind: AnswerKind, written: str, reference: str, stored: str
) -> None:
    assert judge(kind, f"</think>The answer is $\\boxed{{{written}}}$", reference) == Verdict(stored, False)
    assert judge(kind, f"</think>The answer is $\\boxed{{{reference}}}$", reference) == Verdict(reference, True)


@given(n=st.integers(-(2**80), 2**80))
def test_any_large_boxed_integer_round_trips_as_written(n: int) -> None:
    assert extract(f"</think>The final answer is $\\boxed{{{n}}}$.", N) == str(n)
    assert normalize(f"{n:,}", N) == str(n) == normalize(f"{n}.000", N)
    assert grade(N, f"\\boxed{{{n + 1}}}", str(n)) is False


def test_numbers_too_long_for_a_float_or_for_int_are_no_answer_not_a_crash() -> None:
    assert normalize("7" * 400, N) == "7" * 400  # beyond a float's range: main raised OverflowError
    assert (
        normalize("7" * 400 + ".5", N) == f"{2 * int('7' * 400) + 1}/2"
    )  # a non-integer beyond it: its exact fraction
    assert normalize("7" * 5000, N) is None  # past Python's 4,300-digit limit on int(str)
    assert grade(N, "\\boxed{" + "7" * 5000 + "}", "7") is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So, the final answer is 25 * 6 = 150.", "150"),  # found on real model text (main read 25)
        ("The answer is 3 \\times 4 = 12. That is all.", "12"),
        ("The answer is (2 + 3) * 4 = 20", "20"),
        ("The answer is 10 / 4 = 2.5", "2.5"),
        ("The answer is 1 + 1 = 2 = 2.0", "2"),  # the last `=`
        ("The answer is 150 = 25 * 6.", "150"),  # after the `=` is no number: the leading one stands
        ("The answer is 12 since x = 3", "12"),  # words before the `=`: not worked arithmetic
        ("The answer is 7, as 2 + 5 = 7", "7"),
        ("The answer is 4 >= 3", "4"),  # not an equals sign
    ],
)
def test_the_value_after_the_last_equals_sign_is_the_answer(text: str, expected: str) -> None:
    assert extract(f"</think>{text}", N) == expected
    assert judge(N, f"</think>{text}", expected).correct
