"""Byte quantities as people write them: `8GB` (powers of ten) and `8GiB` (powers of two)."""

from __future__ import annotations

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def format_bytes(n: int | float, *, binary: bool = False) -> str:
    """`8.03 GB` (or `7.48 GiB` with binary=True), three significant figures."""
    step, names = (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (1000, ("B", "kB", "MB", "GB", "TB"))
    value = float(n)
    for name in names:
        if abs(value) < step or name == names[-1]:
            if name == "B":
                return f"{int(value)} B"
            return f"{value:.3g} {name}"
        value /= step
    raise AssertionError("unreachable")


class UnitError(ValueError):
    """A quantity written in a way edgeval does not read."""


def parse_bytes(text: str) -> int:
    """`8GB` → 8×10⁹, `8GiB` → 8×2³⁰, `7.5GB`, `8000MB`, `512MiB`; a bare number or unknown unit is refused."""
    cleaned = text.strip().replace(" ", "").replace("_", "")
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    unit = cleaned[len(number) :].lower()
    if not number or not unit:
        raise UnitError(f"'{text}' needs a unit, e.g. 8GB (10⁹ bytes) or 8GiB (2³⁰ bytes)")
    if unit not in _UNITS:
        raise UnitError(
            f"unknown unit '{cleaned[len(number) :]}' in '{text}': use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
        )
    try:
        value = float(number)
    except ValueError:
        raise UnitError(f"'{text}' is not a number with a unit, e.g. 7.5GB") from None
    if not value > 0 or value != value or value == float("inf"):
        raise UnitError(f"'{text}' must be a positive amount, e.g. 8GB")
    if value * _UNITS[unit] > 1e30:
        raise UnitError(f"'{text}' is more than any machine holds, e.g. 8GB")
    amount = round(value * _UNITS[unit])
    if amount < 1:
        raise UnitError(f"'{text}' is less than one byte, e.g. 8GB")
    return amount


def format_tokens(n: int) -> str:
    """A token count as the CLI takes it: `2k` for 2048, `48` for 48."""
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def parse_tokens(text: str) -> int:
    """A token count: `4096`, `4k` (= 4096), `32K`."""
    cleaned = text.strip().lower()
    try:
        value = float(cleaned[:-1]) * 1024 if cleaned.endswith("k") else float(cleaned)
    except ValueError:
        raise UnitError(f"'{text}' is not a token count, e.g. 4096 or 4k") from None
    if value < 1 or value != int(value):
        raise UnitError(f"'{text}' must be a whole, positive number of tokens")
    return int(value)


_DURATION_UNITS = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """A duration: `90s`, `30m`, `2h`, `1h30m`, `1.5h`, `0.5s`, `.5s`, `250ms`; a bare number or unknown unit is
    refused."""
    import re

    cleaned = text.strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)([a-z]+)", cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise UnitError(f"'{text}' is not a duration: use e.g. 250ms, 0.5s, 90s, 30m, 2h or 1h30m")
    total = 0.0
    for number, unit in parts:
        if unit not in _DURATION_UNITS:
            raise UnitError(f"unknown unit '{unit}' in '{text}': use ms, s, m or h")
        total += float(number) * _DURATION_UNITS[unit]
    if total <= 0:
        raise UnitError(f"'{text}' must be a positive duration, e.g. 30m")
    return total


def format_seconds(seconds: float) -> str:
    """A time to two significant figures (whole numbers from 10): `42 ms`, `0.85 s`, `3.2 s`, `45 s`, `1.5 min`,
    `2.5 h`."""
    if seconds < 0.1:
        value, unit = 1000 * seconds, "ms"
    elif seconds < 60:
        value, unit = seconds, "s"
    elif seconds < 3600:
        value, unit = seconds / 60, "min"
    else:
        value, unit = seconds / 3600, "h"
    return f"{value:.2g} {unit}" if value < 9.95 else f"{value:.0f} {unit}"


def format_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `2.5 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
