"""llama.cpp, through llama-cpp-python's low-level API: with `edgeval.llama.generation` (how a run's tokens are
decoded) the only code that imports `llama_cpp`.

It loads GGUF models (repacking on or off, GPU layers), creates contexts with chosen KV-cache types, generates
(`generation`: k votes per question, many questions in flight) and scores traces. What the library and the build
are before any model (its log, devices, repacking, quantizing) is `runtime`, whose names it re-exports.
"""

from __future__ import annotations

import ctypes
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import llama_cpp
import numpy as np
import numpy.typing as npt

from edgeval.core import memory
from edgeval.core.errors import ConfigurationError, EdgevalError, LlamaError, ModelFileError
from edgeval.core.memory import eviction_chunk
from edgeval.core.prompts import THINKING_SAMPLING, Sampling
from edgeval.core.quants import KVType
from edgeval.llama import generation
from edgeval.llama.budget import Forcing as Forcing  # the engine's names for what a run generates
from edgeval.llama.generation import Generation as Generation
from edgeval.llama.generation import Job as Job
from edgeval.llama.generation import Recipe as Recipe
from edgeval.llama.generation import cells_needed as cells_needed
from edgeval.llama.generation import fill_batch
from edgeval.llama.generation import fork_cells as fork_cells
from edgeval.llama.generation import ladder_sequences as ladder_sequences
from edgeval.llama.runtime import LLAMA_CPP_PYTHON_VERSION as LLAMA_CPP_PYTHON_VERSION
from edgeval.llama.runtime import LOG as LOG
from edgeval.llama.runtime import Device as Device
from edgeval.llama.runtime import backend_name as backend_name
from edgeval.llama.runtime import build_version as build_version
from edgeval.llama.runtime import captured_log as captured_log
from edgeval.llama.runtime import default_threads as default_threads
from edgeval.llama.runtime import devices as devices
from edgeval.llama.runtime import extra_buffer_type as extra_buffer_type
from edgeval.llama.runtime import ggml_library
from edgeval.llama.runtime import gpu_devices as gpu_devices
from edgeval.llama.runtime import initialise as initialise
from edgeval.llama.runtime import initialised as initialised
from edgeval.llama.runtime import quantize as quantize
from edgeval.llama.runtime import repacked_types as repacked_types
from edgeval.llama.runtime import supports_gpu_offload as supports_gpu_offload
from edgeval.llama.runtime import system_info as system_info

SCORE_BATCH = 128  # tokens per teacher-forced decode: every one wants a logits row (128 × vocab × 4 B of output)
_Row = TypeVar("_Row")


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
    base = ggml_library("ggml-base")
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
    from edgeval.edges import gguf_info

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
        self._pieces: dict[int, bytes] = {}  # token -> its bytes (the reasoning budget asks for every token written)

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
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        self._pieces[token] = piece = buf.raw[:n]
        return piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of a token sequence (invalid UTF-8 replaced)."""
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        """Whether the token ends generation (`<|im_end|>`, `<|endoftext|>`)."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))


def reasoning_budget(model: Model, *, message: str, answer_tokens: int, starts_reasoning: bool = True) -> Forcing:
    """The thinking budget as llama-server sets it up for this model: the start and end tags and the forced tokens
    (the message's, then the end tag's, each tokenized alone with special tokens parsed, as the server does)."""
    from edgeval.core import prompts

    end = tuple(model.tokenize(prompts.THINK_CLOSE))
    turn = model.tokenize(prompts.TURN_START)
    return Forcing(
        start=tuple(model.tokenize(prompts.THINK_OPEN)), end=end,
        tokens=(*(model.tokenize(message) if message else ()), *end), answer_tokens=answer_tokens,
        starts_reasoning=starts_reasoning, turn=turn[0] if len(turn) == 1 else -1,
    )  # fmt: skip


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
    # One KV buffer for all sequences (the k votes share their prompt's cells once). False gives every sequence
    # a stream of its own (n_ctx / n_seq cells, attention over its own cells only): faster with many
    # independent questions in flight, at the cost of a copy of the prompt per vote.
    unified: bool = True


