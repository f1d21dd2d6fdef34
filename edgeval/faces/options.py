"""The command line's shared parameter types and options (sizes, durations, lists, KV types, widths), so every
command reads a value the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import click

from edgeval.comparison import plan as planner
from edgeval.core.quants import KVType
from edgeval.edges.catalog import FAMILIES
from edgeval.edges.catalog import in_family as catalog_in_family


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


family_option = click.option(
    "--family",
    type=click.Choice(FAMILIES),
    default="all",
    show_default=True,
    help="Architecture generation to consider: qwen3 (every layer attends), qwen3.5 (the hybrid generation: Qwen3.5 "
    "and Qwen3.6, three of four layers with a fixed recurrent state per vote instead of a KV cache) or all — the "
    "default, since which generation buys more accuracy in the same memory is the question; it also filters --models.",
)


def in_family(refs: Sequence[Any], family: str) -> list[Any]:
    """`--family` applied to resolved references: a usage error when it leaves none."""
    kept = catalog_in_family(refs, family)
    if refs and not kept:
        raise click.BadParameter(f"none of the models considered is of generation {family}", param_hint="--family")
    return kept


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
budget_message_option = click.option(
    "--budget-message",
    metavar="TEXT",
    help="What is forced before </think> when a sample's thinking budget runs out, as llama-server's "
    "--reasoning-budget-message (default: the stop-thinking instruction of the Qwen3 technical report; '' for "
    "the end tag alone).",
)


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
