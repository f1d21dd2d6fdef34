"""edgeval's trained tiny family: llama.cpp computes what the training framework computed, and the shipped
models really answer held-out arith questions."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from edgeval import demo, engine, prompts, tasks
from edgeval.cli import cli


def _run(model: Path, db: Path, *extra: str) -> dict[str, object]:
    args = ["run", str(model), "--task", "arith", "--limit", "40", "--budget-tokens", "64", "--no-repack",
            "--db", str(db), "--json", *extra]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


def test_the_shipped_family_answers_held_out_questions(tmp_path: Path) -> None:
    smallest, *_, largest = demo.family_sources()
    # `arith` is seed 0; tools/train_tiny.py trained on other seeds and dropped every question of seed 0.
    big = _run(largest, tmp_path / "l.db")
    small = _run(smallest, tmp_path / "s.db")
    assert float(big["accuracy_maj"]) >= 0.85  # type: ignore[arg-type]
    assert float(small["accuracy_maj"]) < float(big["accuracy_maj"])  # type: ignore[arg-type]


def test_llama_cpp_computes_what_pytorch_computes() -> None:
    torch = pytest.importorskip("torch", reason="the training framework is a development-only dependency")
    from tools.train_tiny import SIZES, Qwen3Tiny

    for source in demo.family_sources():
        spec = next(s for s in SIZES.values() if s.name == source.stem)
        model = Qwen3Tiny(spec)
        reader = gguf.GGUFReader(source)
        with torch.no_grad():
            for tensor in reader.tensors:
                shape = tuple(int(d) for d in reversed(tensor.shape))
                values = np.array(tensor.data, dtype=np.float32).reshape(shape)
                model.w(tensor.name).copy_(torch.from_numpy(values))
        question = tasks.load_task("arith").items[0]
        text = prompts.chat_prompt(question.question, tasks.MATH_INSTRUCTION) + "<think>\n"
        with engine.Model(source) as llama, engine.Context(llama, engine.ContextOptions(n_ctx=256)) as ctx:
            tokens = llama.tokenize(text)
            theirs = np.array(ctx.last_logits(tokens))
        with torch.no_grad():
            ours = model(torch.tensor([tokens]))[0, -1].numpy()
        # f16 KV cache and flash attention in llama.cpp against float32 PyTorch
        assert np.abs(theirs - ours).max() < 0.05 * np.abs(ours).max(), source.name
        assert int(np.argmax(theirs)) == int(np.argmax(ours))
