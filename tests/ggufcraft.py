"""A real GGUF's header as plain values, and any header (hostile ones too) written back before its tensor data.

gguf's writer refuses what a hostile file holds (a negative count, an unknown value type, arrays nested thousands
deep), so the header is serialized here, in GGUF's own layout; the tensor data is the source file's, unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import gguf
from gguf import GGUFValueType

SCALARS: dict[int, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}  # fmt: skip
STRING, ARRAY = int(GGUFValueType.STRING), int(GGUFValueType.ARRAY)


@dataclass(frozen=True)
class Value:
    """A typed metadata value; an array's `value` is (item type, [items as Value]) so items may be anything."""

    vtype: int
    value: object


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to the data section


@dataclass(frozen=True)
class Header:
    kvs: dict[str, Value]
    tensors: tuple[Tensor, ...]
    data: bytes = field(repr=False)
    alignment: int = 32

    def with_kv(self, key: str, value: Value | None) -> Header:
        kvs = dict(self.kvs)
        if value is None:
            kvs.pop(key, None)
        else:
            kvs[key] = value
        return replace(self, kvs=kvs)


def _value_of(field: gguf.ReaderField) -> Value:
    kind = field.types[0]
    if kind == GGUFValueType.ARRAY:
        item = field.types[1]
        return Value(ARRAY, (int(item), [Value(int(item), v) for v in field.contents()]))
    return Value(int(kind), field.contents())


def load(path: Path) -> Header:
    reader = gguf.GGUFReader(path)
    kvs = {k: _value_of(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = tuple(
        Tensor(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset) - reader.data_offset)
        for t in reader.tensors
    )
    return Header(kvs, tensors, path.read_bytes()[reader.data_offset :], reader.alignment)


def _string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def encode(v: Value) -> bytes:
    """A value's bytes without its type tag."""
    if v.vtype == STRING:
        assert isinstance(v.value, str | bytes)
        return _string(v.value)
    if isinstance(v.value, bytes) and v.vtype != STRING:
        return v.value  # written as it is (e.g. arrays nested thousands deep)
    if v.vtype == ARRAY:
        assert isinstance(v.value, tuple)
        item_type: int = v.value[0]
        items: list[Value] = v.value[1]
        return struct.pack("<IQ", item_type, len(items)) + b"".join(encode(i) for i in items)
    return struct.pack(SCALARS[v.vtype], v.value)


def nested(depth: int) -> Value:
    """An array holding an array … `depth` deep (an empty array of uint32 innermost)."""
    raw = struct.pack("<IQ", GGUFValueType.UINT32, 0)
    for _ in range(depth):
        raw = struct.pack("<IQ", ARRAY, 1) + raw
    return Value(ARRAY, raw)


def header_bytes(h: Header) -> bytes:
    out = [b"GGUF", struct.pack("<IQQ", 3, len(h.tensors), len(h.kvs))]
    for key, v in h.kvs.items():
        out += [_string(key), struct.pack("<I", v.vtype), encode(v)]
    for t in h.tensors:
        out += [_string(t.name), struct.pack("<I", len(t.shape))]
        out += [struct.pack("<Q", d & (2**64 - 1)) for d in t.shape]
        out += [struct.pack("<IQ", t.ggml_type, t.offset)]
    raw = b"".join(out)
    return raw + b"\0" * (-len(raw) % h.alignment)


def write(h: Header, path: Path) -> Path:
    path.write_bytes(header_bytes(h) + h.data)
    return path