def in_flight(options: ContextOptions, width: int, stream_cells: int) -> ContextOptions:
    """The context for `width` questions in flight, from one question's `options`. One question is `options`
    itself: one KV buffer, its votes sharing the prompt's cells. Wider, every sequence gets a stream of its own of
    `stream_cells` cells (llama.cpp pads each to 256), as llama-batched-bench without a unified cache: a decode
    step's attention then reads each sequence's own cells, not every cell of every question in flight, which on
    the CPU measured 1.35× the decode rate of one unified cache at 16 questions of 96 + 256 tokens."""
    if width <= 1:
        return options
    n_seq = options.n_seq * width
    return replace(options, n_ctx=stream_cells * n_seq, n_seq=n_seq, unified=False)


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
        params.kv_unified = options.unified
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
    def n_ctx_seq(self) -> int:
        """KV cells each sequence may use: all of them in a unified cache, its own stream's otherwise."""
        return int(llama_cpp.llama_n_ctx_seq(self._ptr))

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
        on_step: Callable[[int, float], None] | None = None,
        window: int = 0,
        shift: bool = False,
    ) -> Generation:
        """k samples of `prompt`, decoded together: the prompt once, then one batch per step.

        `max_tokens` caps what each sample writes; with `forcing`, a sample still reasoning at the cap has its
        reasoning closed and may write `forcing.answer_tokens` more. `on_step` hears the tokens each step made and its seconds.
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
        on_step: Callable[[int, float], None] | None = None,
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
        recipe = Recipe(k=k, budgets=tuple(budgets), sampling=sampling, forcing=forcing, window=window, shift=shift)
        got: list[dict[int, Generation]] = []
        generation.run_batched(self, recipe, [Job(0, prompt, seeds)], lambda _, out: got.append(out), on_step=on_step)
        return got[0]

    def generate_many(
        self,
        recipe: Recipe,
        jobs: Iterable[Job],
        on_done: Callable[[Job, dict[int, Generation]], None],
        *,
        width: int = 1,
        admit: Callable[[], bool] | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        """Many questions, up to `width` in flight at once (continuous batching: `generation.run_batched`), each
        generated as `generate_ladder` would; `on_done` hears each question's rungs as it finishes. The context
        needs `width` × `recipe.sequences` sequences, `width` × a question's cells and a batch of `width` ×
        `recipe.step_tokens()`."""
        generation.run_batched(self, recipe, jobs, on_done, width=width, admit=admit, on_step=on_step)

    def decode_rate(self, width: int, *, prompt_tokens: int = 32, steps: int = 8) -> float:
        """Aggregate decode tokens/s with `width` sequences in one batch, each after a shared `prompt_tokens`
        prompt and one warm-up step: `steps` decodes timed, every row's logits on (as sampling needs them), nothing
        sampled — an upper bound on what generation reaches, as llama-batched-bench's S_TG is."""
        if width > self.n_seq or width * (prompt_tokens + steps + 1) > self.n_ctx or width > self.options.n_batch:
            raise ConfigurationError(f"a batch of {width} sequences does not fit this context")
        vocab = self.model.n_vocab
        llama_cpp.llama_memory_clear(self._memory, True)
        batch = llama_cpp.llama_batch_init(max(self.options.n_batch, 1), 0, 1)
        try:
            self._decode_prompt([(p * 7919 + 11) % vocab for p in range(prompt_tokens)], batch)
            for s in range(1, width):
                llama_cpp.llama_memory_seq_cp(self._memory, 0, s, -1, -1)
            elapsed = 0.0
            for step in range(steps + 1):
                pos = prompt_tokens + step
                fill_batch(batch, [((pos * 31 + s) % vocab, pos, s, True) for s in range(width)])
                t0 = time.perf_counter()
                self._decode(batch)
                llama_cpp.llama_synchronize(self._ptr)
                if step:  # the first step warms up
                    elapsed += time.perf_counter() - t0
            return width * steps / elapsed
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_memory_clear(self._memory, True)

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
        (`generation._Question._step`): before the token at trace index i is fed, once the trace holds window + eviction chunk
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
                fill_batch(batch, items)
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
            fill_batch(batch, [(tok, start + i, 0, start + i == len(prompt) - 1) for i, tok in enumerate(part)])
            self._decode(batch)
        return (len(prompt) - 1) % chunk


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
