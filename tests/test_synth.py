"""Tiny Qwen3 models from edgeval.llama.synth load in llama.cpp, generate, and quantize to the expected sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgeval.core.quants import WeightQuant
from edgeval.llama import engine, synth

from .conftest import TINY

CHAT = "<|im_start|>user\nWhat is 12 plus 30?<|im_end|>\n<|im_start|>assistant\n<think>\n"


def _tensor_bytes(path: Path) -> dict[str, tuple[gguf.GGMLQuantizationType, int, int]]:
    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors}


def test_vocab_carries_qwen3_special_tokens_at_qwen3_ids_when_full_size() -> None:
    vocab = synth.build_vocab(151_936)
    assert len(vocab.tokens) == 151_936
    assert vocab.id_of("<|endoftext|>") == 151_643
    assert vocab.id_of("<|im_start|>") == 151_644
    assert vocab.id_of("<|im_end|>") == 151_645
    assert vocab.id_of("<think>") == 151_667
    assert vocab.id_of("</think>") == 151_668
    assert vocab.types[151_644] == gguf.TokenType.CONTROL
    assert vocab.types[-1] == gguf.TokenType.UNUSED


def test_vocab_is_a_consistent_byte_level_bpe() -> None:
    vocab = synth.build_vocab(TINY.n_vocab)
    assert len(vocab.tokens) == len(set(vocab.tokens)) == TINY.n_vocab
    assert len(vocab.merges) >= 1
    known = set(vocab.tokens)
    for merge in vocab.merges:
        left, right = merge.split(" ")
        assert left in known and right in known and left + right in known
    # all 256 byte symbols are present, so any text can be tokenized
    assert set(synth.bytes_to_unicode().values()) <= known


def test_tokenizer_round_trips_through_llama_cpp(tiny_models: dict[WeightQuant, Path]) -> None:
    with engine.Model(tiny_models[WeightQuant.F16], engine.LoadOptions(vocab_only=True)) as model:
        for text in ["hello world", "12 + 30 = 42", "naïve café ✓", "line\nbreak\ttab"]:
            tokens = model.tokenize(text, special=False)
            assert model.detokenize(tokens) == text
        # merges are used: a word costs fewer tokens than its bytes
        assert len(model.tokenize(" abc", special=False)) < 4
        ids = model.tokenize("<|im_start|><think></think><|im_end|>")
        assert len(ids) == 4
        assert model.is_end(ids[-1])
        assert not model.is_end(ids[0])


@pytest.mark.parametrize("quant", [WeightQuant.F16, WeightQuant.Q8_0, WeightQuant.Q4_K_M])
def test_each_variant_loads_and_generates_from_a_chat_prompt(
    quant: WeightQuant, tiny_models: dict[WeightQuant, Path]
) -> None:
    with (
        engine.Model(tiny_models[quant]) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=512, n_seq=2)) as ctx,
    ):
        prompt = model.tokenize(CHAT)
        out = ctx.generate(prompt, k=2, max_tokens=12, seeds=(1, 2))
        assert model.n_params == TINY.n_params
    assert out.prompt_tokens == len(prompt)
    assert all(len(tokens) >= 1 for tokens in out.tokens)
    assert all(f in ("stop", "length") for f in out.finish)
    assert out.generated_tokens == sum(len(t) for t in out.tokens)


def test_quantized_tensors_have_the_bytes_their_format_implies(tiny_models: dict[WeightQuant, Path]) -> None:
    f16 = _tensor_bytes(tiny_models[WeightQuant.F16])
    for quant in (WeightQuant.Q8_0, WeightQuant.Q4_K_M, WeightQuant.Q2_K):
        quantized = _tensor_bytes(tiny_models[quant])
        assert quantized.keys() == f16.keys()
        for name, (ggml_type, n_elements, n_bytes) in quantized.items():
            block, size = gguf.GGML_QUANT_SIZES[ggml_type]
            assert n_bytes == n_elements // block * size
            if name.endswith("norm.weight"):
                assert ggml_type == gguf.GGMLQuantizationType.F32
    q8 = _tensor_bytes(tiny_models[WeightQuant.Q8_0])
    for name, (ggml_type, _, n_bytes) in q8.items():
        if ggml_type != gguf.GGMLQuantizationType.F32:
            assert ggml_type == gguf.GGMLQuantizationType.Q8_0
            assert n_bytes * 64 == f16[name][2] * 34  # 8.5 bits a weight against 16


def test_file_sizes_follow_bits_per_weight(tiny_models: dict[WeightQuant, Path]) -> None:
    sizes = {q: p.stat().st_size for q, p in tiny_models.items()}
    weights = {q: sum(b for _, _, b in _tensor_bytes(p).values()) for q, p in tiny_models.items()}
    ratio = {q: weights[q] / weights[WeightQuant.F16] for q in weights}
    assert ratio[WeightQuant.Q8_0] == pytest.approx(8.5 / 16, abs=0.01)
    assert 4.5 / 16 < ratio[WeightQuant.Q4_K_M] < 6.6 / 16
    # Q4_0 quantizes every matrix to 4.5 bits but the (tied) output embedding, which llama.cpp keeps at Q6_K.
    for name, (ggml_type, _, _) in _tensor_bytes(tiny_models[WeightQuant.Q4_0]).items():
        if name.startswith("blk.") and not name.endswith("norm.weight"):
            assert ggml_type == gguf.GGMLQuantizationType.Q4_0
    ladder = [WeightQuant.F16, WeightQuant.Q8_0, WeightQuant.Q6_K, WeightQuant.Q5_K_M, WeightQuant.Q4_K_M]
    assert [sizes[q] for q in ladder] == sorted((sizes[q] for q in ladder), reverse=True)
    assert sizes[WeightQuant.Q2_K] < sizes[WeightQuant.Q4_K_M]
    reader = gguf.GGUFReader(tiny_models[WeightQuant.Q4_K_M])
    file_type = reader.fields["general.file_type"]
    assert int(file_type.parts[file_type.data[0]][0]) == gguf.LlamaFileType.MOSTLY_Q4_K_M


def test_header_describes_a_qwen3_model(tiny_models: dict[WeightQuant, Path]) -> None:
    reader = gguf.GGUFReader(tiny_models[WeightQuant.F16])

    def value(key: str) -> object:
        field = reader.fields[key]
        return field.contents()

    assert value("general.architecture") == "qwen3"
    assert value("qwen3.block_count") == TINY.n_layer
    assert value("qwen3.attention.head_count_kv") == TINY.n_head_kv
    assert value("qwen3.attention.key_length") == TINY.head_dim
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "qwen2"
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied embeddings


def test_builds_are_deterministic_and_cached(tmp_path: Path, model_dir: Path) -> None:
    spec = synth.SynthSpec(name="det", n_layer=1, n_ff=256)
    first = synth.build(spec, WeightQuant.Q8_0, tmp_path / "a", threads=1)
    second = synth.build(spec, WeightQuant.Q8_0, tmp_path / "b", threads=1)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    mtime = first.stat().st_mtime_ns
    assert synth.build(spec, WeightQuant.Q8_0, tmp_path / "a") == first
    assert first.stat().st_mtime_ns == mtime
    other_seed = synth.build(synth.SynthSpec(name="det", n_layer=1, n_ff=256, seed=1), WeightQuant.Q8_0, tmp_path / "a")
    assert other_seed != first


def test_given_weights_replace_random_ones_and_shapes_are_checked(tmp_path: Path) -> None:
    spec = synth.SynthSpec(name="given", n_layer=1, n_ff=256)
    shapes = synth.tensor_shapes(spec)
    weights = {"token_embd.weight": np.full(shapes["token_embd.weight"], 0.5, dtype=np.float32)}
    path = synth.write_gguf(spec, tmp_path / "given.gguf", dtype=WeightQuant.F32, weights=weights)
    tensor = next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")
    assert np.all(np.asarray(tensor.data) == 0.5)
    with pytest.raises(ValueError, match="shape"):
        synth.write_gguf(spec, tmp_path / "bad.gguf", weights={"token_embd.weight": np.zeros((3, 3))})


def test_untied_model_has_an_output_tensor_and_runs(tmp_path: Path) -> None:
    spec = synth.SynthSpec(name="untied", n_layer=1, n_ff=256, tied_embeddings=False)
    path = synth.build(spec, WeightQuant.Q8_0, tmp_path, threads=1)
    assert "output.weight" in {t.name for t in gguf.GGUFReader(path).tensors}
    with engine.Model(path) as model, engine.Context(model, engine.ContextOptions(n_ctx=256)) as ctx:
        assert ctx.generate(model.tokenize(CHAT), max_tokens=4).generated_tokens >= 1


@pytest.mark.slow
def test_qwen3_0_6b_shaped_model_matches_the_real_file_size_and_generates(model_dir: Path) -> None:
    spec = synth.QWEN3_SHAPES["0.6b"]
    assert spec.n_params == pytest.approx(0.596e9, rel=0.005)
    path = synth.build(spec, WeightQuant.Q8_0, model_dir, threads=2)
    # The real Qwen3-0.6B-Q8_0.gguf is 0.64 GB.
    assert path.stat().st_size == pytest.approx(0.64e9, rel=0.02)
    with engine.Model(path) as model, engine.Context(model, engine.ContextOptions(n_ctx=512)) as ctx:
        assert model.n_params == spec.n_params
        out = ctx.generate(model.tokenize(CHAT), max_tokens=8, seeds=(3,))
    assert len(out.tokens[0]) >= 1
