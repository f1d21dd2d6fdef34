"""The `edgeval` command line: each command parses options, makes one library call and renders the result."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import click

import edgeval
from edgeval.comparison import compare as compare_mod
from edgeval.comparison import plan as planner
from edgeval.core.errors import debug_enabled, describe
from edgeval.core.quants import KVType
from edgeval.faces import demo as demo_mod
from edgeval.running import kld_run, sweep


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
        from edgeval.llama import engine

        engine.LOG.set_echo(True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--no-probe", is_flag=True, help="Skip the weight-repacking probe (a tiny model run in a child process).")
def doctor(as_json: bool, no_probe: bool) -> None:
    """Tell what this machine can do: versions, backend, CPU features, memory, GPUs and a suggested budget."""
    from edgeval.llama import doctor as doctor_mod

    report = doctor_mod.examine(probe=not no_probe)
    if as_json:
        click.echo(report.to_json())
    else:
        from edgeval.faces import ui

        ui.render_doctor(report)


class ByteSize(click.ParamType):  # type: ignore[type-arg]
    """A memory budget: 8GB, 7.5GB, 8000MB (powers of ten) or 8GiB, 512MiB (powers of two)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from edgeval.core.units import UnitError, parse_bytes

        try:
            return parse_bytes(str(value))
        except UnitError as exc:
            self.fail(f"{exc} (example: --budget 8GB)", param, ctx)


class ExpertLayers(click.ParamType):  # type: ignore[type-arg]
    """`--cpu-moe`: how many of the first layers keep a mixture of experts' expert weights on the CPU; `all` = -1."""

    name = "N|all"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "all":
            return -1
        if text.isdigit():
            return int(text)
        self.fail(f"'{value}' is not a layer count (example: --cpu-moe 20, or --cpu-moe all)", param, ctx)


