"""The memory equation: KV arithmetic against the reference, and every buffer against what llama.cpp reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeval import engine, gguf_info, memory
from edgeval.catalog import Catalog
from edgeval.quants import KVType, WeightQuant

KIB = 1024
MIB = 1 << 20

# Reference (Qwen3 config.json): f16 KV bytes per token = 2 × layers × 8 KV heads × 128 × 2 bytes.
REFERENCE_F16_PER_TOKEN = {
    "qwen3-0.6b": 112 * KIB,
    "qwen3-1.7b": 112 * KIB,
    "qwen3-4b": 144 * KIB,
    "qwen3-8b": 144 * KIB,
    "qwen3-14b": 160 * KIB,
    "qwen3-32b": 256 * KIB,
}
# Bytes per 32-element block (the reference's storage table).
BLOCK_BYTES = {"f16": 64, "bf16": 64, "q8_0": 34, "q5_1": 24, "q5_0": 22, "q4_1": 20, "q4_0": 18, "iq4_nl": 18}


@pytest.mark.parametrize("kv", list(KVType))
@pytest.mark.parametrize("name", list(REFERENCE_F16_PER_TOKEN))
def test_kv_bytes_match_the_reference_for_every_qwen3_size(name: str, kv: KVType) -> None:
    arch = Catalog.load().models[name].arch
    expected = REFERENCE_F16_PER_TOKEN[name] * BLOCK_BYTES[kv.value] / 64
    assert memory.kv_bytes_per_token(arch, kv, kv) == expected
    k, v = memory.kv_bytes(arch, 30_000 // 32 * 32, kv, kv)
    assert k + v == expected * (30_000 // 32 * 32)


def test_kv_at_30k_tokens_matches_the_study_table() -> None:
    # The study's Table 1 (FP16, one sequence, 30k tokens, GiB): 0.6B 3.20, 4B 4.12, 32B 7.32.
    book = Catalog.load()
    for name, gib in [("qwen3-0.6b", 3.20), ("qwen3-4b", 4.12), ("qwen3-32b", 7.32)]:
        k, v = memory.kv_bytes(book.models[name].arch, 30_000, KVType.F16, KVType.F16)
        assert (k + v) / (1 << 30) == pytest.approx(gib, abs=0.01)


@given(cells=st.integers(1, 200_000))
def test_padding_rounds_up_to_whole_pages_of_cells(cells: int) -> None:
    padded = memory.padded_cells(cells)
    assert padded % memory.KV_CELL_PADDING == 0
    assert cells <= padded < cells + memory.KV_CELL_PADDING


@given(
    blocks=st.integers(1, 10_000),
    layers=st.integers(1, 80),
    heads=st.sampled_from([1, 2, 4, 8]),
    head_dim=st.sampled_from([64, 128, 256]),
    kv_k=st.sampled_from(list(KVType)),
    kv_v=st.sampled_from(list(KVType)),
)
def test_kv_bytes_are_linear_in_cells_and_separate_for_k_and_v(
    blocks: int, layers: int, heads: int, head_dim: int, kv_k: KVType, kv_v: KVType
) -> None:
    arch = memory.Architecture(layers, 1024, 16, heads, head_dim, head_dim, 3072, 1000, 4096)
    cells = 32 * blocks
    k, v = memory.kv_bytes(arch, cells, kv_k, kv_v)
    k1, v1 = memory.kv_bytes(arch, 32, kv_k, kv_v)
    assert (k, v) == (k1 * blocks, v1 * blocks)
    assert k == layers * heads * head_dim * cells * BLOCK_BYTES[kv_k.value] // 32
    assert v == layers * heads * head_dim * cells * BLOCK_BYTES[kv_v.value] // 32


@given(prompt=st.integers(0, 4096), k=st.integers(1, 16), budget=st.integers(0, 32768))
def test_votes_share_the_prompt(prompt: int, k: int, budget: int) -> None:
    assert memory.cells_for(prompt, k, budget) == prompt + k * budget
    assert memory.cells_for(prompt, k, budget) <= k * memory.cells_for(prompt, 1, budget)


def test_footprint_parts_add_up_and_offload_moves_bytes_to_the_device() -> None:
    arch = Catalog.load().models["qwen3-8b"].arch
    cpu = memory.predict(arch, 5_000_000_000, memory.Setting(n_ctx=8192, n_seq=4))
    assert cpu.total_bytes == cpu.weight_bytes + cpu.kv_bytes + cpu.other_bytes
    assert cpu.device_bytes == 0 and cpu.host_bytes == cpu.total_bytes
    gpu = memory.predict(arch, 5_000_000_000, memory.Setting(n_ctx=8192, n_seq=4, gpu_layers=-1), embd_bytes=10**8)
    assert gpu.device_bytes > gpu.weight_bytes - 10**8
    half = memory.predict(arch, 5_000_000_000, memory.Setting(n_ctx=8192, n_seq=4, gpu_layers=18), embd_bytes=10**8)
    assert 0 < half.device_bytes < gpu.device_bytes


@pytest.mark.parametrize("n_ctx", [512, 2048])
@pytest.mark.parametrize("kv", [KVType.F16, KVType.Q8_0, KVType.Q4_0])
def test_predicted_buffers_equal_what_llama_cpp_reports(
    kv: KVType, n_ctx: int, tiny_models: dict[WeightQuant, Path]
) -> None:
    for quant, path in tiny_models.items():
        info = gguf_info.read_local(path)
        arch = info.architecture()
        with (
            engine.captured_log() as lines,
            engine.Model(path) as model,
            engine.Context(model, engine.ContextOptions(n_ctx=n_ctx, n_seq=2, type_k=kv, type_v=kv)),
        ):
            pass
        reported = memory.parse_llama_log(lines)
        cells = memory.padded_cells(n_ctx)
        k, v = memory.kv_bytes(arch, cells, kv, kv)
        where = f"{quant.value} {kv.value} ctx {n_ctx}"
        # llama.cpp prints MiB with two decimals: agree to that precision.
        assert reported.model_bytes == pytest.approx(info.weight_bytes, abs=0.005 * MIB), where
        assert reported.kv_cells == cells, where
        assert reported.k_bytes == pytest.approx(k, abs=0.005 * MIB), where
        assert reported.v_bytes == pytest.approx(v, abs=0.005 * MIB), where
        assert reported.output_bytes == pytest.approx(memory.output_bytes(arch, 2), abs=0.005 * MIB), where
        compute = memory.compute_reserved_bytes(arch, cells, 512, 2, kv.quantized)
        assert abs(compute - reported.compute_bytes) < MIB, where
