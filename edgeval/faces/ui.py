"""Rendering for the terminal: the only module that imports rich."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from edgeval.core import memory
from edgeval.core.text import printable
from edgeval.core.units import format_bytes, format_seconds, format_tokens

if TYPE_CHECKING:  # types only: importing these here would load llama.cpp for `plan` and `models`
    from pathlib import Path

    from edgeval.comparison.plan import Config, Plan
    from edgeval.edges.catalog import ModelRef
    from edgeval.edges.gguf_info import GGUFInfo
    from edgeval.edges.hub import Progress
    from edgeval.edges.results import ConfigResult
    from edgeval.llama.doctor import MachineReport
    from edgeval.running.kld_run import Progress as KLDProgress
    from edgeval.running.kld_run import Result as KLDResult
    from edgeval.running.sweep import Progress as SweepProgress


class _Console(Console):
    """rich's console, but a closed pipe is handed to the command line's one handler (a quiet exit, `cli`) instead
    of rich's own exit."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


console = _Console()
err_console = _Console(stderr=True)


def shown(value: object) -> str:
    """Text from a file or a model (a name, a path, a message) as rich markup that prints it literally: control
    characters escaped (`core.text.printable`), markup brackets escaped. Every such text goes through here."""
    return escape(printable(value))


def note(line: str) -> None:
    """A one-line note on stderr: something edgeval chose that the user should know."""
    err_console.print(f"note: {printable(line)}", markup=False, highlight=False, soft_wrap=True)


def _yes_no(value: bool | None) -> str:
    return {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]unknown[/]"}[value]


_REPACK_LABELS = {"all": "[green]on[/]", "cpu_repack": "[green]CPU_REPACK only[/]", "off": "[yellow]off[/]"}


def _repack_label(mode: memory.RepackMode | None) -> str:
    return "[dim]unknown[/]" if mode is None else _REPACK_LABELS[mode.value]


