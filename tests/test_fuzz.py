"""Fuzzing what strangers publish: a real tiny GGUF with its header mutated (counts, lengths, types, nesting, values,
tensor shapes), a catalog and a task file. For every mutation edgeval succeeds, or says what was wrong in one line
with exit 1 or 2 — never a traceback, never "internal error", never past a set time and memory. A bounded number of
examples runs with the suite; `pytest -m slow` runs many more."""

from __future__ import annotations

import json
import math
import struct
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeval.core import prompts
from edgeval.core.errors import EdgevalError, describe
from edgeval.edges import tasks
from edgeval.faces import demo
from edgeval.faces.cli import cli

from . import ggufcraft
from .ggufcraft import ARRAY, SCALARS, STRING, Value

SOURCE = next(s for s in demo.family_sources() if s.stem == "edgeval-tiny-s")
HEADER = ggufcraft.load(SOURCE)
SECONDS = 5.0  # one command on a mutated input
PEAK = 256 << 20  # bytes Python may allocate for it
FAST, SLOW = 40, 2000  # examples per property with the suite, and under the slow mark
EXAMPLES = [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)]

_RANGES = {"<B": (0, 255), "<b": (-128, 127), "<H": (0, 65535), "<h": (-32768, 32767), "<I": (0, 2**32 - 1),
           "<i": (-(2**31), 2**31 - 1), "<Q": (0, 2**64 - 1), "<q": (-(2**63), 2**63 - 1)}  # fmt: skip


def _scalar(vtype: int) -> st.SearchStrategy[Value]:
    fmt = SCALARS[vtype]
    if fmt in ("<f", "<d"):
        values: st.SearchStrategy[Any] = st.floats(width=32 if fmt == "<f" else 64)
    elif fmt == "<?":
        values = st.booleans()
    else:
        low, high = _RANGES[fmt]
        edges = st.sampled_from([v for v in (low, high, 0, 1, -1, 2, 64, 1 << 20) if low <= v <= high])
        values = st.one_of(edges, st.integers(low, high))
    return values.map(lambda v: Value(vtype, v))


scalars = st.sampled_from(sorted(SCALARS)).flatmap(_scalar)
strings = st.one_of(st.text(max_size=40), st.binary(max_size=40)).map(lambda v: Value(STRING, v))
# An array: items of one type (any, unknown ones too), around the 64 items edgeval keeps, or nested deep.
arrays = st.one_of(
    st.builds(
        lambda t, n: Value(ARRAY, (t, [Value(t, 0)] * n)) if t in SCALARS else Value(ARRAY, (t, [])),
        st.sampled_from(sorted(SCALARS)),
        st.integers(0, 130),
    ),
    st.builds(lambda n: Value(ARRAY, (STRING, [Value(STRING, "t" * (i % 7)) for i in range(n)])), st.integers(0, 70)),
    st.builds(
        lambda t, n: Value(ARRAY, struct.pack("<IQ", t, n) + b"\0" * 8 * min(n, 100)),
        st.integers(13, 2**32 - 1),
        st.integers(0, 200),
    ),
    st.integers(1, 5000).map(ggufcraft.nested),
)
values = st.one_of(scalars, strings, arrays, st.none())
keys = st.one_of(st.sampled_from(sorted(HEADER.kvs)), st.sampled_from(["qwen3.expert_count", "general.alignment"]))


