"""Tiny Qwen3-architecture GGUF models, written with the gguf package and quantized by llama.cpp.

They exist so tests, benchmarks and the offline demo run llama.cpp for real without downloading anything.
The same code writes a model with a real Qwen3 size's exact shapes (random weights) for speed and memory work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from edgeval.core import prompts
from edgeval.core.errors import DiskFullError, is_disk_full
from edgeval.core.quants import WeightQuant
from edgeval.llama import engine

# Bumped whenever the bytes this module writes change, so cached models are rebuilt.
FORMAT_VERSION = 1

# Qwen3's added tokens in vocabulary order (ids 151643..151668 in the real models).
QWEN3_SPECIAL_TOKENS: tuple[tuple[str, gguf.TokenType], ...] = (
    ("<|endoftext|>", gguf.TokenType.CONTROL),
    ("<|im_start|>", gguf.TokenType.CONTROL),
    ("<|im_end|>", gguf.TokenType.CONTROL),
    ("<|object_ref_start|>", gguf.TokenType.CONTROL),
    ("<|object_ref_end|>", gguf.TokenType.CONTROL),
    ("<|box_start|>", gguf.TokenType.CONTROL),
    ("<|box_end|>", gguf.TokenType.CONTROL),
    ("<|quad_start|>", gguf.TokenType.CONTROL),
    ("<|quad_end|>", gguf.TokenType.CONTROL),
    ("<|vision_start|>", gguf.TokenType.CONTROL),
    ("<|vision_end|>", gguf.TokenType.CONTROL),
    ("<|vision_pad|>", gguf.TokenType.CONTROL),
    ("<|image_pad|>", gguf.TokenType.CONTROL),
    ("<|video_pad|>", gguf.TokenType.CONTROL),
    ("<tool_call>", gguf.TokenType.USER_DEFINED),
    ("</tool_call>", gguf.TokenType.USER_DEFINED),
    ("<|fim_prefix|>", gguf.TokenType.USER_DEFINED),
    ("<|fim_middle|>", gguf.TokenType.USER_DEFINED),
    ("<|fim_suffix|>", gguf.TokenType.USER_DEFINED),
    ("<|fim_pad|>", gguf.TokenType.USER_DEFINED),
    ("<|repo_name|>", gguf.TokenType.USER_DEFINED),
    ("<|file_sep|>", gguf.TokenType.USER_DEFINED),
    ("<tool_response>", gguf.TokenType.USER_DEFINED),
    ("</tool_response>", gguf.TokenType.USER_DEFINED),
    ("<think>", gguf.TokenType.USER_DEFINED),
    ("</think>", gguf.TokenType.USER_DEFINED),
)
QWEN3_FIRST_SPECIAL_ID = 151643
_N_BYTE_TOKENS = 256

# The chat template Qwen3's official files carry, so tiny models are prompted the way real ones are.
QWEN3_CHAT_TEMPLATE = prompts.qwen3_template()
# Qwen3.5's generation prompt as its template writes it: it opens the reasoning itself (`<think>\n`) unless thinking
# is off — Qwen3's template with that one change, for tiny hybrids.
_QWEN3_CLOSED = "{{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}"
QWEN35_CHAT_TEMPLATE = QWEN3_CHAT_TEMPLATE.replace(
    _QWEN3_CLOSED, _QWEN3_CLOSED.replace("{%- endif %}", "{%- else %}\n        {{- '<think>\\n' }}\n    {%- endif %}")
)


@dataclass(frozen=True)
class SynthSpec:
    """Shapes of a Qwen3-architecture model (the numbers of its config.json)."""

    name: str = "tiny"
    n_layer: int = 2
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    n_ff: int = 512
    n_vocab: int = 512
    n_ctx_train: int = 4096
    tied_embeddings: bool = True
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6
    seed: int = 0
    chat_template: str = QWEN3_CHAT_TEMPLATE  # "" writes a file without one
    n_expert: int = 0  # > 0: a mixture of experts (llama.cpp's qwen3moe) with this many experts per layer
    n_expert_used: int = 0  # … of which each token uses this many
    n_ff_exp: int = 0  # each expert's FFN width
    n_ff_shexp: int = 0  # a hybrid mixture of experts' shared expert width (qwen35moe; 0: n_ff_exp)
    # > 0: a hybrid (llama.cpp's qwen35/qwen35moe, Qwen3.5's shape): every this-many-th layer is full attention
    # (head dim `head_dim`, a gated query), the others Gated DeltaNet linear attention with these heads:
    full_attention_interval: int = 0
    linear_k_heads: int = 0  # key heads of a linear layer (ssm.group_count)
    linear_v_heads: int = 0  # value heads (ssm.time_step_rank)
    linear_head_dim: int = 0  # key and value head dim (ssm.state_size)
    conv_kernel: int = 4  # the short convolution's width (ssm.conv_kernel)
    n_nextn: int = 0  # multi-token-prediction blocks after the layers (llama.cpp loads them only for MTP)

    def __post_init__(self) -> None:
        if self.n_vocab < _N_BYTE_TOKENS + len(QWEN3_SPECIAL_TOKENS) + 1:
            raise ValueError(f"n_vocab must be at least {_N_BYTE_TOKENS + len(QWEN3_SPECIAL_TOKENS) + 1}")
        if self.n_head % self.n_head_kv:
            raise ValueError("n_head must be a multiple of n_head_kv (grouped-query attention)")
        if self.n_expert and not (0 < self.n_expert_used <= self.n_expert and self.n_ff_exp > 0):
            raise ValueError("a mixture of experts needs 0 < n_expert_used <= n_expert and n_ff_exp > 0")
        if self.hybrid and not (self.linear_k_heads > 0 and self.linear_head_dim > 0 and self.linear_v_heads > 0):
            raise ValueError("a hybrid needs linear_k_heads, linear_v_heads and linear_head_dim")
        if self.hybrid and self.linear_v_heads % self.linear_k_heads:
            raise ValueError("linear_v_heads must be a multiple of linear_k_heads")

    @property
    def hybrid(self) -> bool:
        """Whether this is Qwen3.5's hybrid of linear and full attention."""
        return self.full_attention_interval > 0

    def recurrent(self, layer: int) -> bool:
        """Whether a layer is linear attention (llama.cpp: (i + 1) % interval != 0)."""
        return self.hybrid and (layer + 1) % self.full_attention_interval != 0

    @property
    def architecture(self) -> str:
        """llama.cpp's architecture name: qwen3, qwen3moe, qwen35 or qwen35moe."""
        name = "qwen35" if self.hybrid else "qwen3"
        return name + "moe" if self.n_expert else name

    @property
    def digest(self) -> str:
        """A short hash naming this spec's files in the cache."""
        fields = dataclasses.asdict(self) | {"format": FORMAT_VERSION}
        if not self.n_expert:  # dense specs keep the digests they had before experts existed
            for name in ("n_expert", "n_expert_used", "n_ff_exp"):
                del fields[name]
        if not self.hybrid:  # … and Qwen3 specs the digests they had before hybrids
            for name in _HYBRID_FIELDS:
                del fields[name]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def n_params(self) -> int:
        """Parameter count, embeddings included once when tied (as Qwen3's model cards count)."""
        return sum(int(np.prod(shape)) for shape in tensor_shapes(self).values())


