"""`edgeval compare`, `edgeval report` and `edgeval demo`, end to end on tiny models with a real store."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from edgeval import compare, demo, synth
from edgeval.cli import cli
from edgeval.quants import WeightQuant

from .conftest import TINY, write_catalog

SMALL = synth.SynthSpec(name="tiny-small", n_layer=1, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=256)


@pytest.fixture(scope="session")
def family(model_dir: Path, tiny_models: dict[WeightQuant, Path]) -> dict[str, dict[str, object]]:
    """Two tiny sizes, as a user catalog names them (local files)."""
    small = {q: synth.build(SMALL, q, model_dir, threads=2) for q in (WeightQuant.Q8_0, WeightQuant.Q4_K_M)}
    return {
        "tiny-small": {"params": SMALL.n_params, "files": [{"quant": q.value, "path": str(p)} for q, p in small.items()]},
        "tiny": {"params": TINY.n_params, "files": [{"quant": q.value, "path": str(tiny_models[q])}
                                                   for q in (WeightQuant.Q8_0, WeightQuant.F16)]},
    }  # fmt: skip


def _args(catalog: Path, db: Path, *extra: str) -> list[str]:
    return ["compare", "--budget", "1GB", "--task", "arith", "--limit", "5", "--models", "tiny-small,tiny",
            "--kv", "f16", "--ctx", "288,320", "--k", "1,2", "--no-repack", "--catalog", str(catalog),
            "--db", str(db), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def compared(family: dict[str, dict[str, object]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One compare over the family into a fresh store: (catalog, database, the table it printed)."""
    folder = tmp_path_factory.mktemp("compared")
    catalog = write_catalog(folder / "family.toml", json.loads(json.dumps(family)))
    db = folder / "c.db"
    table = CliRunner().invoke(cli, _args(catalog, db), env={"EDGEVAL_HOME": str(folder / "home")})
    assert table.exit_code == 0, table.output
    return catalog, db, table.output


def test_compare_table_json_frontier_and_recommendation(compared: tuple[Path, Path, str]) -> None:
    catalog, db, table = compared
    assert "★" in table and "Best under 1 GB" in table
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT id, wall_s, updated_at FROM configs ORDER BY id").fetchall()
    result = CliRunner().invoke(cli, [*_args(catalog, db), "--json"])
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.output)
    rows = data["rows"]
    assert len(rows) == 4 * 2 * 2  # 4 files × 2 contexts × 2 vote counts
    assert all(r["status"] == "done" and r["n_done"] == 5 for r in rows)
    # The Pareto marks agree with a brute-force check.
    for r in rows:
        dominated = any(
            o is not r and o["memory_bytes"] <= r["memory_bytes"] and o["accuracy_maj"] >= r["accuracy_maj"]
            and (o["memory_bytes"] < r["memory_bytes"] or o["accuracy_maj"] > r["accuracy_maj"])
            for o in rows
        )  # fmt: skip
        assert r["pareto"] is (not dominated)
    assert data["frontier"] == [r["config_id"] for r in rows if r["pareto"]]
    best = data["recommendation"][0]
    named = next(
        r
        for r in rows
        if f"{r['model']} with KV {r['kv_type_k']}, a {r['budget_tokens']}-token budget and k={r['k']}" in best
    )
    assert named["pareto"]
    assert [r["memory_bytes"] for r in rows] == sorted(r["memory_bytes"] for r in rows)
    # The second call ran nothing new: no configuration was touched, no sample added.
    with sqlite3.connect(db) as conn:
        after = conn.execute("SELECT id, wall_s, updated_at FROM configs ORDER BY id").fetchall()
        assert conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 4 * 2 * (1 + 2) * 5
    assert after == before and len(after) == 16


