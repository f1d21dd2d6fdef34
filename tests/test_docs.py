"""The docs: the README stays a front page with CI's own commands, the MkDocs site builds strictly, its command
reference carries every option `--help` prints, and no command line written in the docs names an option its
command lacks."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeval.faces.cli import all_commands, cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_readme_is_a_front_page_with_ci_s_own_test_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    ci_command = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci_command in text.splitlines()
    assert "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/edgeval compare --budget 8GB" in text
    # every command is in its table
    assert {m for m in re.findall(r"^\| `edgeval ([a-z]+)", text, re.M)} == set(all_commands())


def _slug(heading: str) -> str:
    """MkDocs' (Python-Markdown toc's) anchor of a heading."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", text))


def test_the_readme_s_links_reach_pages_and_headings_that_exist() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            assert anchor in {_slug(h) for h in headings}, link


def test_the_site_builds_strictly_with_every_page_in_the_nav(site: Path) -> None:
    for page in PAGES:
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.exists(), page.name
    assert "docs/hooks.py" not in (site / "reference" / "index.html").read_text(encoding="utf-8")


def _help_options(name: str) -> set[str]:
    result = CliRunner().invoke(cli, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    options = result.output.split("Options:", 1)[1]
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", options))


def test_the_reference_carries_every_option_help_prints(site: Path) -> None:
    page = html.unescape((site / "reference" / "index.html").read_text(encoding="utf-8"))
    sections = re.split(r'<h2 id="edgeval-', page)[1:]
    by_command = {s.split('"', 1)[0]: s for s in sections}
    assert set(by_command) == set(all_commands())
    for name in all_commands():
        missing = {o for o in _help_options(name) if o not in by_command[name]}
        assert not missing, (name, missing)


def _accepted(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")} | {"--help"}


def test_every_command_line_in_the_docs_names_only_options_its_command_has() -> None:
    commands = all_commands()
    written = 0
    for doc in [README, *PAGES]:
        for line in doc.read_text(encoding="utf-8").splitlines():
            for name, rest in re.findall(r"\bedgeval ([a-z]+)((?: +(?:\[?--[a-z][a-z0-9-]*|[^\s`|]+))*)", line):
                if name not in commands:
                    continue
                flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest))
                unknown = flags - _accepted(commands[name])
                assert not unknown, f"{doc.name}: `edgeval {name}` has no {sorted(unknown)}: {line.strip()}"
                written += len(flags)
    assert written > 50  # the docs do write command lines out


def test_the_hybrids_page_shows_what_plan_prints() -> None:
    """docs/hybrids.md quotes `plan`'s output, not figures written by hand: the command in its block, run here, prints
    the block (regenerate the page's block from the command when the memory model changes)."""
    text = (ROOT / "docs" / "hybrids.md").read_text(encoding="utf-8")
    block = re.search(r"```text\n\$ edgeval (plan [^\n]+)\n(.*?)\n```", text, re.S)
    assert block, "the page's `$ edgeval plan ...` block"
    result = CliRunner().invoke(cli, block.group(1).split())
    assert result.exit_code == 0, result.output
    printed = "\n".join(line.rstrip() for line in result.output.splitlines())
    assert printed == block.group(2)
    assert "Generations side by side within 8 GB" in printed and "qwen3.5-9b:Q4_K_M" in printed
