"""llama.cpp itself, before any model: initialising the library once, capturing its log, what this build can
do (its version, devices, GPU offload, which tensor types the CPU repacks) and quantizing GGUF files.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import llama_cpp

from edgeval.core import memory
from edgeval.core.errors import ConfigurationError, QuantizeError
from edgeval.core.quants import WeightQuant
from edgeval.core.text import printable

LLAMA_CPP_PYTHON_VERSION: str = llama_cpp.__version__


class _LogCapture:
    """Receives every llama.cpp log line instead of the terminal; keeps a bounded history."""

    def __init__(self, keep: int = 4000) -> None:
        self._lines: deque[str] = deque(maxlen=keep)
        self._partial = ""
        self._appended = 0  # lines ever logged; marks are positions in this count
        self._lock = threading.Lock()
        self._echo = False
        self._file: IO[str] | None = None
        # llama.cpp calls back through this object: it must stay referenced while installed.
        self._callback = llama_cpp.llama_log_callback(self._on_log)

    def install(self) -> None:
        """Route llama.cpp's log here (done by `initialise`, before llama.cpp's first work)."""
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _on_log(self, level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
        chunk = (text or b"").decode("utf-8", errors="replace")
        if self._echo:
            os.write(2, printable(chunk, lines=True).encode())  # the log quotes the file's header
        if self._file is not None:
            self._file.write(chunk)
            self._file.flush()
        with self._lock:
            parts = (self._partial + chunk).split("\n")
            self._partial = parts.pop()
            self._lines.extend(part.rstrip() for part in parts)
            self._appended += len(parts)

    def set_echo(self, echo: bool) -> None:
        """Also copy llama.cpp's log to stderr (`--verbose`)."""
        self._echo = echo

    @property
    def echo(self) -> bool:
        """Whether the log is copied to stderr."""
        return self._echo

    def tee(self, path: Path | None) -> None:
        """Also append the log to a file (flushed per line: a crash leaves its last lines there); None stops."""
        if self._file is not None:
            self._file.close()
        self._file = path.open("a", encoding="utf-8") if path is not None else None

    def replay(self, lines: list[str]) -> None:
        """Copy lines logged before the file and the echo were set (a model loaded ahead of its work) to both."""
        if self._echo:
            os.write(2, printable("".join(f"{line}\n" for line in lines), lines=True).encode())
        if self._file is not None:
            self._file.writelines(f"{line}\n" for line in lines)
            self._file.flush()

    def mark(self) -> int:
        """A position in the log; `since(mark)` returns what was logged after it."""
        with self._lock:
            return self._appended

    def since(self, mark: int) -> list[str]:
        """Lines logged after `mark` (as many as the bounded history still holds)."""
        with self._lock:
            missing = min(self._appended - mark, len(self._lines))
            return list(self._lines)[-missing:] if missing > 0 else []

    def tail(self, n: int = 5) -> tuple[str, ...]:
        """The last n non-empty lines."""
        with self._lock:
            lines = [line for line in self._lines if line.strip()]
        return tuple(lines[-n:])


LOG = _LogCapture()
_initialised = False


def initialise() -> None:
    """Capture llama.cpp's log and initialise its backends — once, on first use, not at import: commands that
    never run a model (plan, models) never pay for it."""
    global _initialised
    if not _initialised:
        LOG.install()
        llama_cpp.llama_backend_init()
        _initialised = True


def initialised() -> bool:
    """Whether llama.cpp's backends were initialised in this process."""
    return _initialised


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """Collect the log lines llama.cpp writes inside the block into the yielded list."""
    lines: list[str] = []
    start = LOG.mark()
    try:
        yield lines
    finally:
        lines.extend(LOG.since(start))


# ---------------------------------------------------------------- build facts


def system_info() -> str:
    """llama.cpp's own summary of the CPU features and backends this build uses."""
    initialise()
    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", errors="replace").strip()


def repacked_types(mode: memory.RepackMode = memory.RepackMode.ALL) -> dict[str, tuple[memory.RepackRule, ...]]:
    """The tensor types this build repacks on this CPU in `mode` (with the row multiple each needs), from its
    system info."""
    return memory.repacked_types(memory.system_info_features(system_info()), mode)


def supports_gpu_offload() -> bool:
    """Whether this llama.cpp build can put layers on a GPU (CUDA, Metal, Vulkan, ...)."""
    initialise()
    return bool(llama_cpp.llama_supports_gpu_offload())


@dataclass(frozen=True)
class Device:
    """A compute device llama.cpp's backends registered."""

    name: str
    description: str
    kind: str  # "cpu", "gpu", "igpu" or "accel"
    memory_total: int
    memory_free: int


