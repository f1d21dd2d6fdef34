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
    step, names = (
        (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (1000, ("B", "kB", "MB", "GB", "TB"))
    )
    value = float(n)
    for name in names:
        if abs(value) < step or name == names[-1]:
            if name == "B":
                return f"{int(value)} B"
            return f"{value:.3g} {name}"
        value /= step
    raise AssertionError("unreachable")
