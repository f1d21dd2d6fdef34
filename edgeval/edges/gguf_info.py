"""What a GGUF header says: architecture facts and tensor bytes by type, from a local file or any byte source.

gguf's own GGUFReader memory-maps a whole file; edgeval must also read the header of a multi-gigabyte file on
the Hub through a few HTTP range requests, so this module parses the header from a byte source itself and
takes the format's constants (value types, tensor block sizes) from the gguf package.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from edgeval.core.errors import ModelFileError
from edgeval.core.memory import Architecture, Repack, RepackRule

# A function returning up to n bytes at an offset (fewer only at the end of the file).
ReadAt = Callable[[int, int], bytes]

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
# The expert weights of a mixture of experts, as llama.cpp names them (its LLM_FFN_EXPS_REGEX).
EXPERT_TENSOR = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")
# A repeating layer's tensor name: `blk.N.…`.
_BLOCK = re.compile(r"blk\.(\d+)\.")
# Arrays longer than this are counted, not kept (token lists, merges); a hybrid's per-layer flags are kept.
_KEEP_ARRAY = 512
_U64 = struct.Struct("<Q")
_MAX_COUNT = 1 << 28  # beyond any real header: a larger count means corruption
_MAX_DIM = 1 << 24  # a width, head count or head size past this is no model's (the largest are about 2^15)
_MAX_LAYERS = 1 << 16
_MAX_CONTEXT = 1 << 32


def _shown(value: object) -> str:
    """A header value in a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


class GGUFFormatError(ModelFileError):
    """A file that is not a readable GGUF (corrupt or truncated header, tensor data past the end)."""

    hint = "the file is damaged or incomplete: download it again (`edgeval pull`)"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header."""

    name: str
    shape: tuple[int, ...]  # GGUF order: ne0 (the row length) first
    ggml_type: GGMLQuantizationType
    offset: int

    @property
    def n_elements(self) -> int:
        """Number of values."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        """Bytes of the tensor's data."""
        block, size = GGML_QUANT_SIZES[self.ggml_type]
        return self.n_elements // block * size


def _repacked_size(t: TensorInfo, types: Mapping[str, tuple[RepackRule, ...]]) -> int | None:
    """A weight's bytes in the first extra buffer whose rule its shape fits; None when it stays plain."""
    block = GGML_QUANT_SIZES[t.ggml_type][0]
    for rule in types.get(t.ggml_type.name, ()):
        if len(t.shape) == 2 and t.shape[1] % rule.rows == 0 and t.shape[0] % rule.cols == 0:
            return t.n_bytes + t.n_elements // block * rule.extra_per_block
    return None


