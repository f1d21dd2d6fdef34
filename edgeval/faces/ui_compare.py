"""The terminal faces of `compare`: the dry run's plan, the race's progress, the answer and its JSON (printed on
`ui.console`, so one console serves every command)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from edgeval.core.units import format_bytes, format_duration, format_seconds

if TYPE_CHECKING:  # types only: importing these here would load llama.cpp for `plan` and `models`
    from edgeval.comparison.arms import RacePlan, TooSlow
    from edgeval.comparison.compare import Arm, RaceProgress, Request
    from edgeval.comparison.verdict import Comparison
    from edgeval.edges.store import NodeRun
from edgeval.faces import tables, ui


def arm_row(arm: Arm, task: str, cached: bool) -> dict[str, object]:
    """One run of a dry run, as JSON."""
    return {"model": arm.ref.label, "task": task, "kv_type": arm.kv.value, "kv_window": arm.window,
            "budgets": list(arm.budgets), "k": arm.k,
            "votes": list(arm.votes), "configurations": arm.configurations, "file_bytes": arm.ref.file.size,
            "cached": cached, "predicted_bytes": arm.predicted[(arm.budgets[-1], arm.votes[-1])],
            "estimated_s_per_question": round(arm.estimated_s, 2),
            "device_bytes": arm.device.get((arm.budgets[-1], arm.votes[-1]), 0),
            "estimate_source": arm.estimate.source if arm.estimate else "rough",
            "estimated_tokens_per_s": round(arm.estimate.tokens_per_s, 1) if arm.estimate else None,
            "status": "planned", "answer_times": [{"budget_tokens": b, "k": j, **a.to_json()}
                                                  for (b, j), a in sorted(arm.answer_times.items())]}  # fmt: skip


def dry_run_json(task: str, planned: RacePlan, cached: dict[str, bool]) -> list[dict[str, object]]:
    """A task's dry run as JSON: its runs (status `planned`), then each configuration left out as too slow."""
    return [*(arm_row(a, task, cached[a.ref.label]) for a in planned.arms),
            *({**t.to_json(), "task": task} for t in planned.too_slow)]  # fmt: skip


def _left_out(too_slow: Sequence[TooSlow], limit: float | None) -> str:
    """The line naming what --answer-time left out before running, each with its predicted worst case."""
    named = ", ".join(f"{t.label} ({format_seconds(t.answer.worst_s)})" for t in too_slow)
    return (f"Left out before running, worst case predicted over --answer-time {format_seconds(limit or 0)} "
            f"(never run): {named}.")  # fmt: skip


def render_dry_run(request: Request, plans: list[tuple[str, RacePlan, dict[str, bool]]]) -> None:
    """The runs each task would make, what they answer and what is left out as too slow, the download and a time
    plan."""
    for task, planned, cached in plans:
        arms = planned.arms
        if arms:
            _dry_run_table(request, task, arms, cached)
        if planned.too_slow:
            ui.console.print(ui.shown(_left_out(planned.too_slow, request.answer_time_s)))
        if not arms:
            ui.err_console.print(f"Nothing fits in {format_bytes(request.budget_bytes)}"
                                 + (" and --answer-time." if planned.too_slow else "."))  # fmt: skip
            continue
        _time_plan(request, arms, cached)


