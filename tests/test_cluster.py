"""`compare --ray`: the same compare on a real Ray cluster on this machine — same samples, faults retried, per-node
provenance — and the one-line errors without Ray or without a cluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

import edgeval
from edgeval.core.quants import WeightQuant
from edgeval.faces import demo
from edgeval.faces.cli import cli
from edgeval.llama import doctor, synth

from .conftest import TINY, write_catalog

ROOT = Path(__file__).resolve().parent.parent


def _family(folder: Path) -> Path:
    """The trained family's smallest and largest size (F16 files shipped in the package), as a user catalog."""
    entries = {s.stem: {"params": 1, "files": [{"quant": "F16", "path": str(s)}]}
               for s in demo.family_sources() if s.stem in ("edgeval-tiny-s", "edgeval-tiny-l")}  # fmt: skip
    return write_catalog(folder / "family.toml", entries)


def _compare(catalog: Path, db: Path, *extra: str) -> list[str]:
    return ["compare", "--budget", "1GB", "--task", "arith", "--exhaustive", "--limit", "20", "--seed", "3",
            "--models", "edgeval-tiny-s,edgeval-tiny-l", "--kv", "f16", "--budget-tokens", "8,48", "--k", "1,4",
            "--no-repack", "--catalog", str(catalog), "--db", str(db), "--json", *extra]  # fmt: skip


def _samples(db: Path) -> dict[tuple[str, int, int], tuple[str, str | None, int]]:
    """Every stored sample by (configuration key, question, vote): its text, answer and verdict."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT c.key, s.item_index, s.sample_index, s.text, s.answer, s.correct FROM samples s"
            " JOIN configs c ON c.id = s.config_id"
        ).fetchall()
    return {(key, item, sample): (text, answer, correct) for key, item, sample, text, answer, correct in rows}


def _accuracies(output: str) -> list[tuple[Any, ...]]:
    (data,) = json.loads(output)
    return sorted((r["model"], r["budget_tokens"], r["k"], r["n_done"], r["accuracy_maj"], tuple(r["ci95"]))
                  for r in data["rows"])  # fmt: skip


@pytest.fixture(scope="module")
def on_ray(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path, str]:
    """The same exhaustive compare on this machine and with `--ray local`: (each store, what each printed)."""
    pytest.importorskip("ray")
    folder = tmp_path_factory.mktemp("same")
    catalog = _family(folder)
    env = {"EDGEVAL_HOME": str(folder / "home")}
    here = CliRunner().invoke(cli, _compare(catalog, folder / "here.db"), env=env)
    assert here.exit_code == 0, here.output
    there = CliRunner().invoke(cli, _compare(catalog, folder / "ray.db", "--ray", "local"), env=env)
    assert there.exit_code == 0, there.output
    return folder / "here.db", here.output, folder / "ray.db", there.output


def test_the_same_compare_on_a_ray_cluster_stores_the_same_samples_and_accuracies(
    on_ray: tuple[Path, str, Path, str],
) -> None:
    here_db, here, ray_db, there = on_ray
    local, remote = _samples(here_db), _samples(ray_db)
    assert len(local) == 2 * 2 * 4 * 20  # 2 files × 2 budgets × 4 votes × 20 questions
    assert remote == local
    assert _accuracies(there) == _accuracies(here)
    assert any(a[4] > 0 for a in _accuracies(here))  # the trained family answers some: equal, not equally empty


def test_each_node_is_in_the_provenance_of_what_it_produced_and_in_the_report(
    on_ray: tuple[Path, str, Path, str], tmp_path: Path
) -> None:
    here_db, here, ray_db, there = on_ray
    with sqlite3.connect(ray_db) as conn:
        conn.row_factory = sqlite3.Row
        (node,) = conn.execute("SELECT * FROM nodes").fetchall()
        assert (node["hostname"], node["cpu"]) == (socket.gethostname(), doctor.cpu_model())
        assert node["edgeval_version"] == edgeval.__version__ and node["backend"] and node["llama_cpp_build"]
        assert node["ray_node_id"] and node["ip"]
        assert json.loads(node["hardware"])["ram_bytes"] > 0
        # Every question's timing names the node that answered it; each configuration has the node's own figures.
        assert conn.execute("SELECT COUNT(*) FROM item_timings WHERE node_id IS NULL").fetchone()[0] == 0
        runs = conn.execute("SELECT * FROM node_runs").fetchall()
        assert len(runs) == 4 and all(r["node_id"] == node["id"] and r["peak_rss_bytes"] > 0 for r in runs)
    with sqlite3.connect(here_db) as conn:  # a compare on this machine alone records no node
        assert conn.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] == 0
    (data,) = json.loads(there)
    assert {n["hostname"] for n in data["nodes"]} == {socket.gethostname()}
    assert all(n["decode_tokens_per_s"] > 0 and n["n_items"] == 20 for n in data["nodes"])
    assert json.loads(here)[0]["nodes"] == []
    report = CliRunner().invoke(cli, ["report", "--out", str(tmp_path), "--db", str(ray_db), "--name", "r"])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "r.md").read_text()
    nodes = text.split("## Nodes", 1)[1].split("## Speed", 1)[0]
    assert socket.gethostname() in nodes and doctor.cpu_model() in nodes and node["backend"] in nodes
    speed = text.split("## Speed", 1)[1]
    assert "| node |" in speed.replace(" node ", " node ") and speed.count(socket.gethostname()) == 4


def _ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _task_worker() -> psutil.Process | None:
    """The Ray worker process running an edgeval unit, once its llama.cpp worker has been decoding a moment."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::edgeval"):
            children = proc.children()
            if children and time.time() - children[0].create_time() > 0.5:
                return proc
    return None


