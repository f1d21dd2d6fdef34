"""edgeval's trained tiny family: llama.cpp computes what the training framework computed, the shipped models
really answer held-out arith questions, and 2-bit weights cost the smallest of them accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeval.core import prompts
from edgeval.core.quants import WeightQuant
from edgeval.edges import tasks
from edgeval.faces import demo
from edgeval.faces.cli import cli
from edgeval.llama import engine


def _accuracy(model: Path, db: Path, *extra: str, limit: int = 40) -> float:
    args = ["run", str(model), "--task", "arith", "--limit", str(limit), "--budget-tokens", "64", "--no-repack",
            "--db", str(db), "--json", *extra]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return float(json.loads(result.output)["accuracy_maj"])


def test_the_shipped_family_answers_held_out_questions(tmp_path: Path) -> None:
    smallest, *_, largest = demo.family_sources()
    # `arith` is seed 0; tools/train_tiny.py trained on other seeds and dropped every question of seed 0.
    big = _accuracy(largest, tmp_path / "l.db")
    small = _accuracy(smallest, tmp_path / "s.db")
    assert big >= 0.85
    assert small < big


def test_two_bit_weights_cost_the_smallest_model_accuracy_and_eight_bit_do_not(tmp_path: Path) -> None:
    smallest = demo.family_sources()[0]
    db = tmp_path / "runs.db"
    # Greedy, on all 200 held-out questions: the difference is the weights', not the sampler's luck.
    f16, q8, q2 = (
        _accuracy(path, db, "--temperature", "0", limit=200)
        for path in (
            smallest,
            demo.quantized(smallest, WeightQuant.Q8_0, tmp_path),
            demo.quantized(smallest, WeightQuant.Q2_K, tmp_path),
        )
    )
    assert abs(q8 - f16) <= 0.015
    assert q2 <= f16 - 0.03


def test_llama_cpp_computes_what_pytorch_computes() -> None:
    torch = pytest.importorskip("torch", reason="the training framework is a development-only dependency")
    from tools.train_tiny import SIZES, Qwen3Tiny, load_gguf

    for source in demo.family_sources():
        spec = next(s for s in SIZES.values() if s.name == source.stem)
        model = Qwen3Tiny(spec)
        load_gguf(model, source)
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
