"""The `edgeval` command line: each command parses options, makes one library call and renders the result."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import edgeval
from edgeval.errors import debug_enabled, describe
from edgeval.quants import KVType


class EdgevalGroup(click.Group):
    """A click group that turns every failure into one line and exit code 1 (the one place that does)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as exc:
            if debug_enabled():
                raise
            raise click.ClickException(describe(exc)) from exc


@click.group(cls=EdgevalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(edgeval.__version__, prog_name="edgeval")
@click.option("--verbose", "-v", is_flag=True, help="Copy llama.cpp's own log to stderr.")
def cli(verbose: bool) -> None:
    """Find the Qwen3 size, weight quantization, KV-cache type, token budget and number of votes
    that give the best accuracy in the memory you have — measured on your own machine with llama.cpp.

    Set EDGEVAL_DEBUG=1 to see tracebacks; EDGEVAL_HOME moves edgeval's own files.
    """
    if verbose:
        from edgeval import engine

        engine.LOG.set_echo(True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--no-probe", is_flag=True, help="Skip the weight-repacking probe (a tiny model run in a child process).")
def doctor(as_json: bool, no_probe: bool) -> None:
    """Tell what this machine can do: versions, backend, CPU features, memory, GPUs and a suggested budget."""
    from edgeval import doctor as doctor_mod

    report = doctor_mod.examine(probe=not no_probe)
    if as_json:
        click.echo(report.to_json())
    else:
        from edgeval import ui

        ui.render_doctor(report)


class ByteSize(click.ParamType):  # type: ignore[type-arg]
    """A memory budget: 8GB, 7.5GB, 8000MB (powers of ten) or 8GiB, 512MiB (powers of two)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from edgeval.units import UnitError, parse_bytes

        try:
            return parse_bytes(str(value))
        except UnitError as exc:
            self.fail(f"{exc} (example: --budget 8GB)", param, ctx)


class CommaList(click.ParamType):  # type: ignore[type-arg]
    """A comma-separated list (`f16,q8_0`, `2k,8k`), each item converted by `item`."""

    def __init__(self, name: str, item: Callable[[str], Any]) -> None:
        self.name = name
        self._item = item

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[Any, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self._item(part.strip()) for part in str(value).split(",") if part.strip())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _kv(text: str) -> KVType:
    try:
        return KVType(text.lower())
    except ValueError:
        raise ValueError(f"unknown KV type '{text}' (choose from {', '.join(t.value for t in KVType)})") from None


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"'{text}' is not a positive whole number")
    return int(text)


def _tokens(text: str) -> int:
    from edgeval.units import UnitError, parse_tokens

    try:
        return parse_tokens(text)
    except UnitError as exc:
        raise ValueError(str(exc)) from None


catalog_option = click.option(
    "--catalog",
    "catalogs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Extra catalog file (models.toml format) read after the built-in and user catalogs.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@cli.command()
@catalog_option
@json_option
def models(catalogs: tuple[Path, ...], as_json: bool) -> None:
    """List the model catalog: sizes on disk, weight bytes, KV bytes per 1,000 tokens, what is downloaded."""
    from edgeval import catalog, ui

    rows = catalog.Catalog.load(catalogs).everything()
    if as_json:
        click.echo(json.dumps([ui.model_row(r) for r in rows], indent=2))
    else:
        ui.render_models(rows)


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@catalog_option
def pull(refs: tuple[str, ...], catalogs: tuple[Path, ...]) -> None:
    """Download models into the Hugging Face cache (REF: qwen3-8b:Q4_K_M, or qwen3-8b for all its files).

    An interrupted download resumes; each file is checked to be a readable Qwen3 GGUF (and its sha256 where
    the catalog has one). Respects HF_HOME, HF_TOKEN and HF_HUB_OFFLINE.
    """
    from edgeval import catalog, hub, ui

    for ref in catalog.Catalog.load(catalogs).resolve_all(refs):
        with ui.download_progress(ref.label) as progress:
            path = hub.pull(ref.file, progress=progress)
        ui.console.print(f"[green]✓[/] {ref.label} → {path}")


@cli.command()
@click.argument("ref")
@catalog_option
@json_option
def inspect(ref: str, catalogs: tuple[Path, ...], as_json: bool) -> None:
    """Show what a GGUF header says — a local file, or a catalog file on the Hub read without downloading it."""
    from edgeval import catalog, gguf_info, hub, ui

    resolved = catalog.Catalog.load(catalogs).resolve(ref)
    if len(resolved) != 1:
        raise click.UsageError(f"'{ref}' names {len(resolved)} files; name one, e.g. {resolved[0].label}")
    target = resolved[0]
    path = hub.local_path(target.file)
    info = target.header or (gguf_info.read_local(path) if path else hub.remote_header(target.file))
    if as_json:
        click.echo(json.dumps(ui.inspect_row(info), indent=2))
    else:
        ui.render_inspect(info)


@cli.command()
@click.option(
    "--budget", required=True, type=ByteSize(), help="Memory budget: 8GB, 7.5GB, 8000MB (10^n) or 8GiB, 512MiB (2^n)."
)
@click.option(
    "--models",
    "model_refs",
    multiple=True,
    help="Models to consider (repeatable or comma-separated); default: the whole catalog.",
)
@click.option(
    "--kv",
    type=CommaList("KV,...", _kv),
    default="f16,q8_0,q4_0",
    show_default=True,
    help="KV-cache types (K and V alike).",
)
@click.option(
    "--ctx",
    type=CommaList("N,...", _tokens),
    default="2k,4k,8k,16k,32k",
    show_default=True,
    help="Tokens per sample (prompt + token budget); 2k = 2048.",
)
@click.option(
    "--k",
    "votes",
    type=CommaList("K,...", _count),
    default="1,4,8",
    show_default=True,
    help="Majority votes (parallel samples sharing the prompt).",
)
@click.option(
    "--prompt-tokens", type=int, default=256, show_default=True, help="Prompt length assumed for every question."
)
@click.option(
    "--gpu-layers",
    type=int,
    default=0,
    show_default=True,
    help="Layers offloaded to a GPU (-1: all); splits the footprint into host and device.",
)
@click.option("--all", "show_all", is_flag=True, help="List every fitting configuration, not the top of each band.")
@catalog_option
@json_option
def plan(
    budget: int,
    model_refs: tuple[str, ...],
    kv: tuple[KVType, ...],
    ctx: tuple[int, ...],
    votes: tuple[int, ...],
    prompt_tokens: int,
    gpu_layers: int,
    show_all: bool,
    catalogs: tuple[Path, ...],
    as_json: bool,
) -> None:
    """List every configuration (model × weight quant × KV type × context × k) whose predicted footprint fits.

    Works offline from the catalog's facts: nothing is downloaded. GB and MB are powers of ten, GiB and MiB
    powers of two.
    """
    from edgeval import catalog, ui
    from edgeval import plan as planner

    book = catalog.Catalog.load(catalogs)
    names = [n.strip() for ref in model_refs for n in ref.split(",") if n.strip()]
    refs = book.resolve_all(names) if names else book.everything()
    axes = planner.Axes(kv=kv, ctx=ctx, k=votes, prompt_tokens=prompt_tokens, gpu_layers=gpu_layers)
    result = planner.plan(refs, axes, budget)
    if as_json:
        click.echo(json.dumps([c.to_json() for c in result.fits], indent=2))
    else:
        ui.render_plan(result, show_all=show_all)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="edgeval")
