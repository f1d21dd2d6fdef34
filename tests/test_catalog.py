"""The catalog: built-in entries, references, user catalogs, local files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeval.core import memory
from edgeval.core.quants import WeightQuant
from edgeval.edges.catalog import Catalog, CatalogError, UnknownModelError
from edgeval.faces import ui
from edgeval.faces.cli import cli

from .conftest import TINY, write_catalog

SIZES = ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b"]


def test_builtin_catalog_has_every_size_with_4_8_and_16_bit_files() -> None:
    book = Catalog.load()
    assert set(SIZES) <= book.models.keys()
    for name in SIZES:
        quants = {f.quant for f in book.models[name].files}
        assert {WeightQuant.Q4_K_M, WeightQuant.Q8_0} <= quants, name
        assert quants & {WeightQuant.F16, WeightQuant.BF16}, name
        for f in book.models[name].files:
            assert f.repo and f.file
            # the i-quants were added without the Hub: no size (estimated, shown †); every other file has one
            assert (f.size or 0) > 0 or f.quant in (WeightQuant.IQ4_XS, WeightQuant.IQ4_NL), (name, f.quant)
            assert f.file.endswith(".gguf") and f.quant.value in f.file
            assert f.sha256 is None or len(f.sha256) == 64


def test_catalog_sizes_agree_with_the_architecture() -> None:
    # An 8-bit file holds about 8.5 bits per parameter; a 16-bit one 16.
    for model in Catalog.load().models.values():
        for f in model.files:
            if f.size is None:  # not listed: planning estimates it (see test_unlisted_sizes_are_estimated…)
                continue
            bits = 8 * f.size / model.params
            if f.quant == WeightQuant.Q8_0:
                assert 8.4 < bits < 8.7, (model.name, bits)
            if f.quant == WeightQuant.BF16:
                assert 15.9 < bits < 16.2, (model.name, bits)


def test_references_resolve_one_file_all_files_or_a_path(tiny_models: dict[WeightQuant, Path]) -> None:
    book = Catalog.load()
    (one,) = book.resolve("qwen3-8b:Q4_K_M")
    assert one.label == "qwen3-8b:Q4_K_M" and one.file.file == "Qwen3-8B-Q4_K_M.gguf"
    assert book.resolve("QWEN3-8B:q4_k_m")[0].label == one.label
    assert len(book.resolve("qwen3-8b")) == len(book.models["qwen3-8b"].files)
    (local,) = book.resolve(str(tiny_models[WeightQuant.Q8_0]))
    assert local.file.quant == WeightQuant.Q8_0
    assert local.model.arch.n_layer == TINY.n_layer
    assert local.weight_bytes == local.header.weight_bytes if local.header else False


@pytest.mark.parametrize(("ref", "near"), [("qwen3-9b:Q4_K_M", "qwen3-8b:Q4_K_M"), ("qwen3-8b:Q9_K", "qwen3-8b")])
def test_unknown_reference_lists_closest_matches(ref: str, near: str) -> None:
    with pytest.raises(UnknownModelError) as caught:
        Catalog.load().resolve(ref)
    assert any(near in s for s in caught.value.suggestions)
    result = CliRunner().invoke(cli, ["plan", "--budget", "8GB", "--models", ref])
    assert result.exit_code == 1
    assert near in result.output and "edgeval models" in result.output


def test_user_catalog_adds_and_overrides(tmp_path: Path, tiny_models: dict[WeightQuant, Path]) -> None:
    home = tmp_path / "edgeval-home"
    home.mkdir(parents=True, exist_ok=True)
    write_catalog(
        home / "models.toml",
        {
            "tiny": {"files": [{"quant": "Q8_0", "path": str(tiny_models[WeightQuant.Q8_0])},
                               {"quant": "Q4_K_M", "path": str(tiny_models[WeightQuant.Q4_K_M])}]},
            "qwen3-8b": {"title": "override", "params": 8, "n_layer": 1, "n_embd": 64, "n_head": 1, "n_ff": 64,
                         "n_vocab": 300, "n_ctx_train": 512,
                         "files": [{"quant": "Q8_0", "repo": "me/x", "file": "x.gguf", "size": 100}]},
        },
    )  # fmt: skip
    book = Catalog.load()
    assert [r.label for r in book.resolve("tiny")] == ["tiny:Q8_0", "tiny:Q4_K_M"]
    assert book.models["tiny"].arch.n_embd == TINY.n_embd  # read from the local file's header
    assert book.models["qwen3-8b"].title == "override"
    assert "qwen3-4b" in book.models  # built-ins stay


def test_broken_catalogs_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.x\n")
    with pytest.raises(CatalogError, match="not valid TOML"):
        Catalog.load([bad])
    write_catalog(bad, {"x": {"params": 1, "files": [{"quant": "Q4_K_M", "repo": "a/b"}]}})
    with pytest.raises(CatalogError, match="repo` and `file`"):
        Catalog.load([bad])
    write_catalog(bad, {"x": {"files": [{"quant": "Q7_Z", "repo": "a/b", "file": "c.gguf"}]}})
    with pytest.raises(CatalogError, match="unknown quantization 'Q7_Z'"):
        Catalog.load([bad])
    result = CliRunner().invoke(cli, ["models", "--catalog", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_models_json_marks_local_files_downloaded(tmp_path: Path, tiny_models: dict[WeightQuant, Path]) -> None:
    extra = write_catalog(
        tmp_path / "c.toml", {"tiny": {"files": [{"quant": "F16", "path": str(tiny_models[WeightQuant.F16])}]}}
    )
    result = CliRunner().invoke(cli, ["models", "--json", "--catalog", str(extra)])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.output)}
    assert rows["tiny:F16"]["downloaded"] is True
    assert rows["qwen3-8b:Q4_K_M"]["downloaded"] is False
    assert rows["qwen3-8b:Q4_K_M"]["kv_bytes_per_1k_tokens_f16"] == 144 * 1024 * 1000
    table = CliRunner().invoke(cli, ["models", "--catalog", str(extra)])
    assert "qwen3-32b:Q8_0" in table.output


MOE = ["qwen3-30b-a3b", "qwen3-30b-a3b-thinking-2507", "qwen3-30b-a3b-instruct-2507"]


def test_the_catalog_lists_the_moe_and_2507_models_with_their_modes() -> None:
    book = Catalog.load()
    modes = {name: book.models[name].thinking for name in [*MOE, "qwen3-4b-thinking-2507", "qwen3-4b-instruct-2507"]}
    assert modes == {
        "qwen3-30b-a3b": "hybrid", "qwen3-30b-a3b-thinking-2507": "always", "qwen3-30b-a3b-instruct-2507": "never",
        "qwen3-4b-thinking-2507": "always", "qwen3-4b-instruct-2507": "never",
    }  # fmt: skip
    assert [book.models["qwen3-4b-instruct-2507"].thinks(asked) for asked in (True, False)] == [False, False]
    assert [book.models["qwen3-4b-thinking-2507"].thinks(asked) for asked in (True, False)] == [True, True]
    assert [book.models["qwen3-30b-a3b"].thinks(asked) for asked in (True, False)] == [True, False]
    for name in MOE:
        model = book.models[name]
        assert (model.n_expert, model.n_expert_used, model.arch.n_layer, model.arch.n_head_kv) == (128, 8, 48, 4)
        assert model.active_params is not None and 0.1 < model.active_params / model.params < 0.12
        assert {WeightQuant.Q4_K_M, WeightQuant.Q8_0} <= {f.quant for f in model.files}
    assert book.models["qwen3-4b-thinking-2507"].arch.n_ctx_train == 262_144


def test_moe_plan_shows_the_kv_cache_of_its_real_shape_and_both_parameter_counts() -> None:
    out = CliRunner().invoke(
        cli, ["plan", "--budget", "64GB", "--models", "qwen3-30b-a3b:Q4_K_M", "--ctx", "32768", "--k", "1",
              "--kv", "f16", "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)
    assert row["kv_bytes"] == 48 * 4 * 128 * 2 * 2 * row["kv_cells"]  # layers × KV heads × head dim × K,V × f16
    assert (row["params"], row["active_params"]) == (30_532_122_624, 3_353_032_704)


def test_unlisted_sizes_are_estimated_from_the_dense_files_bits_per_parameter() -> None:
    book = Catalog.load()
    (moe,) = book.resolve("qwen3-30b-a3b:Q4_K_M")
    assert moe.file.size is None
    assert moe.weight_bytes == int(30_532_122_624 * 4.905 / 8)
    (dense,) = book.resolve("qwen3-8b:Q4_K_M")
    assert abs(dense.weight_bytes - int(dense.model.params * 4.905 / 8)) < 0.001 * dense.weight_bytes


def test_a_thinking_mode_must_be_one_the_catalog_knows(tmp_path: Path) -> None:
    bad = write_catalog(tmp_path / "bad.toml", {"x": {"params": 1, "n_layer": 1, "n_embd": 64, "n_head": 1,
                        "n_ff": 64, "n_vocab": 10, "n_ctx_train": 64, "thinking": "sometimes",
                        "files": [{"quant": "Q8_0", "repo": "a/b", "file": "x.gguf"}]}})  # fmt: skip
    with pytest.raises(CatalogError, match="sometimes"):
        Catalog.load([bad])


def test_models_marks_the_files_without_a_published_sha256(tmp_path: Path) -> None:
    arch = {"params": 1_000_000, "n_layer": 2, "n_embd": 256, "n_head": 4, "n_head_kv": 2, "head_dim": 64,
            "n_ff": 512, "n_vocab": 2048, "n_ctx_train": 4096}  # fmt: skip
    extra = write_catalog(
        tmp_path / "c.toml",
        {"mine": {**arch, "files": [
            {"quant": "Q8_0", "repo": "me/mine-GGUF", "file": "mine-Q8_0.gguf", "size": 10, "sha256": "ab" * 32},
            {"quant": "Q4_K_M", "repo": "me/mine-GGUF", "file": "mine-Q4_K_M.gguf", "size": 6},
            {"quant": "BF16", "repo": "me/mine-GGUF", "file": "a.gguf", "parts": ["a.gguf", "b.gguf"],
             "sha256": "cd" * 32},
        ]}},
    )  # fmt: skip
    rows = {
        r["model"]: r for r in json.loads(CliRunner().invoke(cli, ["models", "--json", "--catalog", str(extra)]).output)
    }
    assert (rows["mine:Q8_0"]["sha256"], rows["mine:Q8_0"]["checked"]) == ("ab" * 32, True)
    assert (rows["mine:Q4_K_M"]["sha256"], rows["mine:Q4_K_M"]["checked"]) == (None, False)
    assert rows["mine:BF16"]["checked"] is False  # one sha256 cannot vouch for the parts of a split file
    # The built-in catalog's MoE and 2507 files carry no sha256 (yet); its Qwen3-8B Q4_K_M does.
    assert rows["qwen3-30b-a3b:Q4_K_M"]["checked"] is False and rows["qwen3-8b:Q4_K_M"]["checked"] is True
    table = CliRunner().invoke(cli, ["models", "--catalog", str(extra)])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    marked = {label: next(line for line in lines if f" {label} " in line).split()[1] == "†"
              for label in ("mine:Q8_0", "mine:Q4_K_M", "mine:BF16")}  # fmt: skip
    assert marked == {"mine:Q8_0": False, "mine:Q4_K_M": True, "mine:BF16": True}
    assert "† no published sha256: `pull` records the one it computes but cannot check it" in table.output
    # A catalog of checked files only has no legend to give.
    only = write_catalog(tmp_path / "only.toml", {"mine": {**arch, "files": [
        {"quant": "Q8_0", "repo": "me/mine-GGUF", "file": "mine-Q8_0.gguf", "size": 10, "sha256": "ab" * 32}]}})  # fmt: skip
    with ui.console.capture() as captured:
        ui.render_models([r for r in Catalog.load([only]).everything() if r.model.name == "mine"])
    assert "mine:Q8_0" in captured.get() and "†" not in captured.get()


HYBRIDS = ["qwen3.5-0.8b", "qwen3.5-2b", "qwen3.5-4b", "qwen3.5-9b", "qwen3.5-27b", "qwen3.5-35b-a3b",
           "qwen3.6-27b", "qwen3.6-35b-a3b"]  # fmt: skip


def test_the_hybrid_generation_s_entries_carry_llama_cpp_s_state_arithmetic() -> None:
    book = Catalog.load()
    assert set(HYBRIDS) <= book.models.keys()
    mib = 1 << 20
    small = book.models["qwen3.5-0.8b"].arch
    # 24 layers, every 4th full attention: 18 recurrent; 16 key and 16 value heads of 128, conv kernel 4
    assert (small.recurrent_layers, small.attention_layers) == (18, 6)
    assert small.recurrent_layers * small.state_r * 4 / mib == pytest.approx(1.27, abs=0.005)  # R (f32)
    assert small.recurrent_layers * small.state_s * 4 / mib == 18.0  # S (f32)
    assert small.state_bytes_per_seq / mib == pytest.approx(19.27, abs=0.005)
    assert memory.kv_bytes_per_token(small) == 12 * 1024  # 6 layers × 2 KV heads × 256 × (K + V) × 2 B
    big = book.models["qwen3.5-27b"].arch
    # llama.cpp issue #20153's log for 27B with 4 sequences: "R (f32): 22.50 MiB, S (f32): 576.00 MiB"
    assert 4 * big.recurrent_layers * big.state_r * 4 / mib == 22.5
    assert 4 * big.recurrent_layers * big.state_s * 4 / mib == 576.0
    assert memory.state_bytes(big, 4) == 4 * big.state_bytes_per_seq
    assert memory.kv_bytes_per_token(book.models["qwen3.5-9b"].arch) == 32 * 1024
    moe = book.models["qwen3.6-35b-a3b"]
    assert (moe.arch.n_expert, moe.arch.n_expert_used, moe.arch.n_ff_exp, moe.arch.n_ff_shexp) == (256, 8, 512, 512)
    for name in HYBRIDS:  # Qwen3.6 is Qwen3.5's architecture: one generation
        model = book.models[name]
        assert model.generation == "qwen3.5" and model.arch.hybrid and model.arch.n_vocab == 248_320, name
        assert {WeightQuant.Q4_K_M, WeightQuant.Q8_0, WeightQuant.IQ4_XS, WeightQuant.IQ3_XXS} <= {
            f.quant for f in model.files
        }
        for f in model.files:
            assert f.file and f.file.startswith(model.title) and f.file.endswith(f"{f.quant.value}.gguf")
            assert f.size is None and f.sha256 is None  # not read from the Hub: estimated (†)
    assert {m.generation for m in book.models.values() if m.name.startswith("qwen3-")} == {"qwen3"}
    assert book.models["qwen3.6-27b"].file(WeightQuant.Q8_0).repo == "ggml-org/Qwen3.6-27B-GGUF"  # type: ignore[union-attr]


def test_each_generation_says_what_qwen_recommends_for_sampling() -> None:
    book = Catalog.load()
    new, old = book.models["qwen3.5-9b"], book.models["qwen3-8b"]
    assert new.recommended_sampling(True) == {"temperature": 1.0, "top_p": 0.95, "top_k": 20, "min_p": 0.0,
                                              "presence_penalty": 1.5}  # fmt: skip
    assert new.recommended_sampling(False)["temperature"] == 0.7 and new.recommended_sampling(False)["top_p"] == 0.8
    assert new.recommended_sampling(False)["presence_penalty"] == 1.5
    assert (
        old.recommended_sampling(True)["temperature"] == 0.6 and old.recommended_sampling(True)["presence_penalty"] == 0
    )
    # a model with one fixed mode gets that mode's advice whatever is asked
    assert book.models["qwen3-4b-instruct-2507"].recommended_sampling(True)["temperature"] == 0.7
    new.recommended_sampling(True)["temperature"] = 0.0  # a copy: the catalog's data stays
    assert new.recommended_sampling(True)["temperature"] == 1.0


def test_unlisted_weight_bytes_count_tied_embeddings_at_q6_k() -> None:
    book = Catalog.load()
    (ref,) = book.resolve("qwen3.5-0.8b:Q4_K_M")
    embd = 248_320 * 1024
    assert ref.weight_bytes == int(((ref.model.params - embd) * 4.905 + embd * 6.5625) / 8)
    (untied,) = book.resolve("qwen3.5-9b:IQ4_XS")
    assert untied.weight_bytes == int(untied.model.params * 4.46 / 8)


def test_hybrid_catalog_entries_are_checked(tmp_path: Path) -> None:
    base = {"params": 10, "n_layer": 8, "n_embd": 64, "n_head": 2, "n_ff": 64, "n_vocab": 300, "n_ctx_train": 512,
            "files": [{"quant": "Q8_0", "repo": "a/b", "file": "c.gguf"}]}  # fmt: skip
    mine = tmp_path / "mine.toml"
    write_catalog(mine, {"h": {**base, "full_attention_interval": 4, "linear_k_heads": 2, "linear_v_heads": 4,
                               "linear_head_dim": 16, "conv_kernel": 4}})  # fmt: skip
    arch = Catalog.load([mine]).models["h"].arch
    assert (arch.recurrent_layers, arch.state_r, arch.state_s) == (6, 3 * (64 + 2 * 2 * 16), 16 * 64)
    assert Catalog.load([mine]).models["h"].generation == "qwen3.5"  # a hybrid shape says its generation
    write_catalog(mine, {"h": {**base, "full_attention_interval": 4, "linear_k_heads": 2, "files": base["files"]}})
    with pytest.raises(CatalogError, match="missing 'linear_v_heads'") as caught:
        Catalog.load([mine])
    assert "\n" not in str(caught.value)
    write_catalog(mine, {"h": {**base, "generation": "qwen9"}})
    with pytest.raises(CatalogError, match="generation = 'qwen9'"):
        Catalog.load([mine])
    write_catalog(mine, {"h": {**base, "full_attention_interval": 0, "linear_k_heads": 2, "linear_v_heads": 4,
                               "linear_head_dim": 16, "conv_kernel": 4}})  # fmt: skip
    with pytest.raises(CatalogError, match="full_attention_interval = 0 is out of range"):
        Catalog.load([mine])
