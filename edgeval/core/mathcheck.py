"""math-verify in a helper process, under a deadline: whether an answer is mathematically the reference.

sympy can spend unbounded time in C (a power tower such as 9^{9^{9^9}} turns into a bignum computation holding the
GIL), where neither math-verify's SIGALRM timeout (main thread only) nor any thread can stop it. So comparisons run
in one long-lived child process per grading process, fed JSON lines; a comparison past its deadline kills the child
(it is started again on the next comparison) and counts as not equivalent. Safe from any thread.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

DEADLINE_S = 3.0  # a comparison takes milliseconds; the first one pays for importing sympy (about a second)
STARTUP_S = 30.0


class _Checker:
    """The child process and the lock that serializes requests to it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.started = False

    def _start(self) -> subprocess.Popen[str]:
        package_root = str(Path(__file__).resolve().parents[2])  # the directory holding edgeval/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
        self.started = False
        return subprocess.Popen(
            [sys.executable, "-c", "from edgeval.core.mathcheck import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def ask(self, reference: str, answer: str, deadline_s: float) -> tuple[bool, str | None]:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start()
            stdin, stdout = self.proc.stdin, self.proc.stdout
            if stdin is None or stdout is None:  # never: both pipes were asked for
                return False, None
            try:
                stdin.write(json.dumps({"reference": reference, "answer": answer}) + "\n")
                stdin.flush()
            except OSError:
                self._stop()
                return False, None
            line = _read_line(stdout, deadline_s + (0 if self.started else STARTUP_S))
            if line is None:
                self._stop()
                return False, None
            self.started = True
            reply = json.loads(line)
            return bool(reply["same"]), reply["key"]


def _read_line(stream: IO[str], timeout_s: float) -> str | None:
    """One line from the child within the time, or None (late, or the child died)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return None
    line = stream.readline()
    return line or None


@functools.cache
def _checker() -> _Checker:
    return _Checker()


def equivalent(reference: str, answer: str, deadline_s: float = DEADLINE_S) -> tuple[bool, str | None]:
    """Whether `answer` is mathematically `reference` (math-verify), and the answer's vote key (sympy's form)."""
    return _checker().ask(reference, answer, deadline_s)


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
    """The child's loop: one JSON request per line in, one JSON reply per line out."""
    logging.disable(logging.CRITICAL)  # math-verify logs each failed parse; the parent only needs the verdict
    import math_verify

    golds: dict[str, list[Any]] = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            same, key = _compare(math_verify, golds, request["reference"], request["answer"])
        except Exception:
            same, key = False, None
        if len(golds) > 4096:
            golds.clear()
        sys.stdout.write(json.dumps({"same": same, "key": key}) + "\n")
        sys.stdout.flush()
