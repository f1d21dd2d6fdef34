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
    return round(value * _UNITS[unit])


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
