"""math-verify in a helper process, under a deadline: whether an answer is mathematically the reference.

sympy can spend unbounded time in C (a power tower such as 9^{9^{9^9}} turns into a bignum computation holding the
GIL), where neither math-verify's SIGALRM timeout (main thread only) nor any thread can stop it. So comparisons run
in one long-lived child process per grading process, fed JSON lines; a comparison past its deadline kills the child
(it is started again on the next comparison) and counts as not equivalent. Safe from any thread.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from edgeval.core import bounded

DEADLINE_S = 3.0  # a comparison takes milliseconds; the child's first import of sympy is outside it


@functools.cache
def _checker() -> bounded.Helper:
    return bounded.Helper("edgeval.core.mathcheck")


def equivalent(reference: str, answer: str, deadline_s: float = DEADLINE_S) -> tuple[bool, str | None]:
    """Whether `answer` is mathematically `reference` (math-verify), and the answer's vote key (sympy's form)."""
    reply = _checker().ask({"reference": reference, "answer": answer}, deadline_s)
    if isinstance(reply, str) or "same" not in reply:
        return False, None
    return bool(reply["same"]), reply["key"]


# ---------------------------------------------------------------- the child


def _parse(mv: Any, latex: str) -> list[Any]:
    targets = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]
    text = latex.strip()
    wrapped = text if "$" in text.strip("$") else f"${text.strip('$')}$"
    return list(mv.parse(wrapped, extraction_config=targets, parsing_timeout=None))


def _key(parsed: list[Any]) -> str | None:
    """A vote key: sympy's printing, decimals as fractions (so 0.5 and 1/2 agree)."""
    import sympy

    if not parsed:
        return None
    value = parsed[0]
    if isinstance(value, sympy.Float):
        value = sympy.nsimplify(value, rational=True)
    text = str(value)
    return text if len(text) <= 200 else None


def _compare(mv: Any, golds: dict[str, list[Any]], reference: str, answer: str) -> tuple[bool, str | None]:
    if reference not in golds:
        golds[reference] = _parse(mv, reference)
    gold = golds[reference]
    parsed = _parse(mv, answer)
    same = bool(gold and parsed and mv.verify(gold, parsed, timeout_seconds=None))
    return same, _key(parsed)


def serve() -> None:
    """The child: math-verify imported once, then one comparison per request."""
    logging.disable(logging.CRITICAL)  # math-verify logs each failed parse; the parent only needs the verdict
    import math_verify

    golds: dict[str, list[Any]] = {}

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        try:
            same, key = _compare(math_verify, golds, request["reference"], request["answer"])
        except Exception:
            same, key = False, None
        if len(golds) > 4096:
            golds.clear()
        return {"same": same, "key": key}

    bounded.serve(handle)