_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


def ggml_library(stem: str) -> ctypes.CDLL | None:
    """One of the ggml libraries that llama-cpp-python ships beside libllama (already loaded by it)."""
    folder = Path(llama_cpp.llama_cpp._lib._name).parent
    for candidate in sorted(folder.glob(f"*{stem}.*")):
        if candidate.suffix in (".so", ".dylib", ".dll"):
            return ctypes.CDLL(str(candidate))
    return None


def extra_buffer_type(name: str) -> int | None:
    """The address of one of the CPU backend's extra buffer types ("AMX", "CPU_REPACK"), as llama.cpp's loader
    finds them (`ggml_backend_dev_get_extra_bufts`); None when this build has no such type."""
    initialise()
    reg, base = ggml_library("ggml"), ggml_library("ggml-base")
    if reg is None or base is None:
        return None
    reg.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    reg.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    cpu = reg.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    address = base.ggml_backend_reg_get_proc_address(
        base.ggml_backend_dev_backend_reg(cpu), b"ggml_backend_dev_get_extra_bufts"
    )
    if not cpu or not address:
        return None
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(cpu)
    i = 0
    while bufts and bufts[i]:
        if base.ggml_backend_buft_name(bufts[i]) == name.encode():
            return int(bufts[i])
        i += 1
    return None


def build_version() -> str | None:
    """ggml's version and the llama.cpp commit this build came from, e.g. `0.25.3 (0c1e570)`."""
    lib = ggml_library("ggml-base")
    if lib is None or not hasattr(lib, "ggml_commit"):
        return None
    lib.ggml_version.restype = ctypes.c_char_p
    lib.ggml_commit.restype = ctypes.c_char_p
    return f"{lib.ggml_version().decode()} ({lib.ggml_commit().decode()})"


def devices(*, with_memory: bool = True) -> list[Device]:
    """Every device of every backend this build has. Asking a GPU for its free memory creates a context on it
    (CUDA: about half a GiB held by this process for its lifetime), so `with_memory=False` leaves the figures at 0
    where only names are needed."""
    initialise()
    reg, base = ggml_library("ggml"), ggml_library("ggml-base")
    if reg is None or base is None:
        return []
    reg.ggml_backend_dev_count.restype = ctypes.c_size_t
    reg.ggml_backend_dev_get.restype = ctypes.c_void_p
    reg.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(base, fn).restype = ctypes.c_char_p
        getattr(base, fn).argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_type.restype = ctypes.c_int
    base.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    found = []
    for i in range(reg.ggml_backend_dev_count()):
        dev = reg.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        if with_memory:
            base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        found.append(
            Device(
                name=(base.ggml_backend_dev_name(dev) or b"").decode(),
                description=(base.ggml_backend_dev_description(dev) or b"").decode(),
                kind=_DEVICE_KINDS.get(base.ggml_backend_dev_type(dev), "other"),
                memory_total=total.value,
                memory_free=free.value,
            )
        )
    return found


def gpu_devices(*, with_memory: bool = True) -> list[Device]:
    """The GPUs (discrete or integrated) this build can offload to."""
    return [d for d in devices(with_memory=with_memory) if d.kind in ("gpu", "igpu")]


def backend_name() -> str:
    """The accelerator backend of this build (CUDA, Metal, Vulkan...), or CPU."""
    gpus = gpu_devices(with_memory=False)
    if gpus:
        # Device names carry the backend: CUDA0, Metal, Vulkan0.
        return ", ".join(sorted({d.name.rstrip("0123456789") for d in gpus}))
    return "CPU"


def default_threads() -> int:
    """Physical cores: llama.cpp's decode speed does not gain from hyper-threads."""
    import psutil

    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


# ---------------------------------------------------------------- quantization


def quantize(source: Path, target: Path, quant: WeightQuant, *, threads: int | None = None) -> None:
    """Write `source` (an F16/F32 GGUF) quantized to `quant` at `target` (its folder made if missing), with
    llama.cpp's quantizer."""
    initialise()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.value}", None)
    if ftype is None:
        raise ConfigurationError(f"this llama.cpp build cannot quantize to {quant.value}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or 0
    target.parent.mkdir(parents=True, exist_ok=True)  # llama.cpp reports a missing folder as "iostream error"
    start = LOG.mark()
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if rc != 0:
        raise QuantizeError(
            f"llama.cpp could not quantize {source.name} to {quant.value} (code {rc})",
            log_tail=tuple(LOG.since(start)[-3:]),
        )
