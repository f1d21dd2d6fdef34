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
    assert all(r["total_bytes"] == r["weight_bytes"] + r["kv_bytes"] + r["other_bytes"] for r in rows)
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
    table = CliRunner().invoke(cli, ["plan", "--budget", "8GB"])
    assert table.exit_code == 0
    assert "Largest model per weight precision" in table.output and "qwen3-8b:Q4_K_M" in table.output


def test_nothing_fits_says_so() -> None:
    result = CliRunner().invoke(cli, ["plan", "--budget", "100MB"])
    assert result.exit_code == 0
    assert "Nothing fits" in result.output


def test_bad_axis_values_are_usage_errors() -> None:
    for args in (["--kv", "q3_0"], ["--ctx", "lots"], ["--k", "0"]):
        result = CliRunner().invoke(cli, ["plan", "--budget", "8GB", *args])
        assert result.exit_code == 2, args
