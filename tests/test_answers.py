"""Answers a new user found confusing (issue 10, §4): each one now says what is wrong and what to do."""

from __future__ import annotations

import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from edgeval.comparison import compare, plan
from edgeval.core import units
from edgeval.core.errors import DiskFullError, describe
from edgeval.core.quants import WeightQuant
from edgeval.faces.cli import cli
from edgeval.llama import synth
from edgeval.running import sweep

from .conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
FAMILY_L = ROOT / "edgeval" / "family" / "edgeval-tiny-l.gguf"
# A tiny model whose KV cache is wide (16 kB a token) and whose trained context is long, so one configuration can
# be predicted to need more memory than this machine has without a large file.
WIDE_KV = synth.SynthSpec(name="wide-kv", n_layer=2, n_embd=256, n_head=8, n_head_kv=8, head_dim=256, n_ff=512,
                          n_ctx_train=1 << 24)  # fmt: skip
KV_BYTES_PER_TOKEN = 2 * WIDE_KV.n_layer * WIDE_KV.n_head_kv * WIDE_KV.head_dim * 2


@pytest.fixture(scope="module")
def wide_kv(model_dir: Path) -> Path:
    return synth.build(WIDE_KV, WeightQuant.Q8_0, model_dir, threads=2)


def _too_big_budget() -> int:
    """A token budget whose KV cache alone is twice this machine's RAM."""
    total = psutil.virtual_memory().total + psutil.swap_memory().total
    budget = 2 * total // KV_BYTES_PER_TOKEN
    if budget > WIDE_KV.n_ctx_train - 1000:
        pytest.skip("this machine has more memory than the model's context can ask for")
    return budget


def test_a_ctx_that_cannot_hold_the_prompt_is_a_usage_error_naming_it() -> None:
    result = CliRunner().invoke(cli, ["plan", "--budget", "2GB", "--ctx", "200,2k"])
    assert result.exit_code == 2, result.output
    assert "--ctx" in result.output and "200" in result.output and "256" in result.output


