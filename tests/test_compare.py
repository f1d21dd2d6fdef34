"""`edgeval compare`, `edgeval report` and `edgeval demo`, end to end on tiny models with a real store."""

from __future__ import annotations

import io
import itertools
import json
import math
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

from edgeval.comparison import compare, verdict
from edgeval.core import memory
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges.catalog import Catalog
from edgeval.faces import demo
from edgeval.faces.cli import cli
from edgeval.llama import synth

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
    return ["compare", "--budget", "1GB", "--task", "arith", "--exhaustive", "--limit", "5", "--models",
            "tiny-small,tiny", "--kv", "f16", "--budget-tokens", "32,64", "--k", "1,2", "--no-repack", "--catalog",
            str(catalog), "--db", str(db), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def compared(family: dict[str, dict[str, object]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One exhaustive compare over the family into a fresh store: (catalog, database, the table it printed)."""
    folder = tmp_path_factory.mktemp("compared")
    catalog = write_catalog(folder / "family.toml", json.loads(json.dumps(family)))
    db = folder / "c.db"
    table = CliRunner().invoke(cli, _args(catalog, db), env={"EDGEVAL_HOME": str(folder / "home")})
    assert table.exit_code == 0, table.output
    return catalog, db, table.output


def test_exhaustive_compare_runs_the_whole_grid_once(compared: tuple[Path, Path, str]) -> None:
    catalog, db, table = compared
    assert "★" in table and "Best under 1 GB" in table and "--exhaustive" in table
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT id, wall_s, updated_at FROM configs ORDER BY id").fetchall()
    result = CliRunner().invoke(cli, [*_args(catalog, db), "--json"])
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.output)
    rows = data["rows"]
    assert len(rows) == 4 * 2 * 2  # 4 files × 2 budgets × 2 vote counts
    assert all(r["status"] == "done" and r["n_done"] == 5 for r in rows)
    assert {r["memory_source"] for r in rows} <= {"measured", "calibrated"}
    for key in ("model", "weight_quant", "kv_type_k", "kv_type_v", "budget_tokens", "k", "n_done", "accuracy_maj",
                "ci95", "memory_bytes", "memory_source", "status"):  # fmt: skip
        assert all(key in r for r in rows), key
    # The Pareto marks agree with a brute-force check: no other row needs no more memory, answers no slower
    # (median seconds per answer) and is at least as accurate, one of the three strictly.
    for r in rows:
        mine = _costs(r)
        dominated = any(o is not r and _costs(o) != mine and all(a <= b for a, b in zip(_costs(o), mine, strict=True))
                        for o in rows)  # fmt: skip
        assert r["pareto"] is (not dominated)
    assert data["frontier"] == [r["key"] for r in rows if r["pareto"]]
    assert data["recommended"]["key"] in {r["key"] for r in data["tied"]}
    assert data["recommended"]["memory_bytes"] == min(r["memory_bytes"] for r in data["tied"])
    assert data["stopped"] == "exhaustive" and data["tokens_decoded"] == 0  # nothing new was decoded
    assert any(c["about"] in ("tied", "behind the best") for c in data["comparisons"])
    assert [r["memory_bytes"] for r in rows] == sorted(r["memory_bytes"] for r in rows)
    # Seconds per answer, from each run's speed probe and the questions it answered
    assert all(0 < r["answer_s"] <= r["answer_s_p90"] <= r["answer_s_worst"] for r in rows)
    # The second call ran nothing new: no configuration was touched, no sample added. One generation per file
    # answered both budgets (two rows each) with k = 2 (which also gives k = 1).
    with sqlite3.connect(db) as conn:
        after = conn.execute("SELECT id, wall_s, updated_at FROM configs ORDER BY id").fetchall()
        assert conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 4 * 2 * 2 * 5
        assert conn.execute("SELECT COUNT(DISTINCT arm) FROM configs").fetchone()[0] == 4
    assert after == before and len(after) == 8


def _costs(row: dict[str, float]) -> tuple[float, float, float]:
    """What a frontier weighs, each the lower the better: memory, median seconds per answer, inaccuracy."""
    return row["memory_bytes"], row["answer_s"], -row["accuracy_maj"]


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
    timed = out / "arith-1GB-time.png"
    assert timed.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![arith: accuracy against seconds per answer](arith-1GB-time.png)" in text
    for heading in ("## Provenance", "## Grid", "## Results at equal footprint", "## Recommendation",
                    "## Paired comparisons", "## Pareto frontier", "## Seconds per answer against accuracy",
                    "## Speed"):  # fmt: skip
        assert heading in text
    tables = re.findall(r"((?:^\|.*\|\n)+)", text, re.MULTILINE)
    assert len(tables) >= 5
    for table in tables:
        lines = table.strip().splitlines()
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
        assert len(widths) == 1, table  # every row has the header's number of cells
        assert set(lines[1].replace("|", "")) == {"-"}
    results = next(t for t in tables if t.startswith("| band |"))
    assert len(results.strip().splitlines()) == 2 + 16
    assert "★" in results and "n=5" in results and "s/answer (median, p90, worst)" in results
    before = (markdown.read_bytes(), image.read_bytes(), timed.read_bytes())
    again = CliRunner().invoke(
        cli, ["report", "--out", str(out), "--db", str(db), "--task", "arith", "--budget", "1GB"]
    )
    assert again.exit_code == 0
    assert (markdown.read_bytes(), image.read_bytes(), timed.read_bytes()) == before


def _family_catalog(folder: Path, sizes: tuple[str, ...]) -> Path:
    entries = {}
    for source in demo.family_sources():
        if source.stem in sizes:
            entries[source.stem] = {"params": 1, "files": [{"quant": "F16", "path": str(source)}]}
    return write_catalog(folder / "family.toml", entries)


def _race_args(catalog: Path, db: Path, *extra: str) -> list[str]:
    return ["compare", "--budget", "1GB", "--task", "arith", "--models", "edgeval-tiny-s,edgeval-tiny-l", "--kv",
            "f16", "--budget-tokens", "8,48", "--k", "1,4", "--no-repack", "--catalog", str(catalog), "--db",
            str(db), *extra]  # fmt: skip


def _samples(db: Path) -> list[tuple[int, int, int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT config_id, item_index, sample_index, text FROM samples ORDER BY 1, 2, 3").fetchall()


def test_a_timed_race_drops_what_a_cheaper_configuration_beats_and_answers_with_a_tied_set(tmp_path: Path) -> None:
    catalog = _family_catalog(tmp_path, ("edgeval-tiny-s", "edgeval-tiny-l"))
    db = tmp_path / "race.db"
    started = time.monotonic()
    result = CliRunner().invoke(cli, [*_race_args(catalog, db, "--time", "15s", "--limit", "100"), "--json"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.output)
    assert elapsed < 15 * 1.25 + 10  # the time cap holds (a question in flight, the final look, the report)
    rows = {r["key"]: r for r in data["rows"]}
    assert len(rows) == 2 * 2 * 2
    short = [r for r in rows.values() if r["budget_tokens"] == 8]
    # An 8-token budget forces nearly every answer: each such row is dropped, beaten by a row that needs no more
    # memory, with a paired interval above zero behind it.
    assert all(r["status"] == "eliminated" for r in short)
    for r in short:
        beaten = next(c for c in data["comparisons"] if c["about"] == "eliminated" and c["b"] == r["key"])
        assert beaten["ci"][0] > 0 and rows[beaten["a"]]["memory_bytes"] <= r["memory_bytes"]
    assert all(r["budget_tokens"] == 48 for r in data["tied"])
    assert data["recommended"]["budget_tokens"] == 48
    assert data["recommendation"] and data["time_s"] > 0 and data["tokens_decoded"] > 0
    # Run again: it continues (more questions for what is still in the race) and redoes none.
    first = _samples(db)
    again = CliRunner().invoke(cli, [*_race_args(catalog, db, "--time", "5s", "--limit", "100"), "--json"])
    assert again.exit_code == 0, again.output
    second = _samples(db)
    assert set(first) <= set(second) and len(second) == len({s[:3] for s in second})


def _split(worst: dict[tuple[str, int, int], float]) -> float:
    """A limit between two of the predicted worst cases, in the widest gap between them (so timing noise cannot move
    a configuration across it)."""
    values = sorted(set(worst.values()))
    low, high = max(itertools.pairwise(values), key=lambda pair: pair[1] / pair[0])
    return math.sqrt(low * high)


def test_answer_time_leaves_out_before_running_what_is_predicted_too_slow(tmp_path: Path) -> None:
    catalog = _family_catalog(tmp_path, ("edgeval-tiny-s", "edgeval-tiny-l"))
    db = tmp_path / "t.db"
    # Two questions of every configuration measure each file's deployment shape on this machine
    measure = CliRunner().invoke(cli, [*_race_args(catalog, db, "--exhaustive", "--limit", "2"), "--json"])
    assert measure.exit_code == 0, measure.output
    planned = json.loads(CliRunner().invoke(cli, [*_race_args(catalog, db), "--dry-run", "--json"]).output)[0]
    worst = {(p["model"], t["budget_tokens"], t["k"]): t["answer_s_worst"] for p in planned for t in p["answer_times"]}
    assert len(worst) == 2 * 2 * 2 and all(t["answer_time_source"] == "shape" for p in planned
                                           for t in p["answer_times"])  # fmt: skip
    limit = _split(worst)
    over = {c for c, w in worst.items() if w > limit}
    assert over and len(over) < len(worst)
    answer_time = ["--answer-time", f"{1000 * limit:.6f}ms"]
    # The dry run says which configurations it leaves out, each with its predicted worst case.
    dry = json.loads(CliRunner().invoke(cli, [*_race_args(catalog, db, *answer_time), "--dry-run", "--json"]).output)
    left = {(r["model"], r["budget_tokens"], r["k"]): r for r in dry[0] if r["status"] == "too_slow"}
    assert set(left) == over and all(r["answer_s_worst"] > limit for r in left.values())
    runs = [r for r in dry[0] if r["status"] == "planned"]
    assert {(r["model"], t["budget_tokens"], t["k"]) for r in runs for t in r["answer_times"]} == set(worst) - over
    text = CliRunner().invoke(cli, [*_race_args(catalog, db, *answer_time), "--dry-run"], env={"COLUMNS": "300"})
    assert "Left out before running" in text.output
    assert all(f"{m}, kv f16, budget {b}, k={k}" in text.output for m, b, k in over)
    # The compare never runs them: their rows carry status too_slow with the predicted figure, and no run that could
    # answer them (the same file and budget, as many votes or more) adds a question.
    result = CliRunner().invoke(cli, [*_race_args(catalog, db, "--exhaustive", "--limit", "3", *answer_time), "--json"])
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.output)
    never = {(r["model"], r["budget_tokens"], r["k"]): r for r in data["rows"] if r["n_done"] == 0}
    assert set(never) == over and all(r["status"] == "too_slow" and r["answer_s_worst"] > limit for r in never.values())
    ran = [r for r in data["rows"] if r["n_done"]]
    assert {(r["model"], r["budget_tokens"], r["k"]) for r in ran} == set(worst) - over
    # one that ran stays in unless its own measured worst case is over the limit
    assert all((r["status"] == "too_slow") is (r["answer_s_worst"] > limit) for r in ran)
    with sqlite3.connect(db) as conn:
        answered = conn.execute("SELECT c.model, c.budget_tokens, c.k, COUNT(DISTINCT s.item_index) FROM configs c "
                                "JOIN samples s ON s.config_id = c.id GROUP BY c.id").fetchall()  # fmt: skip
    for model, budget, k in over:
        assert all(n == 2 for m, b, generated, n in answered if (m, b) == (model, budget) and generated >= k)


def test_ctrl_c_prints_the_answer_so_far_and_a_rerun_continues(tmp_path: Path) -> None:
    catalog = _family_catalog(tmp_path, ("edgeval-tiny-s", "edgeval-tiny-l"))
    db = tmp_path / "c.db"
    # One question in flight: with `auto` a run's questions all finish at once, and the race could end between the
    # look that saw them and the signal.
    args = _race_args(catalog, db, "--exhaustive", "--limit", "60", "--parallel", "1")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "COLUMNS": "200"}
    child = subprocess.Popen([sys.executable, "-m", "edgeval", *args], env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                n = conn.execute("SELECT COUNT(DISTINCT item_index) FROM samples").fetchone()[0]
        except sqlite3.OperationalError:
            continue
        if n >= 1:  # at the first answer: the race has 119 more to go
            break
    os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group, the worker included
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, (err, out[-3000:])  # (the output says where a rare exit 0 came from)
    assert "Interrupted: this is the answer so far" in out and "Best under 1 GB" in out
    kept = _samples(db)
    assert kept and len(kept) == len({s[:3] for s in kept})
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.output)
    assert all(r["n_done"] == 60 for r in data["rows"])
    rows = _samples(db)
    assert len(rows) == 2 * 2 * 4 * 60 == len({r[:3] for r in rows})  # 2 files × 2 budgets × 4 votes × 60
    assert set(kept) <= set(rows)  # nothing stored before the interrupt was redone or changed


def test_an_interrupted_compare_resumes_at_the_configuration_and_question(
    family: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path / "family.toml", json.loads(json.dumps(family)))
    db = tmp_path / "i.db"
    args = ["compare", "--budget", "1GB", "--task", "arith", "--exhaustive", "--limit", "8", "--models",
            "tiny-small,tiny", "--kv", "f16", "--budget-tokens", "200", "--k", "2", "--no-repack", "--catalog",
            str(catalog), "--db", str(db), "--parallel", "1"]  # fmt: skip
    # One question at a time: with several in flight a configuration's questions end within milliseconds of each
    # other, and the kill can miss the moment one is partly stored (it did, now and then).
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, "-m", "edgeval", *args], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    state: list[tuple[int, int]] = []
    while time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                state = conn.execute(
                    "SELECT config_id, COUNT(DISTINCT item_index) FROM samples GROUP BY config_id ORDER BY 1"
                ).fetchall()
        except sqlite3.OperationalError:
            continue
        if len(state) >= 2 and 1 <= state[-1][1] < 8:
            break
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    kept = _samples(db)
    with sqlite3.connect(db) as conn:
        partial = conn.execute(
            "SELECT config_id, COUNT(DISTINCT item_index) FROM samples GROUP BY config_id ORDER BY 1"
        ).fetchall()
    assert len(partial) >= 2 and partial[0][1] == 8 and partial[-1][1] < 8, "killed inside a later configuration"
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = _samples(db)
    with sqlite3.connect(db) as conn:
        configs = conn.execute("SELECT COUNT(*) FROM configs").fetchone()[0]
    assert configs == 4
    assert len(rows) == 4 * 8 * 2 == len({r[:3] for r in rows})
    assert set(kept) <= set(rows)  # nothing stored before the kill was redone or changed


@given(points=st.lists(st.tuples(st.integers(1, 20), st.sampled_from([0.0, 0.2, 0.5, 0.9])), min_size=1, max_size=12))
def test_pareto_marks_match_brute_force(points: list[tuple[int, float]]) -> None:
    marks = verdict.pareto(points)
    for (m, a), mark in zip(points, marks, strict=True):
        better = [(m2, a2) for m2, a2 in points if m2 <= m and a2 >= a and (m2 < m or a2 > a)]
        assert mark is (not better)
    assert any(marks)


@given(points=st.lists(st.tuples(st.integers(1, 6), st.sampled_from([0.5, 1.0, 3.0, math.inf]),
                                 st.sampled_from([0.0, 0.5, 0.9])), min_size=1, max_size=12))  # fmt: skip
def test_pareto_marks_with_time_match_brute_force(points: list[tuple[int, float, float]]) -> None:
    """Memory, seconds per answer (∞: not measured) and accuracy: a point is marked unless another needs no more
    memory, is no slower and at least as accurate, and is strictly better in one of them."""
    marks = verdict.pareto(points)
    for (m, t, a), mark in zip(points, marks, strict=True):
        better = [p for p in points if p[0] <= m and p[1] <= t and p[2] >= a and (p[0] < m or p[1] < t or p[2] > a)]
        assert mark is (not better)
    assert any(marks)
    # Where no time was measured, the marks are the memory-accuracy frontier's.
    untimed = [(m, math.inf, a) for m, _, a in points]
    assert verdict.pareto(untimed) == verdict.pareto([(m, a) for m, _, a in points])
    # A point that is the fastest (strictly) is always on the frontier, whatever its memory and accuracy.
    fastest = min(t for _, t, _ in points)
    if sum(t == fastest for _, t, _ in points) == 1 and fastest < math.inf:
        best_of_them = next(i for i, p in enumerate(points) if p[1] == fastest)
        assert marks[best_of_them]


def test_dry_run_shows_the_runs_download_and_time_plan_and_runs_nothing(
    family: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path / "family.toml", json.loads(json.dumps(family)))
    db = tmp_path / "d.db"
    args = [a for a in _args(catalog, db) if a not in ("--exhaustive",)]
    result = CliRunner().invoke(cli, [*args, "--dry-run", "--time", "30m"])
    assert result.exit_code == 0, result.output
    assert "Time plan (--time 30 min)" in result.output and "tiny-small:Q8_0" in result.output
    assert "Download: 0 B to fetch" in result.output  # local files: nothing to download
    assert not db.exists()
    planned = json.loads(CliRunner().invoke(cli, [*args, "--dry-run", "--json"]).output)
    assert len(planned[0]) == 4 and all(p["estimated_s_per_question"] > 0 for p in planned[0])
    assert all(p["budgets"] == [32, 64] and p["k"] == 2 and p["configurations"] == 4 for p in planned[0])


def test_default_race_for_8gb_asks_the_studys_question() -> None:
    request = compare.Request(budget_bytes=8 * 10**9)
    arms = compare.arms(request, "math500")
    assert arms and {a.ref.file.quant for a in arms} <= set(compare.DEFAULT_QUANTS)
    assert len({a.ref.model.name for a in arms}) == compare.DEFAULT_SIZES
    for arm in arms:
        # Every configuration a run answers fits the budget, and a run never asks more votes than fit.
        assert all(b <= 8 * 10**9 for b in arm.predicted.values())
        assert set(arm.budgets) <= set(compare.DEFAULT_BUDGETS) and arm.votes[-1] <= arm.k <= 8
    # Each budget of the ladder is answered once per file and KV type, with the most votes that fit.
    for (label, _kv), group in itertools.groupby(sorted(arms, key=lambda a: (a.ref.label, a.kv.value)),
                                                key=lambda a: (a.ref.label, a.kv.value)):  # fmt: skip
        budgets = [b for a in group for b in a.budgets]
        assert len(budgets) == len(set(budgets)), label


def test_a_run_gets_the_most_votes_that_fit_at_each_budget(tmp_path: Path) -> None:
    catalog = _family_catalog(tmp_path, ("edgeval-tiny-l",))
    book = Catalog.load((catalog,))
    ref = book.resolve("edgeval-tiny-l")[0]
    kv_per_token = memory.kv_bytes_per_token(ref.model.arch)
    base = compare.arms(compare.Request(budget_bytes=10**9, models=("edgeval-tiny-l",), kv=(KVType.F16,),
                                        budgets=(512, 1024), votes=(1, 4), catalogs=(catalog,)), "arith")  # fmt: skip
    assert [(a.budgets, a.k) for a in base] == [((512, 1024), 4)]
    # A budget that leaves room for 4 votes at 512 tokens, not at 1024: two runs.
    tight = base[0].predicted[(512, 4)] + 2 * 256 * kv_per_token
    split = compare.arms(compare.Request(budget_bytes=int(tight), models=("edgeval-tiny-l",), kv=(KVType.F16,),
                                         budgets=(512, 1024), votes=(1, 4), catalogs=(catalog,)), "arith")  # fmt: skip
    assert sorted((a.budgets, a.k) for a in split) == [((512,), 4), ((1024,), 1)]


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


def test_demo_family_and_its_runs(tmp_path: Path) -> None:
    setup = demo.build_family(tmp_path / "demo", threads=2)
    request = demo.request(setup, limit=3)
    arms = compare.arms(request, "arith")
    family = demo.family_sources()
    assert len(family) >= 3
    assert len(arms) == len(family) * len(demo.QUANTS)
    assert all(a.budgets == demo.BUDGETS and a.k == 4 and a.votes == (1, 4) for a in arms)
    assert len({a.ref.model.params for a in arms}) == len(family)


def test_demo_runs_offline_and_leaves_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "reports"), "--time", "6s"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "edgeval-demo.md").exists() and (tmp_path / "reports" / "edgeval-demo.png").exists()
    assert "Best under 1 GB" in result.output


def test_terminal_tables_keep_every_number_whole_at_80_columns(
    compared: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from edgeval.comparison import plan
    from edgeval.edges.store import Store
    from edgeval.faces import ui, ui_compare

    catalog, db, _ = compared
    with Store(db) as store:
        comparisons = compare.from_store(store)
    plan_result = plan.plan(Catalog.load().everything(), plan.Axes(), 8 * 10**9)
    for width in (80, 120):
        screen = Console(width=width, file=io.StringIO(), color_system=None)
        monkeypatch.setattr(ui, "console", screen)
        ui_compare.render_compare(comparisons)
        ui.render_plan(plan_result)
        if width == 80:  # (wide, the models table adds each file's source, cut to 40 characters)
            ui.render_models(Catalog.load([catalog]).everything())
        text = screen.file.getvalue()  # type: ignore[attr-defined]
        assert not re.search(r"\S…", text)  # nothing cut short ("… 56 more (--all)" is the plan's own line)
        assert max(len(line) for line in text.splitlines()) <= width
        for row in comparisons[0].rows:
            assert f"{100 * row.result.accuracy_maj:.0f}%" in text and row.model in text
        assert "qwen3-0.6b:Q2_K" in text and "0.29" in text  # a model row and its weight GB, whole


def test_once_its_larger_budgets_are_beaten_a_run_generates_only_up_to_the_largest_left(tmp_path: Path) -> None:
    from edgeval.core import racing
    from edgeval.edges.store import Store

    catalog = _family_catalog(tmp_path, ("edgeval-tiny-s",))
    request = compare.Request(budget_bytes=10**9, tasks=("arith",), models=("edgeval-tiny-s",), kv=(KVType.F16,),
                              budgets=(8, 24, 48), votes=(1, 2), repack=False, catalogs=(catalog,),
                              budget_message="")  # the family's own forcing, the end tag alone  # fmt: skip
    (arm,) = compare.arms(request, "arith")
    with Store(tmp_path / "ladder.db") as store:
        race = compare._Race(request, "arith", [arm], store.add_run({"edgeval": "t", "llama_cpp_python": "t",
                             "backend": "CPU"}, "t"), time.time(), None)  # fmt: skip
        race.n_questions = 6
        state = compare.RaceProgress()
        compare._run_arm(race, 0, 3, store, state, None, [], 1)
        ids = race.config_ids[0]
        first_round = race.tokens
        # The 48-token rung is beaten at both vote counts (as a cheaper configuration's interval would say).
        beaten = racing.Difference(mean=0.5, low=0.1, high=0.9, n=3, alpha=0.05)
        for j in arm.votes:
            race.eliminated[f"{ids[48]}:{j}"] = racing.Elimination(f"{ids[48]}:{j}", f"{ids[24]}:{j}", beaten)
        assert compare._budgets_in_race(race, 0) == (8, 24)
        compare._run_arm(race, 0, 6, store, state, None, [], 1)
        assert race.config_ids[0] == ids  # the same rows
        done = {b: len({s.item_index for s in store.samples(ids[b])}) for b in (8, 24, 48)}
        assert done == {8: 6, 24: 6, 48: 3}
        # Three more questions cost fewer tokens than the same three with the 48-token rung still in the race.
        with Store(tmp_path / "whole.db") as other:
            whole = compare._Race(request, "arith", [arm], other.add_run({"edgeval": "t", "llama_cpp_python": "t",
                                  "backend": "CPU"}, "t"), time.time(), None)  # fmt: skip
            whole.n_questions = 6
            compare._run_arm(whole, 0, 3, other, compare.RaceProgress(), None, [], 1)
            before = whole.tokens
            compare._run_arm(whole, 0, 6, other, compare.RaceProgress(), None, [], 1)
        assert before == first_round  # the same samples
        assert race.tokens - first_round < whole.tokens - before
        # The 24-token rung's memory stays paired with the run that measured it.
        row = store.config(ids[24])
        assert row["peak_rss_bytes"] and row["arm_predicted_bytes"]


def test_family_picks_the_default_models_per_generation(tmp_path: Path) -> None:
    from edgeval.comparison import arms as arms_mod
    from edgeval.edges.catalog import Catalog

    book = Catalog.load()

    def picked(family: str, budget: float = 8e9) -> list[str]:
        request = compare.Request(budget_bytes=int(budget), family=family, repack=False)
        return [r.label for r in arms_mod.default_refs(book, request)]

    # the generations meet at about the same footprint: the largest of each that fits with room to think
    assert picked("all") == ["qwen3-8b:Q4_K_M", "qwen3.5-9b:Q4_K_M"]
    assert {label.split(":")[0] for label in picked("qwen3")} == {"qwen3-4b", "qwen3-8b"}
    assert {label.split(":")[0] for label in picked("qwen3.5")} == {"qwen3.5-4b", "qwen3.5-9b"}
    db = str(tmp_path / "f.db")
    args = ["compare", "--budget", "8GB", "--no-repack", "--dry-run", "--db", db, "--family", "qwen3.5"]
    wrong = CliRunner().invoke(cli, [*args, "--models", "qwen3-8b:Q4_K_M"])
    assert wrong.exit_code == 1 and "none of --models is of generation qwen3.5" in wrong.output
    assert wrong.output.strip().count("\n") <= 1  # the error and its hint