def _dry_run_table(request: Request, task: str, arms: Sequence[Arm], cached: dict[str, bool]) -> None:
    """The runs: memory, decode rate, seconds per question and predicted seconds per answer."""
    n_configs = sum(a.configurations for a in arms)
    table = Table(title=f"compare --dry-run: {ui.shown(task)}, {len(arms)} runs answering {n_configs} configurations "
                  f"within {format_bytes(request.budget_bytes)}", title_justify="left")  # fmt: skip
    offload = any(a.device.get((a.budgets[-1], a.votes[-1]), 0) for a in arms)
    names = ("model", "KV", "budgets", "k", "votes", "pred.", *(("GPU", "host") if offload else ()), "tok/s", "s/q")
    for name in names:
        table.add_column(name, justify="left" if name in ("model", "KV", "budgets", "votes") else "right")
    mark = {"measured": "", "probe": "≤", "rough": "~"}
    for a in arms:
        top = (a.budgets[-1], a.votes[-1])
        parts = (format_bytes(a.device.get(top, 0)), format_bytes(a.predicted[top] - a.device.get(top, 0)))
        source = a.estimate.source if a.estimate else "rough"
        rate = f"{mark[source]}{a.estimate.tokens_per_s:.0f}" if a.estimate else "?"
        table.add_row(ui.shown(a.ref.label) + ("" if cached[a.ref.label] else " ↓"), a.kv.value,
                      ",".join(str(b) for b in a.budgets), str(a.k), ",".join(str(j) for j in a.votes),
                      format_bytes(a.predicted[top]), *(parts if offload else ()), rate,
                      f"{a.estimated_s:.0f}")  # fmt: skip
    ui.console.print(table)
    _answer_table(arms)


def _answer_table(arms: Sequence[Arm]) -> None:
    """Predicted seconds per answer of every planned configuration: a row per run and vote count, a column per
    token budget, typical–worst."""
    budgets = sorted({b for a in arms for b in a.budgets})
    table = Table(title="Predicted seconds per answer (typical–worst case)", title_justify="left")
    for name in ("model", "KV", "votes", *(str(b) for b in budgets)):
        table.add_column(name, justify="left" if name in ("model", "KV") else "right")
    for a in arms:
        kv = a.kv.value + (f", window {a.window}" if a.window else "")
        for j in a.votes:
            cells = [_range(*(x.typical_s, x.worst_s)) if (x := a.answer_times.get((b, j))) else "" for b in budgets]
            table.add_row(ui.shown(a.ref.label), kv, str(j), *cells)
    ui.console.print(table)
    shapes = {x.source for a in arms for x in a.answer_times.values()}
    whence = "this model file, KV cache and window measured here as deployed" if shapes == {"shape"} else (
        "the speed measured here as deployed where there is one, else one request of k votes at the tok/s figure "
        "(its prompt read at one sequence's decode rate, an upper bound)")  # fmt: skip
    ui.console.print("Predicted, not measured: one answer deployed (its votes together) — typical with the votes "
                     "writing half the budget, worst with every vote writing all it may (prompt + budget + forcing + "
                     f"answer); from {whence}.", style="dim")  # fmt: skip


def _range(low: float, high: float) -> str:
    """`1.3–1.7 s`, or `850 ms–1.2 s` where the units differ."""
    a, b = format_seconds(low), format_seconds(high)
    unit = b.rsplit(" ", 1)[-1]
    return f"{a.removesuffix(' ' + unit)}–{b}" if a.endswith(" " + unit) else f"{a}–{b}"


def _time_plan(request: Request, arms: Sequence[Arm], cached: dict[str, bool]) -> None:
    """The download, and how many questions the time given buys (what --answer-time left out costs nothing)."""
    from edgeval.comparison.compare import FIRST_ROUND, ROUND_GROWTH

    files = {a.ref.label: a.ref.file.size or 0 for a in arms}
    fetch = sum(size for label, size in files.items() if not cached[label])
    have = sum(size for label, size in files.items() if cached[label])
    ui.console.print(f"Download: {format_bytes(fetch)} to fetch (↓), {format_bytes(have)} already cached.")
    per_round = sum(a.estimated_s for a in arms)
    sources = {a.estimate.source if a.estimate else "rough" for a in arms}
    how = "; ".join(_SOURCES[x] for x in ("measured", "probe", "rough") if x in sources)
    if request.exhaustive:
        limit = request.question_limit or 0
        ui.console.print(f"--exhaustive: every run on {limit} questions, about {format_duration(per_round * limit)} "
                         f"(samples using half their largest budget; tok/s {how}).")  # fmt: skip
        return
    first = min(FIRST_ROUND, request.question_limit or FIRST_ROUND)
    budget = f"--time {format_duration(request.time_s)}" if request.time_s else "no time limit"
    fit = int(request.time_s / per_round) if request.time_s and per_round > 0 else None
    if fit is None:
        reach = ""
    elif fit >= 1:
        half = 100 / math.sqrt(fit)
        reach = (
            f"; about {fit} questions each if nothing were dropped — with {fit} questions an accuracy is "
            f"known to about ±{half:.0f} points (95%), so only gaps wider than that can be settled"
        )
    else:
        reach = ("; less than one question each fits: every run still answers one (the time is then exceeded), "
                 "and the answer will say what more time would settle — --models, a shorter --budget-tokens "
                 "or a GPU go further")  # fmt: skip
    ui.console.print(f"Time plan ({budget}): a question for every run takes about {format_duration(per_round)}; "
                     f"the first round asks {first}, then ×{ROUND_GROWTH} for what is still in the race{reach} "
                     f"(samples using half their largest budget; tok/s {how}).")  # fmt: skip