def render_doctor(report: MachineReport) -> None:
    """The machine report as one two-column table, grouped by topic."""
    table = Table(title="edgeval doctor", show_header=False, title_justify="left", pad_edge=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")

    def section(name: str) -> None:
        table.add_row(f"[cyan]{name}[/]", "", end_section=False)

    section("software")
    table.add_row("python", shown(report.python))
    table.add_row("platform", shown(report.platform))
    table.add_row("edgeval", report.edgeval)
    table.add_row("llama-cpp-python", shown(report.llama_cpp_python))
    table.add_row("llama.cpp build", shown(report.llama_cpp_build) if report.llama_cpp_build else "[dim]unknown[/]")
    table.add_row("backend", shown(report.backend))
    table.add_row("GPU offload", _yes_no(report.gpu_offload))
    repack = report.repack
    table.add_row(
        "weight repacking",
        f"{_repack_label(repack.mode)} — {shown(repack.detail)}" if repack.tested else shown(repack.detail),
    )
    section("hardware")
    table.add_row("CPU", f"{shown(report.cpu)} ({report.cpu_cores} cores, {report.cpu_threads} threads)")
    table.add_row("CPU features", shown(" ".join(report.cpu_features)) or "[dim]none detected[/]")
    table.add_row(
        "RAM",
        f"{format_bytes(report.ram_total_bytes)} total, {format_bytes(report.ram_available_bytes)} available",
    )
    if report.gpus:
        for gpu in report.gpus:
            table.add_row("GPU", shown(f"{gpu.name}: {format_bytes(gpu.vram_total_bytes)} ({gpu.source})"))
    else:
        table.add_row("GPU", "[dim]none found (NVIDIA figures need `pip install 'edgeval\\[nvidia]'`)[/]")
    section("files")
    table.add_row("Hugging Face cache", shown(report.hf_cache))
    table.add_row("HF_HUB_OFFLINE", _yes_no(report.hf_offline))
    table.add_row("HF token configured", _yes_no(report.hf_token_configured))
    table.add_row("edgeval home", shown(report.edgeval_home))
    for size, device, knee, gain in report.throughput:
        table.add_row(f"throughput ({size}, {device.split(':')[0]})",
                      f"{knee} sequences in one batch decode {gain:.1f}× one sequence's tokens/s (--parallel auto)")  # fmt: skip
    if not report.throughput:
        table.add_row("throughput", "[dim]not measured yet (the first `--parallel auto` run measures it)[/]")
    section("suggestion")
    table.add_row(
        "memory budget",
        f"[bold]{format_bytes(report.suggested_budget_bytes)}[/] — {shown(report.suggested_budget_reason)}",
    )
    console.print(table)


# ---------------------------------------------------------------- models, inspect, pull


def model_row(ref: ModelRef) -> dict[str, object]:
    """One catalog file as `models --json` prints it."""
    from edgeval.edges import hub

    path = hub.local_path(ref.file)
    arch = ref.model.arch
    return {
        "model": ref.label,
        "title": ref.model.title,
        "params": ref.model.params,
        "active_params": ref.model.active_params or ref.model.params,
        "thinking": ref.model.thinking,
        "weight_quant": ref.file.quant.value,
        "source": str(ref.file.path) if ref.file.path else f"{ref.file.repo}/{ref.file.file}",
        "size_bytes": ref.file.size,
        "sha256": ref.file.sha256,  # the published one a download is checked against (None: none is known)
        "checked": not ref.file.unchecked,
        "weight_bytes": ref.weight_bytes,
        "kv_bytes_per_1k_tokens_f16": int(memory.kv_bytes_per_token(arch) * 1000),
        "state_bytes_per_seq": arch.state_bytes_per_seq,  # a hybrid's recurrent state per vote (0: none)
        "generation": ref.model.generation,
        "n_ctx_train": arch.n_ctx_train,
        "downloaded": path is not None,
        "path": str(path) if path else None,
    }


# Below this many columns a terminal table drops its least needed columns; `--json` and the markdown report
# keep everything.
WIDE = 120


def _compact_table(title: str) -> Table:
    """A table without vertical rules, so its numbers keep their room at 80 columns."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)


def _params(total: int, active: int | None) -> str:
    """`8.19B`, or `30.53B (3.35B active)` for a mixture of experts: speed follows the active count."""
    return f"{total / 1e9:.2f}B" + (f" ({active / 1e9:.2f}B active)" if active and active != total else "")


UNCHECKED_MARK = "†"  # a catalog file without a published sha256 (`models`, `pull`)
UNCHECKED_LEGEND = "no published sha256: `pull` records the one it computes but cannot check it"


def render_models(refs: list[ModelRef]) -> None:
    """The catalog as one table, a row per file (its source only where the terminal is wide)."""
    wide = console.width >= WIDE
    table = _compact_table("edgeval models (sizes in GB)")
    table.add_column("model", overflow="fold")
    for name in ("params", "on disk", "weights", "KV/1k tok"):
        table.add_column(name, justify="right", no_wrap=True)
    if wide:
        table.add_column("source", overflow="ellipsis", max_width=40)
    table.add_column("here", justify="center", no_wrap=True)
    unchecked = False
    for ref in refs:
        row = model_row(ref)
        size = row["size_bytes"]
        unchecked |= ref.file.unchecked
        cells = [
            shown(ref.label) + (f" [yellow]{UNCHECKED_MARK}[/]" if ref.file.unchecked else ""),
            _params(ref.model.params, ref.model.active_params),
            _gb(size) if isinstance(size, int) else "?",
            _gb(ref.weight_bytes),
            f"{int(row['kv_bytes_per_1k_tokens_f16']) / 1e9:.3f}",  # type: ignore[call-overload]
        ]
        if wide:
            cells.append(shown(row["source"]))
        table.add_row(*cells, "[green]✓[/]" if row["downloaded"] else "")
    console.print(table)
    console.print("[dim]KV/1k tok: the f16 KV cache of 1,000 tokens; here: downloaded[/]")
    if unchecked:
        console.print(f"[yellow]{UNCHECKED_MARK}[/][dim] {UNCHECKED_LEGEND}[/]")


def pulled(label: str, path: Path, computed: list[tuple[str, str]]) -> None:
    """What `pull` got: the file, and for a file the catalog has no sha256 for, the sha256 of each part as computed
    (and recorded), which nothing published could check."""
    console.print(f"[green]✓[/] {shown(label)} → {shown(path)}")
    for name, digest in computed:
        console.print(f"  [yellow]{UNCHECKED_MARK}[/] {shown(name)}: not checked, the catalog has no published sha256")
        console.print(f"    sha256 {digest} (computed and recorded)")


@contextmanager
def download_progress(label: str) -> Iterator[Progress]:
    """A rich progress bar fed by huggingface_hub's download callbacks."""
    with RichProgress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    ) as bar:  # fmt: skip
        tasks: dict[str, TaskID] = {}

        def update(filename: str, done: int, total: int | None) -> None:
            if filename not in tasks:
                tasks[filename] = bar.add_task(shown(f"{label} {filename}"), total=total)
            bar.update(tasks[filename], completed=done, total=total)

        yield update


