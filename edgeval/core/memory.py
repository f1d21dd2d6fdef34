"""The memory equation (pure functions) and the parser of what llama.cpp reports about its own buffers.

footprint = weights (exact tensor bytes, plus any copy weight repacking adds)
          + KV cache (cells × layers × KV heads × head dim × bytes per element, K and V types apart)
          + output buffer (logits for every sequence)
          + compute buffer (the graph of one micro-batch, an envelope fitted on llama.cpp's graphs)
          + runtime overhead (the interpreter, llama.cpp's code and vocabulary, measured)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from edgeval.core.quants import KVType
from edgeval.core.resident import RSS as RSS
from edgeval.core.resident import PeakRSS as PeakRSS
from edgeval.core.resident import gpu_free_bytes as gpu_free_bytes
from edgeval.core.resident import read_rss as read_rss

MIB = 1 << 20
# llama.cpp rounds the KV cache's cell count up to a multiple of this.
KV_CELL_PADDING = 256
# RSS of edgeval's worker process once it has imported edgeval, llama-cpp-python and huggingface_hub (52.5 MiB), plus
# what loading any model adds besides its tensors: 5.4 MiB, the same for the family's three files (1.3–5 MiB of
# tensors, 1–3 layers): 3.8 MiB anonymous (llama.cpp's model and backend state) and 1.6 MiB of its CPU backend's
# library pages. Measured stage by stage on the 2-core AMD EPYC Zen 4 of CI (Linux, CPython 3.11, llama-cpp-python
# 0.3.36); the earlier 3 MiB for the load was measured on another machine and left every prediction 2–5 MiB low.
RUNTIME_BASE_BYTES = int(57.9 * MIB)
# llama.cpp's vocabulary tables: per token (its string, score, attributes, piece cache) and per BPE merge (the rank
# map). Fitted on two vocabularies measured here: Gemma 3's 262,144 tokens without merges (SentencePiece: 48 MiB)
# and Qwen3's 151,936 tokens with 151,387 merges (43.5 MiB).
RUNTIME_BYTES_PER_TOKEN = 192
RUNTIME_BYTES_PER_MERGE = 108
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
    n_merges: int | None = None  # BPE merges in the vocabulary (None: about one per token, as Qwen3's 151,387)
    n_expert: int = 0  # mixture of experts: experts per layer, all resident (0: a dense model)
    n_expert_used: int = 0  # … of which each token uses this many
    n_ff_exp: int = 0  # … each with an FFN this wide (0: n_ff / n_expert_used)
    n_ff_shexp: int = 0  # … and a shared expert this wide beside them (0: none; Qwen3.5's MoE has one)
    # A hybrid (Qwen3.5/3.6, llama.cpp's qwen35/qwen35moe): this many of the n_layer layers are Gated DeltaNet
    # linear attention with a fixed recurrent state per sequence slot instead of a KV cache (0: every layer attends).
    recurrent_layers: int = 0
    state_r: int = 0  # … f32 values of each such layer's convolution state per slot (llama.cpp's n_embd_r)
    state_s: int = 0  # … f32 values of its delta-rule state per slot (n_embd_s)
    linear_v_heads: int = 0  # … value heads of a linear layer (ssm_dt_rank), each with a state_s / heads square
    n_tensors: int = 0  # tensors llama.cpp loads (sets its graph's node budget; 0: estimated from the layers)
    conv_kernel: int = 4  # … the short convolution's width (ssm_d_conv): state_r is (conv_kernel − 1) × its channels

    @property
    def ffn_width(self) -> int:
        """FFN intermediates per token: n_ff, or for a mixture of experts the experts a token uses times their width."""
        if self.n_expert and self.n_expert_used:
            return self.n_expert_used * (self.n_ff_exp or self.n_ff // self.n_expert_used)
        return self.n_ff

    @property
    def hybrid(self) -> bool:
        """Whether some layers keep a recurrent state instead of a KV cache."""
        return self.recurrent_layers > 0

    @property
    def attention_layers(self) -> int:
        """Layers with a KV cache: all of them, or a hybrid's full-attention layers."""
        return self.n_layer - self.recurrent_layers

    @property
    def state_bytes_per_seq(self) -> int:
        """A hybrid's recurrent state for one sequence slot: every linear layer's two f32 states."""
        return self.recurrent_layers * (self.state_r + self.state_s) * 4

    @property
    def conv_channels(self) -> int:
        """A linear layer's convolved channels per token (its q, k and v: 2 × key dim + value dim)."""
        return self.state_r // max(1, self.conv_kernel - 1)

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
    repack_bytes: int = 0  # of weight_bytes, what sits in llama.cpp's extra buffers (AMX, CPU_REPACK)
    state_bytes: int = 0  # a hybrid's recurrent states: one per sequence slot, whatever the context

    @property
    def other_bytes(self) -> int:
        """Everything that is neither weights nor KV cache."""
        return self.output_bytes + self.compute_bytes + self.overhead_bytes

    @property
    def total_bytes(self) -> int:
        """The whole predicted footprint, host and device."""
        return self.weight_bytes + self.kv_bytes + self.state_bytes + self.other_bytes

    @property
    def host_bytes(self) -> int:
        """What stays in system RAM."""
        return self.total_bytes - self.device_bytes