def test_report_is_well_formed_has_a_plot_and_is_reproducible(compared: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, db, _ = compared
    out = tmp_path / "reports"
    first = CliRunner().invoke(
        cli, ["report", "--out", str(out), "--db", str(db), "--task", "arith", "--budget", "1GB"]
    )
    assert first.exit_code == 0, first.output
    markdown = out / "arith-1GB.md"
    image = out / "arith-1GB.png"
    text = markdown.read_text()
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(image).shape[0] > 100
    assert "![arith: accuracy against memory](arith-1GB.png)" in text
    for heading in ("## Provenance", "## Grid", "## Results at equal footprint", "## Recommendation",
                    "## Pareto frontier", "## Speed"):  # fmt: skip
        assert heading in text
    tables = re.findall(r"((?:^\|.*\|\n)+)", text, re.MULTILINE)
    assert len(tables) >= 4
    for table in tables:
        lines = table.strip().splitlines()
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
        assert len(widths) == 1, table  # every row has the header's number of cells
        assert set(lines[1].replace("|", "")) == {"-"}
    results = next(t for t in tables if t.startswith("| band |"))
    assert len(results.strip().splitlines()) == 2 + 16
    assert "★" in results
    before = (markdown.read_bytes(), image.read_bytes())
    again = CliRunner().invoke(
        cli, ["report", "--out", str(out), "--db", str(db), "--task", "arith", "--budget", "1GB"]
    )
    assert again.exit_code == 0
    assert (markdown.read_bytes(), image.read_bytes()) == before


def test_an_interrupted_compare_resumes_at_the_configuration_and_question(
    family: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path / "family.toml", json.loads(json.dumps(family)))
    db = tmp_path / "i.db"
    args = ["compare", "--budget", "1GB", "--task", "arith", "--limit", "12", "--models", "tiny-small,tiny",
            "--kv", "f16", "--ctx", "700", "--k", "2", "--no-repack", "--catalog", str(catalog), "--db", str(db)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, "-m", "edgeval", *args], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    state: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                state = conn.execute(
                    "SELECT config_id, COUNT(DISTINCT item_index) FROM samples GROUP BY config_id ORDER BY 1"
                ).fetchall()
        except sqlite3.OperationalError:
            continue
        if len(state) >= 2 and 1 <= state[-1][1] < 12:
            break
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT config_id, item_index, sample_index, text FROM samples ORDER BY 1, 2, 3").fetchall()
        partial = conn.execute(
            "SELECT config_id, COUNT(DISTINCT item_index) FROM samples GROUP BY config_id ORDER BY 1"
        ).fetchall()
    assert len(partial) >= 2 and partial[0][1] == 12 and partial[-1][1] < 12, "killed inside a later configuration"
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT config_id, item_index, sample_index, text FROM samples ORDER BY 1, 2, 3").fetchall()
        configs = conn.execute("SELECT COUNT(*) FROM configs").fetchone()[0]
    assert configs == 4
    assert len(rows) == 4 * 12 * 2 == len({r[:3] for r in rows})
    assert set(kept) <= set(rows)  # nothing stored before the kill was redone or changed


@given(points=st.lists(st.tuples(st.integers(1, 20), st.sampled_from([0.0, 0.2, 0.5, 0.9])), min_size=1, max_size=12))
def test_pareto_marks_match_brute_force(points: list[tuple[int, float]]) -> None:
    marks = compare.pareto(points)
    for (m, a), mark in zip(points, marks, strict=True):
        better = [(m2, a2) for m2, a2 in points if m2 <= m and a2 >= a and (m2 < m or a2 > a)]
        assert mark is (not better)
    assert any(marks)


def test_dry_run_shows_the_grid_and_time_and_runs_nothing(family: dict[str, dict[str, object]], tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "family.toml", json.loads(json.dumps(family)))
    db = tmp_path / "d.db"
    result = CliRunner().invoke(cli, [*_args(catalog, db), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Estimated time" in result.output and "tiny-small:Q8_0" in result.output
    assert not db.exists()
    planned = json.loads(CliRunner().invoke(cli, [*_args(catalog, db), "--dry-run", "--json"]).output)
    assert len(planned[0]) == 16 and all(p["estimated_s"] > 0 for p in planned[0])


def test_default_grid_for_8gb_is_sized_for_a_laptop() -> None:
    request = compare.Request(budget_bytes=8 * 10**9)
    planned = compare.grid(request, "math500")
    assert planned and all(p.config.footprint.total_bytes <= 8 * 10**9 for p in planned)
    assert {p.config.ref.file.quant for p in planned} <= set(compare.DEFAULT_QUANTS)
    assert {p.config.k for p in planned} == {1, 4}
    assert len({p.config.ref.model.name for p in planned}) >= 3


def test_compare_without_network_names_the_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["compare", "--budget", "8GB", "--no-repack", "--db", str(tmp_path / "o.db")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "edgeval demo" in result.output and "HF_HUB_OFFLINE" in result.output
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    result = CliRunner().invoke(cli, ["compare", "--budget", "8GB", "--no-repack", "--db", str(tmp_path / "o.db")])
    assert result.exit_code == 1 and "edgeval demo" in result.output and "HF_HUB_OFFLINE" in result.output


def test_demo_family_and_grid(tmp_path: Path) -> None:
    setup = demo.build_family(tmp_path / "demo", threads=2)
    request = demo.request(setup, limit=3)
    planned = compare.grid(request, "arith")
    family = demo.family_sources()
    assert len(family) >= 3
    assert len(planned) == len(family) * len(demo.QUANTS) * len(demo.BUDGETS) * 2
    assert len({p.config.ref.model.params for p in planned}) == len(family)


@pytest.mark.slow
def test_demo_runs_offline_and_leaves_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "reports"), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "edgeval-demo.md").exists() and (tmp_path / "reports" / "edgeval-demo.png").exists()
    assert time.monotonic() - start < 180
