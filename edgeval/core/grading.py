"""Answer extraction and grading: what a sample answered, and whether it is the reference answer.

Extraction is edgeval's own: the text after the last `</think>` (only a `\\boxed{}` counts when reasoning never
closed), the last brace-balanced `\\boxed{…}` (an unclosed one at the very end is read to the end, as budget forcing
leaves it), then "the answer is …" / "Answer: …" (or a JSON `{"answer": …}`), then the last number (the letters of a
multiple-choice answer). When the normalized strings differ, equivalence is Hugging Face's math-verify (the grader
lighteval uses): fractions, decimals, radicals, sets, intervals, tuples, percentages, units and degrees. It runs in
a helper process under a deadline (`mathcheck`); a slow or failed parse is a wrong answer, never an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

from edgeval.core.errors import EdgevalError
from edgeval.core.prompts import THINK_CLOSE, THINK_OPEN


class AnswerKind(str, Enum):
    """How a task's answers are extracted and compared."""

    INTEGER = "integer"  # AIME: an integer 0–999
    NUMBER = "number"  # GSM8K, arith: a number, commas and $ allowed
    MATH = "math"  # MATH-500: a LaTeX expression, compared for mathematical equivalence
    CHOICE = "choice"  # multiple choice: a letter


TASK_KINDS: dict[str, AnswerKind] = {
    "aime25": AnswerKind.INTEGER,
    "math500": AnswerKind.MATH,
    "gpqa-diamond": AnswerKind.CHOICE,
    "gsm8k": AnswerKind.NUMBER,
    "arith": AnswerKind.NUMBER,
}


class GradingError(EdgevalError):
    """A task whose answers edgeval cannot tell how to grade."""

    hint = f"name a task ({', '.join(TASK_KINDS)}) or an answer kind ({', '.join(k.value for k in AnswerKind)})"


def kind_of(task: str | AnswerKind) -> AnswerKind:
    """The answer kind of a built-in task name (arith:3:7 included) or a kind's own name."""
    if isinstance(task, AnswerKind):
        return task
    base = task.split(":", 1)[0] if task.startswith("arith:") else task
    if base in TASK_KINDS:
        return TASK_KINDS[base]
    try:
        return AnswerKind(task)
    except ValueError:
        raise GradingError(f"cannot tell how to grade task '{task}'") from None


@dataclass(frozen=True)
class Verdict:
    """A sample's answer as a vote (equivalent answers share one) and whether it is right."""

    answer: str | None  # None: no answer found; the sample casts no vote
    correct: bool


def grade(task: str | AnswerKind, text: str, reference: str) -> bool:
    """Whether a sample's text answers the reference (task: aime25, math500, gpqa-diamond, gsm8k, arith, or a kind)."""
    return judge(task, text, reference).correct


def judge(task: str | AnswerKind, text: str, reference: str) -> Verdict:
    """A sample's vote and verdict; every answer equivalent to the reference votes as the reference's form."""
    kind = kind_of(task)
    span = answer_span(text, kind)
    if span is None:
        return Verdict(None, False)
    answer = normalize(span, kind)
    gold = normalize(reference, kind)
    if answer is not None and answer == gold:
        return Verdict(answer, True)
    if kind in (AnswerKind.NUMBER, AnswerKind.INTEGER) and answer is not None and gold is not None:
        # Both are plain numbers in canonical form and they differ: no symbolic comparison can make them equal, and
        # asking math-verify's process would cost more than decoding a tiny model's answer.
        return Verdict(answer, False)
    if kind is not AnswerKind.CHOICE:
        same, key = equivalent(reference, span)
        if same:
            return Verdict(gold if gold is not None else key, True)
        if kind is AnswerKind.MATH:
            return Verdict(key or answer, False)  # sympy's form: \sqrt2 and \sqrt{2} vote together
        return Verdict(answer if kind is AnswerKind.INTEGER else answer or key, False)
    return Verdict(answer, False)


# ---------------------------------------------------------------- extraction


def final_text(text: str) -> str:
    """The part of a sample that holds the answer: after the last `</think>` when there is one."""
    _, sep, tail = text.rpartition(THINK_CLOSE)
    return tail if sep else text


