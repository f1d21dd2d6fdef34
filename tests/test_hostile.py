"""Hostile and broken inputs: sizes checked before work, and every value from a GGUF header, a catalog or a task
file checked where it enters — one line naming the file, the key and the value, never "internal error"."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

from click.testing import CliRunner

from edgeval.faces import demo
from edgeval.faces.cli import cli

FAMILY = {s.stem: s for s in demo.family_sources()}


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_a_question_longer_than_the_context_is_refused_from_its_bytes_before_tokenizing(tmp_path: Path) -> None:
    task = tmp_path / "huge.jsonl"
    task.write_text(json.dumps({"question": "What is " + "1 + " * 2_000_000 + "1?", "answer": "1"}) + "\n")
    tracemalloc.start()
    started = time.monotonic()
    code, out = _run("run", str(FAMILY["edgeval-tiny-s"]), "--task", str(task), "--db", str(tmp_path / "x.db"),
                     "--budget-tokens", "16")  # fmt: skip
    elapsed, (_, peak) = time.monotonic() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert code == 1 and "question 1 of huge is too long (8 MB, at least" in out, out
    assert "budget" not in out.split("—")[-1] and len(out.strip().splitlines()) == 1
    assert elapsed < 5 and peak < 200 << 20  # tokenizing it would hold a list of millions of ints


def test_a_prompt_the_context_cannot_hold_names_the_question_not_the_budget(tmp_path: Path) -> None:
    task = tmp_path / "long.jsonl"
    task.write_text(json.dumps({"question": "What is " + "1 + " * 2000 + "1?", "answer": "1"}) + "\n")
    code, out = _run("run", str(FAMILY["edgeval-tiny-s"]), "--task", str(task), "--db", str(tmp_path / "x.db"),
                     "--budget-tokens", "16")  # fmt: skip
    assert code == 1 and "the longest prompt is" in out and "shorten the task's longest question" in out, out
    assert "--budget-tokens" not in out