def test_the_default_budget_is_capped_to_the_models_context_with_a_note(tmp_path: Path) -> None:
    args = ["run", str(FAMILY_L), "--task", "arith", "--limit", "1", "--no-repack", "--json", "--db",
            str(tmp_path / "r.db")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "done"
    assert 1500 < data["budget_tokens"] < sweep.DEFAULT_BUDGET_TOKENS
    assert data["ctx"] <= 2048  # what the model was trained for
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and str(data["budget_tokens"]) in notes[0] and "--budget-tokens" in notes[0]


def test_a_folder_given_as_the_model_is_called_a_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", str(tmp_path), "--task", "arith"])
    assert result.exit_code == 1
    assert "is a folder" in result.output and "unknown model" not in result.output


@pytest.mark.parametrize(
    "models",
    [
        ["--models", "qwen3-0.6b:Q4_K_M", "qwen3-1.7b:Q4_K_M"],
        ["--models", "qwen3-0.6b:Q4_K_M,qwen3-1.7b:Q4_K_M"],
        ["--models", "qwen3-0.6b:Q4_K_M", "--models", "qwen3-1.7b:Q4_K_M", "--models", "qwen3-0.6b:Q4_K_M"],
        ["--models=qwen3-0.6b:Q4_K_M", "qwen3-1.7b:Q4_K_M", "--k", "1"],
    ],
)
def test_models_take_the_readme_form_commas_and_repeats(models: list[str]) -> None:
    for command in (["plan", "--budget", "8GB"], ["compare", "--budget", "8GB", "--dry-run"]):
        result = CliRunner().invoke(cli, [*command, *models, "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)
        if command[0] == "compare":
            rows = rows[0]
        assert {r["model"] for r in rows} == {"qwen3-0.6b:Q4_K_M", "qwen3-1.7b:Q4_K_M"}


def _shown_defaults(command: str) -> dict[str, str]:
    """Each option's `[default: …]` as --help prints it (unwrapped)."""
    text = " ".join(CliRunner().invoke(cli, [command, "--help"], terminal_width=400).output.split())
    return dict(re.findall(r"(--[\w-]+)(?:(?!\s--)[^\[])*\[default: ([^\];]+)", text))


def test_every_default_in_help_is_the_librarys_own() -> None:
    shown = _shown_defaults("compare")
    assert shown["--kv"] == ",".join(t.value for t in compare.DEFAULT_KV)
    assert shown["--budget-tokens"] == ",".join(map(str, compare.DEFAULT_BUDGETS))
    assert shown["--k"] == ",".join(map(str, compare.DEFAULT_VOTES))
    assert shown["--task"] == compare.DEFAULT_TASK
    assert units.parse_duration(shown["--time"]) == compare.DEFAULT_TIME_S
    shown = _shown_defaults("plan")
    assert shown["--kv"] == ",".join(t.value for t in plan.DEFAULT_KV)
    assert shown["--ctx"] == ",".join(map(str, plan.DEFAULT_CTX))
    assert shown["--k"] == ",".join(map(str, plan.DEFAULT_K))
    assert shown["--prompt-tokens"] == str(plan.DEFAULT_PROMPT_TOKENS)
    run_help = CliRunner().invoke(cli, ["run", "--help"], terminal_width=400).output
    assert f"default: {sweep.DEFAULT_BUDGET_TOKENS}" in run_help


def test_a_configuration_predicted_not_to_fit_is_refused_before_loading(wide_kv: Path, tmp_path: Path) -> None:
    budget = _too_big_budget()
    db = tmp_path / "r.db"
    args = ["run", str(wide_kv), "--task", "arith", "--limit", "1", "--budget-tokens", str(budget), "--no-repack",
            "--db", str(db)]  # fmt: skip
    started = time.monotonic()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "of RAM but" in line and "available" in line and "--force" in line
    assert time.monotonic() - started < 30  # nothing was loaded
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM configs").fetchall() == [("unfit",)]
        assert con.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0


def test_compare_records_what_does_not_fit_and_goes_on(wide_kv: Path, tmp_path: Path) -> None:
    budget = _too_big_budget()
    db = tmp_path / "c.db"
    small = synth.build(TINY, WeightQuant.Q8_0, wide_kv.parent, threads=2)
    args = ["compare", "--budget", "100TB", "--task", "arith", "--limit", "1", "--exhaustive", "--models",
            str(small), str(wide_kv), "--kv", "f16", "--budget-tokens", f"32,{budget}", "--k", "1", "--no-repack",
            "--json", "--db", str(db)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (comparison,) = json.loads(result.stdout)
    assert len(comparison["failures"]) == 1 and "of RAM but" in comparison["failures"][0]
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT model, status FROM configs").fetchall()
    assert {status for model, status in rows if model.startswith(wide_kv.stem)} == {"unfit"}
    assert {status for model, status in rows if model.startswith(small.stem)} == {"done"}


def test_forced_past_the_memory_an_allocation_failure_says_so_plainly(wide_kv: Path, tmp_path: Path) -> None:
    budget = _too_big_budget()
    limit = 4 << 30  # an address-space cap, as in the issue: the allocation fails instead of the machine swapping

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [sys.executable, "-m", "edgeval", "run", str(wide_kv), "--task", "arith", "--limit", "1",
               "--budget-tokens", str(budget), "--no-repack", "--force", "--db", str(tmp_path / "r.db")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, preexec_fn=cap)
    assert done.returncode == 1, done.stderr
    with sqlite3.connect(tmp_path / "r.db") as con:
        status, message = con.execute("SELECT status, message FROM configs").fetchone()
    assert status == "failed" and "out of memory" in message and "could not allocate" in message
    assert "CUDA" not in message + done.stdout + done.stderr


def test_a_full_disk_names_the_file_and_says_the_disk_is_full(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"
    (tmp_path / f"model.gguf.tmp{os.getpid()}").symlink_to("/dev/full")  # every write there finds no room
    with pytest.raises(DiskFullError) as caught:
        synth.write_gguf(TINY, target)
    line = describe(caught.value)
    assert str(target) in line and "the disk is full" in line
    assert not target.exists()


def test_an_unreachable_dataset_fails_at_once_in_one_line(
    tiny_models: dict[WeightQuant, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    args = ["run", str(tiny_models[WeightQuant.Q8_0]), "--task", "math500", "--limit", "1", "--no-repack", "--db",
            str(tmp_path / "r.db")]  # fmt: skip
    started = time.monotonic()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert time.monotonic() - started < 8
    assert "cannot reach" in result.output and len(result.output.strip().splitlines()) == 1