def inspect_row(info: GGUFInfo) -> dict[str, object]:
    """A GGUF header's facts as `inspect --json` prints them."""
    arch = info.architecture()
    return {
        "source": info.source,
        "gguf_version": info.version,
        "architecture": info.arch_name,
        "name": info.get("general.name"),
        "file_type": info.get("general.file_type"),
        "n_layer": arch.n_layer,
        "n_embd": arch.n_embd,
        "n_head": arch.n_head,
        "n_head_kv": arch.n_head_kv,
        "key_length": arch.head_dim_k,
        "value_length": arch.head_dim_v,
        "n_ff": arch.n_ff,
        "n_vocab": arch.n_vocab,
        "n_ctx_train": arch.n_ctx_train,
        "n_params": info.n_params,
        "tied_embeddings": arch.tied_embeddings,
        "weight_bytes": info.weight_bytes,
        "bytes_by_type": dict(sorted(info.bytes_by_type.items(), key=lambda kv: -kv[1])),
        "n_tensors": len(info.tensors),
        "file_size": info.file_size,
        "kv_bytes_per_1k_tokens_f16": int(memory.kv_bytes_per_token(arch) * 1000),
        # A hybrid (qwen35): layers with a recurrent state instead of a KV cache, that state per sequence, and the
        # multi-token-prediction blocks llama.cpp does not load for generation (their bytes are not weight_bytes).
        "recurrent_layers": arch.recurrent_layers,
        "state_bytes_per_seq": arch.state_bytes_per_seq,
        "nextn_blocks": info.n_nextn,
    }


def render_inspect(info: GGUFInfo) -> None:
    """A GGUF header as a facts table and a bytes-by-type table."""
    row = inspect_row(info)
    facts = Table(title=f"GGUF header: {shown(info.source)}", show_header=False, title_justify="left")
    facts.add_column("key", style="bold")
    facts.add_column("value")
    for key in ("architecture", "name", "n_layer", "n_embd", "n_head", "n_head_kv", "key_length", "value_length",
                "n_ff", "n_vocab", "n_ctx_train", "tied_embeddings", "n_tensors"):  # fmt: skip
        facts.add_row(key, shown(row[key]))
    facts.add_row("parameters", f"{info.n_params:,} ({info.n_params / 1e9:.3f}B)")
    facts.add_row("weight bytes", f"{info.weight_bytes:,} ({format_bytes(info.weight_bytes)})")
    if info.file_size is not None:
        facts.add_row("file size", f"{info.file_size:,} ({format_bytes(info.file_size)})")
    facts.add_row("KV per 1k tokens (f16)", format_bytes(int(row["kv_bytes_per_1k_tokens_f16"])))  # type: ignore[call-overload]
    if row["recurrent_layers"]:
        facts.add_row("recurrent layers", f"{row['recurrent_layers']} of {row['n_layer']} (a state each, no KV cache)")
        facts.add_row("state per sequence (f32)", format_bytes(int(row["state_bytes_per_seq"])))  # type: ignore[call-overload]
    if row["nextn_blocks"]:
        facts.add_row("prediction blocks", f"{row['nextn_blocks']} (not loaded for generation)")
    console.print(facts)
    types = Table(title="tensor bytes by type", title_justify="left")
    types.add_column("type")
    types.add_column("bytes", justify="right")
    types.add_column("share", justify="right")
    for name, n in sorted(info.bytes_by_type.items(), key=lambda kv: -kv[1]):
        types.add_row(shown(name), format_bytes(n), f"{n / max(sum(info.bytes_by_type.values()), 1):.1%}")
    console.print(types)