@dataclass(frozen=True)
class GGUFInfo:
    """A GGUF file's header: metadata (small values; long arrays only counted) and tensor table."""

    source: str
    version: int
    metadata: dict[str, object]
    array_lengths: dict[str, int]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int | None = None
    bytes_by_type: dict[str, int] = field(default_factory=dict)
    longest_items: dict[str, int] = field(default_factory=dict)  # a string array's longest item, in bytes

    @property
    def longest_token_bytes(self) -> int | None:
        """The vocabulary's longest token text in bytes (a token stands for at most that many bytes of a prompt:
        byte-level BPE and SentencePiece spell each byte with one character or more), None when not known."""
        return self.longest_items.get("tokenizer.ggml.tokens") or None

    def get(self, key: str, default: object = None) -> object:
        """A metadata value by key."""
        return self.metadata.get(key, default)

    @property
    def chat_template(self) -> str | None:
        """`tokenizer.chat_template` (Jinja), or None when the file carries none."""
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def arch_name(self) -> str:
        """`general.architecture`, e.g. qwen3."""
        return str(self.metadata.get("general.architecture", ""))

    def _arch_int(self, key: str, default: int | None = None, low: int = 1, high: int = _MAX_DIM) -> int:
        """A count from the header, checked: an integer (not a boolean) from `low` to `high`."""
        name = f"{self.arch_name}.{key}"
        value = self.metadata.get(name, default)
        if value is None:
            raise GGUFFormatError(Path(self.source), f"header has no {name}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise GGUFFormatError(Path(self.source), f"{name} is {_shown(value)}, not an integer")
        if not low <= value <= high:
            raise GGUFFormatError(Path(self.source), f"{name} is {value}, outside {low}…{high:,}")
        return value

    @property
    def n_nextn(self) -> int:
        """Multi-token-prediction blocks after the layers (`nextn_predict_layers`; 0: none)."""
        return self._arch_int("nextn_predict_layers", 0, low=0, high=_MAX_LAYERS)

    @property
    def n_layer(self) -> int:
        """The layers a forward pass runs: `block_count` without the multi-token-prediction blocks."""
        blocks = self._arch_int("block_count", high=_MAX_LAYERS)
        if self.n_nextn >= blocks:
            raise GGUFFormatError(Path(self.source), f"{self.n_nextn} prediction blocks of {blocks} leave no layer")
        return blocks - self.n_nextn

    @functools.cached_property
    def loaded_tensors(self) -> tuple[TensorInfo, ...]:
        """The tensors llama.cpp loads for generation: a multi-token-prediction block's are skipped (read only when
        speculative decoding asks for them), so they take no memory."""
        if not self.n_nextn:
            return self.tensors
        first = self.n_layer
        return tuple(t for t in self.tensors if not ((m := _BLOCK.match(t.name)) and int(m.group(1)) >= first))

    @property
    def weight_bytes(self) -> int:
        """Bytes of the tensors llama.cpp loads."""
        return sum(t.n_bytes for t in self.loaded_tensors)

    @property
    def n_params(self) -> int:
        """Parameter count (tied embeddings counted once)."""
        return sum(t.n_elements for t in self.tensors)

    @property
    def tied_embeddings(self) -> bool:
        """Whether the output projection reuses the token embeddings (no output.weight)."""
        return all(t.name != "output.weight" for t in self.tensors)

    @property
    def embd_bytes(self) -> int:
        """Bytes of the token embedding matrix."""
        return sum(t.n_bytes for t in self.tensors if t.name == "token_embd.weight")

    @property
    def expert_bytes(self) -> int:
        """Bytes of a mixture of experts' expert weights (`blk.N.ffn_{gate,up,down}_exps`; 0 for a dense model)."""
        return sum(t.n_bytes for t in self.loaded_tensors if EXPERT_TENSOR.search(t.name))

    def repack(self, types: Mapping[str, tuple[RepackRule, ...]], *, tied_copy: bool = True) -> Repack:
        """What llama.cpp's CPU backend repacks of this model, given its rules per type (`memory.repacked_types`).

        The matrix-product weights are the 2-D tensors other than the token embeddings (looked up by row, never
        repacked); each takes the first rule its shape fits. With tied embeddings the output projection is the
        token-embedding tensor used for a product: when it repacks (and `tied_copy`: llama.cpp's own buffer
        choice, `RepackMode.repacks_tied_output`), that is a copy beside the plain embeddings.
        """
        moved = [(t.n_bytes, size) for t, size in self._repacked(types)]
        embd = next((t for t in self.tensors if t.name == "token_embd.weight"), None)
        copy = _repacked_size(embd, types) if tied_copy and self.tied_embeddings and embd is not None else None
        return Repack(
            repacked_bytes=sum(size for _, size in moved) + (copy or 0),
            source_bytes=sum(n for n, _ in moved),
            copy_bytes=copy or 0,
        )

    def repacked_tensors(self, types: Mapping[str, tuple[RepackRule, ...]]) -> tuple[str, ...]:
        """The names of the weights that repack under these rules (the token embeddings never do)."""
        return tuple(t.name for t, _ in self._repacked(types))

    def _repacked(self, types: Mapping[str, tuple[RepackRule, ...]]) -> list[tuple[TensorInfo, int]]:
        sizes = [(t, _repacked_size(t, types)) for t in self.loaded_tensors if t.name != "token_embd.weight"]
        return [(t, size) for t, size in sizes if size is not None]

    def architecture(self) -> Architecture:
        """The numbers the memory model needs."""
        n_head = self._arch_int("attention.head_count")
        n_embd = self._arch_int("embedding_length")
        head_k = self._arch_int("attention.key_length", max(1, n_embd // n_head))
        n_vocab = self.array_lengths.get("tokenizer.ggml.tokens")
        if n_vocab is None:
            embd = next((t for t in self.tensors if t.name == "token_embd.weight"), None)
            if embd is not None and len(embd.shape) != 2:
                raise GGUFFormatError(Path(self.source), f"token_embd.weight has shape {list(embd.shape)}, not 2-D")
            n_vocab = embd.shape[1] if embd else 0
        n_expert = self._arch_int("expert_count", 0, low=0)
        return Architecture(
            n_layer=self.n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=self._arch_int("attention.head_count_kv", n_head),
            head_dim_k=head_k,
            head_dim_v=self._arch_int("attention.value_length", head_k),
            n_ff=self._arch_int("feed_forward_length", low=0),
            n_vocab=n_vocab,
            n_ctx_train=self._arch_int("context_length", high=_MAX_CONTEXT),
            tied_embeddings=self.tied_embeddings,
            n_merges=self.array_lengths.get("tokenizer.ggml.merges", 0),
            n_expert=n_expert,
            n_expert_used=self._arch_int("expert_used_count", 0, low=0, high=n_expert),
            n_ff_exp=self._arch_int("expert_feed_forward_length", 0, low=0),
            n_ff_shexp=self._arch_int("expert_shared_feed_forward_length", 0, low=0),
            n_tensors=len(self.loaded_tensors),
            **self._recurrent(),
        )

    def _recurrent(self) -> dict[str, int]:
        """A hybrid's recurrent layers and state sizes, as llama.cpp's qwen35 loader reads them (none for others)."""
        if self.get(f"{self.arch_name}.ssm.state_size") is None:
            return {}
        n_layer = self.n_layer
        flags = self.get(f"{self.arch_name}.attention.recurrent_layers")
        if isinstance(flags, list):
            recurrent = sum(1 for i, flag in enumerate(flags[:n_layer]) if flag)
        else:
            interval = self._arch_int("full_attention_interval", 4, high=_MAX_LAYERS)
            recurrent = sum(1 for i in range(n_layer) if (i + 1) % interval)
        d_conv = self._arch_int("ssm.conv_kernel", low=2)
        d_inner = self._arch_int("ssm.inner_size")
        d_state = self._arch_int("ssm.state_size")
        n_group = self._arch_int("ssm.group_count")
        return {
            "recurrent_layers": recurrent,
            "state_r": (d_conv - 1) * (d_inner + 2 * n_group * d_state),
            "state_s": d_state * d_inner,
            "linear_v_heads": self._arch_int("ssm.time_step_rank"),
            "conv_kernel": d_conv,
        }


class _Cursor:
    """Sequential reads over a ReadAt source, fetched in growing chunks."""

    def __init__(self, read_at: ReadAt, source: str, first_chunk: int) -> None:
        self._read_at = read_at
        self._source = source
        self._buf = b""
        self._buf_start = 0
        self._chunk = first_chunk
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        while end > self._buf_start + len(self._buf):
            got = self._read_at(self._buf_start + len(self._buf), max(self._chunk, n))
            if not got:
                raise GGUFFormatError(Path(self._source), f"truncated: the header ends past the file's end ({end} B)")
            # Keep only what is still ahead of the cursor, then grow the next request.
            keep_from = self.pos - self._buf_start
            self._buf = self._buf[keep_from:] + got
            self._buf_start = self.pos
            self._chunk = min(self._chunk * 2, 16 << 20)
        start = self.pos - self._buf_start
        self.pos = end
        return self._buf[start : start + n]

    def scalar(self, fmt: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def count(self, what: str) -> int:
        n = int(self.scalar("<Q"))
        if n > _MAX_COUNT:
            raise GGUFFormatError(Path(self._source), f"corrupt header: {what} of {n}")
        return n

    def string(self) -> str:
        return self.take(self.count("a string length")).decode("utf-8", errors="replace")

    def skip_strings(self, n: int) -> int:
        """Step over `n` strings (a vocabulary's 150,000 tokens, say) without decoding them; returns the longest's
        length. The strings lying whole in the buffer are stepped over in one tight loop (their lengths read in
        place: a vocabulary's two arrays are most of a header's reading); one reaching past it is read as `take`
        reads, which fetches the next chunk."""
        longest, left = 0, n
        unpack = _U64.unpack_from
        while left > 0:
            buf, at = self._buf, self.pos - self._buf_start
            size = len(buf)
            while left > 0 and at + 8 <= size:
                length = unpack(buf, at)[0]
                if length > _MAX_COUNT:
                    raise GGUFFormatError(Path(self._source), f"corrupt header: a string length of {length}")
                if at + 8 + length > size:
                    break
                at += 8 + length
                left -= 1
                if length > longest:
                    longest = length
            self.pos = self._buf_start + at
            if left > 0:
                longest = max(longest, len(self.take(self.count("a string length"))))
                left -= 1
        return longest


_MAX_NESTING = 4  # arrays of arrays this deep at most (llama.cpp reads none nested)


@dataclass
class _Arrays:
    """What the parser notes of the arrays it reads: each key's length and, for strings, the longest item."""

    lengths: dict[str, int] = field(default_factory=dict)
    longest: dict[str, int] = field(default_factory=dict)


def _kind(cur: _Cursor, vtype: int, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(vtype)
    except ValueError:
        raise GGUFFormatError(Path(cur._source), f"corrupt header: unknown value type {vtype} for {key}") from None


def _value(cur: _Cursor, vtype: int, key: str, arrays: _Arrays | None, depth: int = 0) -> object:
    kind = _kind(cur, vtype, key)
    if kind == GGUFValueType.STRING:
        return cur.string()
    if kind != GGUFValueType.ARRAY:
        return cur.scalar(_SCALARS[kind])
    if depth >= _MAX_NESTING:
        raise GGUFFormatError(Path(cur._source), f"corrupt header: {key} holds arrays nested over {_MAX_NESTING} deep")
    item_type = int(cur.scalar("<I"))
    item_kind = _kind(cur, item_type, key)
    n = cur.count(f"an array length ({key})")
    if arrays is not None:
        arrays.lengths[key] = n
    if item_kind == GGUFValueType.STRING and n > _KEEP_ARRAY:
        longest = cur.skip_strings(n)
        if arrays is not None:
            arrays.longest[key] = max(arrays.longest.get(key, 0), longest)
        return None
    if item_kind == GGUFValueType.STRING:  # short: kept
        items: list[object] = []
        for _ in range(n):
            raw = cur.take(cur.count("a string length"))
            items.append(raw.decode("utf-8", errors="replace"))
            if arrays is not None:
                arrays.longest[key] = max(arrays.longest.get(key, 0), len(raw))
        return items
    if item_kind in _SCALARS and n > _KEEP_ARRAY:
        cur.take(n * struct.calcsize(_SCALARS[item_kind]))
        return None
    kept = [_value(cur, item_type, key, None, depth + 1) for _ in range(n)]
    return kept if n <= _KEEP_ARRAY else None


def read_header(read_at: ReadAt, source: str, *, file_size: int | None = None, first_chunk: int = 1 << 20) -> GGUFInfo:
    """Parse a GGUF header from a byte source; checks the tensor data fits in `file_size` when known."""
    cur = _Cursor(read_at, source, first_chunk)
    if cur.take(4) != b"GGUF":
        raise GGUFFormatError(Path(source), "not a GGUF file (its first bytes are not 'GGUF')")
    version = int(cur.scalar("<I"))
    if version not in (2, 3):
        raise GGUFFormatError(Path(source), f"GGUF version {version} is not supported (only 2 and 3)")
    n_tensors = cur.count("a tensor count")
    n_kv = cur.count("a key count")
    metadata: dict[str, object] = {}
    arrays = _Arrays()
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = _value(cur, int(cur.scalar("<I")), key, arrays)
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = int(cur.scalar("<I"))
        if n_dims > 8:
            raise GGUFFormatError(Path(source), f"corrupt header: tensor {name} has {n_dims} dimensions")
        shape = tuple(int(cur.scalar("<Q")) for _ in range(n_dims))
        raw_type = int(cur.scalar("<I"))
        try:
            ggml_type = GGMLQuantizationType(raw_type)
        except ValueError:
            raise GGUFFormatError(Path(source), f"tensor {name} has unknown type {raw_type}") from None
        block = GGML_QUANT_SIZES[ggml_type][0]
        if shape and shape[0] % block:
            raise GGUFFormatError(
                Path(source),
                f"tensor {name} has rows of {shape[0]} values, not a multiple of {ggml_type.name}'s {block}",
            )
        tensors.append(TensorInfo(name, shape, ggml_type, int(cur.scalar("<Q"))))
    alignment = metadata.get("general.alignment", 32)
    align = alignment if isinstance(alignment, int) and alignment > 0 else 32
    data_offset = (cur.pos + align - 1) // align * align
    by_type: dict[str, int] = {}
    for t in tensors:
        by_type[t.ggml_type.name] = by_type.get(t.ggml_type.name, 0) + t.n_bytes
    info = GGUFInfo(
        source, version, metadata, arrays.lengths, tuple(tensors), data_offset, file_size, by_type, arrays.longest
    )
    if file_size is not None and tensors:
        end = data_offset + max(t.offset + t.n_bytes for t in tensors)
        if end > file_size:
            raise GGUFFormatError(
                Path(source), f"truncated: tensor data needs {end:,} bytes but the file has {file_size:,}"
            )
    return info


def read_local(path: Path) -> GGUFInfo:
    """The header of a local GGUF file, checked against the file's size."""
    if not path.is_file():
        raise ModelFileError(path, "no such file" if not path.exists() else "is not a file")
    if path.stat().st_size == 0:
        raise GGUFFormatError(path, "empty file (0 bytes)")
    with path.open("rb") as f:

        def read_at(offset: int, n: int) -> bytes:
            f.seek(offset)
            return f.read(n)

        return read_header(read_at, str(path), file_size=path.stat().st_size, first_chunk=4 << 20)
