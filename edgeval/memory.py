"""The memory equation (pure functions) and the parser of what llama.cpp reports about its own buffers.

footprint = weights (exact tensor bytes)
          + KV cache (cells × layers × KV heads × head dim × bytes per element, K and V types apart)
          + output buffer (logits for every sequence)
          + compute buffer (the graph of one micro-batch, an envelope fitted on llama.cpp's graphs)
          + runtime overhead (the interpreter, llama.cpp's code and vocabulary, measured)
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgeval.quants import KVType

MIB = 1 << 20
# llama.cpp rounds the KV cache's cell count up to a multiple of this.
KV_CELL_PADDING = 256
# Measured here (Linux, CPython 3.11): RSS of edgeval's worker process once it has imported edgeval, llama-cpp-python
# and huggingface_hub (52 MiB), plus what loading any model adds besides its tensors (3 MiB).
RUNTIME_BASE_BYTES = 55 * MIB
# llama.cpp's vocabulary tables (token strings, maps, piece cache) per vocabulary entry; measured on
# Qwen3's 151,936-entry vocabulary (43.5 MiB).
RUNTIME_BYTES_PER_VOCAB_ENTRY = 300
# Each sequence's sampler chain keeps a candidates array of (id, logit, p) for the whole vocabulary.
SAMPLER_BYTES_PER_VOCAB_ENTRY = 12


@dataclass(frozen=True)
class Architecture:
    """The numbers of a transformer that decide its memory (a GGUF header's `qwen3.*` keys)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    tied_embeddings: bool = True

    @property
    def kv_width_k(self) -> int:
        """K elements per token per layer."""
        return self.n_head_kv * self.head_dim_k

    @property
    def kv_width_v(self) -> int:
        """V elements per token per layer."""
        return self.n_head_kv * self.head_dim_v


@dataclass(frozen=True)
class Footprint:
    """Predicted bytes of one configuration, by part; `device_bytes` is what sits in GPU memory."""

    weight_bytes: int
    kv_bytes: int
    output_bytes: int
    compute_bytes: int
    overhead_bytes: int
    kv_cells: int
    device_bytes: int = 0

    @property
    def other_bytes(self) -> int:
        """Everything that is neither weights nor KV cache."""
        return self.output_bytes + self.compute_bytes + self.overhead_bytes

    @property
    def total_bytes(self) -> int:
        """The whole predicted footprint, host and device."""
        return self.weight_bytes + self.kv_bytes + self.other_bytes

    @property
    def host_bytes(self) -> int:
        """What stays in system RAM."""
        return self.total_bytes - self.device_bytes


def padded_cells(cells: int) -> int:
    """The KV cells llama.cpp really allocates for a requested context."""
    return math.ceil(max(cells, 1) / KV_CELL_PADDING) * KV_CELL_PADDING


def cells_for(prompt_tokens: int, k: int, budget_tokens: int) -> int:
    """KV cells k votes need when they share one prompt: prompt + k × token budget."""
    return prompt_tokens + k * budget_tokens


def kv_bytes(arch: Architecture, cells: int, type_k: KVType, type_v: KVType) -> tuple[int, int]:
    """Bytes of the K and V caches for `cells` (already padded) cells."""
    k = arch.n_layer * type_k.nbytes(cells * arch.kv_width_k)
    v = arch.n_layer * type_v.nbytes(cells * arch.kv_width_v)
    return k, v


def kv_bytes_per_token(arch: Architecture, type_k: KVType = KVType.F16, type_v: KVType = KVType.F16) -> float:
    """K + V bytes one token costs (block formats spread over their 32 elements)."""
    k, v = kv_bytes(arch, 32, type_k, type_v)
    return (k + v) / 32


def output_bytes(arch: Architecture, n_seq: int) -> int:
    """The logits buffer: one row of n_vocab floats per sequence."""
    return n_seq * arch.n_vocab * 4


def compute_bytes(arch: Architecture, n_ctx: int, n_tokens: int, n_outputs: int, n_seq: int, kv_quantized: bool) -> int:
    """Bytes of llama.cpp's CPU compute graph for one micro-batch of n_tokens with n_outputs logits rows.

    An envelope of the graph's two peaks, fitted on measured graphs (flash attention on): the logits with
    the tensors still alive beside them, and a layer's FFN or attention intermediates; plus the f16
    attention mask over all cells. Measured against llama.cpp's reserve on tiny models it is 0 to 1 MiB
    high; on the Qwen3-0.6B shape it is 10 MiB (3%) low, the logits dominating.
    """
    tokens = math.ceil(n_tokens / n_seq) * n_seq  # llama.cpp makes a batch a multiple of n_seq
    f32 = 4
    e = tokens * arch.n_embd * f32
    f = tokens * arch.n_ff * f32
    q = tokens * arch.n_head * arch.head_dim_k * f32
    logits = n_outputs * arch.n_vocab * f32
    mask = n_ctx * tokens * 2
    logits_phase = logits + 3 * e if kv_quantized else logits + e + mask
    layer_phase = mask + max(3 * f + 4 * e, 2 * q + 3 * e)
    return max(logits_phase, layer_phase)


def compute_reserved_bytes(arch: Architecture, n_ctx: int, n_ubatch: int, n_seq: int, kv_quantized: bool) -> int:
    """The compute buffer llama.cpp reserves (and prints): its worst case, a full micro-batch of outputs."""
    return compute_bytes(arch, n_ctx, n_ubatch, n_ubatch, n_seq, kv_quantized)


def compute_resident_bytes(
    arch: Architecture, n_ctx: int, n_ubatch: int, n_seq: int, kv_quantized: bool, prompt_tokens: int
) -> int:
    """The part of the CPU compute buffer an evaluation touches (untouched pages never become resident).

    The prompt is decoded in micro-batches with one output row; then each step decodes one token per sequence.
    """
    prompt_batch = compute_bytes(arch, n_ctx, min(max(prompt_tokens, 1), n_ubatch), 1, n_seq, kv_quantized)
    decode_batch = compute_bytes(arch, n_ctx, n_seq, n_seq, n_seq, kv_quantized)
    return max(prompt_batch, decode_batch)


def overhead_bytes(arch: Architecture, n_seq: int = 1) -> int:
    """Fixed runtime cost: the Python process with llama.cpp, the vocabulary's tables, the sampler chains."""
    return (
        RUNTIME_BASE_BYTES
        + RUNTIME_BYTES_PER_VOCAB_ENTRY * arch.n_vocab
        + SAMPLER_BYTES_PER_VOCAB_ENTRY * arch.n_vocab * n_seq
    )


@dataclass(frozen=True)
class Setting:
    """What a context is created with (the memory-relevant part of a configuration)."""

    n_ctx: int
    n_seq: int = 1
    type_k: KVType = KVType.F16
    type_v: KVType = KVType.F16
    n_ubatch: int = 512
    prompt_tokens: int = 256  # the longest prompt decoded (sets how much of the compute buffer is touched)
    gpu_layers: int = 0  # layers offloaded (-1: all)


def predict(arch: Architecture, weight_bytes: int, setting: Setting, *, embd_bytes: int = 0) -> Footprint:
    """The predicted peak footprint of a model with `weight_bytes` of tensors under `setting`.

    On the CPU this is what becomes resident: all weights (touched by the first forward pass), the whole KV
    cache (llama.cpp clears it when the context is made), and the touched part of the compute buffer. With
    GPU offload, the offloaded layers' weights and KV cells and the whole reserved compute buffer go to the
    device; the token embeddings (`embd_bytes`) stay on the host, as llama.cpp keeps its input layer there.
    """
    cells = padded_cells(setting.n_ctx)
    k, v = kv_bytes(arch, cells, setting.type_k, setting.type_v)
    quantized = setting.type_k.quantized or setting.type_v.quantized
    if setting.gpu_layers == 0:
        compute = compute_resident_bytes(arch, cells, setting.n_ubatch, setting.n_seq, quantized, setting.prompt_tokens)
    else:
        compute = compute_reserved_bytes(arch, cells, setting.n_ubatch, setting.n_seq, quantized)
    footprint = Footprint(
        weight_bytes=weight_bytes,
        kv_bytes=k + v,
        output_bytes=output_bytes(arch, setting.n_seq),
        compute_bytes=compute,
        overhead_bytes=overhead_bytes(arch, setting.n_seq),
        kv_cells=cells,
    )
    if setting.gpu_layers == 0:
        return footprint
    share = 1.0 if setting.gpu_layers < 0 else min(setting.gpu_layers, arch.n_layer) / arch.n_layer
    device = int((weight_bytes - embd_bytes) * share + (k + v) * share) + compute
    return dataclasses.replace(footprint, device_bytes=device)


# ---------------------------------------------------------------- what llama.cpp reports


@dataclass(frozen=True)
class Reported:
    """Buffer sizes llama.cpp printed in its log, in bytes (MiB figures with two decimals)."""

    model_bytes: int
    kv_bytes: int
    k_bytes: int
    v_bytes: int
    output_bytes: int
    compute_bytes: int
    kv_cells: int


_MODEL = re.compile(r"model buffer size =\s*([\d.]+) MiB")
_KV = re.compile(
    r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells"
    r".*K \(\w+\):\s*([\d.]+) MiB, V \(\w+\):\s*([\d.]+) MiB"
)
_OUTPUT = re.compile(r"output buffer size =\s*([\d.]+) MiB")
_COMPUTE = re.compile(r"^sched_reserve:\s+\S+ compute buffer size =\s*([\d.]+) MiB")


def parse_llama_log(lines: Iterable[str]) -> Reported:
    """Sum the buffers llama.cpp reports while loading a model and creating a context."""
    model = kv = k = v = output = compute = 0.0
    cells = 0
    for line in lines:
        if m := _MODEL.search(line):
            model += float(m.group(1))
        elif m := _KV.search(line):
            kv, cells, k, v = float(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))
        elif m := _OUTPUT.search(line):
            output += float(m.group(1))
        elif m := _COMPUTE.search(line.strip()):
            compute += float(m.group(1))
    return Reported(
        model_bytes=round(model * MIB),
        kv_bytes=round(kv * MIB),
        k_bytes=round(k * MIB),
        v_bytes=round(v * MIB),
        output_bytes=round(output * MIB),
        compute_bytes=round(compute * MIB),
        kv_cells=cells,
    )


