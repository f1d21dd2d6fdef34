"""KV-cache eviction: a window keeps the prompt and each sample's most recent tokens, and changes nothing it need not."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeval.comparison import compare
from edgeval.core import memory, prompts
from edgeval.core.errors import ConfigurationError
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges.catalog import Catalog
from edgeval.faces import demo
from edgeval.faces.cli import cli
from edgeval.llama import engine

from .conftest import GREEDY, SAMPLED, arith_forcing, arith_prompts, write_catalog


def test_a_window_at_least_what_a_sample_may_write_changes_nothing_and_evicts_nothing() -> None:
    with engine.Model(demo.family_sources()[1]) as model:
        forcing = arith_forcing(model)
        n_predict = forcing.n_predict(48)  # the budget caps the thinking; n_predict all a sample writes
        with engine.Context(model, engine.ContextOptions(n_ctx=1024, n_seq=4)) as ctx:
            for prompt in arith_prompts(model, 5):
                plain = ctx.generate(prompt, k=2, max_tokens=48, sampling=GREEDY, seeds=(1, 2), forcing=forcing)
                for window in (n_predict, n_predict + 16):
                    windowed = ctx.generate(prompt, k=2, max_tokens=48, sampling=GREEDY, seeds=(1, 2),
                                            forcing=forcing, window=window)  # fmt: skip
                    assert windowed.tokens == plain.tokens
                    assert (windowed.forced, windowed.finish) == (plain.forced, plain.finish)
                    assert windowed.evicted == (0, 0)


def test_a_sample_that_never_fills_its_window_evicts_nothing_and_one_that_does_evicts_in_chunks() -> None:
    window, budget = 40, 96
    chunk = memory.eviction_chunk(window)
    short = long = 0
    with engine.Model(demo.family_sources()[1]) as model:
        forcing = arith_forcing(model)
        with engine.Context(model, engine.ContextOptions(n_ctx=1024, n_seq=4)) as ctx:
            for prompt in arith_prompts(model, 8):
                plain = ctx.generate(prompt, k=3, max_tokens=budget, sampling=SAMPLED, seeds=(1, 2, 3),
                                     forcing=forcing)  # fmt: skip
                windowed = ctx.generate(prompt, k=3, max_tokens=budget, sampling=SAMPLED, seeds=(1, 2, 3),
                                        forcing=forcing, window=window)  # fmt: skip
                for j in range(3):
                    own = windowed.generated[j]  # tokens it wrote before any forced text
                    if plain.generated[j] < window + chunk:
                        # Never more than window + chunk of its own: nothing evicted, the same sample.
                        assert windowed.evicted[j] == 0
                        assert windowed.tokens[j] == plain.tokens[j]
                        short += 1
                    if windowed.evicted[j]:
                        assert windowed.evicted[j] % chunk == 0
                        assert own - windowed.evicted[j] >= window - 1
                        long += 1
    assert short and long  # both paths were exercised


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_each_rung_of_a_windowed_ladder_equals_a_separate_windowed_run(sampling: prompts.Sampling) -> None:
    rungs, window, seeds = (12, 24, 48), 16, (11, 12, 13)
    with engine.Model(demo.family_sources()[1]) as model:
        forcing = arith_forcing(model)
        cells = engine.cells_needed(80, 3, max(rungs), forcing, n_rungs=len(rungs), window=window)
        options = engine.ContextOptions(
            n_ctx=cells, n_seq=engine.ladder_sequences(3, len(rungs), forcing.starts_reasoning)
        )
        with engine.Context(model, options) as ctx:
            forks = evictions = 0
            for prompt in arith_prompts(model, 5):
                together = ctx.generate_ladder(prompt, k=3, budgets=rungs, sampling=sampling, seeds=seeds,
                                               forcing=forcing, window=window)  # fmt: skip
                for budget in rungs:
                    alone = ctx.generate(prompt, k=3, max_tokens=budget, sampling=sampling, seeds=seeds,
                                         forcing=forcing, window=window)  # fmt: skip
                    assert together[budget].tokens == alone.tokens, budget
                    assert together[budget].evicted == alone.evicted, budget
                    forks += sum(together[budget].forced) if budget < max(rungs) else 0
                    evictions += sum(together[budget].evicted)
    assert forks > 0 and evictions > 0


@pytest.mark.parametrize(
    ("type_k", "type_v", "shift"),
    [(KVType.F16, KVType.F16, False), (KVType.Q8_0, KVType.F16, False), (KVType.Q8_0, KVType.Q8_0, True)],
    ids=["f16", "q8_0-k", "q8_0-shifted"],
)
def test_a_long_budget_runs_in_a_small_context_because_freed_cells_are_reused(
    tiny_models: dict[WeightQuant, Path], type_k: KVType, type_v: KVType, shift: bool
) -> None:
    budget, window, k = 700, 32, 2
    with engine.Model(tiny_models[WeightQuant.Q8_0]) as model:
        prompt = model.tokenize(prompts.chat_prompt("What is 2 + 2?", ""))
        cells = engine.cells_needed(len(prompt), k, budget, window=window)
        options = engine.ContextOptions(n_ctx=cells, n_seq=k, type_k=type_k, type_v=type_v)
        with engine.Context(model, options) as ctx:
            assert ctx.n_ctx <= 256 < k * budget  # llama.cpp pads to 256 cells
            # A random-weight model: no end token in sight, every sample writes its whole budget.
            out = ctx.generate(prompt, k=k, max_tokens=budget, sampling=GREEDY, seeds=(3, 4), window=window,
                               shift=shift)  # fmt: skip
    assert out.generated == (budget, budget)
    chunk = memory.eviction_chunk(window)
    assert all(budget - e in range(window, window + chunk + 1) for e in out.evicted)
    # Without the window, the same context cannot hold the run.
    with (
        engine.Model(tiny_models[WeightQuant.Q8_0]) as model,
        engine.Context(model, options) as ctx,
        pytest.raises(ConfigurationError, match="KV cells"),
    ):
        ctx.generate(prompt, k=k, max_tokens=budget, sampling=SAMPLED, seeds=(3, 4))


def test_run_stores_evictions_and_reports_the_window(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    model = str(demo.family_sources()[0])
    common = ["--task", "arith", "--limit", "4", "--k", "2", "--temperature", "0", "--no-repack", "--db", str(db),
              "--json", "--budget-tokens", "160"]  # fmt: skip
    plain = CliRunner().invoke(cli, ["run", model, *common])
    zero = CliRunner().invoke(cli, ["run", model, *common, "--kv-window", "0"])
    windowed = CliRunner().invoke(cli, ["run", model, *common, "--kv-window", "16"])
    for result in (plain, zero, windowed):
        assert result.exit_code == 0, result.output
    a, b, w = (json.loads(r.output) for r in (plain, zero, windowed))
    assert a["config_id"] == b["config_id"]  # a zero window is no window: the same configuration
    assert a["kv_window"] == 0 and w["kv_window"] == 16
    assert w["config_id"] != a["config_id"]
    assert w["kv_cells"] < a["kv_cells"] or w["kv_cells"] == memory.KV_CELL_PADDING
    assert w["mean_evicted"] > 0 == a["mean_evicted"]
    assert w["predicted_bytes"] <= a["predicted_bytes"]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT evicted, tokens FROM samples WHERE config_id = ?", (w["config_id"],)).fetchall()
    assert len(rows) == 8 and any(e > 0 for e, _ in rows)
    assert all(e <= t for e, t in rows)
    report = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(tmp_path / "reports")])
    assert report.exit_code == 0, report.output
    text = next((tmp_path / "reports").glob("*.md")).read_text()
    assert "window 16" in text


def test_plan_with_a_2k_window_at_32k_needs_under_a_fifth_of_the_kv() -> None:
    result = CliRunner().invoke(cli, ["plan", "--budget", "64GB", "--models", "qwen3-8b:Q4_K_M", "--ctx", "32k",
                                      "--k", "1", "--kv", "f16", "--kv-window", "0,2k", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r["kv_window"]: r for r in json.loads(result.output)}
    assert set(rows) == {0, 2048}
    assert rows[2048]["kv_bytes"] < rows[0]["kv_bytes"] / 5
    assert rows[2048]["kv_cells"] == memory.padded_cells(256 + 2048 + memory.eviction_chunk(2048))


def test_a_window_no_shorter_than_the_budget_is_not_planned_twice() -> None:
    from edgeval.comparison import plan

    refs = Catalog.load().resolve("qwen3-0.6b:Q8_0")
    configs = plan.configurations(refs, plan.Axes(kv=(KVType.F16,), ctx=(2048,), k=(1,), kv_window=(0, 2048, 4096)))
    assert [c.kv_window for c in configs] == [0]


def test_compare_builds_a_run_per_window_and_labels_it(tmp_path: Path) -> None:
    source = demo.family_sources()[2]
    catalog = write_catalog(tmp_path / "family.toml",
                            {source.stem: {"params": 1, "files": [{"quant": "F16", "path": str(source)}]}})  # fmt: skip
    request = compare.Request(budget_bytes=10**9, models=(source.stem,), kv=(KVType.F16, KVType.Q8_0),
                              kv_window=(0, 16), budgets=(8, 256), votes=(1, 4), catalogs=(catalog,))  # fmt: skip
    arms = compare.arms(request, "arith")
    assert sorted((a.kv.value, a.window) for a in arms) == [("f16", 0), ("f16", 16), ("q8_0", 0), ("q8_0", 16)]
    windowed = next(a for a in arms if a.window == 16)
    plain = next(a for a in arms if a.window == 0 and a.kv == windowed.kv)
    assert "window 16" in windowed.label
    # The budget of 8 tokens fits inside a 16-token window: that arm answers only the 256-token budget.
    assert windowed.budgets == (256,) and plain.budgets == (8, 256)
    assert windowed.predicted[(256, 4)] < plain.predicted[(256, 4)]