def last_boxed(text: str) -> str | None:
    """Contents of the last brace-balanced `\\boxed{…}` or `\\fbox{…}` (unclosed at the end: up to the end)."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
    rest = text[start:].strip()
    return rest.splitlines()[0].strip() if rest else None


_ANSWER_IS = re.compile(
    r"\b(?:final\s+|correct\s+)?answer\s*(?:is\s*:?|:|=)\s*\**\s*\$?([^\n$]+)", re.IGNORECASE
)  # fmt: skip
_JSON_ANSWER = re.compile(r"\{[^{}]*\"answer\"\s*:[^{}]*\}", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_EQUALS = re.compile(r"(?<![<>!=:])=(?!=)")  # an equals sign, not part of <=, >=, !=, == or :=
_OPERATOR = re.compile(r"\s*(?:[+\-−*/×·÷^]|\\(?:times|cdot|div)\b)")
# Worked arithmetic before an `=`: numbers, operators, brackets and LaTeX commands, no words (so "12 since x = 3"
# is not one, and its answer stays 12).
_EXPRESSION = re.compile(r"(?:[\s\d.,+\-−*/×·÷^(){}\[\]$]|\\[a-zA-Z]+)+")


def _json_answer(body: str) -> str | None:
    for match in reversed(_JSON_ANSWER.findall(body)):
        try:
            value = json.loads(match)
        except json.JSONDecodeError:
            continue
        found = next((v for k, v in value.items() if k.lower() == "answer"), None)
        if isinstance(found, (str, int, float)):
            return str(found)
    return None


def _candidates(body: str, kind: AnswerKind) -> list[tuple[str, bool]]:
    """Where an answer may be, most explicit first; True marks a box (taken as the answer whatever it holds)."""
    found: list[tuple[str, bool]] = []
    boxed = last_boxed(body)
    if boxed is not None:
        found.append((boxed, True))
    said = _ANSWER_IS.findall(body)
    if said:
        stated = said[-1].strip().rstrip(".").strip().rstrip("*").strip()
        *worked, result = _EQUALS.split(stated)
        if kind is not AnswerKind.CHOICE and worked and result.strip() and _EXPRESSION.fullmatch("".join(worked)):
            # "the answer is 25 * 6 = 150": what a reader takes is the value after the last `=`.
            result = result.strip().rstrip(".").strip()
            found.append((result, False))
            leading = _NUMBER.match(result.replace("−", "-"))
            if leading and not _OPERATOR.match(result, leading.end()):
                found.append((leading.group(), False))  # "= 150. So we are done", not "= 25 * 6"
        found.append((stated, False))
        leading = _NUMBER.match(stated.replace("−", "-"))
        if leading and kind is not AnswerKind.CHOICE:
            found.append((leading.group(), False))  # "the answer is 62 and not 63"
    as_json = _json_answer(body)
    if as_json is not None:
        found.append((as_json, False))
    if kind is AnswerKind.CHOICE:
        found.append((body, False))
    else:
        numbers = _NUMBER.findall(body.replace("−", "-"))
        if numbers:
            found.append((numbers[-1], False))
    return found


def answer_span(text: str, kind: AnswerKind) -> str | None:
    """The raw text of the answer a sample gave (None when it gave none)."""
    body = final_text(text)
    if THINK_OPEN in text and THINK_CLOSE not in text:
        # Reasoning that never closed: only an explicit \boxed{} counts, not a number met on the way.
        boxed = last_boxed(body)
        candidates = [] if boxed is None else [(boxed, True)]
    else:
        candidates = _candidates(body, kind)
    for candidate, boxed_answer in candidates:
        if _accepts(candidate, kind, boxed_answer):
            return candidate
    return None


def _accepts(candidate: str, kind: AnswerKind, boxed: bool) -> bool:
    if kind is AnswerKind.CHOICE or (kind in (AnswerKind.NUMBER, AnswerKind.INTEGER) and not boxed):
        return normalize(candidate, kind) is not None
    return bool(_strip_latex(candidate))


def extract(text: str, kind: AnswerKind) -> str | None:
    """The answer a sample gave, normalized for its kind; None when there is none."""
    span = answer_span(text, kind)
    return None if span is None else normalize(span, kind)


# ---------------------------------------------------------------- normalization


def _strip_latex(text: str) -> str:
    s = text.strip().strip("$").strip()
    s = re.sub(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = s.replace("\\%", "").replace("%", "").replace("−", "-").replace("\\$", "$")
    return s.strip().rstrip(".").strip()


_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}|(-?\d+)\s*/\s*(\d+)")


def _number(text: str) -> str | None:
    """The canonical form of a number: an integer's exact digits (never rounded through a float, so integers past
    2^53 stay apart), anything else its float's shortest repr (its exact fraction beyond a float's range); None for
    numbers longer than Python converts (4,300 digits)."""
    try:
        return _exact_number(text)
    except ValueError:  # int's limit on digits
        return None


def _exact_number(text: str) -> str | None:
    s = _strip_latex(text).replace(",", "").replace("$", "").replace(" ", "")
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)
    fraction = _FRACTION.fullmatch(s)
    if fraction is not None:
        sign, num, den, plain_num, plain_den = fraction.groups()
        numerator, denominator = (int(num), int(den)) if num is not None else (int(plain_num), int(plain_den))
        if denominator == 0:
            return None
        value = (-1 if sign else 1) * Fraction(numerator, denominator)
    else:
        m = re.fullmatch(r"\(?(-?(?:\d+(?:\.\d+)?|\.\d+))\)?(?:[a-zA-Z]+)?", s)
        if not m:
            return None
        value = Fraction(m.group(1))
    if value.denominator == 1:
        return str(value.numerator)
    try:
        return repr(float(value))
    except OverflowError:
        return f"{value.numerator}/{value.denominator}"


def _choice(text: str) -> str | None:
    s = _strip_latex(text).replace("*", "").strip()
    alone = re.fullmatch(r"(?:option|choice)?\s*[(\[]?\s*([A-Ja-j])\s*[)\]]?[.:]?", s, re.IGNORECASE)
    if alone:
        return alone.group(1).upper()
    bracketed: list[str] = re.findall(r"\(([A-J])\)", s)
    if len(bracketed) > 1:  # "(A) is wrong, (B) is wrong, so (C)"
        return bracketed[-1]
    labelled = re.match(r"(?i:option|choice)?\s*(?:\(([A-Ja-j])\)|(A(?!\s+[a-z])|[B-HJ])(?![A-Za-z'’]))", s)
    if labelled:
        return (labelled.group(1) or labelled.group(2)).upper()
    # Free text: the last letter in parentheses, else the last capital standing alone — not the pronoun "I"
    # nor the article "A" (a capital A followed by a lower-case word).
    if bracketed:
        return bracketed[-1]
    letters: list[str] = re.findall(r"(?<![A-Za-z'’\\])(A(?!\s+[a-z])|[B-HJ])(?![A-Za-z'’])", s)
    return letters[-1] if letters else None


def normalize(text: str, kind: AnswerKind) -> str | None:
    """A canonical form of an answer for string comparison; None when it is not an answer of that kind."""
    if kind is AnswerKind.CHOICE:
        return _choice(text)
    if kind is AnswerKind.INTEGER:
        number = _number(text)
        if number is None or "." in number:
            return None
        value = int(number)
        return str(value) if 0 <= value <= 999 else None
    if kind is AnswerKind.NUMBER:
        return _number(text)
    s = _strip_latex(text)
    if not s:
        return None
    number = _number(s)
    if number is not None:
        return number
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)
    return s


def is_correct(answer: str | None, reference: str, kind: AnswerKind) -> bool:
    """Whether a normalized answer has the reference's normalized form (no symbolic comparison)."""
    if answer is None:
        return False
    gold = normalize(reference, kind)
    return gold is not None and answer == gold


def equivalent(reference: str, answer: str) -> tuple[bool, str | None]:
    """Whether an answer is mathematically the reference (math-verify, under a deadline), and its vote key."""
    from edgeval.core import mathcheck

    return mathcheck.equivalent(reference, answer)
