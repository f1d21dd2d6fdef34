"""The `edgeval` command line: each command parses options, makes one library call and renders the result."""

from __future__ import annotations

from typing import Any

import click

import edgeval
from edgeval.core.errors import debug_enabled, describe
from edgeval.faces import cmd_compare, cmd_evaluate, cmd_models


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


for _command in (
    cmd_models.models, cmd_models.pull, cmd_models.inspect, cmd_models.plan,
    cmd_evaluate.run, cmd_evaluate.kld_command, cmd_evaluate.regrade,
    cmd_compare.compare_command, cmd_compare.report, cmd_compare.demo,
):  # fmt: skip
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="edgeval")
