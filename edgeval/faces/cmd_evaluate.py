"""Commands that evaluate one configuration or re-read what was measured: `run`, `kld`, `regrade`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from edgeval.faces.options import (
    CommaList,
    _tokens,
    _window,
    budget_message_option,
    catalog_option,
    cpu_moe_option,
    db_option,
    json_option,
    kv_type_options,
    kv_types,
    parallel_option,
    repack_option,
    seed_option,
    threads_option,
)
from edgeval.running import kld_run, sweep


@click.command()
@click.argument("model_ref", metavar="REF|PATH")
@click.option(
    "--task",
    "task_name",
    required=True,
    help="aime25, math500, gpqa-diamond, gsm8k, arith[:DIFFICULTY[:SEED]], or a .jsonl file.",
)
@kv_type_options()
@click.option(
    "--ctx",
    type=CommaList("N", _tokens),
    help="Tokens one sample may see (prompt + budget + forced answer); default: what it needs.",
)
@click.option(
    "--budget-tokens",
    type=CommaList("N,...", _tokens),
    help="Tokens each sample may generate before its answer is forced; a ladder (8,24,48) answers every budget "
    f"from one generation (default: {sweep.DEFAULT_BUDGET_TOKENS}, or what the model's context holds beside the "
    "prompt).",
)
@click.option(
    "--kv-window",
    type=CommaList("N", _window),
    default="0",
    show_default=True,
    help="Each sample keeps the prompt and its most recent N tokens in the KV cache, evicting older ones (2k = "
    "2048; 0: no eviction).",
)
@click.option(
    "--k",
    "votes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Samples per question, decoded together and majority-voted.",
)
@click.option("--limit", type=click.IntRange(1), help="Only the first N questions (in the task's fixed order).")
@click.option("--thinking/--no-thinking", default=True, show_default=True, help="Qwen3's reasoning mode.")
@click.option("--temperature", type=click.FloatRange(0), help="Override the recommended temperature (0: greedy).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), help="Override the recommended top-p.")
@click.option("--top-k", type=click.IntRange(0), help="Override the recommended top-k (0: off).")
@click.option("--min-p", type=click.FloatRange(0, 1), help="Override the recommended min-p (0: off).")
@click.option(
    "--presence-penalty", type=click.FloatRange(0, 2),
    help="Override the recommended presence penalty (llama.cpp's penalties sampler over the last 64 tokens; Qwen3.5 "
    "recommends 1.5, Qwen3 none; 0: off).",
)  # fmt: skip
@seed_option
@budget_message_option
@threads_option
@click.option("--gpu-layers", type=int, help="Layers on the GPU (default: all on a GPU build, 0 on CPU).")
@cpu_moe_option
@repack_option
@parallel_option("1")
@click.option("--force", is_flag=True, help="Run even where the predicted memory exceeds what is available.")
@db_option
@catalog_option
@json_option
def run(
    model_ref: str, task_name: str, kv: str | None, kv_k: str | None, kv_v: str | None, ctx: tuple[int, ...] | None,
    budget_tokens: tuple[int, ...] | None, kv_window: tuple[int, ...], votes: int, limit: int | None, thinking: bool, temperature: float | None,
    top_p: float | None, top_k: int | None, min_p: float | None, presence_penalty: float | None, seed: int,
    budget_message: str | None,
    threads: int | None, gpu_layers: int | None, cpu_moe: int, repack: bool | None, parallel: int, force: bool, db: Path | None,
    catalogs: tuple[Path, ...], as_json: bool,
) -> None:  # fmt: skip
    """Run one configuration over a task: k votes per question, graded, with memory and speed measured.

    Each configuration runs in its own process; every finished question is stored at once, so an interrupted
    run resumes where it stopped. Prints a result table (or --json).
    """
    from edgeval.core import prompts
    from edgeval.core.prompts import Sampling
    from edgeval.edges import hub
    from edgeval.edges.catalog import Catalog
    from edgeval.edges.store import Store
    from edgeval.faces import ui

    refs = Catalog.load(catalogs).resolve(model_ref)
    if len(refs) != 1:
        raise click.UsageError(f"'{model_ref}' names {len(refs)} files; name one, e.g. {refs[0].label}")
    ref = refs[0]
    budgets = tuple(sorted(set(budget_tokens or ())))
    thinking = ref.model.thinks(thinking)  # Qwen3-2507 Thinking always reasons, Instruct never does
    base = ref.model.sampling(thinking)  # Qwen's advice for the model's generation
    sampling = Sampling(
        temperature=base.temperature if temperature is None else temperature,
        top_p=base.top_p if top_p is None else top_p,
        top_k=base.top_k if top_k is None else top_k,
        min_p=base.min_p if min_p is None else min_p,
        presence_penalty=base.presence_penalty if presence_penalty is None else presence_penalty,
    )
    with Store(db) as store:
        path = hub.local_path(ref.file)
        if path is None:
            with ui.download_progress(ref.label) as pulled:
                path = hub.pull(ref.file, progress=pulled, sha256=lambda p: store.file_sha256(p, hub.sha256_of))
        type_k, type_v = kv_types(kv, kv_k, kv_v)
        spec = sweep.RunSpec(
            model_path=path, model_label=ref.label, task=task_name, kv_type_k=type_k, kv_type_v=type_v,
            budget_tokens=budgets[-1] if budgets else None, ladder=budgets[:-1], ctx=ctx[0] if ctx else None,
            kv_window=kv_window[0] if kv_window else 0,
            k=votes, thinking=thinking,
            sampling=None if sampling == base else sampling, seed=seed, limit=limit,
            threads=threads, repack=repack, gpu_layers=gpu_layers, cpu_moe=cpu_moe, expected_sha256=ref.file.sha256,
            force=force, parallel=parallel,
            budget_message=prompts.BUDGET_MESSAGE if budget_message is None else budget_message,
        )  # fmt: skip
        with ui.run_progress(ref.label, task_name, votes, quiet=as_json) as progress:
            rungs = sweep.run_ladder(spec, store, progress, " ".join(sys.argv), ui.note)
    if as_json:
        shown = [r.to_json() for r in rungs.values()]
        click.echo(json.dumps(shown if len(shown) > 1 else shown[0], indent=2))
    else:
        for result in rungs.values():
            ui.render_run(result)
    if any(result.status != "done" for result in rungs.values()):
        raise click.exceptions.Exit(1)


def _local_file(catalogs: tuple[Path, ...], ref_text: str, store: Any) -> tuple[str, Path, str | None]:
    """One model file named by a catalog reference or a path: its label, local path (downloaded when missing) and
    the catalog's sha256."""
    from edgeval.edges import hub
    from edgeval.edges.catalog import Catalog
    from edgeval.faces import ui

    refs = Catalog.load(catalogs).resolve(ref_text)
    if len(refs) != 1:
        raise click.UsageError(f"'{ref_text}' names {len(refs)} files; name one, e.g. {refs[0].label}")
    ref = refs[0]
    path = hub.local_path(ref.file)
    if path is None:
        with ui.download_progress(ref.label) as pulled:
            path = hub.pull(ref.file, progress=pulled, sha256=lambda p: store.file_sha256(p, hub.sha256_of))
    return ref.label, path, ref.file.sha256