def _stored(db: Path) -> int:
    """Questions the store holds answers for (0 before it exists)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM item_timings").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_a_ray_worker_killed_mid_task_loses_only_its_question_in_flight_and_the_retry_redoes_nothing_stored(
    model_dir: Path, tmp_path: Path
) -> None:
    """Answers stream back per question while the task runs, so a node that dies after some questions has them
    stored already; the unit sent again asks only for the rest, and nothing is stored twice."""
    pytest.importorskip("ray")
    model = synth.build(TINY, WeightQuant.Q8_0, model_dir, threads=2)  # random weights: writes its whole budget
    catalog = write_catalog(tmp_path / "tiny.toml", {"tiny": {"params": 1, "files": [
        {"quant": "Q8_0", "path": str(model)}]}})  # fmt: skip
    db = tmp_path / "k.db"
    args = ["compare", "--budget", "1GB", "--task", "arith", "--exhaustive", "--limit", "12", "--models", "tiny",
            "--kv", "f16", "--budget-tokens", "400", "--k", "2", "--no-repack", "--parallel", "1", "--catalog",
            str(catalog), "--db", str(db), "--json", "--ray", "local"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # (the tests' own EDGEVAL_HOME and HF_HOME, the node's too)
    child = subprocess.Popen([sys.executable, "-m", "edgeval", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    victim, before = None, 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
        before = _stored(db)
        if before >= 3:
            victim = _task_worker()
            if victim is not None:
                break
    assert victim is not None, f"no edgeval task was seen running after {before} stored questions"
    llama = victim.children()
    os.kill(victim.pid, signal.SIGKILL)  # the task's Ray worker dies mid-task (its llama.cpp worker with it)
    assert 3 <= before < 12  # answers were stored while the task ran, and it still had questions to go
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in llama)
    with sqlite3.connect(db) as conn:
        keys = conn.execute("SELECT config_id, item_index, sample_index FROM samples").fetchall()
        timings, stored_tokens = conn.execute("SELECT COUNT(*), SUM(generated_tokens) FROM item_timings").fetchone()
        (status,) = conn.execute("SELECT DISTINCT status FROM configs").fetchall()
    assert len(keys) == len(set(keys)) == 12 * 2 and timings == 12 and status == ("done",)
    (data,) = json.loads(out)
    assert data["rows"][0]["n_done"] == 12 and not data["failures"]
    # Every token the driver heard decoded is in a stored answer: the retry answered no stored question again
    # (what the dead worker had in flight never reached the driver).
    assert data["tokens_decoded"] == stored_tokens


def test_without_ray_or_without_a_cluster_the_error_is_one_line(tmp_path: Path) -> None:
    catalog = _family(tmp_path)
    args = _compare(catalog, tmp_path / "e.db")
    if "ray" in sys.modules or _ray_installed():
        bad = CliRunner().invoke(cli, [*args, "--ray", "127.0.0.1:1"])
        assert bad.exit_code == 1 and bad.output.strip().count("\n") == 0
        assert "no Ray cluster answers at 127.0.0.1:1" in bad.output and "ray start --head" in bad.output
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # what an environment without Ray gives: `import ray` fails\n"
        "from edgeval.faces.cli import main\n"
        f"sys.argv = ['edgeval', *{[*args, '--ray', 'local']!r}]\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEVAL_HOME": str(tmp_path / "home")}
    missing = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "pip install 'edgeval[ray]'" in missing.stderr
    assert not (tmp_path / "e.db").exists() or not _samples(tmp_path / "e.db")


def test_a_node_loads_with_its_own_probes_repacking_mode_when_the_request_left_it_open(tmp_path: Path) -> None:
    """A unit travels with the driver's repacking mode; a node whose CPU crashes in that mode (AMX) must use what
    its own probe found. Here the node's remembered verdict is "off" and the driver's mode llama.cpp's full choice."""
    from edgeval.core import memory
    from edgeval.edges import hub
    from edgeval.edges.store import Store
    from edgeval.running import detached, sweep

    doctor._remember(doctor.RepackProbe(True, False, "none survived", memory.RepackMode.OFF))
    source = demo.family_sources()[0]
    spec = sweep.RunSpec(model_path=source, model_label="tiny-s:F16", task="arith", budget_tokens=8, k=2, limit=2,
                         repack=memory.RepackMode.ALL, threads=2)  # fmt: skip
    with Store(tmp_path / "driver.db") as store:
        prepared = sweep.prepare(spec, store)
        sha = store.file_sha256(source, hub.sha256_of)
        unit = detached.Unit(prepared, (0, 1), sha, repack_auto=True)
        result = detached.run(unit)
        assert result.status == "ran" and len(result.answers) == 2, result.message
        log = (Path(os.environ["EDGEVAL_HOME"]) / "cache" / "logs" / f"unit-{prepared.config_id}.log").read_text()
        assert "model buffer size" in log and "REPACK" not in log and "AMX" not in log
        detached.commit(unit, result, store)
        assert len(store.samples(prepared.config_id)) == 2 * 2
        # the provenance is the node's: its own mode in its node_runs row and in the configuration's
        assert result.repack_mode == "off" and store.config(prepared.config_id)["repack_mode"] == "off"
        (run,) = store.node_runs(prepared.config_id, lambda timings: (None, None, None))
        assert run.repack_mode == "off" and run.parallel == 1
