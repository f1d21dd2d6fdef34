"""Rendering for the terminal: the only module that imports rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgeval.doctor import MachineReport
from edgeval.units import format_bytes

console = Console()
err_console = Console(stderr=True)


def _yes_no(value: bool | None) -> str:
    return {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]unknown[/]"}[value]


def render_doctor(report: MachineReport) -> None:
    """The machine report as one two-column table, grouped by topic."""
    table = Table(title="edgeval doctor", show_header=False, title_justify="left", pad_edge=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")

    def section(name: str) -> None:
        table.add_row(f"[cyan]{name}[/]", "", end_section=False)

    section("software")
    table.add_row("python", report.python)
    table.add_row("platform", report.platform)
    table.add_row("edgeval", report.edgeval)
    table.add_row("llama-cpp-python", report.llama_cpp_python)
    table.add_row("llama.cpp build", report.llama_cpp_build or "[dim]unknown[/]")
    table.add_row("backend", report.backend)
    table.add_row("GPU offload", _yes_no(report.gpu_offload))
    repack = report.repack
    table.add_row(
        "weight repacking", f"{_yes_no(repack.works)} — {repack.detail}" if repack.tested else repack.detail
    )
    section("hardware")
    table.add_row("CPU", f"{report.cpu} ({report.cpu_cores} cores, {report.cpu_threads} threads)")
    table.add_row("CPU features", " ".join(report.cpu_features) or "[dim]none detected[/]")
    table.add_row(
        "RAM",
        f"{format_bytes(report.ram_total_bytes)} total, {format_bytes(report.ram_available_bytes)} available",
    )
    if report.gpus:
        for gpu in report.gpus:
            table.add_row("GPU", f"{gpu.name}: {format_bytes(gpu.vram_total_bytes)} ({gpu.source})")
    else:
        table.add_row("GPU", "[dim]none found (NVIDIA figures need `pip install 'edgeval\\[nvidia]'`)[/]")
    section("files")
    table.add_row("Hugging Face cache", report.hf_cache)
    table.add_row("HF_HUB_OFFLINE", _yes_no(report.hf_offline))
    table.add_row("HF token configured", _yes_no(report.hf_token_configured))
    table.add_row("edgeval home", report.edgeval_home)
    section("suggestion")
    table.add_row(
        "memory budget",
        f"[bold]{format_bytes(report.suggested_budget_bytes)}[/] — {report.suggested_budget_reason}",
    )
    console.print(table)
