"""The budget ladder: one generation answers every token budget, and each rung equals a separate run at it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeval.core import prompts
from edgeval.edges.store import Store
from edgeval.faces import demo
from edgeval.faces.cli import cli
from edgeval.llama import engine
from edgeval.running import sweep

from .conftest import GREEDY, SAMPLED, arith_forcing, arith_prompts


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_each_rung_equals_a_separate_run_at_its_budget(sampling: prompts.Sampling) -> None:
    rungs = (4, 12, 24, 48)
    seeds = (11, 12, 13)
    # On the CPU: a GPU may pick other kernels for batches of another shape and flip a near-tie.
    with engine.Model(demo.family_sources()[1], engine.LoadOptions(n_gpu_layers=0)) as model:
        forcing = arith_forcing(model)
        ladder_cells = engine.cells_needed(80, 3, max(rungs), forcing, n_rungs=len(rungs))
        options = engine.ContextOptions(
            n_ctx=ladder_cells, n_seq=engine.ladder_sequences(3, len(rungs), forcing.starts_reasoning)
        )
        with engine.Context(model, options) as ctx:
            forks_seen = stops_before_top = 0
            for prompt in arith_prompts(model, 6):
                together = ctx.generate_ladder(prompt, k=3, budgets=rungs, sampling=sampling, seeds=seeds,
                                               forcing=forcing)  # fmt: skip
                for budget in rungs:
                    alone = ctx.generate(prompt, k=3, max_tokens=budget, sampling=sampling, seeds=seeds,
                                         forcing=forcing)  # fmt: skip
                    rung = together[budget]
                    assert rung.tokens == alone.tokens, budget
                    assert (rung.generated, rung.forced, rung.finish) == (alone.generated, alone.forced, alone.finish)
                    forks_seen += sum(rung.forced) if budget < max(rungs) else 0
                stops_before_top += sum(f == "stop" for f in together[max(rungs)].finish)
                # One generation decodes fewer tokens than four separate runs would.
                assert together[4].decoded_tokens == together[48].decoded_tokens
    # The smallest rungs cut reasoning short (forks happened) and some samples finished before the largest budget:
    # both paths of the ladder were exercised.
    assert forks_seen > 0
    assert stops_before_top > 0


def test_a_ladder_without_thinking_needs_no_forks() -> None:
    with engine.Model(demo.family_sources()[0]) as model:
        forcing = engine.Forcing(start=(), end=(), tokens=(), answer_tokens=0, starts_reasoning=False)
        options = engine.ContextOptions(n_ctx=256, n_seq=engine.ladder_sequences(2, 3, forcing.starts_reasoning))
        assert options.n_seq == 2
        with engine.Context(model, options) as ctx:
            prompt = arith_prompts(model, 1)[0]
            together = ctx.generate_ladder(prompt, k=2, budgets=(3, 8), sampling=GREEDY, seeds=(1, 2),
                                           forcing=forcing)  # fmt: skip
            alone = ctx.generate(prompt, k=2, max_tokens=3, sampling=GREEDY, seeds=(1, 2), forcing=forcing)
    assert together[3].tokens == alone.tokens
    assert all(len(t) <= 3 for t in together[3].tokens)


def test_run_with_a_ladder_stores_every_rung_as_its_own_configuration(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    model = str(demo.family_sources()[2])
    common = ["--task", "arith", "--limit", "6", "--k", "2", "--temperature", "0", "--no-repack", "--db", str(db),
              "--json"]  # fmt: skip
    ladder = CliRunner().invoke(cli, ["run", model, "--budget-tokens", "8,24,48", *common])
    assert ladder.exit_code == 0, ladder.output
    rungs = json.loads(ladder.output)
    assert [r["budget_tokens"] for r in rungs] == [8, 24, 48]
    assert all(r["n_done"] == 6 and r["status"] == "done" for r in rungs)
    assert rungs[0]["forced_share"] > rungs[2]["forced_share"]
    assert {r["memory_source"] for r in rungs} == {"calibrated"}
    # A separate run at a rung's budget is the same configuration: nothing new is generated, same figures.
    alone = CliRunner().invoke(cli, ["run", model, "--budget-tokens", "24", *common])
    assert alone.exit_code == 0, alone.output
    single = json.loads(alone.output)
    assert single["config_id"] == rungs[1]["config_id"]
    assert single["accuracy_maj"] == rungs[1]["accuracy_maj"]
    with Store(db) as store:
        assert len(store.configs()) == 3
        for r in rungs:
            assert len(store.samples(r["config_id"])) == 12


def test_a_rerun_with_a_higher_limit_adds_questions_and_redoes_none(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    spec = sweep.RunSpec(demo.family_sources()[0], "tiny-s", "arith", budget_tokens=24, ladder=(8,), k=1, limit=3,
                         sampling=GREEDY)  # fmt: skip
    with Store(db) as store:
        first = sweep.run_ladder(spec, store)
        texts = {s.item_index: s.text for s in store.samples(first[24].config_id)}
        more = sweep.run_ladder(sweep.RunSpec(**{**spec.__dict__, "limit": 5}), store)
        assert more[24].config_id == first[24].config_id
        assert more[24].n_done == 5 and more[8].n_done == 5
        again = {s.item_index: s.text for s in store.samples(first[24].config_id)}
        assert {i: again[i] for i in texts} == texts
        assert len(again) == 5
