"""Text from files is text (issue 29, items 4 to 8): a name holding escape sequences or rich markup is shown, never
obeyed; a closed or full standard output is handled as Unix tools do; upper-case catalog names are usable; another
program's SQLite file is refused and left as it was."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeval.core.text import markdown_text, printable
from edgeval.faces import tables
from edgeval.faces.cli import CLOSED_OUTPUT_STATUS, cli
from edgeval.llama import synth

from .conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
FAMILY_S = ROOT / "edgeval" / "family" / "edgeval-tiny-s.gguf"
# Retitles the terminal, clears the screen and turns what follows red; then a closing tag rich cannot match.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mevil[/bad]"


def _edgeval(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgeval", *args], stdout=stdout, stderr=subprocess.PIPE, env=env,
                          timeout=120, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def hostile_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GGUF whose `general.name` and whose file name both hold escape sequences."""
    folder = tmp_path_factory.mktemp("hostile")
    return synth.write_gguf(dataclasses.replace(TINY, name=HOSTILE), folder / "x\x1b[2Jy[b]z.gguf")


def test_printable_escapes_every_control_and_keeps_the_rest() -> None:
    assert printable(HOSTILE) == "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mevil[/bad]"
    assert printable("a\rb\x9bc\u202ed\x7f") == "a\\rb\\x9bc\\u202ed\\x7f"
    assert printable("line\n\tnext") == "line\\n\\tnext"
    assert printable("line\n\tnext\r", lines=True) == "line\n\tnext\\r"
    assert printable("Qwen3-8B:Q4_K_M — ünïcode 数") == "Qwen3-8B:Q4_K_M — ünïcode 数"


def test_markdown_text_keeps_a_table_whole() -> None:
    assert (
        markdown_text("a|b *c* `d` [e](f) <g> Q4_K_M _h_") == "a\\|b \\*c\\* \\`d\\` \\[e\\](f) \\<g\\> Q4_K_M \\_h\\_"
    )
    lines = tables.markdown(tables.Layout.of(["model", "n"], [["x|y\nz\x1b[31m", "1"]]))
    assert lines[-1] == "| x\\|y\\\\nz\\\\x1b\\[31m | 1 |"
    assert all(line.count("|") - line.count("\\|") == 3 for line in lines)


def test_inspect_prints_no_escape_byte_and_json_keeps_the_exact_name(hostile_gguf: Path) -> None:
    shown = _edgeval("inspect", str(hostile_gguf))
    assert shown.returncode == 0, shown.stderr
    assert b"\x1b" not in shown.stdout and b"\x07" not in shown.stdout
    assert b"\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mevil[/bad]" in shown.stdout  # shown, markup and all
    assert b"x\\x1b[2Jy[b]z.gguf" in shown.stdout
    data = _edgeval("inspect", str(hostile_gguf), "--json")
    assert data.returncode == 0 and json.loads(data.stdout)["name"] == HOSTILE


def test_an_error_quoting_a_file_name_prints_no_escape_byte(tmp_path: Path) -> None:
    result = _edgeval("inspect", str(tmp_path / "gone\x1b[2J.gguf"))
    assert result.returncode == 1 and b"\x1b" not in result.stderr
    assert b"gone\\x1b[2J.gguf" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models", "--json"], ["models"]])
