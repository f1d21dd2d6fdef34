"""Hostile and broken inputs: sizes checked before work, and every value from a GGUF header, a catalog or a task
file checked where it enters — one line naming the file, the key and the value, never "internal error"."""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeval.edges import tasks
from edgeval.faces import demo
from edgeval.faces.cli import cli

from . import ggufcraft

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


U32, I32, U64, STR, ARR = 4, 5, 10, ggufcraft.STRING, ggufcraft.ARRAY


HEADERS = {
    "head_count 0": ("qwen3.attention.head_count", ggufcraft.Value(U32, 0), "qwen3.attention.head_count is 0"),
    "block_count 0": ("qwen3.block_count", ggufcraft.Value(U32, 0), "qwen3.block_count is 0"),
    "block_count 2^63": (
        "qwen3.block_count",
        ggufcraft.Value(U64, 1 << 63),
        "qwen3.block_count is 9223372036854775808",
    ),
    "negative heads": ("qwen3.attention.head_count_kv", ggufcraft.Value(I32, -2), "head_count_kv is -2"),
    "a boolean count": ("qwen3.embedding_length", ggufcraft.Value(7, True), "embedding_length is True, not an integer"),
    "unknown item type": (
        "x.list",
        ggufcraft.Value(ARR, (99, [ggufcraft.Value(U32, 1)] * 70)),
        "unknown value type 99",
    ),
    "nested deep": ("x.nested", ggufcraft.nested(3000), "nested over 4 deep"),
}


@pytest.mark.parametrize("case", list(HEADERS))
def test_a_header_value_out_of_range_is_one_line_naming_file_key_and_value(case: str, tmp_path: Path) -> None:
    key, value, message = HEADERS[case]
    header = ggufcraft.load(FAMILY["edgeval-tiny-s"]).with_kv(key, value)
    path = ggufcraft.write(header, tmp_path / "bad.gguf")
    code, out = _run("inspect", str(path))
    assert code == 1 and message in out and str(path) in out, out
    assert len(out.strip().splitlines()) == 1 and "internal error" not in out


def test_a_one_dimensional_token_embedding_is_named(tmp_path: Path) -> None:
    header = ggufcraft.load(FAMILY["edgeval-tiny-s"]).with_kv("tokenizer.ggml.tokens", None)
    tensors = tuple(replace(t, shape=(t.shape[0] * t.shape[1],)) if t.name == "token_embd.weight" else t
                    for t in header.tensors)  # fmt: skip
    path = ggufcraft.write(replace(header, tensors=tensors), tmp_path / "flat.gguf")
    code, out = _run("inspect", str(path))
    assert code == 1 and "token_embd.weight has shape [262144], not 2-D" in out, out


CATALOGS = {
    "files not a table": ('[models.m]\nparams = 1\nfiles = "x.gguf"\n', "has files = 'x.gguf', not a list"),
    "numbers as strings": (
        '[models.m]\nparams = "8e9"\nn_layer = 2\nn_embd = 8\nn_head = 2\nn_ff = 8\nn_vocab = 8\nn_ctx_train = 8\n'
        '[[models.m.files]]\nquant = "Q8_0"\nrepo = "a/b"\nfile = "c.gguf"\n',
        "params = '8e9' is not a whole number",
    ),
    "NaN": (
        "[models.m]\nparams = nan\nn_layer = 2\nn_embd = 8\nn_head = 2\nn_ff = 8\nn_vocab = 8\nn_ctx_train = 8\n"
        '[[models.m.files]]\nquant = "Q8_0"\nrepo = "a/b"\nfile = "c.gguf"\n',
        "params = nan is not a whole number",
    ),
    "head count 0": (
        "[models.m]\nparams = 9\nn_layer = 2\nn_embd = 8\nn_head = 0\nn_ff = 8\nn_vocab = 8\nn_ctx_train = 8\n"
        '[[models.m.files]]\nquant = "Q8_0"\nrepo = "a/b"\nfile = "c.gguf"\n',
        "n_head = 0 is out of range",
    ),
    "negative size": (
        "[models.m]\nparams = 9\nn_layer = 2\nn_embd = 8\nn_head = 2\nn_ff = 8\nn_vocab = 8\nn_ctx_train = 8\n"
        '[[models.m.files]]\nquant = "Q8_0"\nrepo = "a/b"\nfile = "c.gguf"\nsize = -1000000000\n',
        "size = -1000000000 is out of range",
    ),
}


@pytest.mark.parametrize("case", list(CATALOGS))
def test_a_catalog_value_of_the_wrong_type_is_one_line(case: str, tmp_path: Path) -> None:
    text, message = CATALOGS[case]
    catalog = tmp_path / "c.toml"
    catalog.write_text(text)
    code, out = _run("models", "--catalog", str(catalog))
    assert code == 1 and message in out and str(catalog) in out, out
    assert len(out.strip().splitlines()) == 1 and "internal error" not in out


def test_a_latin1_catalog_is_one_line(tmp_path: Path) -> None:
    catalog = tmp_path / "c.toml"
    catalog.write_bytes('[models.m]\ntitle = "Modèle"\n'.encode("latin-1"))
    code, out = _run("models", "--catalog", str(catalog))
    assert code == 1 and "not UTF-8 text" in out, out


TASK_LINES = {
    "answer null": ('{"question": "q?", "answer": null}', "the answer is null, not text or a number"),
    "answer a list": ('{"question": "q?", "answer": [5, 6]}', "the answer is a JSON array"),
    "choices a string": ('{"question": "q?", "answer": "A", "choices": "ABCD"}', "`choices` is text, not a list"),
    "choices a number": ('{"question": "q?", "answer": "A", "choices": 4}', "`choices` is the number 4"),
    "choices null": ('{"question": "q?", "answer": "A", "choices": null}', "`choices` is null"),
    "question a list": ('{"question": ["q?"], "answer": "1"}', "the question is a JSON array, not text"),
    "5,000 digits": ('{"question": "q?", "answer": ' + "7" * 5000 + "}", "line 1: not usable JSON (Exceeds the limit"),
}


@pytest.mark.parametrize("case", list(TASK_LINES))
def test_a_task_value_of_the_wrong_type_is_one_line_naming_the_line(case: str, tmp_path: Path) -> None:
    line, message = TASK_LINES[case]
    task = tmp_path / "t.jsonl"
    task.write_text(line + "\n")
    with pytest.raises(tasks.TaskError, match=re.escape(message)):
        tasks.load_task(str(task))


@pytest.mark.parametrize("budget", ["1e-30GB", "1e300GB"])
def test_a_budget_that_rounds_to_nothing_or_overflows_is_refused(budget: str) -> None:
    code, out = _run("plan", "--budget", budget)
    assert code == 2 and budget in out and "internal error" not in out, out
