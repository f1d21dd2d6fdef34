"""Mixture of experts (llama.cpp's qwen3moe): the header's facts, the memory model against llama.cpp's buffers, and
expert weights kept on the CPU (`--cpu-moe`) as a load option and in the host/device split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeval.core import memory
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges import gguf_info
from edgeval.edges.catalog import Catalog
from edgeval.faces.cli import cli
from edgeval.llama import engine, synth

# FFN-heavy on purpose (32 experts of 256, 8 used per token), so the compute buffer's FFN phase decides its size.
MOE = synth.SynthSpec(
    name="tiny-moe", n_layer=3, n_embd=512, n_head=8, n_head_kv=2, n_ff=2048, n_vocab=2048,
    n_expert=32, n_expert_used=8, n_ff_exp=256,
)  # fmt: skip
PROMPT = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
OVERRIDDEN = re.compile(r"tensor (blk\.\d+\.ffn_\w+_exps\.weight) .* buffer type overridden to CPU")


@pytest.fixture(scope="module")
def moe_file(model_dir: Path) -> Path:
    return synth.build(MOE, WeightQuant.Q8_0, model_dir, threads=2)


def test_the_header_gives_the_experts_and_their_bytes(moe_file: Path) -> None:
    info = gguf_info.read_local(moe_file)
    arch = info.architecture()
    assert info.arch_name == "qwen3moe"
    assert (arch.n_expert, arch.n_expert_used, arch.n_ff_exp) == (32, 8, 256)
    assert arch.ffn_width == 8 * 256
    experts = [t for t in info.tensors if t.name.endswith("_exps.weight")]
    assert len(experts) == 3 * MOE.n_layer
    assert info.expert_bytes == sum(t.n_bytes for t in experts)
    # The experts are most of the weights: 3 × 32 experts × 512 × 256 per layer against attention and a 2k vocab.
    assert 0.8 < info.expert_bytes / info.weight_bytes < 1.0


@pytest.mark.parametrize(("n_ctx", "n_seq"), [(512, 1), (2048, 4)])
def test_weights_and_compute_buffer_match_what_llama_cpp_allocates(moe_file: Path, n_ctx: int, n_seq: int) -> None:
    info = gguf_info.read_local(moe_file)
    arch = info.architecture()
    with (
        engine.Model(moe_file) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=n_ctx, n_seq=n_seq)) as ctx,
    ):
        reported = memory.parse_llama_log([*model.load_log, *ctx.init_log])
    assert reported.model_bytes == pytest.approx(info.weight_bytes, abs=0.01 * memory.MIB)  # printed in MiB, 2 places
    predicted = memory.compute_reserved_bytes(arch, memory.padded_cells(n_ctx), 512, n_seq, kv_quantized=False)
    # The MoE graph's widest phase is the experts a token uses (8 × 256), not all 32 of them.
    assert predicted == pytest.approx(reported.compute_bytes, abs=0.05 * memory.MIB)


def test_cpu_moe_keeps_exactly_the_first_layers_experts_on_the_cpu_and_changes_no_token(moe_file: Path) -> None:
    def load(cpu_moe: int) -> tuple[set[str], tuple[int, ...]]:
        with (
            engine.Model(moe_file, engine.LoadOptions(cpu_moe=cpu_moe)) as model,
            engine.Context(model, engine.ContextOptions(n_ctx=512)) as ctx,
        ):
            out = ctx.generate(model.tokenize(PROMPT), max_tokens=12, seeds=(5,))
            kept = {m.group(1) for line in model.load_log if (m := OVERRIDDEN.search(line))}
        return kept, out.tokens[0]

    none, tokens = load(0)
    first, tokens_first = load(1)
    every, tokens_every = load(-1)
    assert none == set()
    assert first == {f"blk.0.ffn_{p}_exps.weight" for p in ("gate", "up", "down")}
    assert every == {f"blk.{i}.ffn_{p}_exps.weight" for i in range(MOE.n_layer) for p in ("gate", "up", "down")}
    assert tokens == tokens_first == tokens_every  # on the CPU the same kernels run wherever the weights are kept


def test_expert_layers_on_the_device_follow_llama_cpp_offload_order() -> None:
    arch = memory.Architecture(48, 2048, 32, 4, 128, 128, 6144, 151_936, 40_960, n_expert=128, n_expert_used=8)
    assert memory.expert_layers_offloaded(arch, gpu_layers=0, cpu_moe=0) == 0
    assert memory.expert_layers_offloaded(arch, gpu_layers=-1, cpu_moe=0) == 48
    assert memory.expert_layers_offloaded(arch, gpu_layers=-1, cpu_moe=-1) == 0
    assert memory.expert_layers_offloaded(arch, gpu_layers=-1, cpu_moe=30) == 18
    # --gpu-layers 21 is the output layer and the last 20 layers; the first 30 layers' experts take 2 of them back.
    assert memory.expert_layers_offloaded(arch, gpu_layers=21, cpu_moe=30) == 18
    assert memory.expert_layers_offloaded(arch, gpu_layers=21, cpu_moe=10) == 20
    assert memory.expert_layers_offloaded(arch, gpu_layers=1, cpu_moe=0) == 0  # the output layer alone
    assert memory.expert_layers_offloaded(arch, gpu_layers=99, cpu_moe=48) == 0


def test_cpu_moe_moves_the_experts_to_the_host_and_keeps_the_total() -> None:
    ref = Catalog.load().resolve("qwen3-30b-a3b:Q4_K_M")[0]
    arch = ref.model.arch

    def footprint(cpu_moe: int) -> memory.Footprint:
        setting = memory.Setting(n_ctx=32_768, type_k=KVType.F16, type_v=KVType.F16, gpu_layers=-1, cpu_moe=cpu_moe)
        return memory.predict(
            arch, ref.weight_bytes, setting, embd_bytes=ref.embd_bytes, expert_bytes=ref.expert_bytes
        )  # fmt: skip

    on_gpu, host_experts, half = footprint(0), footprint(-1), footprint(24)
    assert on_gpu.total_bytes == host_experts.total_bytes == half.total_bytes
    assert on_gpu.device_bytes - host_experts.device_bytes == ref.expert_bytes
    assert on_gpu.device_bytes - half.device_bytes == ref.expert_bytes // 2
    # All experts on the host: the device holds attention, router and output weights, the KV cache, the graph.
    k, v = memory.kv_bytes(arch, 32_768, KVType.F16, KVType.F16)
    assert host_experts.device_bytes == pytest.approx(
        ref.weight_bytes - ref.embd_bytes - ref.expert_bytes + k + v, rel=0.15
    )
    assert host_experts.host_bytes > ref.expert_bytes


def test_plan_with_a_gpu_budget_needs_cpu_moe_for_the_30b_moe() -> None:
    runner = CliRunner()
    base = ["plan", "--budget", "40GB", "--models", "qwen3-30b-a3b:Q4_K_M", "--kv", "f16", "--ctx", "32k", "--k", "1",
            "--gpu-layers", "-1", "--vram", "12GB", "--ram", "64GB", "--no-repack"]  # fmt: skip
    without = runner.invoke(cli, [*base, "--json"])
    assert without.exit_code == 0, without.output
    assert json.loads(without.stdout) == []
    with_experts_on_cpu = runner.invoke(cli, [*base, "--cpu-moe", "all", "--json"])
    rows = json.loads(with_experts_on_cpu.stdout)
    assert len(rows) == 1
    assert rows[0]["device_bytes"] <= 12e9 < rows[0]["total_bytes"]
    assert rows[0]["device_bytes"] + rows[0]["host_bytes"] == rows[0]["total_bytes"]
    bad = runner.invoke(cli, [*base, "--cpu-moe", "half"])
    assert bad.exit_code == 2 and "--cpu-moe" in bad.output


def test_run_loads_a_moe_with_cpu_moe_through_the_worker(moe_file: Path, tmp_path: Path) -> None:
    args = ["run", str(moe_file), "--task", "arith", "--limit", "2", "--budget-tokens", "8", "--cpu-moe", "all",
            "--db", str(tmp_path / "s.db"), "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["status"] == "done" and row["n_items"] == 2
    assert row["predicted_bytes"] > 0