def test_a_full_disk_under_stdout_is_one_line_not_a_traceback(args: list[str]) -> None:
    with open("/dev/full", "wb") as full:
        result = _edgeval(*args, stdout=full.fileno())
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "disk is full" in lines[0], result.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models", "--json"], ["models"]])
def test_a_closed_pipe_is_a_quiet_exit(args: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before edgeval writes: `edgeval models --json | true`, deterministically
    try:
        result = _edgeval(*args, stdout=write)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (CLOSED_OUTPUT_STATUS, b"")


def _catalog(path: Path, name: str, model: Path) -> Path:
    path.write_text(f'[models."{name}"]\n[[models."{name}".files]]\nquant = "F16"\npath = "{model}"\n')
    return path


def test_rich_markup_in_names_is_text_through_run_compare_and_report(hostile_gguf: Path, tmp_path: Path) -> None:
    catalog = str(_catalog(tmp_path / "c.toml", "evil[/x]", FAMILY_S))
    db, out = str(tmp_path / "r.db"), tmp_path / "reports"
    plan = CliRunner().invoke(cli, ["plan", "--budget", "1GB", "--models", "evil[/x]", "--catalog", catalog])
    assert plan.exit_code == 0 and "evil[/x]:F16" in plan.output, plan.output
    inspect = CliRunner().invoke(cli, ["inspect", str(hostile_gguf)])
    assert inspect.exit_code == 0 and "evil[/bad]" in inspect.output, inspect.output
    run = CliRunner().invoke(cli, ["run", "evil[/x]:F16", "--task", "arith", "--limit", "1", "--budget-tokens", "16",
                                   "--no-repack", "--catalog", catalog, "--db", db], terminal_width=200)  # fmt: skip
    assert run.exit_code == 0 and "evil[/x]:F16 on arith" in run.output, run.output
    compare = CliRunner().invoke(cli, [
        "compare", "--budget", "1GB", "--task", "arith", "--exhaustive", "--limit", "1", "--models", "evil[/x]",
        "--kv", "f16", "--budget-tokens", "16", "--k", "1", "--no-repack", "--catalog", catalog, "--db", db,
    ], terminal_width=200)  # fmt: skip
    assert compare.exit_code == 0 and "evil[/x]:F16" in compare.output, compare.output
    report = CliRunner().invoke(cli, ["report", "--db", db, "--out", str(out), "--name", "r"])
    assert report.exit_code == 0, report.output
    text = (out / "r.md").read_text(encoding="utf-8")
    assert "evil\\[/x\\]:F16" in text and "evil[/x]" not in text


def test_upper_case_catalog_names_match_case_insensitively_and_keep_their_spelling(tmp_path: Path) -> None:
    catalog = str(_catalog(tmp_path / "c.toml", "MyModel", FAMILY_S))
    for ref in ("MyModel", "mymodel:f16", "MYMODEL:F16"):
        result = CliRunner().invoke(cli, ["plan", "--budget", "1GB", "--models", ref, "--catalog", catalog, "--json"])
        assert result.exit_code == 0, result.output
        assert {c["model"] for c in json.loads(result.output)} == {"MyModel:F16"}
    wrong = CliRunner().invoke(cli, ["plan", "--budget", "1GB", "--models", "MyModl", "--catalog", catalog])
    assert wrong.exit_code == 1 and "closest: MyModel" in wrong.output
    twins = tmp_path / "twins.toml"
    twins.write_text(_catalog(tmp_path / "a.toml", "MyModel", FAMILY_S).read_text()
                     + _catalog(tmp_path / "b.toml", "mymodel", FAMILY_S).read_text())  # fmt: skip
    clash = CliRunner().invoke(cli, ["models", "--catalog", str(twins)])
    assert clash.exit_code == 1 and "differ only in case" in clash.output


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "command", [["report"], ["export"], ["regrade"], ["run", str(FAMILY_S), "--task", "arith", "--limit", "1"]]
)
def test_another_programs_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "app").mkdir()
    foreign = tmp_path / "app" / "app.db"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO users (name) VALUES ('ada')")
    con.close()
    before = _digest(foreign)
    result = CliRunner().invoke(cli, [*command, "--db", str(foreign)])
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and "not an edgeval results store" in result.output
    assert _digest(foreign) == before
    assert sorted(p.name for p in foreign.parent.iterdir()) == ["app.db"]  # no -wal, no -shm, no journal left


def test_a_read_only_command_makes_no_store_and_an_empty_file_takes_one(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(cli, ["report", "--db", str(missing)])
    assert result.exit_code == 1 and "no results are stored here" in result.output
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    run = CliRunner().invoke(cli, ["run", str(FAMILY_S), "--task", "arith", "--limit", "1", "--budget-tokens", "16",
                                   "--no-repack", "--db", str(empty), "--json"])  # fmt: skip
    assert run.exit_code == 0, run.output
    report = CliRunner().invoke(cli, ["report", "--db", str(empty), "--out", str(tmp_path / "out")])
    assert report.exit_code == 0, report.output
