"""The results store shared by several edgeval processes: migrations under a lock, claims on configurations."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil

from edgeval.core import paths
from edgeval.core.quants import WeightQuant
from edgeval.edges.store import MIGRATIONS, Claim, Store
from edgeval.running import sweep

ROOT = Path(__file__).resolve().parent.parent
OPEN_AND_ADD = """
import sys, time
from edgeval.edges.store import Store
from tests.test_store import config_fields
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
with Store(__import__('pathlib').Path(sys.argv[1])) as store:
    store.add_run({"edgeval": "t", "llama_cpp_python": "t", "backend": "CPU"}, "test")
    print(store.upsert_config("the-key", config_fields()))
"""


def config_fields() -> dict[str, object]:
    """Every NOT NULL column of a configuration row, with made-up values."""
    return {"model": "m", "model_path": "/m.gguf", "model_sha256": "0" * 64, "weight_quant": "Q8_0", "params": 1,
            "task": "arith", "task_fingerprint": "f", "kv_type_k": "f16", "kv_type_v": "f16", "ctx": 64,
            "budget_tokens": 8, "k": 1, "thinking": 1, "sampling": "{}", "seed": 0, "n_items": 1, "kv_cells": 256,
            "predicted_bytes": 1}  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_processes_opening_a_fresh_store_at_once_all_succeed_and_add_nothing_twice(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    start = time.time() + 2.0  # every child opens the store at the same moment
    children = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_ADD, str(db), str(start)], env=_env(), cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]  # fmt: skip
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0] * 8, [err for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1  # one configuration id for all
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 8
        assert con.execute("SELECT COUNT(*) FROM configs").fetchone()[0] == 1


def test_a_live_claim_holds_and_a_dead_or_silent_one_is_taken_over(tmp_path: Path) -> None:
    with Store(tmp_path / "claims.db") as store:
        config_id = store.upsert_config("k", config_fields())
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        try:
            holder = Claim(child.pid, socket.gethostname(), psutil.Process(child.pid).create_time(), time.time())
            assert store.claim(config_id, holder, sweep.claim_alive) is None
            me = Claim(os.getpid(), socket.gethostname(), psutil.Process().create_time(), time.time())
            assert store.claim(config_id, me, sweep.claim_alive) == holder
        finally:
            child.kill()
            child.wait()
        assert store.claim(config_id, me, sweep.claim_alive) is None  # its holder died
        store.release(config_id, me)
        elsewhere = Claim(1, "another-host", 0.0, time.time() - 10 * sweep.STALE_CLAIM_S)
        assert store.claim(config_id, elsewhere, sweep.claim_alive) is None
        assert store.claim(config_id, me, sweep.claim_alive) is None  # no heartbeat for too long
        recycled = Claim(os.getppid(), socket.gethostname(), 0.0, time.time())  # a live pid, another start time
        store.release(config_id, me)
        assert store.claim(config_id, recycled, sweep.claim_alive) is None
        assert store.claim(config_id, me, sweep.claim_alive) is None


def test_several_runs_started_at_once_on_a_fresh_store_all_succeed_and_store_each_sample_once(
    tiny_models: dict[WeightQuant, Path], tmp_path: Path
) -> None:
    db = tmp_path / "shared.db"
    base = [sys.executable, "-m", "edgeval", "run", str(tiny_models[WeightQuant.Q8_0]), "--task", "arith",
            "--no-repack", "--db", str(db), "--limit", "3", "--budget-tokens", "8", "--json"]  # fmt: skip
    commands = [[*base, "--k", "2"]] * 3 + [[*base, "--k", "1"]]  # three of them the same configuration
    children = [
        subprocess.Popen(c, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0] * 4, [err for _, err in outputs]
    same = [json.loads(out) for out, _ in outputs[:3]]
    assert all(r["status"] == "done" and r["n_items"] == 3 for r in same)
    assert len({(r["accuracy_maj"], r["accuracy_avg"]) for r in same}) == 1
    with sqlite3.connect(db) as con:
        configs = con.execute("SELECT id, k, status, claim_pid FROM configs ORDER BY k").fetchall()
        assert [(k, status, claim) for _, k, status, claim in configs] == [(1, "done", None), (2, "done", None)]
        for config_id, k, _, _ in configs:
            stored = con.execute("SELECT item_index, sample_index FROM samples WHERE config_id = ?", (config_id,))
            assert sorted(stored) == [(i, j) for i in range(3) for j in range(k)]
            timings = con.execute("SELECT COUNT(*) FROM item_timings WHERE config_id = ?", (config_id,)).fetchone()
            assert timings[0] == 3
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4


def test_a_model_file_is_hashed_once_per_machine_whatever_store_asks_and_again_when_it_changes(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(4096))
    hashed: list[Path] = []

    def compute(path: Path) -> str:
        hashed.append(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    with Store(tmp_path / "a.db") as a, Store(tmp_path / "b.db") as b:
        first = a.file_sha256(model, compute)
        assert b.file_sha256(model, compute) == first and len(hashed) == 1  # another store takes the machine's
        model.write_bytes(b"GGUF" + bytes(4097))  # changed: its size and mtime
        assert b.file_sha256(model, compute) != first and len(hashed) == 2
    # A damaged machine-wide record is a file not recorded: hashed again, no error
    (paths.cache_dir("hashes") / "sha256.db").write_bytes(b"not a database" * 100)
    with Store(tmp_path / "c.db") as c:
        assert c.file_sha256(model, compute) == hashlib.sha256(model.read_bytes()).hexdigest() and len(hashed) == 3
