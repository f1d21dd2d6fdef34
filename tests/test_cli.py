"""The command line as a whole: help for every command, the one error path, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeval.core.errors import ModelFileError
from edgeval.faces.cli import EdgevalGroup, all_commands, cli


def test_help_lists_every_command_and_each_has_help() -> None:
    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0
    commands = all_commands()
    assert len(commands) == 13, "the CLI has its commands"
    for name, command in commands.items():
        assert name in top.output
        assert command.help and command.help.strip(), f"`edgeval {name}` has no help text"
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert command.help.split("\n")[0].strip()[:30] in " ".join(result.output.split())


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "edgeval", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("edgeval, version ")


def test_usage_error_exits_2() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.output


def _failing_group(exc: Exception) -> click.Group:
    @click.group(cls=EdgevalGroup)
    def group() -> None:
        pass

    @group.command()
    def boom() -> None:
        raise exc

    return group


def test_edgeval_error_is_one_line_with_a_next_step_and_exit_1() -> None:
    group = _failing_group(ModelFileError(Path("/nowhere/model.gguf"), "no such file"))
    result = CliRunner().invoke(group, ["boom"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "/nowhere/model.gguf: no such file" in lines[0]
    assert "edgeval pull" in lines[0]
    assert "Traceback" not in result.output


def test_unexpected_error_has_no_traceback_but_says_how_to_get_one() -> None:
    result = CliRunner().invoke(_failing_group(RuntimeError("kaput\nsecond line")), ["boom"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "EDGEVAL_DEBUG=1" in result.output and "kaput" in result.output


def test_debug_env_shows_the_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEVAL_DEBUG", "1")
    result = CliRunner().invoke(_failing_group(RuntimeError("kaput")), ["boom"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_debug_traceback_reaches_stderr_of_the_real_process(tmp_path: Path) -> None:
    script = (
        "import click, sys\n"
        "from edgeval.faces.cli import EdgevalGroup\n"
        "@click.group(cls=EdgevalGroup)\n"
        "def g(): pass\n"
        "@g.command()\n"
        "def boom(): raise RuntimeError('kaput')\n"
        "g()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "EDGEVAL_HOME": str(tmp_path)}
    quiet = subprocess.run([sys.executable, "-c", script, "boom"], capture_output=True, text=True, env=env)
    loud = subprocess.run(
        [sys.executable, "-c", script, "boom"],
        capture_output=True,
        text=True,
        env=env | {"EDGEVAL_DEBUG": "1"},
    )
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert loud.returncode == 1 and "Traceback" in loud.stderr


@pytest.mark.parametrize(
    ("option", "value", "the_range"),
    [
        ("--temperature", "-1", "x>=0"),
        ("--top-p", "2", "0<x<=1"),
        ("--top-p", "0", "0<x<=1"),
        ("--top-k", "-1", "x>=0"),
        ("--min-p", "1.5", "0<=x<=1"),
        ("--min-p", "-0.1", "0<=x<=1"),
    ],
)
def test_sampling_values_out_of_range_are_usage_errors_naming_the_range(
    tmp_path: Path, option: str, value: str, the_range: str
) -> None:
    """Refused while the arguments are parsed: nothing is resolved, loaded or stored."""
    db = tmp_path / "r.db"
    result = CliRunner().invoke(cli, ["run", "no-such-model", "--task", "arith", option, value, "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert option in result.output and the_range in result.output
    assert not db.exists()


def test_every_command_with_sampling_options_bounds_them() -> None:
    bounded = {"temperature": click.FloatRange, "top_p": click.FloatRange, "top_k": click.IntRange,
               "min_p": click.FloatRange}  # fmt: skip
    seen = 0
    for name, command in all_commands().items():
        for param in command.params:
            if param.name in bounded:
                seen += 1
                assert isinstance(param.type, bounded[param.name]), f"`edgeval {name} --{param.name}` is unbounded"
    assert seen >= len(bounded)