_HYBRID_FIELDS = (
    "n_ff_shexp", "full_attention_interval", "linear_k_heads", "linear_v_heads", "linear_head_dim", "conv_kernel",
    "n_nextn",
)  # fmt: skip

# Real Qwen3 dense shapes (config.json), for random-weight models with exact sizes.
QWEN3_SHAPES: dict[str, SynthSpec] = {
    "0.6b": SynthSpec("qwen3-0.6b-shape", 28, 1024, 16, 8, 128, 3072, 151_936, 40_960, True),
    "1.7b": SynthSpec("qwen3-1.7b-shape", 28, 2048, 16, 8, 128, 6144, 151_936, 40_960, True),
    "4b": SynthSpec("qwen3-4b-shape", 36, 2560, 32, 8, 128, 9728, 151_936, 40_960, True),
    "8b": SynthSpec("qwen3-8b-shape", 36, 4096, 32, 8, 128, 12_288, 151_936, 40_960, False),
}

# Qwen3.5's published shapes (config.json: every 4th layer full attention, head dim 256, linear layers with 16 key
# heads of 128), with Qwen3's vocabulary size standing in for its 248,320 tokens only where noted by callers.
QWEN35_SHAPES: dict[str, SynthSpec] = {
    "0.8b": SynthSpec(
        "qwen3.5-0.8b-shape", 24, 1024, 8, 2, 256, 3584, 248_320, 262_144, True,
        full_attention_interval=4, linear_k_heads=16, linear_v_heads=16, linear_head_dim=128,
        chat_template=QWEN35_CHAT_TEMPLATE,
    ),
}  # fmt: skip


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (byte-level BPE's alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _letter_merges(count: int) -> list[tuple[str, str]]:
    """Deterministic merges building lowercase words, with and without a leading space (GPT-2's `Ġ`)."""
    space = bytes_to_unicode()[ord(" ")]
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    merges: list[tuple[str, str]] = [(space, c) for c in alphabet][:count]
    frontier = list(alphabet) + [space + c for c in alphabet]
    while len(merges) < count:
        grown = []
        for prefix in frontier:
            for c in alphabet:
                merges.append((prefix, c))
                grown.append(prefix + c)
                if len(merges) == count:
                    return merges
        frontier = grown
    return merges


@dataclass(frozen=True)
class Vocab:
    """A byte-level BPE vocabulary carrying Qwen3's special tokens."""

    tokens: list[str]
    types: list[int]
    merges: list[str]

    def id_of(self, token: str) -> int:
        """The id of a token string."""
        return self.tokens.index(token)


def build_vocab(n_vocab: int) -> Vocab:
    """Bytes, then letter merges, then Qwen3's special tokens (at Qwen3's ids when the vocab is full size)."""
    first_special = min(n_vocab - len(QWEN3_SPECIAL_TOKENS), QWEN3_FIRST_SPECIAL_ID)
    byte_chars = bytes_to_unicode()
    tokens = [byte_chars[b] for b in sorted(byte_chars, key=lambda b: ord(byte_chars[b]))]
    merges = _letter_merges(first_special - _N_BYTE_TOKENS)
    tokens += [left + right for left, right in merges]
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    for text, kind in QWEN3_SPECIAL_TOKENS:
        tokens.append(text)
        types.append(int(kind))
    # Full-size Qwen3 vocabularies pad the embedding matrix past the last real token.
    while len(tokens) < n_vocab:
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(int(gguf.TokenType.UNUSED))
    return Vocab(tokens, types, [f"{left} {right}" for left, right in merges])


def tensor_shapes(spec: SynthSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model, numpy shape (out_features, in_features), in GGUF order."""
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (spec.n_vocab, spec.n_embd)}
    for i in range(spec.n_layer + spec.n_nextn):
        b = f"blk.{i}."
        shapes |= {b + "attn_norm.weight": (spec.n_embd,)}
        shapes |= _linear_shapes(spec, b) if spec.recurrent(i) and i < spec.n_layer else _attention_shapes(spec, b)
        shapes |= {b + ("post_attention_norm.weight" if spec.hybrid else "ffn_norm.weight"): (spec.n_embd,)}
        shapes |= _ffn_shapes(spec, b)
        if i >= spec.n_layer:  # a multi-token-prediction block (as llama.cpp's qwen35 loads one)
            shapes |= {
                b + "nextn.eh_proj.weight": (spec.n_embd, 2 * spec.n_embd),
                b + "nextn.enorm.weight": (spec.n_embd,),
                b + "nextn.hnorm.weight": (spec.n_embd,),
            }
    shapes["output_norm.weight"] = (spec.n_embd,)
    if not spec.tied_embeddings:
        shapes["output.weight"] = (spec.n_vocab, spec.n_embd)
    return shapes


def _attention_shapes(spec: SynthSpec, b: str) -> dict[str, tuple[int, ...]]:
    q_dim, kv_dim = spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim
    return {
        b + "attn_q.weight": (2 * q_dim if spec.hybrid else q_dim, spec.n_embd),  # a hybrid's query carries a gate
        b + "attn_k.weight": (kv_dim, spec.n_embd),
        b + "attn_v.weight": (kv_dim, spec.n_embd),
        b + "attn_q_norm.weight": (spec.head_dim,),
        b + "attn_k_norm.weight": (spec.head_dim,),
        b + "attn_output.weight": (spec.n_embd, q_dim),
    }


def _linear_shapes(spec: SynthSpec, b: str) -> dict[str, tuple[int, ...]]:
    """A Gated DeltaNet layer's tensors (llama.cpp's qwen35 loader)."""
    key_dim, value_dim = spec.linear_k_heads * spec.linear_head_dim, spec.linear_v_heads * spec.linear_head_dim
    return {
        b + "attn_qkv.weight": (2 * key_dim + value_dim, spec.n_embd),
        b + "attn_gate.weight": (value_dim, spec.n_embd),
        b + "ssm_conv1d.weight": (2 * key_dim + value_dim, spec.conv_kernel),
        b + "ssm_dt.bias": (spec.linear_v_heads,),
        b + "ssm_a": (spec.linear_v_heads,),
        b + "ssm_beta.weight": (spec.linear_v_heads, spec.n_embd),
        b + "ssm_alpha.weight": (spec.linear_v_heads, spec.n_embd),
        b + "ssm_norm.weight": (spec.linear_head_dim,),
        b + "ssm_out.weight": (spec.n_embd, value_dim),
    }


def _ffn_shapes(spec: SynthSpec, b: str) -> dict[str, tuple[int, ...]]:
    if not spec.n_expert:
        return {
            b + "ffn_gate.weight": (spec.n_ff, spec.n_embd),
            b + "ffn_up.weight": (spec.n_ff, spec.n_embd),
            b + "ffn_down.weight": (spec.n_embd, spec.n_ff),
        }
    shapes = {
        b + "ffn_gate_inp.weight": (spec.n_expert, spec.n_embd),
        b + "ffn_gate_exps.weight": (spec.n_expert, spec.n_ff_exp, spec.n_embd),
        b + "ffn_down_exps.weight": (spec.n_expert, spec.n_embd, spec.n_ff_exp),
        b + "ffn_up_exps.weight": (spec.n_expert, spec.n_ff_exp, spec.n_embd),
    }
    if spec.hybrid:  # Qwen3.5's MoE: one shared expert beside the routed ones, with a gate of its own
        shared = spec.n_ff_shexp or spec.n_ff_exp
        shapes |= {
            b + "ffn_gate_inp_shexp.weight": (spec.n_embd,),
            b + "ffn_gate_shexp.weight": (shared, spec.n_embd),
            b + "ffn_up_shexp.weight": (shared, spec.n_embd),
            b + "ffn_down_shexp.weight": (spec.n_embd, shared),
        }
    return shapes


INIT_STD = 0.02  # GPT-2's initialisation, and the scale of random (untrained) test models


def random_weights(spec: SynthSpec, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic weights for one tensor: norms are ones, matrices N(0, INIT_STD²); a linear layer's decay rate
    A is −1 (llama.cpp stores −exp(A_log)), so its state fades rather than grows."""
    if name.endswith(".ssm_a"):
        return np.full(shape, -1.0, dtype=np.float32)
    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32)
    seed = int.from_bytes(hashlib.sha256(f"{spec.seed}:{name}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    weights: np.ndarray = rng.standard_normal(shape, dtype=np.float32)
    weights *= np.float32(INIT_STD)
    return weights


def write_gguf(
    spec: SynthSpec,
    path: Path,
    *,
    dtype: WeightQuant = WeightQuant.F16,
    weights: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write `spec` as an F16 or F32 GGUF at `path`; `weights` (by GGUF tensor name) replace random ones."""
    if dtype not in (WeightQuant.F16, WeightQuant.F32):
        raise ValueError(f"write_gguf writes F16 or F32, not {dtype.value}; quantize() makes the rest")
    vocab = build_vocab(spec.n_vocab)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), spec.architecture)
    writer.add_name(spec.name)
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32 if dtype is WeightQuant.F32 else gguf.LlamaFileType.MOSTLY_F16))
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer + spec.n_nextn)
    writer.add_feed_forward_length(spec.n_ff)
    if spec.n_expert:
        writer.add_expert_count(spec.n_expert)
        writer.add_expert_used_count(spec.n_expert_used)
        writer.add_expert_feed_forward_length(spec.n_ff_exp)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_key_length(spec.head_dim)
    writer.add_value_length(spec.head_dim)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    if spec.hybrid:
        _add_hybrid_keys(writer, spec)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    writer.add_eos_token_id(vocab.id_of("<|im_end|>"))
    writer.add_pad_token_id(vocab.id_of("<|endoftext|>"))
    writer.add_bos_token_id(vocab.id_of("<|endoftext|>"))
    writer.add_add_bos_token(False)
    if spec.chat_template:
        writer.add_chat_template(spec.chat_template)
    matrix_dtype = np.float32 if dtype is WeightQuant.F32 else np.float16
    for name, shape in tensor_shapes(spec).items():
        given = None if weights is None else weights.get(name)
        data = random_weights(spec, name, shape) if given is None else np.asarray(given, dtype=np.float32)
        if data.shape != shape:
            raise ValueError(f"tensor {name} has shape {data.shape}, expected {shape}")
        writer.add_tensor(name, data if len(shape) == 1 or _keeps_f32(spec, name) else data.astype(matrix_dtype))
    try:
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise
    tmp.replace(path)
    return path


def _keeps_f32(spec: SynthSpec, name: str) -> bool:
    """Whether llama.cpp's converter keeps a hybrid's matrix in f32 (its router gates and convolution: the CPU's
    ssm_conv reads f32 only)."""
    return spec.hybrid and name.endswith(("ssm_conv1d.weight", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight"))


def _add_hybrid_keys(writer: gguf.GGUFWriter, spec: SynthSpec) -> None:
    """Qwen3.5's keys as llama.cpp's converter writes them (conversion/qwen.py)."""
    if spec.n_expert and spec.n_ff_shexp:
        writer.add_expert_shared_feed_forward_length(spec.n_ff_shexp)
    writer.add_ssm_conv_kernel(spec.conv_kernel)
    writer.add_ssm_state_size(spec.linear_head_dim)
    writer.add_ssm_group_count(spec.linear_k_heads)
    writer.add_ssm_time_step_rank(spec.linear_v_heads)
    writer.add_ssm_inner_size(spec.linear_head_dim * spec.linear_v_heads)
    writer.add_full_attention_interval(spec.full_attention_interval)
    rot = spec.head_dim // 4  # partial_rotary_factor 0.25
    writer.add_rope_dimension_count(rot)
    pairs = rot // 2  # multi-section RoPE over (t, h, w): Qwen3.5's 11/11/10 of 32 pairs, scaled
    t = h = round(pairs * 11 / 32)
    writer.add_rope_dimension_sections([t, h, pairs - t - h, 0])
    if spec.n_nextn:
        writer.add_nextn_predict_layers(spec.n_nextn)


def build(
    spec: SynthSpec,
    quant: WeightQuant,
    folder: Path,
    *,
    threads: int | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """The GGUF of `spec` at `quant` in `folder`, built once (F16 written, then llama.cpp's quantizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{spec.name}-{spec.digest}-{quant.value}.gguf"
    if target.exists():
        return target
    if quant in (WeightQuant.F16, WeightQuant.F32):
        return write_gguf(spec, target, dtype=quant, weights=weights)
    source = build(spec, WeightQuant.F16, folder, threads=threads, weights=weights)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    engine.quantize(source, tmp, quant, threads=threads)
    tmp.replace(target)
    return target
