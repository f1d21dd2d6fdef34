"""llama.cpp through edgeval.llama.engine: loading, contexts, k sequences decoded together, a quiet log."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeval.core.errors import ConfigurationError, ModelFileError, QuantizeError
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges import gguf_info
from edgeval.faces import demo
from edgeval.llama import engine

CHAT = "<|im_start|>user\nWhat is 7 times 6?<|im_end|>\n<|im_start|>assistant\n<think>\n"


def test_k_sequences_share_one_prompt_decode_and_step_together(tiny_models: dict[WeightQuant, Path]) -> None:
    with (
        engine.Model(tiny_models[WeightQuant.Q8_0]) as model,
        engine.Context(
            model, engine.ContextOptions(n_ctx=1024, n_seq=4, type_k=KVType.Q8_0, type_v=KVType.Q8_0)
        ) as ctx,
    ):
        prompt = model.tokenize(CHAT)
        out = ctx.generate(prompt, k=4, max_tokens=16, seeds=(1, 2, 3, 4))
    assert out.prompt_tokens_decoded == len(prompt)  # once, not k times
    assert out.max_batch_seqs >= 2  # one decode step carried several sequences
    assert len(out.tokens) == 4
    assert len(set(out.tokens)) > 1  # different seeds, different samples


def test_same_seed_same_samples(tiny_models: dict[WeightQuant, Path]) -> None:
    with (
        engine.Model(tiny_models[WeightQuant.Q4_K_M]) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=512, n_seq=2)) as ctx,
    ):
        prompt = model.tokenize(CHAT)
        first = ctx.generate(prompt, k=2, max_tokens=10, seeds=(7, 8))
        second = ctx.generate(prompt, k=2, max_tokens=10, seeds=(7, 8))
        third = ctx.generate(prompt, k=2, max_tokens=10, seeds=(9, 10))
    assert first.tokens == second.tokens
    assert first.tokens != third.tokens


def test_long_prompt_is_decoded_in_batches(tiny_models: dict[WeightQuant, Path]) -> None:
    with (
        engine.Model(tiny_models[WeightQuant.Q8_0]) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=1024, n_batch=64, n_ubatch=64)) as ctx,
    ):
        prompt = model.tokenize("<|im_start|>user\n" + "abc " * 100 + "<|im_end|>\n<|im_start|>assistant\n")
        assert len(prompt) > 64
        out = ctx.generate(prompt, max_tokens=4)
    assert out.prompt_tokens_decoded == len(prompt)


def test_llama_log_is_captured_not_printed(
    tiny_models: dict[WeightQuant, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    with engine.captured_log() as lines, engine.Model(tiny_models[WeightQuant.F16]) as model:
        engine.Context(model, engine.ContextOptions(n_ctx=256)).close()
    captured = capfd.readouterr()
    assert "llama" not in captured.err and "llama" not in captured.out
    assert any("KV" in line or "kv" in line for line in lines)


@pytest.mark.parametrize("kv", [KVType.F16, KVType.Q8_0, KVType.Q4_0, KVType.BF16, KVType.IQ4_NL])
def test_kv_cache_types_create_contexts(kv: KVType, tiny_models: dict[WeightQuant, Path]) -> None:
    with (
        engine.Model(tiny_models[WeightQuant.Q8_0]) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=256, type_k=kv, type_v=kv)) as ctx,
    ):
        assert ctx.generate(model.tokenize(CHAT), max_tokens=3).generated_tokens >= 1


def test_quantized_v_without_flash_attention_is_refused(tiny_models: dict[WeightQuant, Path]) -> None:
    with (
        engine.Model(tiny_models[WeightQuant.Q8_0]) as model,
        pytest.raises(ConfigurationError, match="flash"),
    ):
        engine.Context(model, engine.ContextOptions(n_ctx=256, type_v=KVType.Q4_0, flash_attn=False))


def test_sequence_longer_than_training_is_refused(tiny_models: dict[WeightQuant, Path]) -> None:
    # k sequences may together hold more cells than the training context; one sequence may not.
    with (
        engine.Model(tiny_models[WeightQuant.Q8_0]) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=model.n_ctx_train * 2, n_seq=2)) as ctx,
        pytest.raises(ConfigurationError, match="trained"),
    ):
        ctx.generate(model.tokenize(CHAT), max_tokens=model.n_ctx_train)


def test_generation_that_cannot_fit_the_context_is_refused(tiny_models: dict[WeightQuant, Path]) -> None:
    with (
        engine.Model(tiny_models[WeightQuant.Q8_0]) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=256, n_seq=2)) as ctx,
    ):
        with pytest.raises(ConfigurationError, match="KV cells"):
            ctx.generate(model.tokenize(CHAT), k=2, max_tokens=200, seeds=(1, 2))
        with pytest.raises(ConfigurationError, match="holds 2"):
            ctx.generate(model.tokenize(CHAT), k=3, max_tokens=4, seeds=(1, 2, 3))


def test_bad_model_files_are_caught_before_llama_cpp(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        engine.Model(tmp_path / "missing.gguf")
    with pytest.raises(ModelFileError, match="folder"):
        engine.Model(tmp_path)
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"<html>404</html>")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        engine.Model(not_gguf)


def test_quantizing_a_non_gguf_fails_cleanly(tmp_path: Path) -> None:
    src = tmp_path / "src.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(QuantizeError):
        engine.quantize(src, tmp_path / "out.gguf", WeightQuant.Q8_0)


def test_quantizing_into_a_missing_folder_makes_it(tmp_path: Path) -> None:
    source = demo.family_sources()[0]
    target = tmp_path / "not" / "yet" / "there.gguf"
    engine.quantize(source, target, WeightQuant.Q8_0)
    assert gguf_info.read_local(target).n_params == gguf_info.read_local(source).n_params


def test_build_facts() -> None:
    assert engine.LLAMA_CPP_PYTHON_VERSION >= "0.3.36"
    assert engine.backend_name()
    assert any(d.kind == "cpu" for d in engine.devices())
    version = engine.build_version()
    assert version is None or "(" in version
    assert "CPU" in engine.system_info()
