"""llama.cpp, through llama-cpp-python's low-level API: the only module that imports `llama_cpp`.

It loads GGUF models (repacking on or off, GPU layers), creates contexts with chosen KV-cache types,
decodes k sequences of one prompt together in one context, quantizes files, and captures llama.cpp's log.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import llama_cpp
import numpy as np
import numpy.typing as npt

from edgeval import memory
from edgeval.errors import ConfigurationError, EdgevalError, LlamaError, ModelFileError, QuantizeError
from edgeval.memory import eviction_chunk, own_cells
from edgeval.prompts import THINKING_SAMPLING, Sampling
from edgeval.quants import KVType, WeightQuant

LLAMA_CPP_PYTHON_VERSION: str = llama_cpp.__version__
SCORE_BATCH = 128  # tokens per teacher-forced decode: every one wants a logits row (128 × vocab × 4 B of output)
_Row = TypeVar("_Row")


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
            os.write(2, chunk.encode())
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


def _ggml_library(stem: str) -> ctypes.CDLL | None:
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
    reg, base = _ggml_library("ggml"), _ggml_library("ggml-base")
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
    lib = _ggml_library("ggml-base")
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
    reg, base = _ggml_library("ggml"), _ggml_library("ggml-base")
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


# ---------------------------------------------------------------- models


def check_gguf_file(path: Path) -> None:
    """Refuse, before llama.cpp sees it, a path that is missing or is not a GGUF file."""
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if path.is_dir():
        raise ModelFileError(path, "is a folder, not a .gguf file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(path, "not a GGUF file (its first bytes are not 'GGUF')")


@dataclass(frozen=True)
class LoadOptions:
    """How a model file is loaded."""

    n_gpu_layers: int | None = None  # None: all layers on a GPU build, 0 on a CPU-only build
    # llama.cpp's weight repacking ("extra buffer types"; AMX, AVX2/AVX-512 and ARM paths): a RepackMode, or True
    # for llama.cpp's own choice (RepackMode.ALL) and False for none.
    repack: bool | memory.RepackMode = False
    use_mmap: bool | None = None  # None: off when repacking, else on (memory.mmap_for says why)
    vocab_only: bool = False
    cpu_moe: int = 0  # mixture of experts: keep the first N layers' expert weights on the CPU (-1: all layers)

    @property
    def repack_mode(self) -> memory.RepackMode:
        """The repacking mode asked for."""
        return memory.RepackMode.of(self.repack)

    @property
    def mmap(self) -> bool:
        """Whether the file is memory-mapped."""
        return memory.mmap_for(self.repack_mode.on) if self.use_mmap is None else self.use_mmap

    def gpu_layers(self) -> int:
        """The resolved number of layers to offload (-1 means all)."""
        if self.n_gpu_layers is not None:
            return self.n_gpu_layers
        return -1 if supports_gpu_offload() else 0


class _BuftOverride(ctypes.Structure):
    """llama.cpp's llama_model_tensor_buft_override: tensors whose name matches `pattern` go to buffer type `buft`."""

    _fields_ = (("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p))


# llama.cpp's own pattern for the expert weights of one layer (common.h: llm_ffn_block_regex with LLM_FFN_EXPS_REGEX).
_EXPERTS_OF_LAYER = r"blk\.{layer}\.ffn_(up|down|gate|gate_up)_(ch|)exps"


def _expert_overrides(cpu_moe: int) -> list[_BuftOverride]:
    """Tensor overrides keeping the expert weights of the first `cpu_moe` layers (-1: all) in CPU memory, as
    llama.cpp's `--n-cpu-moe N` / `--cpu-moe` build them; none when there is nothing to keep. Overriding to the CPU
    buffer type still lets llama.cpp repack those weights (its loader tries the CPU's extra buffers first)."""
    if cpu_moe == 0:
        return []
    base = _ggml_library("ggml-base")
    if base is None:
        raise LlamaError("this llama-cpp-python build does not expose ggml's CPU buffer type (needed for --cpu-moe)")
    base.ggml_backend_cpu_buffer_type.restype = ctypes.c_void_p
    cpu = base.ggml_backend_cpu_buffer_type()
    layers = r"\d+" if cpu_moe < 0 else "|".join(str(i) for i in range(cpu_moe))
    pattern = _EXPERTS_OF_LAYER.format(layer=layers if cpu_moe < 0 else f"({layers})")
    return [_BuftOverride(pattern.encode(), cpu)]


def buft_override_patterns(names: Sequence[str]) -> list[str]:
    """Regular expressions (llama.cpp's std::regex, ECMAScript) matching exactly these tensor names, one per
    per-layer tensor kind (`^blk\\.(?:0|3)\\.ffn_up\\.weight$`): llama.cpp tries every pattern on every tensor,
    so a few patterns load faster than one per tensor."""
    layers: dict[str, list[str]] = {}
    single = []
    for name in names:
        head, _, rest = name.partition(".")
        index, _, kind = rest.partition(".")
        if head == "blk" and index.isdigit() and kind:
            layers.setdefault(kind, []).append(index)
        else:
            single.append(f"^{re.escape(name)}$")
    grouped = [f"^blk\\.(?:{'|'.join(indices)})\\.{re.escape(kind)}$" for kind, indices in layers.items()]
    return grouped + single


def _cpu_repack_overrides(path: Path) -> list[_BuftOverride]:
    """Buffer overrides that put every weight CPU_REPACK can take into it, with the other extra buffers off."""
    from edgeval import gguf_info

    buft = extra_buffer_type("CPU_REPACK")
    if buft is None:
        raise ConfigurationError("this llama.cpp build has no CPU_REPACK buffer type", hint="load with --no-repack")
    names = gguf_info.read_local(path).repacked_tensors(repacked_types(memory.RepackMode.CPU_REPACK))
    return [_BuftOverride(p.encode(), buft) for p in buft_override_patterns(names)]


def _override_array(rows: Sequence[_BuftOverride]) -> ctypes.Array[_BuftOverride] | None:
    """The NULL-terminated array llama.cpp reads (None: no overrides)."""
    return (_BuftOverride * (len(rows) + 1))(*rows) if rows else None  # the last entry stays zeroed


class Model:
    """A loaded GGUF model; use as a context manager or call close()."""

    def __init__(self, path: Path, options: LoadOptions = LoadOptions()) -> None:
        check_gguf_file(path)
        initialise()
        self.path = path
        self.options = options
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = options.gpu_layers()
        mode = options.repack_mode
        params.use_extra_bufts = mode is memory.RepackMode.ALL
        if mode is memory.RepackMode.CPU_REPACK and params.n_gpu_layers != 0:
            raise ConfigurationError("CPU_REPACK-only repacking is for CPU runs", hint="offload no layers")
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if options.mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        params.vocab_only = options.vocab_only
        if params.n_gpu_layers == 0:
            # No devices at all, not merely no layers: otherwise a GPU build still creates a GPU context and a
            # compute buffer there to offload large matrix products (llama.cpp's op offload), which a CPU run
            # neither wants nor measures.
            self._no_devices = (ctypes.c_void_p * 1)()
            params.devices = ctypes.cast(self._no_devices, ctypes.c_void_p)
        repack_rows = _cpu_repack_overrides(path) if mode is memory.RepackMode.CPU_REPACK else []
        # llama.cpp reads the overrides while loading: they live as long as the model.
        self._overrides = _override_array([*repack_rows, *_expert_overrides(options.cpu_moe)])
        if self._overrides is not None:
            params.tensor_buft_overrides = ctypes.cast(self._overrides, ctypes.c_void_p)
        start = LOG.mark()
        t0 = time.perf_counter()
        self._ptr: llama_cpp.llama_model_p | None = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        self.load_s = time.perf_counter() - t0
        self.load_log = LOG.since(start)
        if not self._ptr:
            if _allocation_failed(self.load_log):
                raise LlamaError(
                    f"out of memory: llama.cpp could not allocate the memory to load {path.name}",
                    log_tail=tuple(self.load_log[-1:]),
                    hint="choose a smaller model or weight quantization, or free memory",
                )
            raise LlamaError(f"llama.cpp could not load {path.name}", log_tail=tuple(self.load_log[-3:]))
        self._vocab = llama_cpp.llama_model_get_vocab(self._ptr)

    @property
    def ptr(self) -> llama_cpp.llama_model_p:
        """The raw llama_model pointer (for Context)."""
        if not self._ptr:
            raise LlamaError("the model was already closed")
        return self._ptr

    def close(self) -> None:
        """Free the model's memory."""
        if self._ptr:
            llama_cpp.llama_model_free(self._ptr)
            self._ptr = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_ctx_train(self) -> int:
        """The context length the model was trained for."""
        return int(llama_cpp.llama_model_n_ctx_train(self.ptr))

    @property
    def n_vocab(self) -> int:
        """Number of tokens in the vocabulary."""
        return int(llama_cpp.llama_vocab_n_tokens(self._vocab))

    @property
    def n_params(self) -> int:
        """Parameter count as llama.cpp counts it."""
        return int(llama_cpp.llama_model_n_params(self.ptr))

    @property
    def size_bytes(self) -> int:
        """Bytes of all weight tensors."""
        return int(llama_cpp.llama_model_size(self.ptr))

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of `text`; `special` parses control tokens such as `<|im_start|>`."""
        raw = text.encode("utf-8")
        capacity = len(raw) + 16
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, raw, len(raw), buf, capacity, False, special)
        if n < 0:
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, raw, len(raw), buf, capacity, False, special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for (special tokens rendered as their text)."""
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[:n]

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of a token sequence (invalid UTF-8 replaced)."""
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        """Whether the token ends generation (`<|im_end|>`, `<|endoftext|>`)."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))


# ---------------------------------------------------------------- contexts and generation


@dataclass(frozen=True)
class ContextOptions:
    """How a context (KV cache and compute buffers) is created."""

    n_ctx: int = 4096
    n_seq: int = 1  # parallel sequences sharing the context (the k votes)
    type_k: KVType = KVType.F16
    type_v: KVType = KVType.F16
    flash_attn: bool = True  # required whenever V is quantized
    n_threads: int | None = None
    n_batch: int = 512
    n_ubatch: int = 512


@dataclass(frozen=True)
class Forcing:
    """Budget forcing: a sample still reasoning at its budget gets `tokens` (close the reasoning, start the answer)
    appended, then may write `answer_tokens` more."""

    think_close: int  # the `</think>` token: once generated, the sample is answering
    tokens: tuple[int, ...]
    answer_tokens: int = 32
    starts_reasoning: bool = True  # thinking mode: the sample reasons until it writes `</think>`


@dataclass
class _Sample:
    """One sequence being generated: a vote, or a fork of a vote at a smaller rung of the budget ladder."""

    seq: int  # its sequence id in the KV cache
    pos: int
    reasoning: bool
    sampler: Any
    tokens: list[int] = field(default_factory=list)
    generated: int = 0  # tokens the model wrote (forced tokens excluded)
    forced: bool = False
    answer_left: int = 0
    finish: str = ""  # "stop" (end token), "length" (budget reached while answering) or "forced"
    vote: int = 0  # which of the k votes it is (a fork: the vote it was forked from)
    rung: int | None = None  # a fork: the budget it answers for
    kept_from: int = 0  # the first position of its own tokens still in the KV cache (a KV window evicts before it)
    evicted: int = 0  # own tokens evicted from the KV cache


@dataclass(frozen=True)
class Generation:
    """The k samples of one prompt at one token budget, and how they were produced."""

    texts: tuple[str, ...]
    tokens: tuple[tuple[int, ...], ...]
    generated: tuple[int, ...]  # tokens each sample's model wrote (forced tokens excluded)
    forced: tuple[bool, ...]
    finish: tuple[str, ...]
    prompt_tokens: int
    prompt_tokens_decoded: int  # prompt tokens sent to llama_decode (== prompt_tokens: decoded once for all k)
    max_batch_seqs: int  # the most sequences one decode step carried
    decode_steps: int
    prompt_s: float
    decode_s: float
    ttft_s: float
    decoded_tokens: int = 0  # tokens the whole generation decoded (every rung's forks included)
    evicted: tuple[int, ...] = ()  # own tokens each sample evicted from the KV cache (a KV window)

    @property
    def generated_tokens(self) -> int:
        """Tokens generated over all sequences (forced tokens excluded)."""
        return sum(self.generated)


def fork_cells(k: int, n_rungs: int, answer_cells: int, answer_tokens: int, *, chunk: int = 0) -> int:
    """KV cells the forks of a budget ladder may hold at once: at every smaller rung, each vote still reasoning is
    forked for its forced answer (its last token and `answer_cells`: the forcing text and `answer_tokens`). When
    votes evict in chunks of `chunk` tokens (a KV window), a fork also holds the cells its vote evicts while the
    fork lives: the fork writes its forcing text in one step and its answer one token a step, so its vote writes at
    most the answer and a token meanwhile, and evicts that rounded up to a chunk. Forks happen only where samples
    reason and are forced: callers count none otherwise."""
    if n_rungs <= 1:
        return 0
    return k * (n_rungs - 1) * (1 + answer_cells + (answer_tokens + 1 + chunk if chunk else 0))


def cells_needed(
    prompt_tokens: int, k: int, max_tokens: int, forcing: Forcing | None = None, *, n_rungs: int = 1, window: int = 0
) -> int:
    """KV cells a generation needs: the shared prompt, each sample's budget — or its KV window and an eviction
    chunk — and its forced answer, and the forks of a budget ladder's smaller rungs."""
    extra = len(forcing.tokens) + forcing.answer_tokens if forcing else 0
    own = own_cells(max_tokens, window)
    chunk = eviction_chunk(window) if own < max_tokens else 0
    reasoning = forcing is not None and forcing.starts_reasoning
    forks = fork_cells(k, n_rungs, extra, forcing.answer_tokens, chunk=chunk) if forcing and reasoning else 0
    return prompt_tokens + k * (own + extra) + forks


def ladder_sequences(k: int, n_rungs: int, reasoning: bool) -> int:
    """Sequences a ladder generation may use at once: the k votes and up to k forks per smaller rung (forks only
    where samples reason and are forced)."""
    return k * max(1, n_rungs) if reasoning else k


class Context:
    """A llama.cpp context on a loaded model: a KV cache of n_ctx cells shared by n_seq sequences."""

    def __init__(self, model: Model, options: ContextOptions = ContextOptions()) -> None:
        if options.type_v.quantized and not options.flash_attn:
            raise ConfigurationError(
                f"a {options.type_v.value} V cache needs flash attention",
                hint="turn flash attention on, or use an f16/bf16 V cache",
            )
        self.model = model
        self.options = options
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = options.n_ctx
        params.n_batch = options.n_batch
        params.n_ubatch = options.n_ubatch
        params.n_seq_max = options.n_seq
        threads = options.n_threads or default_threads()
        params.n_threads = threads
        params.n_threads_batch = threads
        params.type_k = int(options.type_k.ggml_type)
        params.type_v = int(options.type_v.ggml_type)
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if options.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        # One KV buffer for all sequences, so the shared prompt occupies its cells once.
        params.kv_unified = True
        params.no_perf = True
        params.op_offload = model.options.gpu_layers() != 0  # a CPU run computes everything on the CPU
        start = LOG.mark()
        self._ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        self.init_log = LOG.since(start)
        if not self._ptr:
            raise _context_failure(options, self.init_log, on_gpu=model.options.gpu_layers() != 0)
        self._memory = llama_cpp.llama_get_memory(self._ptr)

    def close(self) -> None:
        """Free the KV cache and buffers."""
        if self._ptr:
            llama_cpp.llama_free(self._ptr)
            self._ptr = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_ctx(self) -> int:
        """KV cells this context really has (llama.cpp pads the requested number)."""
        return int(llama_cpp.llama_n_ctx(self._ptr))

    @property
    def n_seq(self) -> int:
        """Sequences the context accepts."""
        return int(llama_cpp.llama_n_seq_max(self._ptr))

    def generate(
        self,
        prompt: Sequence[int],
        *,
        k: int = 1,
        max_tokens: int = 256,
        sampling: Sampling = THINKING_SAMPLING,
        seeds: Sequence[int] = (0,),
        forcing: Forcing | None = None,
        on_step: Callable[[int], None] | None = None,
        window: int = 0,
        shift: bool = False,
    ) -> Generation:
        """k samples of `prompt`, decoded together: the prompt once, then one batch per step.

        `max_tokens` caps what each sample writes; with `forcing`, a sample still reasoning at the cap has its
        reasoning closed and may write `forcing.answer_tokens` more. `on_step` hears the tokens each step made.
        `window` (0: none) and `shift` are the KV window of `generate_ladder`.
        """
        ladder = self.generate_ladder(
            prompt, k=k, budgets=(max_tokens,), sampling=sampling, seeds=seeds, forcing=forcing, on_step=on_step,
            window=window, shift=shift,
        )  # fmt: skip
        return ladder[max_tokens]

    def generate_ladder(
        self,
        prompt: Sequence[int],
        *,
        k: int = 1,
        budgets: Sequence[int] = (256,),
        sampling: Sampling = THINKING_SAMPLING,
        seeds: Sequence[int] = (0,),
        forcing: Forcing | None = None,
        on_step: Callable[[int], None] | None = None,
        window: int = 0,
        shift: bool = False,
    ) -> dict[int, Generation]:
        """k samples of `prompt` at every token budget of a ladder, from one generation up to the largest.

        Each vote is generated once, to the largest budget. When a vote still reasoning reaches a smaller rung,
        it is forked: the fork shares its KV cells, gets a clone of its sampler chain (the random state carries
        on), and writes the forced answer a run at that budget would have written, while the vote goes on
        untouched. A vote that stopped, or that was answering, before a rung gives that rung what a run at that
        budget would have given. So each rung's samples equal a separate run at that budget.

        With a KV `window` of N tokens (0: none), each sample keeps the prompt (shared, never evicted) and at least
        its N most recent written tokens: when it holds N + chunk of its own, its oldest chunk is removed from the
        cache (`memory.eviction_chunk`). Kept tokens keep their positions (gaps in between) unless `shift`, which
        moves them down over the gap as StreamingLLM does (no ladder forks then: a shift would move the cells a
        fork shares). A forced answer evicts nothing (it is short and counted in the cells), and neither does a
        fork, so a rung still equals a separate run at its budget with the same window.
        """
        rungs = sorted(set(budgets))
        if not prompt:
            raise ValueError("an empty prompt")
        if not rungs or rungs[0] < 1:
            raise ValueError("token budgets must be positive")
        if k < 1 or ladder_sequences(k, len(rungs), forcing is not None and forcing.starts_reasoning) > self.n_seq:
            raise ConfigurationError(
                f"k={k} sequences over {len(rungs)} budgets, but this context holds {self.n_seq} sequences"
            )
        if len(seeds) != k:
            raise ValueError("one seed per sequence")
        if window < 0:
            raise ValueError("a KV window cannot be negative")
        if shift and len(rungs) > 1:
            raise ValueError("shifted positions cannot share cells with a ladder's forks")
        top = rungs[-1]
        extra = len(forcing.tokens) + forcing.answer_tokens if forcing else 0
        if len(prompt) + top + extra > self.model.n_ctx_train:
            raise ConfigurationError(
                f"prompt ({len(prompt)} tokens) + {top + extra} generated tokens is longer than the "
                f"{self.model.n_ctx_train} tokens {self.model.path.name} was trained for",
                hint="lower the token budget",
            )
        needed = cells_needed(len(prompt), k, top, forcing, n_rungs=len(rungs), window=window)
        if needed > self.n_ctx:
            raise ConfigurationError(
                f"prompt ({len(prompt)} tokens) + {k} × {own_cells(top, window) + extra} tokens needs {needed} KV "
                f"cells, the context has {self.n_ctx}",
                hint="raise --ctx or lower the token budget, the KV window or k",
            )
        run = _LadderRun(self, prompt, k, rungs, forcing, window=window, shift=shift)
        samplers = [_sampler_chain(sampling, seed) for seed in seeds]
        capacity = max(self.options.n_batch, self.n_seq * (2 + (len(forcing.tokens) if forcing else 0)))
        batch = llama_cpp.llama_batch_init(capacity, 0, self.n_seq)
        try:
            return run.go(samplers, batch, on_step)
        finally:
            llama_cpp.llama_batch_free(batch)
            run.free_samplers()

    def last_logits(self, prompt: Sequence[int]) -> list[float]:
        """The next-token logits after `prompt` (a fresh decode on sequence 0), for checking a model's numbers."""
        llama_cpp.llama_memory_clear(self._memory, True)
        batch = llama_cpp.llama_batch_init(max(self.options.n_batch, 1), 0, 1)
        try:
            last = self._decode_prompt(prompt, batch)
            row = llama_cpp.llama_get_logits_ith(self._ptr, last)
            return [float(row[i]) for i in range(self.model.n_vocab)]
        finally:
            llama_cpp.llama_batch_free(batch)

    def score(
        self,
        prompt: Sequence[int],
        trace: Sequence[int],
        reduce: Callable[[npt.NDArray[np.float32]], _Row],
        *,
        window: int = 0,
        evict_until: int | None = None,
        chunk: int = SCORE_BATCH,
    ) -> list[_Row]:
        """Teacher-forced scoring: `reduce` applied to the next-token logits that predict each token of `trace`
        after `prompt` (row i predicts trace[i]; the array is llama.cpp's own buffer, valid only during the call).

        Tokens are decoded in batches of `chunk` with logits on only where a row is read, so no full-vocabulary
        row is held beyond `reduce`. With a KV `window` the cache is evicted exactly as generation evicts it
        (`_LadderRun._step`): before the token at trace index i is fed, once the trace holds window + eviction chunk
        tokens of its own, its oldest chunk is removed, and a batch never straddles an eviction. A forced answer
        evicts nothing: no eviction happens from trace index `evict_until` on (the token before the forcing text).
        """
        if not prompt or not trace:
            raise ValueError("scoring needs a prompt and a trace")
        n_prompt, n = len(prompt), len(trace)
        tokens = [*prompt, *trace[:-1]]  # the last trace token predicts nothing scored
        evict_chunk = eviction_chunk(window)
        stop = n if evict_until is None else evict_until
        needed = n_prompt + (min(n, window + evict_chunk + n - stop) if window else n)
        if needed > self.n_ctx:
            raise ConfigurationError(
                f"a {n_prompt}-token prompt and a {n}-token trace need {needed} KV cells, the context has {self.n_ctx}"
            )
        llama_cpp.llama_memory_clear(self._memory, True)
        batch = llama_cpp.llama_batch_init(max(chunk, 1), 0, 1)
        rows: list[_Row] = []
        kept_from = n_prompt
        try:
            start = 0
            while start < len(tokens):
                end = min(start + chunk, len(tokens))
                if window and start - n_prompt < stop:
                    if start - kept_from >= window + evict_chunk:
                        if not llama_cpp.llama_memory_seq_rm(self._memory, 0, kept_from, kept_from + evict_chunk):
                            raise LlamaError(
                                f"llama.cpp could not evict positions {kept_from}–{kept_from + evict_chunk}"
                            )
                        kept_from += evict_chunk
                    end = min(end, kept_from + window + evict_chunk)  # the next eviction point ends the batch
                items = [(tokens[p], p, 0, p >= n_prompt - 1) for p in range(start, end)]
                _fill(batch, items)
                self._decode(batch)
                for i, (_, _, _, wanted) in enumerate(items):
                    if wanted:
                        row = llama_cpp.llama_get_logits_ith(self._ptr, i)
                        rows.append(reduce(np.ctypeslib.as_array(row, shape=(self.model.n_vocab,))))
                start = end
        finally:
            llama_cpp.llama_batch_free(batch)
        return rows

    def _decode(self, batch: llama_cpp.llama_batch) -> None:
        rc = llama_cpp.llama_decode(self._ptr, batch)
        if rc != 0:
            reason = {1: "no free KV slot", 2: "aborted"}.get(rc, f"error {rc}")
            raise LlamaError(f"llama_decode failed: {reason}", log_tail=LOG.tail(3))

    def _decode_prompt(self, prompt: Sequence[int], batch: llama_cpp.llama_batch) -> int:
        """Decode the prompt once on sequence 0, in chunks of n_batch; returns the last logits' batch index."""
        chunk = self.options.n_batch
        for start in range(0, len(prompt), chunk):
            part = prompt[start : start + chunk]
            _fill(batch, [(tok, start + i, 0, start + i == len(prompt) - 1) for i, tok in enumerate(part)])
            self._decode(batch)
        return (len(prompt) - 1) % chunk


_Item = tuple[int, int, int, bool]  # (token, position, sequence, wants_logits)


class _LadderRun:
    """The state of one ladder generation: the votes, their forks, and each rung's finished samples."""

    def __init__(
        self, ctx: Context, prompt: Sequence[int], k: int, rungs: list[int], forcing: Forcing | None, *,
        window: int = 0, shift: bool = False,
    ) -> None:  # fmt: skip
        self.ctx, self.prompt, self.k, self.rungs, self.forcing = ctx, prompt, k, rungs, forcing
        self.window, self.chunk, self.shift = window, eviction_chunk(window), shift
        self.top = rungs[-1]
        self.live: list[_Sample] = []
        self.free_seqs = list(range(ctx.n_seq - 1, k - 1, -1))  # fork ids, smallest popped first
        # rung -> vote -> (tokens, generated, forced, finish, evicted)
        self.results: dict[int, dict[int, tuple[list[int], int, bool, str, int]]] = {b: {} for b in rungs}
        self.decoded = 0

    def free_samplers(self) -> None:
        for seq in self.live:
            llama_cpp.llama_sampler_free(seq.sampler)
        self.live = []

    def go(
        self, samplers: list[Any], batch: llama_cpp.llama_batch, on_step: Callable[[int], None] | None
    ) -> dict[int, Generation]:
        ctx, memory = self.ctx, self.ctx._memory
        reasoning = self.forcing.starts_reasoning if self.forcing else False
        self.live = [
            _Sample(
                seq=s,
                pos=len(self.prompt),
                reasoning=reasoning,
                sampler=samplers[s],
                vote=s,
                kept_from=len(self.prompt),
            )
            for s in range(self.k)
        ]
        llama_cpp.llama_memory_clear(memory, True)
        t0 = time.perf_counter()
        last = ctx._decode_prompt(self.prompt, batch)
        # The other votes share the prompt's cells (a unified KV cache: no copy of the data).
        for s in range(1, self.k):
            llama_cpp.llama_memory_seq_cp(memory, 0, s, -1, -1)
        prompt_s = time.perf_counter() - t0
        logits_at = dict.fromkeys(range(self.k), last)
        ttft = 0.0
        max_batch = steps = 0
        t1 = time.perf_counter()
        while True:
            step: list[_Item] = []
            for seq in list(self.live):
                step += self._advance(seq, logits_at[seq.seq])
            self._retire()
            if not ttft:
                ttft = time.perf_counter() - t0
            if not step:
                break
            _fill(batch, step)
            for i, (_, _, s, wants_logits) in enumerate(step):
                if wants_logits:
                    logits_at[s] = i
            max_batch = max(max_batch, len({s for _, _, s, _ in step}))
            ctx._decode(batch)
            self.decoded += len(step)
            steps += 1
            if on_step is not None:
                on_step(len(step))
        decode_s = time.perf_counter() - t1
        out = {}
        for b in self.rungs:
            got = [self.results[b][v] for v in range(self.k)]
            out[b] = Generation(
                texts=tuple(ctx.model.detokenize(r[0]) for r in got),
                tokens=tuple(tuple(r[0]) for r in got),
                generated=tuple(r[1] for r in got),
                forced=tuple(r[2] for r in got),
                finish=tuple(r[3] for r in got),
                prompt_tokens=len(self.prompt), prompt_tokens_decoded=len(self.prompt), max_batch_seqs=max_batch,
                decode_steps=steps, prompt_s=prompt_s, decode_s=decode_s, ttft_s=ttft, decoded_tokens=self.decoded,
                evicted=tuple(r[4] for r in got),
            )  # fmt: skip
        return out

    def _record(self, rung: int, seq: _Sample, finish: str) -> None:
        self.results[rung][seq.vote] = (list(seq.tokens), seq.generated, seq.forced, finish, seq.evicted)

    def _finish(self, seq: _Sample, finish: str) -> None:
        """A sequence is done: a vote gives its result to the top rung and to every rung it never reached."""
        seq.finish = finish
        if seq.rung is not None:
            self._record(seq.rung, seq, finish)
            return
        for b in self.rungs:
            if seq.vote not in self.results[b] and (b == self.top or seq.generated < b):
                self._record(b, seq, finish)

    def _retire(self) -> None:
        """Drop finished sequences; a finished fork's cells and sequence id are freed for the next fork."""
        for seq in [s for s in self.live if s.finish]:
            self.live.remove(seq)
            if seq.rung is not None:
                llama_cpp.llama_memory_seq_rm(self.ctx._memory, seq.seq, -1, -1)
                self.free_seqs.append(seq.seq)
            llama_cpp.llama_sampler_free(seq.sampler)

    def _force(self, seq: _Sample, token: int) -> list[_Item]:
        """Close the reasoning and start the answer; only the last forced token needs logits."""
        assert self.forcing is not None
        seq.forced, seq.reasoning, seq.answer_left = True, False, self.forcing.answer_tokens
        feed = [token, *self.forcing.tokens]
        seq.tokens.extend(self.forcing.tokens)
        items = [(t, seq.pos + i, seq.seq, i == len(feed) - 1) for i, t in enumerate(feed)]
        seq.pos += len(feed)
        return items

    def _fork(self, vote: _Sample, token: int, rung: int) -> list[_Item]:
        """A copy of a reasoning vote at a smaller rung, forced to answer as a run at that budget would be."""
        seq_id = self.free_seqs.pop()
        llama_cpp.llama_memory_seq_cp(self.ctx._memory, vote.seq, seq_id, -1, -1)
        fork = _Sample(
            seq=seq_id, pos=vote.pos, reasoning=False, sampler=llama_cpp.llama_sampler_clone(vote.sampler),
            tokens=list(vote.tokens), generated=vote.generated, vote=vote.vote, rung=rung, kept_from=vote.kept_from,
            evicted=vote.evicted,
        )  # fmt: skip
        self.live.append(fork)
        return self._force(fork, token)

    def _advance(self, seq: _Sample, logits_at: int) -> list[_Item]:
        """Sample one token for a sequence; return what to feed the next decode (nothing when it finished)."""
        forcing = self.forcing
        token = int(llama_cpp.llama_sampler_sample(seq.sampler, self.ctx._ptr, logits_at))
        if self.ctx.model.is_end(token):
            self._finish(seq, "forced" if seq.forced else "stop")
            return []
        seq.tokens.append(token)
        seq.generated += 1
        if forcing is not None and token == forcing.think_close:
            seq.reasoning = False
        if seq.forced:
            seq.answer_left -= 1
            if seq.answer_left <= 0:
                self._finish(seq, "forced")
                return []
            return self._step(seq, token)
        if seq.generated < self.top:
            if seq.generated not in self.results:
                return self._step(seq, token)
            # A smaller rung: what a run at this budget would do now.
            if forcing is not None and seq.reasoning:
                return [*self._fork(seq, token, seq.generated), *self._step(seq, token)]
            self._record(seq.generated, seq, "length")
            return self._step(seq, token)
        if forcing is None or not seq.reasoning:
            self._finish(seq, "length")
            return []
        return self._force(seq, token)

    def _step(self, seq: _Sample, token: int) -> list[_Item]:
        if self.window and not seq.forced and seq.pos - seq.kept_from >= self.window + self.chunk:
            self._evict(seq)
        item = (token, seq.pos, seq.seq, True)
        seq.pos += 1
        return [item]

    def _evict(self, seq: _Sample) -> None:
        """Remove a sample's oldest chunk of own tokens from the cache (cells a fork shares stay, the fork's)."""
        start, end = seq.kept_from, seq.kept_from + self.chunk
        memory = self.ctx._memory
        if not llama_cpp.llama_memory_seq_rm(memory, seq.seq, start, end):
            raise LlamaError(f"llama.cpp could not evict positions {start}–{end} of sequence {seq.seq}")
        seq.evicted += self.chunk
        if self.shift:
            # StreamingLLM: the kept tokens move down over the gap (llama.cpp re-ropes K at the next decode).
            llama_cpp.llama_memory_seq_add(memory, seq.seq, end, -1, -self.chunk)
            seq.pos -= self.chunk
        else:
            seq.kept_from = end


def _allocation_failed(log: Sequence[str]) -> bool:
    """Whether llama.cpp's log says a buffer could not be allocated."""
    text = "\n".join(log).lower()
    return "failed to allocate" in text or "out of memory" in text or "unable to allocate" in text


def _context_failure(options: ContextOptions, log: Sequence[str], *, on_gpu: bool) -> EdgevalError:
    """Why llama_init_from_model returned nothing, in words: memory that ran out, or KV types this build lacks."""
    last = next((line.strip() for line in reversed(log) if line.strip()), "")
    detail = f" ({last})" if last else ""
    what = f"K {options.type_k.value}, V {options.type_v.value}, {options.n_ctx} cells × {options.n_seq} sequences"
    if _allocation_failed(log):
        return LlamaError(
            f"out of memory: llama.cpp could not allocate the KV cache and buffers for a context of {what}{detail}",
            hint="choose a smaller token budget, k or KV type, or free memory",
        )
    hint = "try f16 or q8_0 for both K and V"
    if on_gpu and options.type_k != options.type_v and "CUDA" in backend_name():
        hint = "a CUDA build needs -DGGML_CUDA_FA_ALL_QUANTS=ON for mixed K and V types; " + hint
    return ConfigurationError(f"llama.cpp could not create a context with {what}{detail}", hint=hint)


def _fill(batch: llama_cpp.llama_batch, items: Sequence[tuple[int, int, int, bool]]) -> None:
    """Put (token, position, sequence, wants_logits) items into a llama_batch."""
    for i, (token, pos, seq, logits) in enumerate(items):
        batch.token[i] = token
        # llama-cpp-python annotates pos as an array of arrays; at run time it is a flat int32 array.
        batch.pos[i] = pos  # type: ignore[call-overload]
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
    batch.n_tokens = len(items)


def _sampler_chain(sampling: Sampling, seed: int) -> llama_cpp.llama_sampler_p:
    params = llama_cpp.llama_sampler_chain_default_params()
    chain: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_chain_init(params)
    if sampling.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if sampling.top_k > 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
    if sampling.min_p > 0.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
