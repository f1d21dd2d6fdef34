"""The command reference as markdown, written from the click commands themselves (the docs' hook renders it), so
the reference and `--help` cannot drift."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import click


def _paragraphs(text: str) -> str:
    """Click's help text as markdown: `\\b` (keep lines as they are) becomes a block of hard line breaks."""
    out: list[str] = []
    for block in inspect.cleandoc(text).split("\n\n"):
        if block.startswith("\b\n"):
            out.append("  \n".join(line.strip() for line in block.splitlines()[1:]))
        else:
            out.append(" ".join(line.strip() for line in block.splitlines()))
    return "\n\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def command_markdown(name: str, command: click.Command, parent: click.Context) -> str:
    """One command: its usage line, its help and a table of its options as `--help` prints them."""
    ctx = click.Context(command, info_name=name, parent=parent)
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    lines = [f"## `edgeval {name}`", "", "```text", usage, "```", "", _paragraphs(command.help or "")]
    records = [(p, r) for p in command.get_params(ctx) if (r := p.get_help_record(ctx)) is not None]
    lines += ["", "| option | what it does |", "|---|---|"]
    lines += [f"| `{_cell(opts)}` | {_cell(help_text)} |" for _, (opts, help_text) in records]
    return "\n".join(lines)


def markdown(commands: Mapping[str, click.Command] | None = None) -> str:
    """Every command of `edgeval`, in the order `edgeval --help` lists them."""
    from edgeval.faces.cli import all_commands, cli

    root = click.Context(cli, info_name="edgeval")
    found = commands if commands is not None else all_commands()
    return "\n\n".join(command_markdown(name, found[name], root) for name in sorted(found)) + "\n"