def kv_type_options(whose: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--kv`, `--kv-k`, `--kv-v` (one KV-cache type, or K and V apart), shared by run and kld."""
    choice = click.Choice([t.value for t in KVType])

    def add(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--kv-v", type=choice, help=f"{whose}V-cache type (overrides --kv).")(f)
        f = click.option("--kv-k", type=choice, help=f"{whose}K-cache type (overrides --kv).")(f)
        return click.option("--kv", type=choice, help=f"{whose}KV-cache type for K and V.")(f)

    return add


def kv_types(kv: str | None, kv_k: str | None, kv_v: str | None) -> tuple[KVType, KVType]:
    """The K and V cache types `kv_type_options` gave (f16 where none was named)."""
    return KVType(kv_k or kv or "f16"), KVType(kv_v or kv or "f16")


def cpu_moe_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--cpu-moe N|all`, shared by plan and run."""
    return click.option(
        "--cpu-moe",
        type=ExpertLayers(),
        default=0,
        help="Mixture of experts with GPU offload: keep the expert weights of the first N layers (or all) in system "
        "RAM, attention and KV cache on the GPU — llama.cpp's --n-cpu-moe / --cpu-moe (default: 0).",
    )(f)


def ram_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--ram BYTES`, shared by plan and compare: the host memory an offloaded configuration's host part must fit."""
    return click.option(
        "--ram",
        "ram",
        type=ByteSize(),
        help="With layers on a GPU (the budget then bounds the GPU part): the system RAM the host part must fit "
        "(default: what is free on this machine now).",
    )(f)


def _free_ram(ram: int | None) -> int:
    import psutil

    return ram if ram is not None else int(psutil.virtual_memory().available)


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
    from edgeval.core.units import UnitError, parse_tokens

    try:
        return parse_tokens(text)
    except UnitError as exc:
        raise ValueError(str(exc)) from None


def _joined(values: Iterable[object]) -> str:
    """Axis values as the command line writes them: `f16,q8_0`, `768,2304`."""
    return ",".join(str(v.value) if isinstance(v, Enum) else str(v) for v in values)


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _options(*options: Decorator) -> Decorator:
    """Several click options as one decorator (applied in the order listed, so --help lists them so)."""

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def axis_options(*, kv: Sequence[KVType], ctx: Sequence[int], k: Sequence[int], prompt_tokens: int) -> Decorator:
    """--kv, --ctx and --k: the grid's axes, their defaults the library's own constants (`plan`, `compare`)."""
    return _options(
        click.option(
            "--kv",
            type=CommaList("KV,...", _kv),
            default=_joined(kv),
            show_default=True,
            help="KV-cache types (K and V alike).",
        ),
        click.option(
            "--ctx",
            type=CommaList("N,...", _tokens),
            default=_joined(ctx),
            show_default=True,
            help=f"Tokens per sample (the {prompt_tokens}-token prompt + the token budget); 2k = 2048.",
        ),
        click.option(
            "--k",
            "votes",
            type=CommaList("K,...", _count),
            default=_joined(k),
            show_default=True,
            help="Majority votes per question (parallel samples sharing the prompt).",
        ),
    )


def models_option(default: str) -> Decorator:
    """--models REF... (several after one flag, commas, or the flag repeated)."""
    return click.option(
        "--models", "model_refs", multiple=True, metavar="REF...", help=f"Models to consider; default: {default}."
    )


def check_ctx(ctx: Sequence[int], prompt_tokens: int) -> None:
    """A --ctx value that cannot hold the prompt and one generated token is a usage error naming it."""
    short = planner.too_short(ctx, prompt_tokens)
    if short:
        raise click.BadParameter(
            f"{_joined(short)} cannot hold the {prompt_tokens}-token prompt and a token budget "
            f"(use more than {prompt_tokens})",
            param_hint="--ctx",
        )


def _model_names(model_refs: Sequence[str]) -> tuple[str, ...]:
    return tuple(n.strip() for ref in model_refs for n in ref.split(",") if n.strip())


class ListOptionsCommand(click.Command):
    """A command whose list options take several values after one flag, as the README writes them:
    `--models a b c` means `--models a --models b --models c` (commas and repeats work too)."""

    list_options = ("--models",)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        spread: list[str] = []
        taking, took = "", False  # the list option whose values are being read, and whether it has one yet
        for i, arg in enumerate(args):
            if taking and not arg.startswith("-"):
                spread += [taking, arg]
                took = True
                continue
            if taking and not took:
                spread.append(taking)  # the flag with nothing after it: click says what is missing
            taking = ""
            if arg == "--":
                spread += args[i:]
                break
            name = arg.split("=", 1)[0]
            if name in self.list_options:
                taking, took = name, "=" in arg
                if took:
                    spread.append(arg)
                continue
            spread.append(arg)
        if taking and not took:
            spread.append(taking)
        return super().parse_args(ctx, spread)


db_option = click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), help="Results database (default: EDGEVAL_HOME/edgeval.db)."
)
threads_option = click.option("--threads", type=click.IntRange(1), help="CPU threads (default: physical cores).")
repack_option = click.option(
    "--repack/--no-repack",
    default=None,
    help="llama.cpp weight repacking (default: on where the doctor's probe, run once, says it works).",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same samples.")


class Parallel(click.ParamType):  # type: ignore[type-arg]
    """--parallel: a positive number of questions in flight, or `auto` (sweep.AUTO)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return 0
        if not text.isdigit() or not 1 <= int(text) <= 256:
            self.fail(f"'{value}' is not a number of questions from 1 to 256, or auto", param, ctx)
        return int(text)


def parallel_option(default: str) -> Decorator:
    """`--parallel N|auto` (run: 1 by default, compare: auto)."""
    return click.option(
        "--parallel",
        type=Parallel(),
        default=default,
        show_default=True,
        help="Questions in flight at once, decoded in one batch (continuous batching): more decode the same tokens "
        "faster. auto: as many as gain throughput on this machine (measured once per model size) and fit in the "
        "memory free. The configuration's memory is still one question's.",
    )


def _window(text: str) -> int:
    return 0 if text.strip() == "0" else _tokens(text)


catalog_option = click.option(
    "--catalog",
    "catalogs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Extra catalog file (models.toml format) read after the built-in and user catalogs.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
kv_window_axis = click.option(
    "--kv-window",
    "kv_windows",
    type=CommaList("N,...", _window),
    help="KV windows: each sample keeps the prompt and its most recent N tokens (0: no eviction); default: 0.",
)


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command(cls=ListOptionsCommand)
@click.option(
    "--budget", required=True, type=ByteSize(), help="Memory budget: 8GB, 7.5GB, 8000MB (10^n) or 8GiB, 512MiB (2^n)."
)
@models_option("the whole catalog")
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
    refs = book.resolve_all(names) if names else book.everything()
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


@cli.command()
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
@seed_option
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
    top_p: float | None, top_k: int | None, min_p: float | None, seed: int, threads: int | None,
    gpu_layers: int | None, cpu_moe: int, repack: bool | None, parallel: int, force: bool, db: Path | None,
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
    base = prompts.recommended_sampling(thinking)
    sampling = Sampling(
        temperature=base.temperature if temperature is None else temperature,
        top_p=base.top_p if top_p is None else top_p,
        top_k=base.top_k if top_k is None else top_k,
        min_p=base.min_p if min_p is None else min_p,
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
            k=votes, thinking=thinking, sampling=None if sampling == base else sampling, seed=seed, limit=limit,
            threads=threads, repack=repack, gpu_layers=gpu_layers, cpu_moe=cpu_moe, expected_sha256=ref.file.sha256,
            force=force, parallel=parallel,
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


@cli.command(name="kld")
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
@db_option
@catalog_option
@json_option
def kld_command(
    tested_ref: str, reference_ref: str, kv: str | None, kv_k: str | None, kv_v: str | None,
    kv_window: tuple[int, ...], task_name: str | None, limit: int | None, budget_tokens: int | None, thinking: bool,
    exact: bool, seed: int, threads: int | None, repack: bool | None, db: Path | None, catalogs: tuple[Path, ...], as_json: bool,
) -> None:  # fmt: skip
    """KL divergence of a configuration from a reference, teacher-forced on the reference's own reasoning traces:
    mean per token with a 95% interval over traces, median, p99, top-1 agreement, and by position in the trace.

    Traces are the reference's stored samples for the task (generated once and stored when there are none). The
    two files are loaded one after the other, never together; every scored trace is stored, so the same command
    again computes nothing.
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
        )  # fmt: skip
        with ui.kld_progress(f"{label} against {ref_label}", quiet=as_json) as progress:
            result = kld_run.run(request, store, progress, " ".join(sys.argv))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        ui.render_kld(result)


