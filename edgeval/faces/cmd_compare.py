"""The main job and what it publishes: `compare`, `report`, `demo`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from edgeval.comparison import compare as compare_mod
from edgeval.core.quants import KVType
from edgeval.faces import demo as demo_mod
from edgeval.faces.options import (
    ByteSize,
    CommaList,
    Duration,
    ListOptionsCommand,
    _count,
    _duration_text,
    _joined,
    _kv,
    _model_names,
    _tokens,
    budget_message_option,
    catalog_option,
    cpu_moe_option,
    db_option,
    family_option,
    json_option,
    kv_window_axis,
    models_option,
    parallel_option,
    ram_option,
    repack_option,
    seed_option,
    threads_option,
)


def _run_compare(request: compare_mod.Request, db: Path | None, as_json: bool, dry_run: bool) -> list[Any]:
    from edgeval.edges import hub
    from edgeval.edges.store import Store, default_db_path
    from edgeval.faces import ui_compare

    if dry_run:
        plans = []
        known = compare_mod.Measured({})
        if (db or default_db_path()).exists():  # earlier runs' speeds; a dry run creates nothing
            with Store(db, create=False) as store:
                known = compare_mod.measured(store)
        for task in request.tasks:
            planned = compare_mod.race_plan(request, task, known=known)
            plans.append((task, planned, {a.ref.label: hub.local_path(a.ref.file) is not None for a in planned.arms}))
        if as_json:
            click.echo(json.dumps([ui_compare.dry_run_json(*plan) for plan in plans], indent=2))
        else:
            ui_compare.render_dry_run(request, plans)
        return []
    with Store(db) as store, ui_compare.compare_progress(quiet=as_json) as progress:
        comparisons = compare_mod.run(request, store, progress, command=" ".join(sys.argv))
        _record_recommendations(store, comparisons)
    if as_json:
        click.echo(json.dumps([ui_compare.comparison_json(c) for c in comparisons], indent=2))
    else:
        ui_compare.render_compare(comparisons)
    if any(c.stopped == "interrupted" for c in comparisons):
        raise click.exceptions.Exit(130)
    return comparisons


def _record_recommendations(store: Any, comparisons: list[Any]) -> None:
    """Keep each comparison's recommendation (`edgeval export` takes the latest): its row key is `config:votes`."""
    for c in comparisons:
        if c.recommended:
            config_id, _, votes = str(c.recommended).partition(":")
            store.add_recommendation(c.task, c.budget_bytes, int(config_id), int(votes), " ".join(sys.argv))


@click.command(name="compare", cls=ListOptionsCommand)
@click.option("--budget", required=True, type=ByteSize(), help="Memory budget: 8GB, 7.5GB (10^n) or 8GiB (2^n).")
@click.option(
    "--task",
    "task_names",
    multiple=True,
    default=(compare_mod.DEFAULT_TASK,),
    show_default=True,
    help="Task(s) to compare on (repeatable).",
)
@models_option(
    f"{_joined(compare_mod.DEFAULT_QUANTS)} files of the {compare_mod.DEFAULT_SIZES} largest sizes that fit, the "
    "largest of each generation first"
)
@family_option
@click.option("--kv", type=CommaList("KV,...", _kv), default=_joined(compare_mod.DEFAULT_KV), show_default=True,
              help="KV-cache types (K and V alike).")  # fmt: skip
@click.option(
    "--budget-tokens",
    "budgets",
    type=CommaList("N,...", _tokens),
    default=_joined(compare_mod.DEFAULT_BUDGETS),
    show_default=True,
    help="The token-budget ladder, answered by one generation per run (capped to the model's context).",
)
@click.option("--k", "votes", type=CommaList("K,...", _count), default=_joined(compare_mod.DEFAULT_VOTES),
              show_default=True, help="Vote counts compared (k up to the largest, generated once).")  # fmt: skip
@kv_window_axis
@click.option("--time", "time_s", type=Duration(), default=_duration_text(compare_mod.DEFAULT_TIME_S),
              show_default=True, help="Wall-time cap: 90s, 30m, 2h.")  # fmt: skip
@click.option("--answer-time", "answer_time_s", type=Duration(), help="The most one answer may take on this machine "
              "(250ms, 0.5s, 2m), in the worst case its budget allows (prompt + budget + forcing + answer, its votes "
              "together): configurations predicted over it are never run; one measured over it is dropped.")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), help="Questions per configuration at most (default: the whole task; "
              f"{compare_mod.DEFAULT_EXHAUSTIVE_LIMIT} with --exhaustive).")  # fmt: skip