@click.command(name="kld")
@click.argument("tested_ref", metavar="REF|PATH")
@click.option(
    "--reference",
    "reference_ref",
    required=True,
    metavar="REF|PATH",
    help="The configuration to compare against (usually the same model at 16 bits); f16 KV, no window.",
)
@kv_type_options("Tested ")
@click.option(
    "--kv-window",
    type=CommaList("N", _window),
    default="0",
    show_default=True,
    help="Tested KV window: the trace is scored evicting as generation with this window evicts.",
)
@click.option("--task", "task_name", help="Whose traces (default: the task the reference has most samples of).")
@click.option(
    "--limit",
    type=click.IntRange(1),
    help=f"Traces, one per question (default: every stored one, or {kld_run.DEFAULT_TRACES} generated).",
)
@click.option(
    "--budget-tokens",
    type=click.IntRange(1),
    help="Token budget of traces generated here (and of the stored ones to use).",
)
@click.option("--thinking/--no-thinking", default=True, show_default=True, help="Traces in Qwen3's reasoning mode.")
@click.option("--exact", is_flag=True, help="KL over the whole vocabulary: the reference's rows in a temporary file "
              "(4 bytes × vocabulary a position) instead of its most likely tokens.")  # fmt: skip
@seed_option
@threads_option
@repack_option
@click.option("--force", is_flag=True, help="Score even where a pass's predicted memory exceeds what is available.")
@db_option
@catalog_option
@json_option
def kld_command(
    tested_ref: str, reference_ref: str, kv: str | None, kv_k: str | None, kv_v: str | None,
    kv_window: tuple[int, ...], task_name: str | None, limit: int | None, budget_tokens: int | None, thinking: bool,
    exact: bool, seed: int, threads: int | None, repack: bool | None, force: bool, db: Path | None,
    catalogs: tuple[Path, ...], as_json: bool,
) -> None:  # fmt: skip
    """KL divergence of a configuration from a reference, teacher-forced on the reference's own reasoning traces:
    mean per token with a 95% interval over traces, median, p99, top-1 agreement, and by position in the trace.

    Traces are the reference's stored samples for the task (generated once and stored when there are none). The
    two files are loaded one after the other, never together, each in a worker process of its own (refused before
    loading when its predicted memory does not fit; its peak measured beside the prediction); every scored trace is
    stored, so the same command again computes nothing and an interrupted one resumes.
    """
    from edgeval.edges.store import Store
    from edgeval.faces import ui

    with Store(db) as store:
        ref_label, ref_path, ref_sha = _local_file(catalogs, reference_ref, store)
        label, path, sha = _local_file(catalogs, tested_ref, store)
        type_k, type_v = kv_types(kv, kv_k, kv_v)
        request = kld_run.Request(
            reference=ref_path, reference_label=ref_label, tested=path, tested_label=label, task=task_name,
            kv_type_k=type_k, kv_type_v=type_v,
            kv_window=kv_window[0] if kv_window else 0, limit=limit, budget_tokens=budget_tokens, thinking=thinking,
            exact=exact, seed=seed, threads=threads, repack=repack, reference_sha256=ref_sha, tested_sha256=sha,
            force=force,
        )  # fmt: skip
        with ui.kld_progress(f"{label} against {ref_label}", quiet=as_json) as progress:
            result = kld_run.run(request, store, progress, " ".join(sys.argv))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        ui.render_kld(result)


@click.command()
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), help="Results database (default: EDGEVAL_HOME/edgeval.db)."
)
@json_option
def regrade(db: Path | None, as_json: bool) -> None:
    """Grade every stored sample again from its text with the current grader, and say how many verdicts moved."""
    from dataclasses import asdict

    from edgeval.edges.store import Store
    from edgeval.running import regrade as regrading

    with Store(db, create=False) as store:
        done = regrading.regrade(store)
    if as_json:
        click.echo(json.dumps({**asdict(done), "moved": done.moved}, indent=2))
    else:
        click.echo(
            f"Regraded {done.samples:,} samples in {done.configs:,} configurations: {done.moved:,} verdicts moved "
            f"({done.now_right:,} now right, {done.now_wrong:,} now wrong); {done.answers_changed:,} votes changed."
        )
