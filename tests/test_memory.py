"""The memory equation: KV arithmetic against the reference, and every buffer against what llama.cpp reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeval.core import memory
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges import gguf_info
from edgeval.edges.catalog import Catalog
from edgeval.llama import engine

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


# ---------------------------------------------------------------- weight repacking


def test_repacked_types_follow_llama_cpp_rules_by_cpu_feature() -> None:
    assert memory.repacked_types([]) == {}
    x86 = memory.repacked_types(["AVX", "AVX2", "FMA"])
    assert set(x86) == {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    assert set(memory.repacked_types(["AVX2", "AVX512F"])) == set(x86) | {"Q2_K"}  # /proc/cpuinfo's name too
    arm = memory.repacked_types(["NEON", "DOTPROD"])
    assert {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0"} <= set(arm) and arm["Q4_0"][0].rows == 4
    assert memory.repacked_types(["AVX2", "REPACK_OFF"]) == {}
    amx = memory.repacked_types(["AVX2", "AVX512", "AVX512_VNNI", "AMX_INT8"])
    assert [r.buffer for r in amx["Q4_K"]] == ["AMX", "CPU_REPACK"]  # AMX is tried first
    assert [r.buffer for r in amx["Q6_K"]] == ["AMX"] and amx["Q4_K"][0].extra_per_block == 4


def test_system_info_features_reads_what_the_build_turned_on() -> None:
    text = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 0 | REPACK = 1 |"
    assert memory.system_info_features(text) == ["SSE3", "AVX", "AVX2", "AVX512", "REPACK"]
    assert "REPACK_OFF" in memory.system_info_features("CPU : AVX2 = 1 | REPACK = 0 |")


def test_repacking_adds_the_repacked_copy_only_when_the_file_stays_mapped() -> None:
    arch = Catalog.load().models["qwen3-0.6b"].arch
    split = memory.Repack(repacked_bytes=210 * MIB, source_bytes=200 * MIB, copy_bytes=10 * MIB)
    base = memory.predict(arch, 400 * MIB, memory.Setting(n_ctx=4096))
    read = memory.predict(arch, 400 * MIB, memory.Setting(n_ctx=4096, repack=True), repack=split)
    mapped = memory.predict(arch, 400 * MIB, memory.Setting(n_ctx=4096, repack=True, mmap=True), repack=split)
    assert memory.mmap_for(True) is False and memory.mmap_for(False) is True
    assert read.weight_bytes == base.weight_bytes + 10 * MIB and read.repack_bytes == 210 * MIB
    assert mapped.weight_bytes == base.weight_bytes + 210 * MIB
    offloaded = memory.predict(arch, 400 * MIB, memory.Setting(n_ctx=4096, repack=True, gpu_layers=-1), repack=split)
    assert offloaded.weight_bytes == base.weight_bytes and offloaded.repack_bytes == 0


def test_catalog_estimate_of_repacking_follows_the_quantizer() -> None:
    ref = Catalog.load().resolve("qwen3-0.6b:Q4_K_M")[0]  # tied embeddings
    x86 = memory.repacked_types(["AVX2"])
    arm = memory.repacked_types(["NEON", "DOTPROD"])
    assert ref.repack(x86).copy_bytes == 0  # the tied output is Q6_K: not repacked on x86
    assert ref.repack(x86).repacked_bytes == ref.weight_bytes - ref.embd_bytes  # an upper bound
    assert ref.repack(arm).copy_bytes == ref.embd_bytes  # ARM repacks Q6_K: the output gets its own copy
    assert ref.repack(memory.repacked_types([])) == memory.Repack()


@pytest.mark.parametrize("mode", list(memory.RepackMode))
def test_predicted_weights_equal_llama_cpp_model_buffers_with_repacking(
    mode: memory.RepackMode, tiny_models: dict[WeightQuant, Path]
) -> None:
    types = engine.repacked_types(mode)
    any_repacked = False
    for quant, path in tiny_models.items():
        info = gguf_info.read_local(path)
        split = info.repack(types, tied_copy=mode.repacks_tied_output)
        setting = memory.Setting(n_ctx=256, repack=mode.on)
        predicted = memory.predict(info.architecture(), info.weight_bytes, setting, repack=split)
        with engine.captured_log() as lines, engine.Model(path, engine.LoadOptions(repack=mode, n_gpu_layers=0)):
            pass
        reported = memory.parse_llama_log(lines)
        where = f"{quant.value} repack {mode.value}"
        assert reported.model_bytes == pytest.approx(predicted.weight_bytes, abs=0.01 * MIB), where
        assert reported.repack_bytes == pytest.approx(predicted.repack_bytes, abs=0.005 * MIB), where
        # The loading edgeval chooses: the file mapped in place only without repacking.
        assert (reported.mapped_bytes > 0) == (not mode.on), where
        if mode is memory.RepackMode.CPU_REPACK:  # llama.cpp's own choice stays out, AMX included
            assert not any(re.search(r"\bAMX model buffer", line) for line in lines), where
        any_repacked |= reported.repack_bytes > 0
    assert any_repacked == bool(types)


def test_a_measured_footprint_counts_gpu_memory_beside_rss() -> None:
    import sqlite3

    from edgeval.edges import results

    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row

    def row(rss: int | None, vram: int | None) -> sqlite3.Row:
        found: sqlite3.Row = db.execute(
            "SELECT 4 AS k, ? AS predicted_by_votes, 900 AS predicted_bytes, ? AS peak_rss_bytes, "
            "? AS peak_vram_bytes, 900 AS arm_predicted_bytes",
            ('{"4": 900, "1": 600}', rss, vram),
        ).fetchone()
        return found

    assert results.memory_of(row(None, None)) == (900, "predicted")
    assert results.memory_of(row(1000, None)) == (1000, "measured")  # a CPU run
    assert results.memory_of(row(400, 700)) == (1100, "measured")  # offloaded: host and device together
    assert results.memory_of(row(400, 700), votes=1) == (800, "calibrated")  # 600 predicted + (1100 − 900)


def test_offloading_a_tied_model_holds_its_embeddings_on_host_and_device() -> None:
    ref = Catalog.load().resolve("qwen3-0.6b:Q8_0")[0]
    arch = ref.model.arch
    assert arch.tied_embeddings

    def footprint(gpu_layers: int) -> memory.Footprint:
        setting = memory.Setting(n_ctx=4096, gpu_layers=gpu_layers)
        return memory.predict(arch, ref.weight_bytes, setting, embd_bytes=ref.embd_bytes)

    cpu, output_only, everything, all_by_count = footprint(0), footprint(1), footprint(-1), footprint(29)
    assert cpu.device_bytes == 0 and cpu.weight_bytes == ref.weight_bytes
    # --gpu-layers 1 is llama.cpp's output layer alone: the tied projection's copy and the graph, no KV cells.
    assert output_only.device_bytes == ref.embd_bytes + output_only.compute_bytes
    assert everything.weight_bytes == ref.weight_bytes + ref.embd_bytes
    k, v = memory.kv_bytes(arch, 4096, KVType.F16, KVType.F16)
    assert everything.device_bytes == ref.weight_bytes + k + v + everything.compute_bytes
    assert all_by_count == everything  # 28 layers + the output layer


def test_cpu_repack_overrides_match_exactly_the_named_tensors() -> None:
    names = ["blk.0.ffn_up.weight", "blk.12.ffn_up.weight", "blk.1.attn_q.weight", "output.weight"]
    patterns = engine.buft_override_patterns(names)
    assert len(patterns) == 3  # one per tensor kind, whatever the number of layers
    every = [*names, "blk.2.ffn_up.weight", "blk.1.ffn_up.weight", "blk.120.ffn_up.weight", "token_embd.weight",
             "blk.1.attn_q.weight.extra", "xoutput.weight", "blk.0.ffn_upxweight"]  # fmt: skip
    matched = [n for n in every if any(re.search(p, n) for p in patterns)]  # Python's re: same syntax here
    assert matched == names


def test_cpu_repack_only_is_for_cpu_runs() -> None:
    cpu_repack, every, off = memory.RepackMode.CPU_REPACK, memory.RepackMode.ALL, memory.RepackMode.OFF
    assert memory.repack_for_offload(cpu_repack, 0) is cpu_repack
    assert memory.repack_for_offload(cpu_repack, -1) is off and memory.repack_for_offload(cpu_repack, 3) is off
    assert memory.repack_for_offload(every, -1) is every