def _duration_text(seconds: float) -> str:
    """A duration as --time reads it: `1h`, `30m`, `75s`."""
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A wall time: 90s, 30m, 2h, 1h30m."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        from edgeval.core.units import UnitError, parse_duration

        try:
            return parse_duration(str(value))
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


def _run_compare(request: compare_mod.Request, db: Path | None, as_json: bool, dry_run: bool) -> list[Any]:
    from edgeval.edges import hub
    from edgeval.edges.store import Store, default_db_path
    from edgeval.faces import ui

    if dry_run:
        plans = []
        speeds: dict[str, float] = {}
        if (db or default_db_path()).exists():  # earlier runs' speeds; a dry run creates nothing
            with Store(db) as store:
                speeds = compare_mod.measured_speeds(store)
        for task in request.tasks:
            arms = compare_mod.arms(request, task, speeds=speeds)
            plans.append((task, arms, {a.ref.label: hub.local_path(a.ref.file) is not None for a in arms}))
        if as_json:
            click.echo(json.dumps([[ui.arm_row(a, t, cached[a.ref.label]) for a in arms] for t, arms, cached in plans],
                                  indent=2))  # fmt: skip
        else:
            ui.render_dry_run(request, plans)
        return []
    with Store(db) as store, ui.compare_progress(quiet=as_json) as progress:
        comparisons = compare_mod.run(request, store, progress, command=" ".join(sys.argv))
    if as_json:
        click.echo(json.dumps([ui.comparison_json(c) for c in comparisons], indent=2))
    else:
        ui.render_compare(comparisons)
    if any(c.stopped == "interrupted" for c in comparisons):
        raise click.exceptions.Exit(130)
    return comparisons