@click.option(
    "--exhaustive", is_flag=True, help="Run every configuration on every question up to --limit; drop nothing."
)
@seed_option
@budget_message_option
@threads_option
@repack_option
@click.option(
    "--gpu-layers",
    type=int,
    help="Layers on the GPU, as in plan (default: all on a GPU build, 0 on CPU); "
    "with layers on a GPU the budget bounds the GPU part and the host part must fit --ram.",
)
@cpu_moe_option
@click.option("--vram", type=ByteSize(), help="The GPU's memory: also leave out runs whose GPU part exceeds it.")
@ram_option
@parallel_option("auto")
@click.option("--dry-run", is_flag=True, help="Show the runs, the download and a time plan; run nothing.")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run on a Ray cluster: HOST:PORT of its head, auto (the "
              "cluster this machine belongs to) or local (a throw-away one here). Needs edgeval[ray].")  # fmt: skip
@db_option
@catalog_option
@json_option
def compare_command(
    budget: int, task_names: tuple[str, ...], model_refs: tuple[str, ...], family: str, kv: tuple[KVType, ...],
    budgets: tuple[int, ...], votes: tuple[int, ...], kv_windows: tuple[int, ...] | None, time_s: float,
    answer_time_s: float | None, limit: int | None, exhaustive: bool, seed: int, budget_message: str | None,
    threads: int | None, repack: bool | None, gpu_layers: int | None, cpu_moe: int, vram: int | None,
    ram: int | None, parallel: int, dry_run: bool, ray_address: str | None, db: Path | None,
    catalogs: tuple[Path, ...], as_json: bool,
) -> None:  # fmt: skip
    """Find the best configuration that fits the budget, in the time you give: a race over rounds of questions
    that drops a configuration once a cheaper one is better by a paired interval, then says how sure it is.

    Downloads missing models (the next overlaps the current run); one configuration failing does not stop the
    others; the same command again continues and refines (it adds questions, never redoes one); Ctrl-C prints the
    answer so far.
    """
    request = compare_mod.Request(
        budget_bytes=budget, tasks=task_names, models=_model_names(model_refs), family=family, kv=kv, budgets=budgets, votes=votes, kv_window=kv_windows or (0,),
        time_s=time_s, limit=limit, exhaustive=exhaustive, seed=seed, threads=threads, repack=repack,
        catalogs=catalogs, ray=ray_address, gpu_layers=gpu_layers, cpu_moe=cpu_moe, vram_bytes=vram, ram_bytes=ram,
        parallel=parallel, answer_time_s=answer_time_s,
        budget_message=compare_mod.Request.budget_message if budget_message is None else budget_message,
    )  # fmt: skip
    _run_compare(request, db, as_json, dry_run)


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Folder for the markdown and its plot.",
)
@click.option("--task", "task_name", help="Only this task (default: one report per stored task).")
@click.option("--budget", type=ByteSize(), help="Only configurations within this footprint.")
@click.option("--name", help="File name stem (default: TASK-BUDGET).")
@db_option
def report(out: Path, task_name: str | None, budget: int | None, name: str | None, db: Path | None) -> None:
    """Write markdown reports with plots of accuracy against memory and against seconds per answer from the stored
    results (same results, same bytes)."""
    from edgeval.edges.store import Store
    from edgeval.faces import report as reporting
    from edgeval.faces import ui

    with Store(db, create=False) as store:
        comparisons = compare_mod.from_store(store, task_name, budget)
        if not any(c.rows for c in comparisons):
            raise click.ClickException("no stored results to report — run `edgeval compare` or `edgeval demo` first")
        for comparison in comparisons:
            written = reporting.write(store, comparison, out, name if len(comparisons) == 1 else None)
            plots = [str(p) for p in (written.plot, written.time_plot, written.kld_plot) if p]
            ui.console.print(
                f"[green]✓[/] {ui.shown(written.markdown)}" + (f" and {ui.shown(' and '.join(plots))}" if plots else "")
            )


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Folder for the report.",
)
@click.option("--time", "time_s", type=Duration(), default=_duration_text(demo_mod.TIME_S), show_default=True,
              help="The race's wall time.")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), help="Questions per configuration at most (default: all 200).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@json_option
def demo(out: Path, time_s: float, limit: int | None, seed: int, as_json: bool) -> None:
    """Try edgeval with no downloads: quantize edgeval's tiny trained family, race it on arith, write a report."""
    from edgeval.edges.store import Store
    from edgeval.faces import report as reporting
    from edgeval.faces import ui

    setup = demo_mod.build_family()
    request = demo_mod.request(setup, limit=limit, time_s=time_s, seed=seed)
    comparisons = _run_compare(request, setup.db, as_json, dry_run=False)
    with Store(setup.db) as store:
        for comparison in comparisons:
            written = reporting.write(store, comparison, out, "edgeval-demo")
            if not as_json:
                ui.console.print(f"[green]✓[/] report: {ui.shown(written.markdown)}")
