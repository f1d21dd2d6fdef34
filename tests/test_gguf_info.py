"""Reading GGUF headers: agreement with the gguf package, and clear errors for damaged files."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import pytest
from click.testing import CliRunner

from edgeval.core.quants import WeightQuant
from edgeval.edges import gguf_info
from edgeval.faces import demo
from edgeval.faces.cli import cli

from . import ggufcraft
from .conftest import TINY


@pytest.mark.parametrize("quant", [WeightQuant.F16, WeightQuant.Q4_K_M, WeightQuant.Q2_K])
def test_header_agrees_with_gguf_reader(quant: WeightQuant, tiny_models: dict[WeightQuant, Path]) -> None:
    path = tiny_models[quant]
    info = gguf_info.read_local(path)
    reader = gguf.GGUFReader(path)
    assert [(t.name, t.tensor_type, int(t.n_bytes)) for t in reader.tensors] == [
        (t.name, t.ggml_type, t.n_bytes) for t in info.tensors
    ]
    assert info.data_offset == reader.data_offset
    arch = info.architecture()
    assert (arch.n_layer, arch.n_embd, arch.n_head, arch.n_head_kv, arch.head_dim_k, arch.n_ff, arch.n_vocab) == (
        TINY.n_layer, TINY.n_embd, TINY.n_head, TINY.n_head_kv, TINY.head_dim, TINY.n_ff, TINY.n_vocab,
    )  # fmt: skip
    assert info.n_params == TINY.n_params
    assert info.tied_embeddings
    assert sum(info.bytes_by_type.values()) == info.weight_bytes


def test_header_read_in_small_chunks_is_the_same(tiny_models: dict[WeightQuant, Path]) -> None:
    data = tiny_models[WeightQuant.Q8_0].read_bytes()
    calls: list[tuple[int, int]] = []

    def read_at(offset: int, n: int) -> bytes:
        calls.append((offset, n))
        return data[offset : offset + n]

    small = gguf_info.read_header(read_at, "mem", file_size=len(data), first_chunk=100)
    assert small.tensors == gguf_info.read_local(tiny_models[WeightQuant.Q8_0]).tensors
    assert len(calls) > 3
    assert max(offset + n for offset, n in calls) < len(data)  # never read the tensor data


def test_truncated_and_corrupt_files_get_clear_errors(tmp_path: Path, tiny_models: dict[WeightQuant, Path]) -> None:
    data = tiny_models[WeightQuant.Q8_0].read_bytes()
    info = gguf_info.read_local(tiny_models[WeightQuant.Q8_0])
    cases = {
        "half-header.gguf": (data[: info.data_offset // 2], "truncated"),
        "no-tensor-data.gguf": (data[: info.data_offset + 1000], "truncated: tensor data needs"),
        "html.gguf": (b"<html>rate limited</html>", "not a GGUF"),
        "empty.gguf": (b"", "empty file"),
        "version.gguf": (b"GGUF" + (99).to_bytes(4, "little") + data[8:], "version 99"),
        "count.gguf": (data[:8] + (2**62).to_bytes(8, "little") + data[16:], "corrupt header"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(gguf_info.GGUFFormatError, match=message):
            gguf_info.read_local(path)
        result = CliRunner().invoke(cli, ["inspect", str(path)])
        assert result.exit_code == 1, name
        assert message.split(":")[0] in result.output and "Traceback" not in result.output


def test_inspect_a_local_file(tiny_models: dict[WeightQuant, Path]) -> None:
    import json

    result = CliRunner().invoke(cli, ["inspect", str(tiny_models[WeightQuant.Q4_K_M]), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["architecture"] == "qwen3"
    assert facts["n_layer"] == TINY.n_layer and facts["n_head_kv"] == TINY.n_head_kv
    assert facts["key_length"] == facts["value_length"] == TINY.head_dim
    assert facts["n_ctx_train"] == TINY.n_ctx_train
    assert set(facts["bytes_by_type"]) >= {"Q4_K", "Q6_K", "F32"}
    table = CliRunner().invoke(cli, ["inspect", str(tiny_models[WeightQuant.Q4_K_M])])
    assert table.exit_code == 0 and "Q6_K" in table.output and "parameters" in table.output


def test_a_long_string_array_is_stepped_over_alike_in_any_chunks_and_a_corrupt_length_in_it_is_named() -> None:
    # A vocabulary-sized array is stepped over in place (lengths read from the buffer) unless a string crosses
    # the buffer's end: read in 64-byte chunks nearly every string does, in 1 MiB chunks almost none
    header = ggufcraft.load(demo.family_sources()[0])
    words = [ggufcraft.Value(ggufcraft.STRING, "w" * (i % 37) + "é" * (i % 5)) for i in range(3000)]
    words[1999] = ggufcraft.Value(ggufcraft.STRING, "marked")
    good = ggufcraft.header_bytes(
        header.with_kv("x.words", ggufcraft.Value(ggufcraft.ARRAY, (ggufcraft.STRING, words)))
    )

    def read(raw: bytes, chunk: int) -> gguf_info.GGUFInfo:
        return gguf_info.read_header(lambda at, n: raw[at : at + n], "mem.gguf", first_chunk=chunk)

    small, large = read(good, 64), read(good, 1 << 20)
    assert small.array_lengths["x.words"] == large.array_lengths["x.words"] == 3000
    assert small.longest_items["x.words"] == large.longest_items["x.words"] == 36 + 2 * 4
    assert small.data_offset == large.data_offset and small.tensors == large.tensors
    # The 2,000th string's length made absurd, and the file cut inside the array
    at = good.index(struct.pack("<Q", 6) + b"marked")
    bad = good[:at] + struct.pack("<Q", 1 << 40) + good[at + 8 :]
    for chunk in (64, 1 << 20):
        with pytest.raises(gguf_info.GGUFFormatError, match="corrupt header: a string length of 1099511627776"):
            read(bad, chunk)
        with pytest.raises(gguf_info.GGUFFormatError, match="truncated"):
            read(good[: at + 3], chunk)
