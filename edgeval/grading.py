"""Answer extraction and grading (pure): what a sample answered, and whether it matches the reference.

Extraction order: the text after the last `</think>` (only a `\boxed{}` counts when reasoning never closed), the last
brace-balanced `\\boxed{…}` (an unclosed one at the very end is read to the end, as budget forcing leaves it),
then "the answer is …" / "Answer: …", then — for numeric tasks — the last number.
"""

from __future__ import annotations

import re
from enum import Enum

from edgeval.prompts import THINK_CLOSE, THINK_OPEN


class AnswerKind(str, Enum):
    """How a task's answers are normalized and compared."""

    INTEGER = "integer"  # AIME: an integer 0–999
    NUMBER = "number"  # GSM8K, arith: a number, commas and $ allowed
    MATH = "math"  # MATH-500: a LaTeX expression, compared after normalization
    CHOICE = "choice"  # multiple choice: a letter


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


_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*[:\s]*\$?([^\n$]+)", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"\banswer\s*:\s*\$?([^\n$]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def extract(text: str, kind: AnswerKind) -> str | None:
    """The answer a sample gave, normalized for its kind; None when there is none (it casts no vote)."""
    body = final_text(text)
    candidates: list[str] = []
    boxed = last_boxed(body)
    if boxed is not None:
        candidates.append(boxed)
    if THINK_OPEN in text and THINK_CLOSE not in text:
        # Reasoning that never closed: only an explicit \boxed{} counts, not a number met on the way.
        return normalize(boxed, kind) if boxed is not None else None
    for pattern in (_ANSWER_IS, _ANSWER_COLON):
        found = pattern.findall(body)
        if found:
            candidates.append(found[-1].strip().rstrip("."))
    if kind is AnswerKind.CHOICE:
        candidates.append(body)
    elif kind is not AnswerKind.MATH:
        numbers = _NUMBER.findall(body)
        if numbers:
            candidates.append(numbers[-1])
    for candidate in candidates:
        normalized = normalize(candidate, kind)
        if normalized is not None:
            return normalized
    return None


def _strip_latex(text: str) -> str:
    s = text.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = s.replace("\\%", "").replace("%", "")
    return s.strip().rstrip(".").strip()


def _number(text: str) -> str | None:
    s = _strip_latex(text).replace(",", "").replace("$", "").replace(" ", "")
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)(?:[a-zA-Z]+)?", s)
    if not m:
        return None
    value = float(m.group(1))
    return str(int(value)) if value == int(value) else repr(value)


def normalize(text: str, kind: AnswerKind) -> str | None:
    """A canonical form of an answer for comparison; None when it is not an answer of that kind."""
    if kind is AnswerKind.CHOICE:
        m = re.search(r"(?:answer\s*(?:is)?\s*:?\s*)?\(?\*{0,2}\b([A-J])\b\*{0,2}\)?", _strip_latex(text))
        letters = re.findall(r"(?<![A-Za-z])\(?([A-J])\)?(?![A-Za-z])", _strip_latex(text))
        if m and len(text.strip()) <= 12:
            return m.group(1)
        return letters[-1] if letters else None
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
    """Whether an extracted (normalized) answer matches the reference answer."""
    if answer is None:
        return False
    gold = normalize(reference, kind)
    return gold is not None and answer == gold