@st.composite
def tensor_changes(draw: st.DrawFn) -> tuple[int, ggufcraft.Tensor]:
    index = draw(st.integers(0, len(HEADER.tensors) - 1))
    tensor = HEADER.tensors[index]
    dims = st.one_of(st.sampled_from([0, 1, 2, 32, 256, 2**31, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
    change = draw(st.sampled_from(["shape", "type", "offset"]))
    if change == "shape":
        tensor = replace(tensor, shape=tuple(draw(st.lists(dims, max_size=9))))
    elif change == "type":
        tensor = replace(tensor, ggml_type=draw(st.integers(0, 60)))
    else:
        tensor = replace(tensor, offset=draw(st.integers(0, 2**64 - 1)))
    return index, tensor


def _bounded(action: Callable[[], tuple[int, str]]) -> tuple[int, str]:
    """Run one command: within SECONDS and PEAK; its exit code and output."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        code, out = action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.monotonic() - started < SECONDS and peak < PEAK, (time.monotonic() - started, peak)
    return code, out


def _one_line_or_success(code: int, out: str) -> None:
    assert "Traceback" not in out and "internal error" not in out, out
    if code != 0:
        assert code in (1, 2) and len(out.strip().splitlines()) == 1, out


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the property fails with it
    return result.exit_code, result.output


@pytest.mark.parametrize("examples", EXAMPLES)
def test_a_mutated_gguf_header_is_read_or_refused_in_one_line(examples: int, tmp_path: Path) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(keys, values), min_size=1, max_size=3), st.lists(tensor_changes(), max_size=2))
    def check(kvs: list[tuple[str, Value | None]], changes: list[tuple[int, ggufcraft.Tensor]]) -> None:
        header = HEADER
        for key, value in kvs:
            header = header.with_kv(key, value)
        tensors = list(header.tensors)
        for index, tensor in changes:
            tensors[index] = tensor
        path = ggufcraft.write(replace(header, tensors=tuple(tensors)), tmp_path / "mutated.gguf")
        for args in (("inspect", str(path)), ("inspect", str(path), "--json")):
            _one_line_or_success(*_bounded(lambda args=args: _cli(*args)))

    check()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


MODEL = {"params": 600_000_000, "n_layer": 28, "n_embd": 1024, "n_head": 16, "n_head_kv": 8, "head_dim": 128,
         "n_ff": 3072, "n_vocab": 151936, "n_ctx_train": 40960, "thinking": "hybrid"}  # fmt: skip
FILE = {"quant": "Q8_0", "repo": "me/m-GGUF", "file": "m.gguf", "size": 640_000_000}
toml_values = st.recursive(
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans(), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_a_mutated_catalog_is_read_or_refused_in_one_line(examples: int, tmp_path: Path) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.sampled_from(["model", "file"]),
        st.sampled_from(sorted({*MODEL, *FILE, "files", "active_params", "n_expert", "parts", "sha256", "path"})),
        st.one_of(toml_values, st.none()),
    )
    def check(where: str, key: str, value: object) -> None:
        model, file = dict(MODEL), dict(FILE)
        entry = model if where == "model" else file
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
        files = model.pop("files", [file])
        lines = ["[models.m]", *(f"{k} = {_toml(v)}" for k, v in model.items())]
        if isinstance(files, list) and all(isinstance(f, dict) for f in files):
            lines += [
                line for f in files for line in ["[[models.m.files]]", *(f"{k} = {_toml(v)}" for k, v in f.items())]
            ]
        else:
            lines.insert(1, f"files = {_toml(files)}")
        catalog = tmp_path / "c.toml"
        catalog.write_text("\n".join(lines) + "\n")
        for args in (("models", "--catalog", str(catalog)), ("plan", "--budget", "4GB", "--models", "m", "--catalog",
                                                             str(catalog), "--json")):  # fmt: skip
            _one_line_or_success(*_bounded(lambda args=args: _cli(*args)))

    check()


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8,
)
record_keys = st.sampled_from(["question", "answer", "choices", "id"])


@pytest.mark.parametrize("examples", EXAMPLES)
def test_a_mutated_task_file_is_read_or_refused_in_one_line(examples: int, tmp_path: Path) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.dictionaries(record_keys, json_values, min_size=1), min_size=1, max_size=4),
           st.sampled_from(["", "[" * 100_000, "7" * 5000, "\xff", "{}", "NaN"]))  # fmt: skip
    def check(records: list[dict[str, object]], raw: str) -> None:
        base = [{"question": "What is 1 + 1?", "answer": "2"}]
        lines = [json.dumps({**base[0], **r}) for r in records] + ([raw] if raw else [])
        path = tmp_path / "t.jsonl"
        path.write_text("\n".join(lines) + "\n", errors="surrogateescape")

        def load() -> tuple[int, str]:
            try:
                task = tasks.load_task(str(path))
            except EdgevalError as exc:
                return 1, describe(exc)
            for item in task.items:
                tasks.prompt_text(prompts.ChatFormat(None), task, item, thinking=True)
            return 0, ""

        _one_line_or_success(*_bounded(load))

    check()