_SOURCES = {
    "measured": "measured by earlier runs of the file here",
    "probe": "≤: this machine's throughput probe for the size class, an upper bound",
    "rough": "~: rough, scaled by weight size from one CPU's figure — run `edgeval run` or a compare once to measure",
}


@contextmanager
def compare_progress(*, quiet: bool = False) -> Iterator[Callable[[RaceProgress], None]]:
    """Two lines on stderr: the round (runs done, leader, configurations in the race, time left) and the current
    run's questions."""
    if quiet:
        yield lambda state: None
        return
    with RichProgress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        console=ui.err_console, transient=True, disable=not ui.err_console.is_terminal,
    ) as bar:  # fmt: skip
        race_id = bar.add_task("round", total=None, info="")
        item_id = bar.add_task("questions", total=None, info="")

        def update(state: RaceProgress) -> None:
            left = f", {format_duration(max(0.0, state.time_left_s))} left" if state.time_left_s is not None else ""
            info = f"{state.in_race}/{state.configurations} in the race{left}; leader {ui.shown(state.leader or '—')}"
            bar.update(race_id, description=f"round {state.round} ({state.questions} q)", completed=state.done,
                       total=state.total or None, info=info)  # fmt: skip
            inner = state.inner
            speed = f"{inner.tokens / inner.decode_s:.0f} tok/s" if inner.decode_s > 0 else ""
            bar.update(item_id, description=ui.shown(state.current[:40]), completed=inner.items_done,
                       total=inner.items_total or None, info=speed)  # fmt: skip

        yield update


def comparison_json(c: Comparison) -> dict[str, object]:
    """A comparison as `compare --json` prints it: rows, the recommended row, the tied set, the paired
    comparisons behind each statement, the recommendation, time and tokens."""
    recommended = c.row(c.recommended)
    return {
        "task": c.task,
        "budget_bytes": c.budget_bytes,
        "rows": [*(r.to_json() for r in c.rows), *(t.to_json() for t in c.too_slow)],
        "recommended": recommended.to_json() if recommended else None,
        "tied": [r.to_json() for key in c.tied if (r := c.row(key)) is not None],
        "comparisons": [s.to_json() for s in c.statements],
        "recommendation": list(c.recommendation),
        "frontier": [r.key for r in c.frontier],
        "alpha": c.alpha,
        "answer_time_s": c.answer_time_s,
        "stopped": c.stopped,
        "time_s": round(c.time_s, 2),
        "tokens_decoded": c.tokens_decoded,
        "failures": list(c.failures),
        "nodes": [node_json(n) for n in c.nodes],
    }


def node_json(n: NodeRun) -> dict[str, object]:
    """What one Ray node measured of one configuration, with the node's facts (never averaged across nodes)."""
    node = n.node
    return {"config_id": n.config_id, "node": n.node_id, "hostname": node.hostname, "ip": node.ip,
            "ray_node_id": node.ray_node_id, "cpu": node.cpu, "backend": node.backend,
            "edgeval": node.edgeval_version, "llama_cpp_python": node.llama_cpp_python,
            "llama_cpp_build": node.llama_cpp_build, "hardware": node.hardware, "n_items": n.items,
            "peak_rss_bytes": n.peak_rss_bytes, "peak_vram_bytes": n.peak_vram_bytes, "load_s": n.load_s,
            "wall_s": n.wall_s, "prompt_tokens_per_s": n.prompt_tokens_per_s,
            "decode_tokens_per_s": n.decode_tokens_per_s, "ttft_s": n.ttft_s, "repack_mode": n.repack_mode,
            "parallel": n.parallel}  # fmt: skip


