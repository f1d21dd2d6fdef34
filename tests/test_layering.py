"""Layering: the subpackages import one another in one direction only, no module imports itself round a circle,
llama.cpp is reached only from the llama side, and the commands that never run a model stay clear of it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgeval"

# Each layer may import the layers before it (and itself); nothing imports a layer after it.
LAYERS = ("core", "edges", "llama", "running", "comparison", "faces")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The edgeval modules (and external top-level packages) a file imports, at module level or inside a
    function, but not under `if TYPE_CHECKING:` (which never runs)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                module = (ROOT / full.replace(".", "/")).with_suffix(".py")
                found.add(full if module.exists() or (ROOT / full.replace(".", "/")).is_dir() else node.module)
    return found


MODULES = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == [], f"put these in a layer ({', '.join(LAYERS)}): {loose}"


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_before_it(layer: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in MODULES.items()
        if _layer(module) == layer
        for target in targets
        if target.startswith("edgeval.") and _layer(target) not in allowed | {None}
    )
    assert wrong == []


def test_no_import_circle() -> None:
    graph = {m: {t for t in ts if t in MODULES and t != m} for m, ts in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module)
            assert circle is None, " -> ".join(circle)


def test_only_the_llama_side_imports_llama_cpp() -> None:
    users = sorted(m for m, ts in MODULES.items() if any(t.split(".")[0] == "llama_cpp" for t in ts))
    assert users and all(_layer(m) == "llama" for m in users), users
    # and Ray only where a cluster is run
    assert sorted(m for m, ts in MODULES.items() if "ray" in {t.split(".")[0] for t in ts}) == [
        "edgeval.running.cluster"
    ]


def _python(code: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEVAL_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_pure_modules_does_not_import_llama_cpp(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import edgeval.core.units, edgeval.core.quants, edgeval.core.vote, edgeval.core.grading, edgeval.core.prompts\n"
        "import edgeval.core.kld, edgeval.core.machine, edgeval.comparison.plan, edgeval.edges.store\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llama_cpp', 'rich') or m == 'edgeval.llama.engine'))"
    )
    assert _python(code, tmp_path) == "[]"


def test_plan_and_models_do_not_load_llama_cpp(tmp_path: Path) -> None:
    # (A prediction with repacking on asks llama.cpp which tensor types this CPU repacks: with it off, or for
    # `models`, nothing needs llama.cpp.) Ray, an optional extra, is imported only by `compare --ray`.
    code = (
        "import sys\n"
        "from edgeval.faces.cli import cli\n"
        "for args in (['plan', '--budget', '4GB', '--no-repack'], ['models'],\n"
        "             ['compare', '--budget', '1GB', '--dry-run', '--no-repack']):\n"
        "    try:\n"
        "        cli(args, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('llama_cpp' in sys.modules, 'edgeval.llama.engine' in sys.modules, 'ray' in sys.modules)"
    )
    assert _python(code, tmp_path) == "False False False"


def test_the_engine_initialises_llama_cpp_on_first_use_not_at_import(tmp_path: Path) -> None:
    code = (
        "from edgeval.llama import engine\n"
        "before = engine.initialised()\n"
        "engine.supports_gpu_offload()\n"
        "print(before, engine.initialised())"
    )
    assert _python(code, tmp_path) == "False True"


def test_options_and_dry_run_do_not_probe_repacking(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from edgeval.faces.cli import cli\n"
        "try:\n"
        "    cli(['compare', '--budget', '1GB', '--dry-run', '--json'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "from edgeval.llama import doctor\n"
        "print(doctor.repack_cached())"
    )
    assert _python(code, tmp_path) == "None"  # the probe never ran (it would have remembered its verdict)
    assert not (tmp_path / "home" / "repack-probe.json").exists()


def test_modules_and_functions_hold_one_idea() -> None:
    # The house's own limits (about 600 lines a module, 60 a function), with a little slack so that a docstring
    # line does not fail a change: past them, a module or function is holding more than one idea.
    long_modules = sorted(
        f"{p.relative_to(ROOT)}: {n}" for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 620
    )
    long_functions = sorted(
        f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {(node.end_lineno or 0) - node.lineno + 1}"
        for p in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (node.end_lineno or 0) - node.lineno >= 65
    )
    assert (long_modules, long_functions) == ([], [])
