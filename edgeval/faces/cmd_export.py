"""A measured configuration handed to a runner: `export` (a llama-server command and request, or an Ollama
Modelfile) and `ask` (one question through a running llama-server, voted as edgeval votes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeval.core.text import printable
from edgeval.faces import ui
from edgeval.faces.options import _tokens, catalog_option, db_option, json_option


def _token_count(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return _tokens(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """SELECTION and its filters, shared by export and ask."""
    for option in reversed((
        click.argument("selection", required=False),
        click.option("--model", help="Only configurations of this model (label as stored, e.g. qwen3-4b:Q4_K_M)."),
        click.option("--task", "task_name", help="Only configurations of this task."),
        click.option("--kv", help="Only this KV-cache type (K/V apart: q8_0/f16)."),
        click.option("--budget-tokens", "budget", callback=_token_count, help="Only this token budget."),
        click.option("--k", "votes", type=click.IntRange(1), help="Use this many votes (of a configuration with as "
                     "many or more: maj@k from the same samples)."),
    )):  # fmt: skip
        f = option(f)
    return f


def _deployment(store: Any, selection: str | None, filters: dict[str, Any], catalogs: tuple[Path, ...]) -> Any:
    from edgeval.running import export

    try:
        chosen = export.Selection.parse(selection, **filters)
    except export.SelectionError as exc:
        raise click.BadParameter(exc.message, param_hint="SELECTION") from None
    return export.deployment(store, chosen, catalogs)


@click.command()
@selection_options
@click.option("--format", "fmt", type=click.Choice(["server", "ollama"]), default="server", show_default=True,
              help="llama-server's command line and request, or an Ollama Modelfile.")  # fmt: skip
@click.option("--hub", is_flag=True, help="Name a catalog file by its Hub repo (-hf) instead of its local path.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="llama-server's port.")
@db_option
@catalog_option
@json_option
def export(
    selection: str | None, model: str | None, task_name: str | None, kv: str | None, budget: int | None,
    votes: int | None, fmt: str, hub: bool, port: int, db: Path | None, catalogs: tuple[Path, ...], as_json: bool,
) -> None:  # fmt: skip
    """Print a measured configuration as llama-server runs it: the command line and the /completion request that
    reproduce its samples (k votes in one request, the reasoning budget, the sampler chain), or an Ollama Modelfile
    with the environment it needs and what Ollama cannot reproduce.

    SELECTION: a configuration id (12) or id and votes (12:4, as compare's rows name them); none: the latest
    compare's recommendation, else the configuration measured last.
    """
    from edgeval.edges.store import Store
    from edgeval.running import export as export_mod

    filters = {"model": model, "task": task_name, "kv": kv, "budget": budget, "votes": votes}
    with Store(db, create=False) as store:
        d = _deployment(store, selection, filters, catalogs)
    if fmt == "ollama":
        _print_ollama(d, export_mod.modelfile(d), as_json)
        return
    argv = export_mod.server_argv(d, port=port, hub=hub)
    placeholder = "QUESTION"
    body = export_mod.request(d, d.prompt(placeholder), export_mod.question_seed(d.seed, placeholder))
    if as_json:
        click.echo(json.dumps({
            "argv": argv, "endpoint": export_mod.ENDPOINT, "request": body, "config_id": d.config_id,
            "votes": d.votes, "chosen_by": d.chosen_by, "model": d.model, "task": d.task,
            "warnings": list(d.warnings),
        }, indent=2, ensure_ascii=False))  # fmt: skip
        return
    for note in d.warnings:
        ui.note(note)
    click.echo(printable(f"# configuration {d.config_id} ({d.chosen_by}): {d.model}, {d.task}, "
                         f"kv {d.kv_type_k}/{d.kv_type_v}, budget {d.budget}, k={d.votes}"))  # fmt: skip
    click.echo(printable(export_mod.command_line(argv)))
    click.echo(f"# POST {export_mod.ENDPOINT} (the prompt of the question QUESTION; `edgeval ask` fills in yours, "
               "with its own seed):")  # fmt: skip
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


def _print_ollama(d: Any, made: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({
            "modelfile": made.text, "environment": made.environment, "cannot": list(made.cannot),
            "config_id": d.config_id, "votes": d.votes, "chosen_by": d.chosen_by, "warnings": list(d.warnings),
        }, indent=2, ensure_ascii=False))  # fmt: skip
        return
    for note in d.warnings:
        ui.note(note)
    click.echo(printable(f"# configuration {d.config_id} ({d.chosen_by}): {d.model}, {d.task}"))
    click.echo(
        printable("# environment of `ollama serve`: " + " ".join(f"{k}={v}" for k, v in made.environment.items()))
    )
    for line in made.cannot:
        click.echo(printable(f"# Ollama cannot reproduce {line}"))
    click.echo(printable(made.text, lines=True), nl=False)


@click.command()
@click.argument("question")
@click.option("--server", "url", required=True, metavar="URL", help="The running llama-server (http://127.0.0.1:8080).")
@click.option("--task", "task_name", metavar="TASK", help="Prompt and extract answers as this task's (default: the "
              "configuration's task): aime25, math500, gpqa-diamond, gsm8k, arith, or a kind.")  # fmt: skip
@click.option("--config", "selection", metavar="SELECTION", help="Which configuration (as export's SELECTION; "
              "default: the latest compare's recommendation, else the configuration measured last).")  # fmt: skip
@click.option("--model", help="The latest measured configuration of this model instead.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds to wait for the answer.")  # fmt: skip
@db_option
@catalog_option
@json_option
def ask(
    question: str, url: str, task_name: str | None, selection: str | None, model: str | None, timeout: float, db: Path | None, catalogs: tuple[Path, ...], as_json: bool,
) -> None:  # fmt: skip
    """Ask a running llama-server one question as the configuration was measured: k completions in one request,
    each answer extracted with edgeval's extractor for the task, majority-voted with edgeval's tie rule."""
    from edgeval.edges.store import Store
    from edgeval.running import ask as ask_mod

    filters = {"model": model, "task": None, "kv": None, "budget": None, "votes": None}
    with Store(db, create=False) as store:
        d = _deployment(store, selection, filters, catalogs)
    answer = ask_mod.ask(d, url, question, task=task_name, timeout=timeout)
    if as_json:
        click.echo(json.dumps({**answer.to_json(), "config_id": d.config_id, "warnings": list(d.warnings)},
                              indent=2, ensure_ascii=False))  # fmt: skip
        return
    for note in d.warnings:
        ui.note(note)
    n = len(answer.samples)
    silent = n - sum(answer.votes.values())
    counts = ", ".join(f"{a}: {c}" for a, c in answer.votes.items()) or "none"
    tie = f"; tied between {', '.join(answer.tied)}, drawn" if answer.tied else ""
    click.echo(printable(answer.answer) if answer.answer is not None else "(no answer)")
    click.echo(printable(f"votes {counts} of {n}" + (f" ({silent} gave no answer)" if silent else "") + tie +
                         f"; {answer.seconds:.2f} s"))  # fmt: skip
