"""Layering: pure modules and the commands that never run a model stay clear of llama.cpp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEVAL_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_pure_modules_does_not_import_llama_cpp(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import edgeval.units, edgeval.quants, edgeval.vote, edgeval.grading, edgeval.plan, edgeval.prompts, edgeval.kld\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llama_cpp', 'rich') or m == 'edgeval.engine'))"
    )
    assert _python(code, tmp_path) == "[]"


def test_plan_and_models_do_not_load_llama_cpp(tmp_path: Path) -> None:
    # (A prediction with repacking on asks llama.cpp which tensor types this CPU repacks: with it off, or for
    # `models`, nothing needs llama.cpp.) Ray, an optional extra, is imported only by `compare --ray`.
    code = (
        "import sys\n"
        "from edgeval.cli import cli\n"
        "for args in (['plan', '--budget', '4GB', '--no-repack'], ['models'],\n"
        "             ['compare', '--budget', '1GB', '--dry-run', '--no-repack']):\n"
        "    try:\n"
        "        cli(args, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('llama_cpp' in sys.modules, 'edgeval.engine' in sys.modules, 'ray' in sys.modules)"
    )
    assert _python(code, tmp_path) == "False False False"


def test_the_engine_initialises_llama_cpp_on_first_use_not_at_import(tmp_path: Path) -> None:
    code = (
        "from edgeval import engine\n"
        "before = engine.initialised()\n"
        "engine.supports_gpu_offload()\n"
        "print(before, engine.initialised())"
    )
    assert _python(code, tmp_path) == "False True"


def test_options_and_dry_run_do_not_probe_repacking(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from edgeval.cli import cli\n"
        "try:\n"
        "    cli(['compare', '--budget', '1GB', '--dry-run', '--json'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "from edgeval import doctor\n"
        "print(doctor.repack_cached())"
    )
    assert _python(code, tmp_path) == "None"  # the probe never ran (it would have remembered its verdict)
    assert not (tmp_path / "home" / "repack-probe.json").exists()
