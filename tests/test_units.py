"""Budget, token-count and duration syntax."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from edgeval.core.units import UnitError, format_bytes, format_seconds, parse_bytes, parse_duration, parse_tokens
from edgeval.faces.cli import cli

UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GB", 8 * 10**9), ("8GiB", 8 * 2**30), ("7.5GB", 7_500_000_000), ("8000MB", 8 * 10**9),
     ("512MiB", 512 * 2**20), (" 16 gb ", 16 * 10**9), ("1_000MB", 10**9)],
)  # fmt: skip
def test_examples_from_the_help(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@given(value=st.floats(0.01, 10_000, allow_nan=False), unit=st.sampled_from(list(UNITS)))
def test_any_amount_in_any_unit(value: float, unit: str) -> None:
    text = f"{value}{unit}"
    if round(value * UNITS[unit]) < 1:  # less than a byte: refused, not rounded to nothing
        with pytest.raises(UnitError, match="less than one byte"):
            parse_bytes(text)
        return
    assert parse_bytes(text) == round(value * UNITS[unit])
    assert parse_bytes(text.lower()) == parse_bytes(text)


@pytest.mark.parametrize("bad", ["8", "8.5", "GB", "8XB", "8 gigs", "-1GB", "0GB", "", "nanGB"])
def test_bare_numbers_and_unknown_units_are_refused(bad: str) -> None:
    with pytest.raises(UnitError):
        parse_bytes(bad)


def test_plan_budget_errors_are_usage_errors_with_an_example() -> None:
    for bad in ("8", "8XB"):
        result = CliRunner().invoke(cli, ["plan", "--budget", bad])
        assert result.exit_code == 2
        assert "8GB" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(("text", "n"), [("2048", 2048), ("2k", 2048), ("32K", 32768), ("0.5k", 512)])
def test_token_counts(text: str, n: int) -> None:
    assert parse_tokens(text) == n


@pytest.mark.parametrize("bad", ["2.5", "k", "-4k", "0"])
def test_bad_token_counts(bad: str) -> None:
    with pytest.raises(UnitError):
        parse_tokens(bad)


@given(n=st.integers(0, 10**13))
def test_format_bytes_round_trips_to_three_figures(n: int) -> None:
    text = format_bytes(n)
    if n >= 1000:
        assert parse_bytes(text.replace(" ", "")) == pytest.approx(n, rel=0.006)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("0.5s", 0.5), (".5s", 0.5),
     ("250ms", 0.25), ("2m", 120), ("1s500ms", 1.5), (" 0.25 S ", 0.25)],
)  # fmt: skip
def test_durations_take_fractions_and_milliseconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "0.5", "5x", "ms", "0ms", "1..5s", ".s", "-1s", "", "5 sec"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(UnitError):
        parse_duration(bad)


def test_answer_time_errors_are_usage_errors_naming_the_forms() -> None:
    result = CliRunner().invoke(cli, ["compare", "--budget", "8GB", "--answer-time", "fast", "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "250ms" in result.output and "0.5s" in result.output


@given(seconds=st.floats(1e-4, 5000, allow_nan=False))
def test_format_seconds_reads_back_within_its_two_figures(seconds: float) -> None:
    text = format_seconds(seconds)
    value, unit = text.split(" ")
    back = float(value) * {"ms": 1e-3, "s": 1, "min": 60, "h": 3600}[unit]
    assert back == pytest.approx(seconds, rel=0.05)  # two figures: 1.05 → "1.1", a 5% step at most
