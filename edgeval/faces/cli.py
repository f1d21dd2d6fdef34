"""The `edgeval` command line: each command parses options, makes one library call and renders the result."""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Any

import click

import edgeval
from edgeval.core.errors import debug_enabled, describe
from edgeval.core.text import printable

# The commands beside `doctor`, each imported when it is run or listed: a bare `edgeval --version` and every worker
# process (spawn re-runs the console script's imports in each child) load click, not the whole program.
LAZY_COMMANDS = {
    "models": "edgeval.faces.cmd_models:models",
    "pull": "edgeval.faces.cmd_models:pull",
    "inspect": "edgeval.faces.cmd_models:inspect",
    "plan": "edgeval.faces.cmd_models:plan",
    "run": "edgeval.faces.cmd_evaluate:run",
    "kld": "edgeval.faces.cmd_evaluate:kld_command",
    "regrade": "edgeval.faces.cmd_evaluate:regrade",
    "compare": "edgeval.faces.cmd_compare:compare_command",
    "report": "edgeval.faces.cmd_compare:report",
    "demo": "edgeval.faces.cmd_compare:demo",
    "export": "edgeval.faces.cmd_export:export",
    "ask": "edgeval.faces.cmd_export:ask",
}


# A closed standard output (`edgeval models --json | head -1`) is no error to report: edgeval stops quietly with
# the status a program stopped by SIGPIPE has (128 + 13), as `cat` or `grep` do.
CLOSED_OUTPUT_STATUS = 141


def _drop_stdout() -> None:
    """Point standard output at the null device, so that what is still buffered for a closed pipe is dropped
    instead of failing again when Python exits."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)


def _failed(exc: Exception) -> click.ClickException | click.exceptions.Exit:
    """A failure as click reports it: a closed pipe as a quiet exit, anything else as one line."""
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        _drop_stdout()
        return click.exceptions.Exit(CLOSED_OUTPUT_STATUS)
    return click.ClickException(describe(exc))


class EdgevalGroup(click.Group):
    """A click group that turns every failure into one line and exit code 1 (the one place that does), a closed
    output into a quiet exit, and loads the commands of `LAZY_COMMANDS` when asked for them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, attr = LAZY_COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:  # fmt: skip
        """The group's own output (`--help`, `--version`) fails as a command's does: one line, or a quiet exit."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except OSError as exc:
            if debug_enabled():
                raise
            raise _failed(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException as exc:
            exc.message = printable(exc.message)  # type: ignore[misc]  # it may quote a catalog's name
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as exc:
            if debug_enabled():
                raise
            raise _failed(exc) from exc


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


def all_commands() -> dict[str, click.Command]:
    """Every command by name, loaded (for the docs and the tests)."""
    ctx = click.Context(cli, info_name="edgeval")
    return {name: command for name in cli.list_commands(ctx) if (command := cli.get_command(ctx, name)) is not None}


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="edgeval")
