"""Every kind of failure becomes one line that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeval.core.errors import (
    ConfigurationError,
    LlamaError,
    ModelFileError,
    QuantizeError,
    debug_enabled,
    describe,
)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ModelFileError(Path("m.gguf"), "truncated"), ["m.gguf: truncated", "edgeval pull"]),
        (ConfigurationError("bad kv", hint="use f16"), ["bad kv — use f16"]),
        (
            LlamaError("load failed", log_tail=("a", "last log line")),
            ["load failed (last log line)", "--verbose"],
        ),
        (QuantizeError("quantize failed"), ["quantize failed", "F16/F32"]),
        (FileNotFoundError(2, "No such file or directory", "/x/y"), ["No such file or directory: /x/y"]),
        (MemoryError(), ["out of memory"]),
        (ValueError("odd\nmore"), ["internal error (ValueError: odd)", "EDGEVAL_DEBUG=1"]),
    ],
)
def test_describe_is_one_line_with_the_facts(exc: BaseException, expected: list[str]) -> None:
    line = describe(exc)
    assert "\n" not in line
    for part in expected:
        assert part in line


@pytest.mark.parametrize(("value", "on"), [("1", True), ("true", True), ("0", False), ("", False), ("no", False)])
def test_debug_flag(value: str, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEVAL_DEBUG", value)
    assert debug_enabled() is on
