"""The exception hierarchy, and the one place that turns any failure into a one-line message."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from edgeval.core.text import printable
from edgeval.core.units import format_bytes


class EdgevalError(Exception):
    """A failure the user can act on: `message` says what went wrong, `hint` what to do next."""

    hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint


class ModelFileError(EdgevalError):
    """A model file that is missing, truncated or not a GGUF file."""

    hint = "check the path, or download the file again with `edgeval pull`"

    def __init__(self, path: Path, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = path
        self.reason = reason


class LlamaError(EdgevalError):
    """llama.cpp refused an operation; `log_tail` holds its last log lines."""

    hint = "rerun with --verbose to see llama.cpp's log"

    def __init__(self, message: str, *, log_tail: tuple[str, ...] = (), hint: str | None = None) -> None:
        detail = f" ({log_tail[-1]})" if log_tail else ""
        super().__init__(message + detail, hint=hint)
        self.log_tail = log_tail


class QuantizeError(LlamaError):
    """llama.cpp's quantizer failed."""

    hint = "check that the source file is an F16/F32 GGUF and that the disk has room"


class ConfigurationError(EdgevalError):
    """A combination of settings that cannot run (for example a KV type this build does not support)."""

    hint = "change the settings named in the message"


class DiskFullError(EdgevalError):
    """A write that failed because the disk (or the user's quota on it) is full."""

    hint = "free some space on that disk, or point edgeval at another (EDGEVAL_HOME, --db, --out)"

    def __init__(self, path: Path | None, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: the disk is full" if path else "the disk is full", hint=hint)
        self.path = path


class NotEnoughMemoryError(EdgevalError):
    """A configuration predicted to need more memory than is available (refused before loading)."""

    hint = "choose a smaller model, token budget, k or KV type, or free memory; `edgeval run --force` tries anyway"

    def __init__(self, what: str, where: str, needed: int, available: int) -> None:
        super().__init__(
            f"{what} is predicted to need {format_bytes(needed)} of {where} but {format_bytes(available)} is available"
        )
        self.where, self.needed, self.available = where, needed, available


def is_disk_full(exc: OSError) -> bool:
    """Whether a failed write means the disk is full: ENOSPC or EDQUOT, or the short write numpy reports without
    an errno ("131072 requested and 96464 written")."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return exc.errno is None and "requested and" in str(exc) and "written" in str(exc)


def debug_enabled() -> bool:
    """Whether EDGEVAL_DEBUG asks for full tracebacks."""
    return os.environ.get("EDGEVAL_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def describe(exc: BaseException) -> str:
    """One line for the user: what went wrong and what to do next (any text it quotes from a file shown, never
    obeyed: `printable`)."""
    return printable(_describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EdgevalError):
        return f"{exc.message} — {exc.hint}" if exc.hint else exc.message
    if isinstance(exc, MemoryError):
        return "out of memory — choose a smaller model, context or k, or lower --budget"
    if isinstance(exc, OSError) and is_disk_full(exc):
        return _describe(DiskFullError(Path(str(exc.filename)) if exc.filename else None))
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        what = exc.strerror or str(exc)
        return f"{what}{where} — check the path, its permissions and the free disk space"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return (
        f"internal error ({type(exc).__name__}: {first_line}) — "
        "rerun with EDGEVAL_DEBUG=1 for the traceback and report it"
    )