# ---------------------------------------------------------------- plan

PLAN_ROWS_PER_BAND = 8


def footprint_band(total: int) -> str:
    """The band a footprint falls in: doubling steps from 0.5 GB."""
    upper = 0.5
    while total > upper * 1e9:
        upper *= 2
    return f"≤{upper:g}"


def _share_bar(weights: int, kv: int, other: int, width: int = 12) -> str:
    total = max(weights + kv + other, 1)
    w = round(width * weights / total)
    k = round(width * kv / total)
    return f"[blue]{'█' * w}[/][magenta]{'█' * k}[/][dim]{'█' * max(width - w - k, 0)}[/]"


def render_plan(result: Plan, *, show_all: bool = False) -> None:
    """Fitting configurations grouped by footprint band, with what each spends on weights and on KV cache."""
    if not result.fits:
        gpu = "" if result.vram_bytes is None else f" with at most {format_bytes(result.vram_bytes)} on the GPU"
        advice = "raise --budget or try smaller --ctx / --k"
        if result.vram_bytes is not None:
            advice += ", fewer --gpu-layers, or --cpu-moe for a mixture of experts"
        err_console.print(
            f"Nothing fits in {format_bytes(result.budget_bytes)}{gpu} "
            f"({result.considered} configurations considered): {advice}."
        )
        return
    from edgeval.faces import ui_plan

    console.print(ui_plan.summary_table(result))
    side = ui_plan.side_by_side_table(result)
    if side is not None:
        console.print(side)
    wide = console.width >= WIDE
    hybrid = any(c.footprint.state_bytes for c in result.fits)
    sequences = "KV cache + state" if hybrid else "KV cache"
    legend = f" ([blue]█ weights[/] [magenta]█ {sequences}[/] [dim]█ other[/])" if wide else ""
    table = _compact_table(f"{len(result.fits)} of {result.considered} configurations fit, in GB{legend}")
    names: tuple[str, ...] = ("band", "model", "KV", "ctx", "k", "weights", "KV cache", "state", "other", "total", "GPU", "split")  # fmt: skip
    if not wide:  # other = total − weights − KV cache − state; the split bar is a picture of the same numbers
        names = tuple(n for n in names if n not in ("other", "split"))
    if not hybrid:  # a hybrid's recurrent states: state per vote × k
        names = tuple(n for n in names if n != "state")
    if not any(c.footprint.device_bytes for c in result.fits):  # the GPU's part of the total, when offloading
        names = tuple(n for n in names if n != "GPU")
    for name in names:
        table.add_column(name, justify="left" if name in ("band", "model", "KV", "split") else "right",
                         no_wrap=name != "model", overflow="fold")  # fmt: skip
    bands: dict[str, list[Config]] = {}
    for c in result.fits:
        bands.setdefault(footprint_band(c.footprint.total_bytes), []).append(c)
    for band, configs in bands.items():
        kept = configs if show_all else _spread(configs, PLAN_ROWS_PER_BAND)
        for i, c in enumerate(kept):
            fp = c.footprint
            cells = {
                "band": band if i == 0 else "", "model": shown(c.ref.label), "KV": _plan_kv(c), "ctx": str(c.ctx),
                "k": str(c.k), "weights": _gb(fp.weight_bytes), "KV cache": _gb(fp.kv_bytes), "state": _gb(fp.state_bytes) if fp.state_bytes else "—",
                "other": _gb(fp.other_bytes), "total": f"[bold]{_gb(fp.total_bytes)}[/]", "GPU": _gb(fp.device_bytes),
                "split": _share_bar(fp.weight_bytes, fp.kv_bytes + fp.state_bytes, fp.other_bytes),
            }  # fmt: skip
            table.add_row(*(cells[n] for n in names), end_section=i == len(kept) - 1)
        if len(kept) < len(configs):
            table.add_row("", f"[dim]… {len(configs) - len(kept)} more (--all)[/]", end_section=True)
    console.print(table)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def _spread(configs: list[Config], n: int) -> list[Config]:
    """Up to n configurations of a band, from most memory on weights to most on KV cache."""
    ordered = sorted(configs, key=lambda c: -c.footprint.weight_bytes / max(c.footprint.total_bytes, 1))
    if len(ordered) <= n:
        return ordered
    step = (len(ordered) - 1) / (n - 1)
    return [ordered[round(i * step)] for i in range(n)]