def _results_table(c: Comparison, with_kld: bool, with_time: bool) -> Table:
    return tables.rich_table(
        tables.comparison_layout(c, kld_column=with_kld, time_column=with_time), no_wrap=True, title_justify="left",
        title=f"{c.task} within {format_bytes(c.budget_bytes)}: ◆ recommended, = tied with the best, ✗ dropped, "
        "★ frontier",
    )  # fmt: skip


def render_compare(comparisons: list[Comparison]) -> None:
    """Equal-footprint tables (fits 80 columns): memory, accuracy with its interval and n, the recommended (◆),
    those tied with the best (=), dropped (✗), the frontier (★), seconds per answer where the terminal is wide
    enough; then what --answer-time left out, and the answer in words."""
    for c in comparisons:
        measured = [r for r in c.rows if r.kld is not None]  # configurations `edgeval kld` measured
        with_kld = bool(measured) and ui.console.width >= 80 + 8  # the column fits beside the eight; else a line below
        timed = any(r.result.answer_s is not None for r in c.rows)
        table = _results_table(c, with_kld, timed)
        unbounded = ui.console.options.update_width(10_000)  # its natural width, not the terminal's
        with_time = timed and Measurement.get(ui.console, unbounded, table).maximum <= ui.console.width
        ui.console.print(table if with_time or not timed else _results_table(c, with_kld, False))
        ui.console.print("memory: measured peak RSS; ~ calibrated (predicted for this budget and k, corrected by the run "
                      "that measured it); ? predicted", style="dim")  # fmt: skip
        if timed:
            where = "" if with_time else " (a column on a wider terminal; every figure in --json and the report)"
            ui.console.print(f"s/answer: median seconds one answer takes deployed as measured{where}; ★ counts it too",
                             style="dim")  # fmt: skip
        if c.too_slow:
            ui.console.print(ui.shown(_left_out(c.too_slow, c.answer_time_s)), style="dim")
        slow = [r for r in c.rows if r.status == "too_slow" and r.result.answer_s_worst is not None]
        if slow:
            named = ", ".join(f"{r.label} ({format_seconds(r.result.answer_s_worst or 0.0)})" for r in slow)
            ui.console.print(f"Dropped (✗), worst case measured over --answer-time {format_seconds(c.answer_time_s or 0)}:"
                             f" {ui.shown(named)}.", style="dim")  # fmt: skip
        if with_kld:
            ui.console.print(
                "KLD: mean KL divergence per token from the reference of `edgeval kld` (nats)", style="dim"
            )
        elif measured:
            shown = dict.fromkeys(f"{r.model} {r.result.kv_label} {r.kld:.2g}" for r in measured)
            ui.console.print("KLD from `edgeval kld` (nats per token): " + ui.shown("; ".join(shown)), style="dim")
        for line in c.recommendation:
            ui.console.print(f"• {ui.shown(line)}")
        ui.console.print(f"[dim]{format_duration(c.time_s)}, {c.tokens_decoded:,} tokens decoded; paired intervals at "
                      f"{c.alpha:.2g} each, anytime-valid: the best is wrongly dropped or left untied ≤ 5%[/]")  # fmt: skip
        hosts = {n.node_id: n.node.label for n in c.nodes}
        if hosts:
            ui.console.print(f"[dim]Ran on {len(hosts)} Ray node{'s' if len(hosts) > 1 else ''}: "
                          f"{ui.shown(', '.join(sorted(hosts.values())))}. Accuracy pools their samples; memory is the highest "
                          "peak any node measured; speed and memory per node: --json or edgeval report.[/]")  # fmt: skip
        for failure in c.failures:
            ui.err_console.print(f"[red]failed[/] {ui.shown(failure)}")
