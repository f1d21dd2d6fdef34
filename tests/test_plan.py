"""`edgeval plan`: what fits a budget, from the catalog alone."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgeval.comparison import plan
from edgeval.edges.catalog import Catalog
from edgeval.faces.cli import cli

KEYS = {"model", "params", "active_params", "weight_quant", "kv_type_k", "kv_type_v", "ctx", "k", "weight_bytes", "kv_bytes",
        "other_bytes", "total_bytes"}  # fmt: skip


def test_8gb_plan_lists_only_fitting_configurations(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network needed
    result = CliRunner().invoke(cli, ["plan", "--budget", "8GB", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows and all(r.keys() >= KEYS for r in rows)
    assert all(r["total_bytes"] <= 8 * 10**9 for r in rows)
    assert all(
        r["total_bytes"] == r["weight_bytes"] + r["kv_bytes"] + r["state_bytes"] + r["other_bytes"] for r in rows
    )
    # a hybrid's recurrent states: one per vote, whatever the context
    assert all(r["state_bytes"] == r["k"] * r["state_bytes_per_vote"] for r in rows)
    assert {r["generation"] for r in rows} == {"qwen3", "qwen3.5"}
    models = {r["model"] for r in rows}
    assert "qwen3-14b:Q4_K_M" not in models
    assert any(r["model"] == "qwen3-8b:Q4_K_M" and r["ctx"] <= 4096 for r in rows)
    assert len({m.split(":")[0] for m in models}) >= 4
    assert [r["total_bytes"] for r in rows] == sorted(r["total_bytes"] for r in rows)


def test_every_config_that_fits_is_listed_and_none_that_does_not() -> None:
    refs = Catalog.load().everything()
    every = plan.configurations(refs, plan.Axes())
    budget = 4 * 10**9
    result = plan.plan(refs, plan.Axes(), budget)
    assert len(result.fits) == sum(c.footprint.total_bytes <= budget for c in every)
    assert result.considered == len(every)


def test_axes_options_shape_the_grid() -> None:
    args = ["plan", "--budget", "30GB", "--models", "qwen3-0.6b:Q8_0,qwen3-4b:Q4_K_M", "--kv", "q8_0",
            "--ctx", "4k,8k", "--k", "1,2", "--json"]  # fmt: skip
    rows = json.loads(CliRunner().invoke(cli, args).output)
    assert len(rows) == 2 * 1 * 2 * 2
    assert {(r["kv_type_k"], r["kv_type_v"]) for r in rows} == {("q8_0", "q8_0")}
    assert {r["ctx"] for r in rows} == {4096, 8192}
    one = next(r for r in rows if r["model"] == "qwen3-4b:Q4_K_M" and r["ctx"] == 8192 and r["k"] == 2)
    assert one["kv_cells"] == 256 + 2 * (8192 - 256)


def test_largest_model_per_precision_and_the_table() -> None:
    result = plan.plan(Catalog.load().everything(), plan.Axes(), 8 * 10**9)
    largest = result.largest_per_precision()
    assert largest[4].ref.model.params >= largest[8].ref.model.params >= largest[16].ref.model.params
    table = CliRunner().invoke(cli, ["plan", "--budget", "8GB", "--family", "qwen3"])
    assert table.exit_code == 0
    assert "Largest model per weight precision" in table.output and "qwen3-8b:" in table.output
    mixed = CliRunner().invoke(cli, ["plan", "--budget", "8GB"], terminal_width=200)
    assert "Largest model per generation and weight precision" in mixed.output and "qwen3.5-9b:" in mixed.output


def test_nothing_fits_says_so() -> None:
    result = CliRunner().invoke(cli, ["plan", "--budget", "100MB"])
    assert result.exit_code == 0
    assert "Nothing fits" in result.output


def test_bad_axis_values_are_usage_errors() -> None:
    for args in (["--kv", "q3_0"], ["--ctx", "lots"], ["--k", "0"]):
        result = CliRunner().invoke(cli, ["plan", "--budget", "8GB", *args])
        assert result.exit_code == 2, args


def test_family_filters_the_catalog_by_generation() -> None:
    def models(*args: str) -> set[str]:
        result = CliRunner().invoke(cli, ["plan", "--budget", "8GB", "--json", "--ctx", "4k", "--k", "1", *args])
        assert result.exit_code == 0, result.output
        return {r["model"].split(":")[0] for r in json.loads(result.output)}

    both, old, new = models(), models("--family", "qwen3"), models("--family", "qwen3.5")
    assert old and new and old | new == both and not old & new
    assert all(m.startswith("qwen3-") for m in old)
    assert "qwen3.5-9b" in new and all(m.startswith(("qwen3.5-", "qwen3.6-")) for m in new)
    assert models("--family", "qwen3.5", "--models", "qwen3-8b,qwen3.5-4b") == {"qwen3.5-4b"}
    none = CliRunner().invoke(cli, ["plan", "--budget", "8GB", "--family", "qwen3.5", "--models", "qwen3-8b"])
    assert none.exit_code == 2 and "none of the models considered is of generation qwen3.5" in none.output
    bad = CliRunner().invoke(cli, ["plan", "--budget", "8GB", "--family", "qwen4"])
    assert bad.exit_code == 2 and "qwen4" in bad.output


def test_generations_side_by_side_are_the_budget_s_edges() -> None:
    book = Catalog.load()
    refs = book.resolve_all(["qwen3-8b:Q4_K_M", "qwen3.5-9b:Q4_K_M"])
    axes = plan.Axes()
    result = plan.plan(refs, axes, 8 * 10**9)
    old, new = result.generations
    assert (old.generation, old.ref.label, new.generation, new.ref.label) == (
        "qwen3", "qwen3-8b:Q4_K_M", "qwen3.5", "qwen3.5-9b:Q4_K_M"
    )  # fmt: skip
    assert (old.kv_per_1k, new.kv_per_1k) == (144 * 1024 * 1000, 32 * 1024 * 1000)  # 36 vs 8 attention layers
    assert (old.state_per_vote, new.state_per_vote) == (0, new.ref.model.arch.state_bytes_per_seq)
    assert new.longest_budget > 3 * old.longest_budget and new.most_votes > old.most_votes >= 1
    for row in (old, new):  # each figure is the edge: it fits, one more does not
        fit = lambda fp: plan.fits(fp, 8 * 10**9)  # noqa: E731
        assert fit(plan.footprint_of(row.ref, axes, row.kv_type, row.longest_budget, 1))
        assert not fit(plan.footprint_of(row.ref, axes, row.kv_type, row.longest_budget + 1, 1))
        assert fit(plan.footprint_of(row.ref, axes, row.kv_type, row.votes_budget, row.most_votes))
        assert not fit(plan.footprint_of(row.ref, axes, row.kv_type, row.votes_budget, row.most_votes + 1))
    assert plan.plan(book.resolve_all(["qwen3-8b:Q4_K_M"]), axes, 8 * 10**9).generations == ()
    table = CliRunner().invoke(cli, ["plan", "--budget", "8GB", "--models", "qwen3-8b:Q4_K_M,qwen3.5-9b:Q4_K_M"],
                               terminal_width=200)  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "Generations side by side within 8 GB" in table.output and "state/vote" in table.output
    assert "qwen3.5-9b:Q4_K_M" in table.output
    assert f"{new.longest_budget:,}" in table.output