# ---------------------------------------------------------------- run


@contextmanager
def run_progress(label: str, task: str, k: int, *, quiet: bool = False) -> Iterator[Callable[[SweepProgress], None]]:
    """A progress bar over questions × votes with live decode tokens/s (on stderr; silent when quiet)."""
    if quiet:
        yield lambda state: None
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    with RichProgress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task_id = bar.add_task(shown(f"{label} · {task} · k={k}"), total=None, speed="")

        def update(state: SweepProgress) -> None:
            speed = f"{state.tokens / state.decode_s:.1f} tok/s" if state.decode_s > 0 else ""
            bar.update(task_id, completed=state.items_done * k, total=state.items_total * k, speed=speed)

        yield update


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _plan_kv(c: Config) -> str:
    return c.kv_type_k.value + (f", window {format_tokens(c.kv_window)}" if c.kv_window else "")


def render_run(result: ConfigResult) -> None:
    """One configuration's accuracy, memory and speed."""
    table = Table(title=f"{shown(result.model)} on {shown(result.task)}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    status = "[green]done[/]" if result.status == "done" else f"[red]{result.status}[/] — {shown(result.message or '')}"
    table.add_row("status", status)
    table.add_row("configuration", f"KV {result.kv_label}, budget {result.budget_tokens} tokens, "
                  f"ctx {result.ctx}, k={result.k}")  # fmt: skip
    if result.kv_window:
        table.add_row("KV window", f"{result.kv_cells} cells; {result.mean_evicted:.0f} tokens evicted per sample "
                      "on average")  # fmt: skip
    table.add_row("questions", f"{result.n_done} of {result.n_items}")
    low, high = result.ci95
    table.add_row(
        f"maj@{result.k}", f"[bold]{_pct(result.accuracy_maj)}[/]  (95% CI {_pct(low)}–{_pct(high)}, n={result.n_done})"
    )
    table.add_row("avg@k (pass@1)", _pct(result.accuracy_avg))
    if result.k > 1:
        table.add_row(f"pass@{result.k}", _pct(result.pass_at_k))
        table.add_row("maj@j", "  ".join(f"@{j}: {_pct(v)}" for j, v in result.maj_at.items()))
    table.add_row(
        "answers forced", f"{_pct(result.forced_share)} of samples; {result.mean_tokens:.0f} tokens each on average"
    )
    measured = format_bytes(result.peak_rss_bytes) if result.peak_rss_bytes else "—"
    if result.peak_rss_anon_bytes is not None and result.peak_rss_file_bytes is not None:
        measured += (f" ({format_bytes(result.peak_rss_anon_bytes)} anonymous, "
                     f"{format_bytes(result.peak_rss_file_bytes)} file-backed)")  # fmt: skip
    repacking = "" if result.repack is None else f"; weight repacking {'on' if result.repack else 'off'}"
    if result.repack_mode == memory.RepackMode.CPU_REPACK.value:
        repacking = "; weight repacking CPU_REPACK only"
    table.add_row(
        "memory", f"predicted {format_bytes(result.predicted_bytes)}, measured peak RSS {measured}{repacking}"
    )
    if result.peak_vram_bytes:
        table.add_row("GPU memory", f"peak {format_bytes(result.peak_vram_bytes)}")
    if result.decode_tokens_per_s:
        table.add_row("speed", f"prompt {result.prompt_tokens_per_s or 0:.0f} tok/s, decode {result.decode_tokens_per_s:.1f} "
                      f"tok/s (all {result.k} sequences), first token {1000 * (result.ttft_s or 0):.0f} ms")  # fmt: skip
    if result.answer_s_worst is not None:
        figures = (f"median {format_seconds(result.answer_s)}, 90th percentile {format_seconds(result.answer_s_p90)}, "
                   if result.answer_s is not None and result.answer_s_p90 is not None else "")  # fmt: skip
        table.add_row("seconds per answer", f"{figures}worst case {format_seconds(result.answer_s_worst)} (one "
                      f"request deployed as measured: its prompt, its {result.k} votes together)")  # fmt: skip
    if result.wall_s is not None:
        table.add_row("time", f"load {result.load_s or 0:.2f} s, wall {result.wall_s:.1f} s")
    console.print(table)


# ---------------------------------------------------------------- kld


@contextmanager
def kld_progress(label: str, *, quiet: bool = False) -> Iterator[Callable[[KLDProgress], None]]:
    """A progress bar over traces, one phase at a time (generating traces, the reference, the tested file)."""
    if quiet:
        yield lambda state: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with RichProgress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task_id = bar.add_task(shown(label), total=None)

        def update(state: KLDProgress) -> None:
            bar.update(task_id, description=shown(f"{label} · {state.phase}"), completed=state.done, total=state.total)

        yield update


def _kld_figure(mean: float, ci: tuple[float, float] | None) -> str:
    return f"{mean:.3g}" + (f" ({ci[0]:.3g}–{ci[1]:.3g})" if ci else "")


def render_kld(result: KLDResult) -> None:
    """A tested configuration's KL divergence from the reference: overall, then by position in the trace."""
    s = result.overall
    kv = result.kv_type_k if result.kv_type_k == result.kv_type_v else f"{result.kv_type_k}/{result.kv_type_v}"
    kv += f", window {format_tokens(result.kv_window)}" if result.kv_window else ""
    table = Table(title=shown(f"{result.tested} (KV {kv}) against {result.reference} on {result.task}"),
                  title_justify="left", show_header=False)  # fmt: skip
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("mean KLD", f"[bold]{_kld_figure(s.mean_kld, s.kld_ci95)}[/] nats per token (95% CI over traces)")
    table.add_row("median / p99", f"{s.median_kld:.3g} / {s.p99_kld:.3g}")
    table.add_row("top-1 agreement", _pct(s.top1_agreement))
    table.add_row("scored", f"{s.tokens:,} tokens of {s.traces} traces")
    table.add_row("reference kept", f"its {result.top_k}–{result.max_k:,} most likely tokens a position; mean mass "
                  f"left out {s.rest_mass:.2g} (KLD is a lower bound, as tight as that is small)")  # fmt: skip
    if result.tested_tokens_per_s:
        rates = f"tested {result.tested_tokens_per_s:.0f} tok/s"
        rates += f", reference {result.reference_tokens_per_s:.0f} tok/s" if result.reference_tokens_per_s else ""
        table.add_row("speed", rates + ("" if result.scored_now else " (stored)"))
    passes = [f"{kind} {format_bytes(peak)} (predicted {format_bytes(predicted)})"
              for kind, (peak, predicted) in result.memory.items() if peak and predicted]  # fmt: skip
    if passes:
        table.add_row("peak memory", ", ".join(passes))
    console.print(table)
    by_position = Table(title="by position in the trace", title_justify="left", box=box.SIMPLE)
    for name in ("tokens", "n", "traces", "mean KLD (95% CI)", "p99", "top-1"):
        by_position.add_column(name, justify="left" if name == "tokens" else "right", no_wrap=True)
    for b in result.by_position:
        bs = b.summary
        by_position.add_row(b.label, f"{bs.tokens:,}", str(bs.traces), _kld_figure(bs.mean_kld, bs.kld_ci95),
                            f"{bs.p99_kld:.3g}", _pct(bs.top1_agreement))  # fmt: skip
    console.print(by_position)