def padded_cells(cells: int) -> int:
    """The KV cells llama.cpp really allocates for a requested context."""
    return math.ceil(max(cells, 1) / KV_CELL_PADDING) * KV_CELL_PADDING


# A windowed sample evicts its oldest own tokens this many at a time (an eighth of the window, at most 32): a
# sample holds between `window` and `window + chunk` of its own cells, and llama.cpp's cell walk of
# `llama_memory_seq_rm` runs once per chunk, not once per token.
EVICTION_CHUNK_MAX = 32


def eviction_chunk(window: int) -> int:
    """How many of its oldest own tokens a sample with a KV window evicts at once."""
    return max(1, min(EVICTION_CHUNK_MAX, window // 8))


def own_cells(budget_tokens: int, window: int = 0) -> int:
    """KV cells one sample's own written tokens occupy at most: its budget, or with a window (0: none) the window
    and one eviction chunk."""
    if window <= 0:
        return budget_tokens
    return min(budget_tokens, window + eviction_chunk(window))


def cells_for(prompt_tokens: int, k: int, budget_tokens: int, window: int = 0) -> int:
    """KV cells k votes need when they share one prompt: prompt + k × token budget (or × window + chunk)."""
    return prompt_tokens + k * own_cells(budget_tokens, window)


def kv_bytes(arch: Architecture, cells: int, type_k: KVType, type_v: KVType) -> tuple[int, int]:
    """Bytes of the K and V caches for `cells` (already padded) cells."""
    k = arch.attention_layers * type_k.nbytes(cells * arch.kv_width_k)
    v = arch.attention_layers * type_v.nbytes(cells * arch.kv_width_v)
    return k, v


def state_bytes(arch: Architecture, n_seq: int) -> int:
    """A hybrid's recurrent state memory: llama.cpp keeps one f32 state per sequence slot (`n_seq_max`) in every
    linear layer — each vote, each ladder fork, each question in flight needs its slot (0 for a transformer)."""
    return arch.state_bytes_per_seq * max(1, n_seq)


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
    f = tokens * arch.ffn_width * f32
    q = tokens * arch.n_head * arch.head_dim_k * f32
    logits = n_outputs * arch.n_vocab * f32
    mask = n_ctx * tokens * 2
    logits_phase = logits + 3 * e if kv_quantized else logits + e + mask
    layer_phase = mask + max(3 * f + 4 * e, 2 * q + 3 * e, _linear_layer_bytes(arch, tokens, n_seq))
    return max(logits_phase, layer_phase)


# Gated DeltaNet reads a prompt in chunks of this many tokens (llama.cpp's delta-net-base.cpp).
DELTA_NET_CHUNK = 64


def _linear_layer_bytes(arch: Architecture, tokens: int, n_seq: int) -> int:
    """A hybrid's linear-attention layer in llama.cpp's graph (0 for a transformer): three f32 copies of a token's
    hidden state and of its convolved q/k/v channels per token; a step that advances states (up to one chunk per
    sequence) also holds each sequence's delta-rule state twice, read and written. Fitted on llama.cpp's reserve over
    seven linear-layer shapes (hidden 256–1024, 2–16 heads of 32–128, 1–512 tokens): within 1–3% from 128 tokens,
    up to 14% high at one chunk and 10% low at a lone token (0.15 MiB at most)."""
    if not arch.hybrid:
        return 0
    per_token = (3 * arch.n_embd + 3 * arch.conv_channels) * 4
    chunked = (tokens if tokens <= n_seq else math.ceil(tokens / DELTA_NET_CHUNK) * DELTA_NET_CHUNK) * per_token
    states = 2 * arch.state_s * 4 * max(1, min(n_seq, tokens))
    return max(chunked, states + min(tokens, DELTA_NET_CHUNK) * per_token)


def compute_reserved_bytes(arch: Architecture, n_ctx: int, n_ubatch: int, n_seq: int, kv_quantized: bool) -> int:
    """The compute buffer llama.cpp reserves (and prints): its worst case, a full micro-batch of outputs."""
    return compute_bytes(arch, n_ctx, n_ubatch, n_ubatch, n_seq, kv_quantized)


def compute_resident_bytes(
    arch: Architecture, n_ctx: int, n_ubatch: int, n_seq: int, kv_quantized: bool, prompt_tokens: int
) -> int:
    """The part of the CPU compute buffer an evaluation touches (untouched pages never become resident).

    The prompt is decoded in micro-batches with one output row; then each step decodes one token per sequence. A
    thinking budget forces its message and end tag one token a step (llama.cpp's reasoning-budget semantics), and a
    ladder's fork is one more sequence of the step, so forcing adds no batch of its own. (Before edgeval forced as
    llama.cpp does, a step fed every vote's forced text at once, and that batch's graph was counted here: measured on
    the Qwen3-0.6B shape at k = 8, +9.1 MiB.)
    """
    prompt_batch = compute_bytes(arch, n_ctx, min(max(prompt_tokens, 1), n_ubatch), 1, n_seq, kv_quantized)
    decode_batch = compute_bytes(arch, n_ctx, n_seq, n_seq, n_seq, kv_quantized)
    return max(prompt_batch, decode_batch)


# llama.cpp's graph metadata: each graph it keeps — the reserve's, and the last decode's with logits and without
# (`gf_res_prev[n_outputs > 0]`: a prompt's chunks before its last, the speed probe's filling) — holds a buffer of
# max_nodes × (a tensor object, 368 bytes, and the graph's node, leaf and hash slots), zero-filled when made.
GRAPH_BYTES_PER_NODE = 408
GRAPHS_KEPT = 3
_BASE_GRAPH_NODES = 1024  # a small transformer's max_nodes: already inside RUNTIME_BASE_BYTES


def graph_nodes(arch: Architecture, n_ubatch: int) -> int:
    """llama.cpp's max_nodes for a context (`llama_context::graph_max_nodes`): a hybrid's graph grows with the
    micro-batch (40 nodes a token: its linear layers' chunked delta rule), a transformer's with its tensors."""
    tensors = arch.n_tensors or 3 + 13 * arch.n_layer  # about 11 a transformer layer, 14 a linear one
    if arch.hybrid:
        return max(n_ubatch * 40, 32 * tensors)
    return max(_BASE_GRAPH_NODES, 8 * tensors)


def overhead_bytes(arch: Architecture, n_seq: int = 1, n_ubatch: int = 512) -> int:
    """Fixed runtime cost: the Python process with llama.cpp, the vocabulary's tables, the sampler chains, and
    the graph metadata past a small transformer's (a hybrid's is ~24 MiB at a 512-token micro-batch)."""
    graphs = GRAPHS_KEPT * (graph_nodes(arch, n_ubatch) - _BASE_GRAPH_NODES) * GRAPH_BYTES_PER_NODE
    return (
        RUNTIME_BASE_BYTES
        + RUNTIME_BYTES_PER_TOKEN * arch.n_vocab
        + RUNTIME_BYTES_PER_MERGE * (arch.n_vocab if arch.n_merges is None else arch.n_merges)
        + SAMPLER_BYTES_PER_VOCAB_ENTRY * arch.n_vocab * n_seq
        + max(0, graphs)
    )


# ---------------------------------------------------------------- weight repacking


@dataclass(frozen=True)
class RepackRule:
    """Where llama.cpp's CPU backend moves a weight of one type, and what that costs.

    A 2-D matrix-product weight goes to `buffer` when its row count (ne1) is a multiple of `rows` and its row
    length (ne0) a multiple of `cols`; there it takes its own bytes plus `extra_per_block` per quant block.
    """

    buffer: str  # "AMX" or "CPU_REPACK", as llama.cpp names the extra buffer type
    rows: int
    cols: int = 1
    extra_per_block: int = 0


# llama.cpp's extra buffer types, in the order it tries them, by the CPU features the build was compiled for; read
# from the llama.cpp that llama-cpp-python 0.3.36 vendors. AMX (ggml-cpu/amx: qtype_has_amx_kernels, supports_op,
# get_row_size) comes first and stores K-quant and Q8_0 blocks with a few bytes of scales beside them; CPU_REPACK
# (ggml-cpu/repack.cpp: ggml_repack_get_optimal_repack_type, first matching feature set wins) interleaves rows at
# the same size. Feature names are llama.cpp's system-info names (`AVX2 = 1`); /proc/cpuinfo's are mapped.
_AMX_RULES: dict[str, RepackRule] = {
    "Q4_0": RepackRule("AMX", 32, 32),
    "Q4_1": RepackRule("AMX", 32, 32),
    "Q8_0": RepackRule("AMX", 32, 32, 4),
    "Q4_K": RepackRule("AMX", 32, 256, 4),
    "Q5_K": RepackRule("AMX", 32, 256, 4),
    "Q6_K": RepackRule("AMX", 32, 256),
    "IQ4_XS": RepackRule("AMX", 32, 256, 2),
    "F16": RepackRule("AMX", 32, 16),  # accepted, stored as is
}
_REPACK_RULES: tuple[tuple[frozenset[str], str, int], ...] = (
    (frozenset({"AVX2"}), "Q4_0", 8),
    (frozenset({"AVX2"}), "Q4_K", 8),
    (frozenset({"AVX2"}), "IQ4_NL", 8),
    (frozenset({"AVX2"}), "MXFP4", 8),
    (frozenset({"AVX512"}), "Q2_K", 8),
    (frozenset({"SVE", "MATMUL_INT8"}), "Q4_0", 8),
    (frozenset({"NEON", "MATMUL_INT8"}), "Q4_0", 4),
    (frozenset({"NEON", "MATMUL_INT8"}), "Q4_K", 8),
    (frozenset({"NEON", "MATMUL_INT8"}), "Q5_K", 8),
    (frozenset({"NEON", "MATMUL_INT8"}), "Q6_K", 8),
    (frozenset({"NEON", "MATMUL_INT8"}), "Q8_0", 4),
    (frozenset({"NEON", "DOTPROD"}), "Q4_0", 4),
    (frozenset({"NEON", "DOTPROD"}), "Q4_K", 8),
    (frozenset({"NEON", "DOTPROD"}), "Q5_K", 8),
    (frozenset({"NEON", "DOTPROD"}), "Q6_K", 8),
    (frozenset({"NEON", "DOTPROD"}), "IQ4_NL", 4),
    (frozenset({"NEON", "DOTPROD"}), "MXFP4", 4),
    (frozenset({"NEON", "DOTPROD"}), "Q8_0", 4),
)
_FEATURE_ALIASES = {"AVX512F": "AVX512", "AMX_INT8": "AMX_INT8", "avx512_vnni": "AVX512_VNNI"}
EXTRA_BUFFERS = frozenset({"AMX", "CPU_REPACK"})


class RepackMode(str, Enum):
    """How edgeval lets llama.cpp's CPU backend repack weights."""

    ALL = "all"  # every extra buffer type of the build, in llama.cpp's own order (AMX first, then CPU_REPACK)
    CPU_REPACK = "cpu_repack"  # only CPU_REPACK's layouts, by per-tensor buffer overrides: for CPUs whose AMX crashes
    OFF = "off"

    @classmethod
    def of(cls, repack: bool | RepackMode) -> RepackMode:
        """A mode as given, or from the on/off flag (True: llama.cpp's own choice, False: none)."""
        if isinstance(repack, RepackMode):
            return repack
        return cls.ALL if repack else cls.OFF

    @property
    def on(self) -> bool:
        """Whether any weight is repacked (and the file therefore read, not mapped: `mmap_for`)."""
        return self is not RepackMode.OFF

    @property
    def repacks_tied_output(self) -> bool:
        """Whether a tied output projection of a repackable type gets its own repacked copy. Only llama.cpp's own
        choice does that; CPU_REPACK's overrides go by tensor name, and the output shares the embeddings' name
        while the embeddings themselves (looked up by row) cannot live in a repacked layout."""
        return self is RepackMode.ALL


def repack_for_offload(mode: RepackMode, gpu_layers: int) -> RepackMode:
    """The mode a load can use: CPU_REPACK only is for CPU runs (its overrides would pin offloaded weights to the
    host), so with layers on a GPU it becomes off."""
    return RepackMode.OFF if mode is RepackMode.CPU_REPACK and gpu_layers != 0 else mode


def repacked_types(features: Iterable[str], mode: RepackMode = RepackMode.ALL) -> dict[str, tuple[RepackRule, ...]]:
    """For each tensor type llama.cpp repacks on a CPU with these features, its rules in the order tried.

    `features` are names as llama.cpp's system info prints them (AVX2, AVX512, AVX512_VNNI, AMX_INT8, NEON,
    DOTPROD, MATMUL_INT8, SVE; /proc/cpuinfo's AVX512F is accepted too). Empty when the build has no repacking,
    or `mode` is OFF; `RepackMode.CPU_REPACK` leaves AMX out.
    """
    have = {_FEATURE_ALIASES.get(f, f) for f in features}
    if "REPACK_OFF" in have or mode is RepackMode.OFF:
        return {}
    found: dict[str, list[RepackRule]] = {}
    if {"AMX_INT8", "AVX512_VNNI"} <= have and mode is RepackMode.ALL:
        for ggml_type, rule in _AMX_RULES.items():
            found[ggml_type] = [rule]
    taken: set[str] = set()
    for needs, ggml_type, rows in _REPACK_RULES:
        if needs <= have and ggml_type not in taken:
            taken.add(ggml_type)
            found.setdefault(ggml_type, []).append(RepackRule("CPU_REPACK", rows))
    return {t: tuple(rules) for t, rules in found.items()}


def system_info_features(text: str) -> list[str]:
    """The features llama.cpp's system info string turns on (`AVX2 = 1 | ...`); `REPACK = 0` becomes REPACK_OFF."""
    on = [name for name, value in re.findall(r"(\w+) = (\d+)", text) if value != "0"]
    if re.search(r"\bREPACK = 0\b", text):
        on.append("REPACK_OFF")
    return on


@dataclass(frozen=True)
class Repack:
    """How a model's weights divide under repacking (CPU layers only).

    `repacked_bytes`: what llama.cpp's extra buffers (AMX, CPU_REPACK) hold, in their own layouts;
    `source_bytes`: the file bytes of those tensors; `copy_bytes`: the part of `repacked_bytes` that is an extra
    copy — with tied embeddings whose type repacks, the
    output projection is repacked beside the token embeddings, which stay plain for row lookups.
    """

    repacked_bytes: int = 0
    source_bytes: int = 0
    copy_bytes: int = 0


def mmap_for(repack: bool) -> bool:
    """Whether edgeval memory-maps the model file: not when repacking.

    With the file mapped, llama.cpp copies each repacked tensor into its anonymous CPU_REPACK buffer but the
    mapping's pages of that tensor stay resident (they lie between tensors still used from the mapping), so the
    repacked weights would be held twice. Read without mmap, every weight is held once and decodes as fast.
    """
    return not repack


def resident_weight_bytes(weight_bytes: int, repack: Repack | None, mmap: bool) -> int:
    """Weight bytes resident on the host: each tensor once, plus what repacking adds."""
    if repack is None:
        return weight_bytes
    if mmap:
        return weight_bytes + repack.repacked_bytes  # the whole file mapped and touched, and the repacked copy
    return weight_bytes - repack.source_bytes + repack.repacked_bytes


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
    cpu_moe: int = 0  # a mixture of experts under offload: first N layers' experts stay on the host (-1: all)
    repack: bool = False  # llama.cpp's weight repacking (CPU layers)
    mmap: bool | None = None  # None: as edgeval loads (`mmap_for(repack)`)
    # A KV stream per sequence (`engine.in_flight`): n_ctx / n_seq cells each, padded; attention masks one stream.
    streams: bool = False
    # Teacher-forced scoring (`edgeval kld`): decodes of this many tokens, each with a logits row (0: generation).
    score_batch: int = 0

    @property
    def cells(self) -> int:
        """The KV cells llama.cpp allocates: padded once, or per stream."""
        if self.streams:
            return self.n_seq * padded_cells(self.n_ctx // self.n_seq)
        return padded_cells(self.n_ctx)


def _offloaded_layers(arch: Architecture, gpu_layers: int) -> int:
    """Repeating layers on the device. llama.cpp counts the output layer as one more layer and offloads from the
    end: `--gpu-layers 1` is the output projection alone, n_layer + 1 (or -1) is everything."""
    if gpu_layers == 0:
        return 0
    return arch.n_layer if gpu_layers < 0 else min(gpu_layers - 1, arch.n_layer)


def expert_layers_offloaded(arch: Architecture, gpu_layers: int, cpu_moe: int) -> int:
    """Layers whose expert weights sit on the device: offloaded layers (the last ones) that are not among the
    first `cpu_moe` (-1: all layers), whose experts llama.cpp keeps on the host by a tensor override."""
    offloaded = _offloaded_layers(arch, gpu_layers)
    kept = arch.n_layer if cpu_moe < 0 else min(cpu_moe, arch.n_layer)
    return max(0, offloaded - max(0, kept - (arch.n_layer - offloaded)))


def predict(
    arch: Architecture,
    weight_bytes: int,
    setting: Setting,
    *,
    embd_bytes: int = 0,
    expert_bytes: int = 0,
    repack: Repack = Repack(),
) -> Footprint:
    """The predicted peak footprint of a model with `weight_bytes` of tensors under `setting`.

    On the CPU this is what becomes resident: all weights (touched by the first forward pass) plus what
    repacking adds (`repack`, used when `setting.repack`), the whole KV cache (llama.cpp clears it when the
    context is made), and the touched part of the compute buffer. With GPU offload, the offloaded layers' weights
    and KV cells and the whole reserved compute buffer go to the device; the token embeddings (`embd_bytes`) stay
    on the host, as llama.cpp keeps its input layer there — with tied embeddings the offloaded output layer needs
    them too, so they are held twice (host and device); repacking applies to the host's share. A mixture of
    experts' expert weights (`expert_bytes`, the same in every layer) follow their layer, except in the layers
    `setting.cpu_moe` keeps on the host — the usual way to run a MoE larger than the GPU: attention, router and KV
    on the device, the experts (most of the bytes, few of them used per token) in system RAM.
    """
    share = _offloaded_layers(arch, setting.gpu_layers) / arch.n_layer
    host = 1 - share
    host_repack = Repack(
        int(repack.repacked_bytes * host), int(repack.source_bytes * host), int(repack.copy_bytes * host)
    )
    mmap = mmap_for(setting.repack) if setting.mmap is None else setting.mmap
    weights = resident_weight_bytes(weight_bytes, host_repack if setting.repack else None, mmap)
    cells = setting.cells
    k, v = kv_bytes(arch, cells, setting.type_k, setting.type_v)
    quantized = setting.type_k.quantized or setting.type_v.quantized
    masked = cells // setting.n_seq if setting.streams else cells  # the cells one query row's mask spans
    if setting.gpu_layers != 0:
        compute = compute_reserved_bytes(arch, masked, setting.n_ubatch, setting.n_seq, quantized)
    elif setting.score_batch:  # every token of a scoring batch wants its logits row: the graph holds them all
        batch = min(setting.score_batch, setting.n_ubatch)
        compute = compute_bytes(arch, masked, batch, batch, setting.n_seq, quantized)
    else:
        compute = compute_resident_bytes(
            arch, masked, setting.n_ubatch, setting.n_seq, quantized, setting.prompt_tokens
        )
    footprint = Footprint(
        weight_bytes=weights,
        kv_bytes=k + v,
        # llama.cpp grows its logits buffer to the rows one decode returns: a sequence's, or a scoring batch's
        output_bytes=output_bytes(arch, max(setting.n_seq, setting.score_batch)),
        compute_bytes=compute,
        overhead_bytes=overhead_bytes(arch, setting.n_seq, setting.n_ubatch),
        kv_cells=cells,
        repack_bytes=host_repack.repacked_bytes if setting.repack else 0,
        state_bytes=state_bytes(arch, setting.n_seq),
    )
    if setting.gpu_layers == 0:
        return footprint
    expert_layers = expert_layers_offloaded(arch, setting.gpu_layers, setting.cpu_moe)
    experts_on_device = expert_bytes * expert_layers // arch.n_layer
    dense = weight_bytes - embd_bytes - expert_bytes
    tied_copy = embd_bytes if arch.tied_embeddings else 0  # the output layer is on the device from --gpu-layers 1
    device = int(dense * share + (k + v + footprint.state_bytes) * share) + experts_on_device + tied_copy + compute
    return dataclasses.replace(footprint, weight_bytes=weights + tied_copy, device_bytes=device)


# ---------------------------------------------------------------- what llama.cpp reports


@dataclass(frozen=True)
class Reported:
    """Buffer sizes llama.cpp printed in its log, in bytes (MiB figures with two decimals)."""

    model_bytes: int  # every model buffer (CPU, CPU_Mapped, CPU_REPACK, devices)
    kv_bytes: int
    k_bytes: int
    v_bytes: int
    output_bytes: int
    compute_bytes: int
    kv_cells: int
    repack_bytes: int = 0  # the extra model buffers, AMX and CPU_REPACK (part of model_bytes)
    mapped_bytes: int = 0  # the CPU_Mapped model buffer: the span of the file mapped in place (part of model_bytes)
    state_bytes: int = 0  # a hybrid's recurrent states (llama_memory_recurrent's R and S)


_MODEL = re.compile(r"(\S+) model buffer size =\s*([\d.]+) MiB")
_KV = re.compile(
    r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells"
    r".*K \(\w+\):\s*([\d.]+) MiB, V \(\w+\):\s*([\d.]+) MiB"
)
_STATE = re.compile(r"llama_memory_recurrent: size =\s*([\d.]+) MiB")
_OUTPUT = re.compile(r"output buffer size =\s*([\d.]+) MiB")
_COMPUTE = re.compile(r"^sched_reserve:\s+\S+ compute buffer size =\s*([\d.]+) MiB")


def parse_llama_log(lines: Iterable[str]) -> Reported:
    """Sum the buffers llama.cpp reports while loading a model and creating a context."""
    model = kv = k = v = output = compute = repack = mapped = state = 0.0
    cells = 0
    for line in lines:
        if m := _MODEL.search(line):
            model += float(m.group(2))
            repack += float(m.group(2)) if m.group(1) in EXTRA_BUFFERS else 0.0
            mapped += float(m.group(2)) if m.group(1) == "CPU_Mapped" else 0.0
        elif m := _KV.search(line):
            kv, cells, k, v = float(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))
        elif m := _STATE.search(line):
            state = float(m.group(1))
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
        repack_bytes=round(repack * MIB),
        mapped_bytes=round(mapped * MIB),
        state_bytes=round(state * MIB),
    )