@cli.command(name="compare", cls=ListOptionsCommand)
@click.option("--budget", required=True, type=ByteSize(), help="Memory budget: 8GB, 7.5GB (10^n) or 8GiB (2^n).")
@click.option(
    "--task",
    "task_names",
    multiple=True,
    default=(compare_mod.DEFAULT_TASK,),
    show_default=True,
    help="Task(s) to compare on (repeatable).",
)
@models_option(f"{_joined(compare_mod.DEFAULT_QUANTS)} files of the {compare_mod.DEFAULT_SIZES} largest sizes that fit")
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
@click.option("--limit", type=click.IntRange(1), help="Questions per configuration at most (default: the whole task; "
              f"{compare_mod.DEFAULT_EXHAUSTIVE_LIMIT} with --exhaustive).")  # fmt: skip
@click.option(
    "--exhaustive", is_flag=True, help="Run every configuration on every question up to --limit; drop nothing."
)
@seed_option
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
    budget: int, task_names: tuple[str, ...], model_refs: tuple[str, ...], kv: tuple[KVType, ...],
    budgets: tuple[int, ...], votes: tuple[int, ...], kv_windows: tuple[int, ...] | None, time_s: float, limit: int | None, exhaustive: bool, seed: int,
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
        budget_bytes=budget, tasks=task_names, models=_model_names(model_refs), kv=kv, budgets=budgets, votes=votes, kv_window=kv_windows or (0,),
        time_s=time_s, limit=limit, exhaustive=exhaustive, seed=seed, threads=threads, repack=repack,
        catalogs=catalogs, ray=ray_address, gpu_layers=gpu_layers, cpu_moe=cpu_moe, vram_bytes=vram, ram_bytes=ram,
        parallel=parallel,
    )  # fmt: skip
    _run_compare(request, db, as_json, dry_run)


@cli.command()
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
    """Write markdown reports with a memory-against-accuracy plot from the stored results (same results, same bytes)."""
    from edgeval.edges.store import Store
    from edgeval.faces import report as reporting
    from edgeval.faces import ui

    with Store(db) as store:
        comparisons = compare_mod.from_store(store, task_name, budget)
        if not any(c.rows for c in comparisons):
            raise click.ClickException("no stored results to report — run `edgeval compare` or `edgeval demo` first")
        for comparison in comparisons:
            written = reporting.write(store, comparison, out, name if len(comparisons) == 1 else None)
            plots = [str(p) for p in (written.plot, written.kld_plot) if p]
            ui.console.print(f"[green]✓[/] {written.markdown}" + (f" and {' and '.join(plots)}" if plots else ""))


@cli.command()
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), help="Results database (default: EDGEVAL_HOME/edgeval.db)."
)
@json_option
def regrade(db: Path | None, as_json: bool) -> None:
    """Grade every stored sample again from its text with the current grader, and say how many verdicts moved."""
    from dataclasses import asdict

    from edgeval.edges.store import Store
    from edgeval.running import regrade as regrading

    with Store(db) as store:
        done = regrading.regrade(store)
    if as_json:
        click.echo(json.dumps({**asdict(done), "moved": done.moved}, indent=2))
    else:
        click.echo(
            f"Regraded {done.samples:,} samples in {done.configs:,} configurations: {done.moved:,} verdicts moved "
            f"({done.now_right:,} now right, {done.now_wrong:,} now wrong); {done.answers_changed:,} votes changed."
        )


@cli.command()
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
                ui.console.print(f"[green]✓[/] report: {written.markdown}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="edgeval")
