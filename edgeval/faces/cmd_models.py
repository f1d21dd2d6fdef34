"""Commands about models and memory, before anything runs: `models`, `pull`, `inspect`, `plan`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeval.comparison import plan as planner
from edgeval.core.quants import KVType
from edgeval.faces.options import (
    ByteSize,
    ListOptionsCommand,
    _free_ram,
    _model_names,
    axis_options,
    catalog_option,
    check_ctx,
    cpu_moe_option,
    db_option,
    family_option,
    in_family,
    json_option,
    kv_window_axis,
    models_option,
    ram_option,
)


@click.command()
@catalog_option
@json_option
def models(catalogs: tuple[Path, ...], as_json: bool) -> None:
    """List the model catalog: sizes on disk, weight bytes, KV bytes per 1,000 tokens, what is downloaded."""
    from edgeval.edges import catalog
    from edgeval.faces import ui

    rows = catalog.Catalog.load(catalogs).everything()
    if as_json:
        click.echo(json.dumps([ui.model_row(r) for r in rows], indent=2))
    else:
        ui.render_models(rows)


@click.command()
@click.argument("refs", nargs=-1, required=True)
@catalog_option
@db_option
def pull(refs: tuple[str, ...], catalogs: tuple[Path, ...], db: Path | None) -> None:
    """Download models into the Hugging Face cache (REF: qwen3-8b:Q4_K_M, or qwen3-8b for all its files).

    An interrupted download resumes; each file is checked to be a readable Qwen3 GGUF and its sha256 the
    catalog's; where the catalog has none, the sha256 is computed, recorded in the results database and shown,
    unchecked. Respects HF_HOME, HF_TOKEN and HF_HUB_OFFLINE.
    """
    from edgeval.edges import catalog, hub
    from edgeval.edges.store import Store
    from edgeval.faces import ui

    with Store(db) as store:
        for ref in catalog.Catalog.load(catalogs).resolve_all(refs):
            with ui.download_progress(ref.label) as progress:
                path = hub.pull(ref.file, progress=progress, sha256=lambda p: store.file_sha256(p, hub.sha256_of))
            parts = hub.part_paths(ref.file) if ref.file.unchecked else []
            ui.pulled(ref.label, path, [(p.name, store.file_sha256(p, hub.sha256_of)) for p in parts])


@click.command()
@click.argument("ref")
@catalog_option
@json_option
def inspect(ref: str, catalogs: tuple[Path, ...], as_json: bool) -> None:
    """Show what a GGUF header says — a local file, or a catalog file on the Hub read without downloading it."""
    from edgeval.edges import catalog, gguf_info, hub
    from edgeval.faces import ui

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


@click.command(cls=ListOptionsCommand)
@click.option(
    "--budget", required=True, type=ByteSize(), help="Memory budget: 8GB, 7.5GB, 8000MB (10^n) or 8GiB, 512MiB (2^n)."
)
@models_option("the whole catalog")
@family_option
@axis_options(
    kv=planner.DEFAULT_KV, ctx=planner.DEFAULT_CTX, k=planner.DEFAULT_K, prompt_tokens=planner.DEFAULT_PROMPT_TOKENS
)
@kv_window_axis
@click.option(
    "--prompt-tokens",
    type=click.IntRange(1),
    default=planner.DEFAULT_PROMPT_TOKENS,
    show_default=True,
    help="Prompt length assumed for every question.",
)
@click.option(
    "--gpu-layers",
    type=int,
    default=planner.Axes.gpu_layers,
    show_default=True,
    help="Layers offloaded to a GPU (-1: all); splits the footprint into host and device.",
)
@cpu_moe_option
@click.option(
    "--vram",
    type=ByteSize(),
    help="The GPU's memory: with --gpu-layers, also leave out configurations whose device part exceeds it.",
)
@ram_option
@click.option(
    "--repack/--no-repack",
    default=None,
    help="Predict for llama.cpp weight repacking on or off (default: as `run` will load, from the doctor probe's "
    "remembered verdict; on if never probed).",
)
@click.option("--all", "show_all", is_flag=True, help="List every fitting configuration, not the top of each band.")
@catalog_option
@json_option
def plan(
    budget: int,
    model_refs: tuple[str, ...],
    family: str,
    kv: tuple[KVType, ...],
    ctx: tuple[int, ...],
    votes: tuple[int, ...],
    kv_windows: tuple[int, ...] | None,
    prompt_tokens: int,
    gpu_layers: int,
    cpu_moe: int,
    vram: int | None,
    ram: int | None,
    repack: bool | None,
    show_all: bool,
    catalogs: tuple[Path, ...],
    as_json: bool,
) -> None:
    """List every configuration (model × weight quant × KV type × context × KV window × k) whose predicted footprint
    fits.

    Works offline from the catalog's facts: nothing is downloaded. GB and MB are powers of ten, GiB and MiB
    powers of two.
    """
    from edgeval.edges import catalog
    from edgeval.faces import ui

    check_ctx(ctx, prompt_tokens)
    book = catalog.Catalog.load(catalogs)
    names = _model_names(model_refs)
    refs = in_family(book.resolve_all(names) if names else book.everything(), family)
    repacking, types = planner.repack_setting(repack, gpu_layers)
    axes = planner.Axes(
        kv=kv, ctx=ctx, k=votes, kv_window=kv_windows or (0,), prompt_tokens=prompt_tokens, gpu_layers=gpu_layers,
        cpu_moe=cpu_moe, repack=repacking, repack_types=types,
    )  # fmt: skip
    result = planner.plan(refs, axes, budget, vram_bytes=vram, ram_bytes=_free_ram(ram) if gpu_layers else None)
    if as_json:
        click.echo(json.dumps([c.to_json() for c in result.fits], indent=2))
    else:
        ui.render_plan(result, show_all=show_all)
