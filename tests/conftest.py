"""Shared fixtures: every test gets its own edgeval home and Hugging Face home; tiny models are built once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeval.core import prompts
from edgeval.core.memory import RepackMode
from edgeval.core.quants import WeightQuant
from edgeval.edges import tasks
from edgeval.llama import engine, synth

from .hub_server import FakeHub, serve

GREEDY = prompts.Sampling(temperature=0.0)
SAMPLED = prompts.Sampling(temperature=1.0, top_p=1.0, top_k=0)
TINY = synth.SynthSpec(name="tiny-test", n_layer=2, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=512)


@pytest.fixture(autouse=True)
def isolated_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point EDGEVAL_HOME and HF_HOME at tmp_path so no test reads or writes the user's files."""
    monkeypatch.setenv("EDGEVAL_HOME", str(tmp_path / "edgeval-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("EDGEVAL_DEBUG", raising=False)
    yield


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of tiny models for the whole session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_models(model_dir: Path) -> dict[WeightQuant, Path]:
    """The tiny Qwen3 model at F16 and each quantization the tests use, built by edgeval.llama.synth."""
    quants = [
        WeightQuant.F16,
        WeightQuant.Q8_0,
        WeightQuant.Q6_K,
        WeightQuant.Q5_K_M,
        WeightQuant.Q4_K_M,
        WeightQuant.Q4_0,
        WeightQuant.Q2_K,
    ]
    return {q: synth.build(TINY, q, model_dir, threads=2) for q in quants}


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A Hub-protocol server on 127.0.0.1, with HF_ENDPOINT pointing huggingface_hub at it."""
    with serve(FakeHub()) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def write_catalog(path: Path, entries: dict[str, dict[str, object]]) -> Path:
    """A user catalog file (models.toml format) from plain dicts."""
    lines = []
    for name, entry in entries.items():
        files = entry.pop("files", [])
        lines.append(f'[models."{name}"]')
        lines += [f"{k} = {_toml(v)}" for k, v in entry.items()]
        for f in files:  # type: ignore[attr-defined]
            lines.append(f'[[models."{name}".files]]')
            lines += [f"{k} = {_toml(v)}" for k, v in f.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def arith_forcing(model: engine.Model, answer_tokens: int = 12) -> engine.Forcing:
    """The thinking budget as the worker sets it up for arith (thinking on, Qwen's stop-thinking message)."""
    return engine.reasoning_budget(model, message=prompts.BUDGET_MESSAGE, answer_tokens=answer_tokens)


def arith_prompts(model: engine.Model, n: int, *, opened: bool = False) -> list[list[int]]:
    """The first n arith questions as prompt tokens (thinking on). `opened`: the prompt opens the reasoning itself
    (`<think>` after the generation prefix, as Qwen3-2507 Thinking's template does), so the thinking budget counts
    from the first token — random weights never write the start tag themselves."""
    task = tasks.load_task("arith")
    opening = prompts.THINK_OPEN + "\n" if opened else ""
    return [model.tokenize(prompts.chat_prompt(item.question, task.instruction) + opening) for item in task.items[:n]]


ROOT = Path(__file__).resolve().parent.parent


def stored_texts(db: Path) -> list[tuple[int, int, str]]:
    """Every stored sample of a store: (question, sample, text), in order."""
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute("SELECT item_index, sample_index, text FROM samples ORDER BY 1, 2")]


def kill_mid_run(args: list[str], db: Path, stored_at_least: int, poll_s: float = 0.1) -> list[tuple[int, int, str]]:
    """Start `python -m edgeval ARGS` in a session of its own, SIGKILL the whole session (driver and worker) once the
    store holds `stored_at_least` samples, and return what it holds then."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edgeval", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    stored: list[tuple[int, int, str]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(stored) < stored_at_least:
        time.sleep(poll_s)
        try:
            stored = stored_texts(db) if db.exists() else []
        except sqlite3.Error:
            continue
    assert proc.poll() is None, "the run finished before it could be killed: give it more work"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return stored_texts(db)


def generate_in_flight(path: Path, recipe: engine.Recipe, prompts_: list[list[int]], width: int,
                       repack: RepackMode = RepackMode.ALL) -> dict[int, dict[int, engine.Generation]]:  # fmt: skip
    """Each question's rungs (question i's votes seeded 100 + 7i + j), generated `width` questions at a time."""
    with engine.Model(path, engine.LoadOptions(n_gpu_layers=0, repack=repack)) as model:
        one = engine.ContextOptions(n_ctx=max(recipe.cells(len(p)) for p in prompts_), n_seq=recipe.sequences,
                                    n_batch=max(512, width * recipe.step_tokens()))  # fmt: skip
        options = engine.in_flight(one, width, max(recipe.stream_cells(len(p)) for p in prompts_))
        got: dict[int, dict[int, engine.Generation]] = {}
        with engine.Context(model, options) as ctx:
            jobs = [engine.Job(i, p, [100 + 7 * i + j for j in range(recipe.k)]) for i, p in enumerate(prompts_)]
            ctx.generate_many(recipe, jobs, lambda job, out: got.__setitem__(job.key, out), width=width)
    return got