# ---------------------------------------------------------------- measurement


class PeakRSS:
    """Samples a process's resident memory from outside, in a thread, and keeps the peak.

    Use as a context manager around the child's lifetime; `peak_bytes` is the highest RSS seen (sampled every
    `interval_s`; a child's own `ru_maxrss`, where available, is the kernel's exact figure to compare with).
    """

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._interval = interval_s
        self.peak_bytes = 0
        self.peak_vram_bytes: int | None = None
        self.samples = 0
        self._nvml = _nvml_handles()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                rss = int(self._process.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                return
            self.peak_bytes = max(self.peak_bytes, rss)
            if self._nvml:
                vram = _process_vram(self._nvml, self._process.pid)
                self.peak_vram_bytes = max(self.peak_vram_bytes or 0, vram)
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _nvml_handles() -> list[Any]:
    """NVML device handles when nvidia-ml-py is installed and a driver answers; else empty."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no package, no driver, no device: no VRAM figures
        return []


def _process_vram(handles: list[Any], pid: int) -> int:
    """GPU memory a process holds across devices (NVML's per-process accounting)."""
    import pynvml

    used = 0
    for handle in handles:
        try:
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory:
                    used += int(proc.usedGpuMemory)
        except Exception:  # a device that stops answering keeps the figure seen so far
            continue
    return used
