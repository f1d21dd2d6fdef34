"""`edgeval regrade`: stored samples graded again from their text, on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edgeval.edges.store import ItemTiming, SampleRow, Store
from edgeval.faces.cli import cli


def _config(store: Store, key: str, task: str, answer_kind: str | None) -> int:
    fields: dict[str, object] = {
        "model": "tiny", "model_path": "/m.gguf", "model_sha256": "0" * 64, "weight_quant": "F16", "params": 1,
        "task": task, "task_fingerprint": key, "kv_type_k": "f16", "kv_type_v": "f16", "ctx": 64,
        "budget_tokens": 32, "k": 1, "thinking": 1, "sampling": "{}", "seed": 0, "n_items": 3, "kv_cells": 256,
        "predicted_bytes": 1, "answer_kind": answer_kind,
    }  # fmt: skip
    return store.upsert_config(key, fields)


def _sample(index: int, text: str, reference: str, answer: str | None, correct: bool) -> SampleRow:
    return SampleRow(index, f"q{index}", 0, reference, text, answer, correct, 10, False, "stop", 5)


def _fill(db: Path) -> None:
    with Store(db) as store:
        math = _config(store, "math", "math500", "math")
        # As the string-matching grader stored them: two wrong verdicts and one right.
        for sample in [
            _sample(0, "</think>\\boxed{\\sqrt2}", "\\sqrt{2}", "\\sqrt2", False),  # equivalent: now right
            _sample(1, "</think>\\boxed{0.5}", "\\frac{1}{2}", "0.5", True),  # unchanged
            _sample(2, "</think>\\boxed{3}", "4", "3", True),  # a wrong "right": now wrong
        ]:
            store.add_item(math, [sample], ItemTiming(sample.item_index, 5, 0.1, 10, 0.1, 0.1))
        # Stored before the answer kind was recorded: a JSONL task with letter references is graded as choices.
        legacy = _config(store, "legacy", "my-quiz", None)
        store.add_item(legacy, [_sample(0, "ANSWER: a", "A", None, False)], ItemTiming(0, 5, 0.1, 10, 0.1, 0.1))


def test_regrade_moves_the_verdicts_the_grader_now_reads_differently_and_only_once(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    _fill(db)
    first = CliRunner().invoke(cli, ["regrade", "--db", str(db), "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == {
        "configs": 2, "samples": 4, "now_right": 2, "now_wrong": 1, "answers_changed": 2, "moved": 3,
    }  # fmt: skip
    with Store(db) as store:
        math = store.configs("task = ?", ("math500",))[0]["id"]
        assert [(s.answer, s.correct) for s in store.samples(math)] == [
            ("\\sqrt{2}", True), ("0.5", True), ("3", False),
        ]  # fmt: skip
        assert store.configs("task = ?", ("my-quiz",))[0]["answer_kind"] == "choice"
    again = CliRunner().invoke(cli, ["regrade", "--db", str(db)])
    assert again.exit_code == 0, again.output
    assert "4 samples in 2 configurations: 0 verdicts moved" in again.output


def test_regrade_of_integers_past_two_to_the_53_and_worked_answers_moves_their_verdicts(tmp_path: Path) -> None:
    """Samples as the float-rounding grader stored them: a different integer past 2^53 graded right under its
    rounded value, and "25 * 6 = 150" read as 25."""
    db = tmp_path / "results.db"
    with Store(db) as store:
        big = _config(store, "big", "my-sums", "number")
        for sample in [
            _sample(0, "</think>The answer is $\\boxed{12345678901234567891}$", "12345678901234567890",
                    "12345678901234567168", True),
            _sample(1, "</think>\\boxed{9007199254740993}", "9007199254740992", "9007199254740992", True),
            _sample(2, "</think>\\boxed{9007199254740993}", "9007199254740993", "9007199254740992", True),
            _sample(3, "</think>So, the final answer is 25 * 6 = 150.", "150", "25", False),
        ]:  # fmt: skip
            store.add_item(big, [sample], ItemTiming(sample.item_index, 5, 0.1, 10, 0.1, 0.1))
    result = CliRunner().invoke(cli, ["regrade", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "configs": 1, "samples": 4, "now_right": 1, "now_wrong": 2, "answers_changed": 4, "moved": 3,
    }  # fmt: skip
    with Store(db) as store:
        assert [(s.answer, s.correct) for s in store.samples(big)] == [
            ("12345678901234567891", False),  # as written, and wrong
            ("9007199254740993", False),
            ("9007199254740993", True),  # right, and now stored as written
            ("150", True),
        ]
