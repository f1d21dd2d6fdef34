"""`edgeval kld`: the KL numbers, teacher-forced scoring (evicting as generation does), the ordering of the trained
family's quantizations, the store, the command line and its errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from edgeval.comparison import compare
from edgeval.core import kld, prompts
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges.store import Store
from edgeval.faces import demo, report, ui, ui_compare
from edgeval.faces.cli import cli
from edgeval.llama import engine
from edgeval.running import kld_run

from .conftest import GREEDY, arith_prompts

BUDGET = 48  # the family's arith reasoning is 30-45 tokens


def _full_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    lp, lq = kld.log_softmax(p_logits), kld.log_softmax(q_logits)
    return float(np.sum(np.exp(lp) * (lp - lq)))


# ---------------------------------------------------------------- the numbers (pure)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.floats(0.1, 8.0))
def test_top_k_with_the_rest_is_a_lower_bound_exact_at_the_whole_vocabulary(seed: int, k: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(40) * scale).astype(np.float32)
    q = (p + rng.standard_normal(40) * 0.5).astype(np.float32)
    full = _full_kl(p, q)
    approx, _ = kld.divergence(kld.reference_row(p, k), q)
    assert -1e-6 <= approx <= full + 1e-5
    exact, agree = kld.divergence(kld.reference_row(p, 40), q)
    assert exact == pytest.approx(full, rel=1e-5, abs=1e-6)
    assert agree == (int(np.argmax(p)) == int(np.argmax(q)))


def test_a_row_against_itself_is_exactly_zero_and_agrees() -> None:
    row = np.random.default_rng(3).standard_normal(1024).astype(np.float32) * 4
    for k in (1, 64, 1024):
        assert kld.divergence(kld.reference_row(row, k), row) == (0.0, True)


def _trace(index: int, values: list[float], agree: list[bool], rest: float = 0.0) -> kld.TraceScores:
    return kld.TraceScores(
        index, np.array(values, dtype=np.float32), np.array(agree), np.full(len(values), rest, dtype=np.float32)
    )


def test_the_interval_is_over_traces_and_the_mean_is_per_token() -> None:
    traces = [_trace(0, [0.1, 0.3], [True, False], 0.01), _trace(1, [0.2] * 4, [True] * 4), _trace(2, [0.5], [False])]
    s = kld.summarize(traces)
    assert s.tokens == 7 and s.traces == 3
    assert s.mean_kld == pytest.approx(1.7 / 7)
    assert s.top1_agreement == pytest.approx(5 / 7)
    assert s.rest_mass == pytest.approx(0.02 / 7)
    assert s.kld_ci95 is not None and s.kld_ci95[0] < s.mean_kld < s.kld_ci95[1]
    assert kld.summarize(traces[:1]).kld_ci95 is None  # one trace: no interval
    # identical traces: no spread between the units, a zero-width interval
    same = kld.summarize([traces[1], _trace(3, [0.2] * 4, [True] * 4)])
    assert same.kld_ci95 == pytest.approx((0.2, 0.2))


def test_a_flat_distribution_keeps_more_tokens_until_little_mass_is_left_out() -> None:
    peaked = np.zeros(4096, dtype=np.float32)
    peaked[:10] = 20.0  # ten tokens hold all but ~1e-5 of the mass
    assert kld.reference_row(peaked).ids.size == kld.TOP_K
    falling = -np.arange(4096, dtype=np.float32) / 40  # geometric: 64 tokens hold 80%
    row = kld.reference_row(falling)
    assert kld.TOP_K < row.ids.size < kld.MAX_K and row.rest <= kld.REST_MASS
    flat = np.zeros(4096, dtype=np.float32)
    assert kld.reference_row(flat).ids.size == kld.MAX_K  # capped: a quarter of the mass kept, the bound is loose
    assert kld.reference_row(flat).rest == pytest.approx(0.75, rel=1e-5)


def test_position_buckets_double_and_shrink_for_short_traces() -> None:
    assert kld.bucket_edges(6000) == [0, 1024, 2048, 4096, 8192]
    assert kld.bucket_edges(1500) == [0, 256, 512, 1024, 2048]
    assert kld.bucket_edges(45) == [0, 16, 32, 64]
    trace = _trace(0, list(range(45)), [True] * 45)
    buckets = kld.by_position([trace])
    assert [b.label for b in buckets] == ["0–16", "16–32", "32–64"]
    assert [b.summary.tokens for b in buckets] == [16, 16, 13]
    assert buckets[2].summary.mean_kld == pytest.approx(np.arange(32, 45).mean())


# ---------------------------------------------------------------- on the trained family (real llama.cpp)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[WeightQuant, Path]:
    """edgeval-tiny-s (the one 2-bit weights hurt) at F16 and three quantizations."""
    source = demo.family_sources()[0]
    folder = tmp_path_factory.mktemp("family")
    quants = (WeightQuant.Q8_0, WeightQuant.Q4_K_M, WeightQuant.Q2_K)
    return {WeightQuant.F16: source, **{q: demo.quantized(source, q, folder, threads=2) for q in quants}}


@pytest.fixture(scope="module")
def traced_db(family: dict[WeightQuant, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store holding the F16 reference's traces: 8 arith questions, generated once through the run path."""
    home = tmp_path_factory.mktemp("home")
    db = home / "kld.db"
    with pytest.MonkeyPatch.context() as mp, Store(db) as store:
        mp.setenv("EDGEVAL_HOME", str(home))
        kld_run.run(_request(family, WeightQuant.F16, limit=8), store)
    yield db


def _request(family: dict[WeightQuant, Path], tested: WeightQuant, **options: object) -> kld_run.Request:
    settings = {"task": "arith", "budget_tokens": BUDGET, "repack": False, "threads": 2, **options}
    return kld_run.Request(
        reference=family[WeightQuant.F16], reference_label="tiny-s:F16", tested=family[tested],
        tested_label=f"tiny-s:{tested.value}", **settings,  # type: ignore[arg-type]
    )  # fmt: skip


def _kld(db: Path, request: kld_run.Request) -> kld_run.Result:
    with Store(db) as store:
        return kld_run.run(request, store)


def test_a_configuration_against_itself_diverges_by_exactly_zero(
    family: dict[WeightQuant, Path], traced_db: Path
) -> None:
    result = _kld(traced_db, _request(family, WeightQuant.F16))
    s = result.overall
    assert s.traces == 8 and s.tokens > 8 * 20
    assert s.mean_kld == 0.0 and s.p99_kld == 0.0 and s.top1_agreement == 1.0
    assert all(b.summary.mean_kld == 0.0 for b in result.by_position)


def test_the_default_load_takes_the_probes_repacking_mode(family: dict[WeightQuant, Path], traced_db: Path) -> None:
    # repack None: as `edgeval kld` loads by default (here the probe's mode; CPU_REPACK only on an AMX Xeon).
    s = _kld(traced_db, _request(family, WeightQuant.Q8_0, repack=None)).overall
    assert s.traces == 8 and 0 < s.mean_kld < 0.01


def test_the_family_orders_q8_below_q4_k_m_below_q2_k(family: dict[WeightQuant, Path], traced_db: Path) -> None:
    means = {q: _kld(traced_db, _request(family, q)) for q in (WeightQuant.Q8_0, WeightQuant.Q4_K_M, WeightQuant.Q2_K)}
    q8, q4, q2 = (means[q].overall for q in means)
    assert 0 < q8.mean_kld < q4.mean_kld < q2.mean_kld
    assert q8.top1_agreement >= q2.top1_agreement
    ci = q2.kld_ci95
    assert ci is not None and ci[0] <= q2.mean_kld <= ci[1]
    # the same traces and tokens for every tested file: the reference's
    assert len({m.trace_config_id for m in means.values()}) == 1
    assert len({m.overall.tokens for m in means.values()}) == 1


def test_top_k_agrees_with_the_full_vocabulary(family: dict[WeightQuant, Path], traced_db: Path) -> None:
    approx = _kld(traced_db, _request(family, WeightQuant.Q2_K))
    full = _kld(traced_db, _request(family, WeightQuant.Q2_K, exact=True))  # whole rows: the full divergence
    assert (full.top_k, full.max_k, full.overall.rest_mass) == (1024, 1024, 0.0)
    assert approx.kld_id != full.kld_id
    assert approx.overall.mean_kld <= full.overall.mean_kld * (1 + 1e-6)  # a lower bound (float32 rounding aside)
    assert approx.overall.mean_kld == pytest.approx(full.overall.mean_kld, rel=0.01)  # kld.TOP_K's stated tolerance
    assert approx.overall.top1_agreement == full.overall.top1_agreement


def test_a_kv_cache_type_alone_gives_a_divergence(family: dict[WeightQuant, Path], traced_db: Path) -> None:
    result = _kld(traced_db, _request(family, WeightQuant.F16, kv_type_k=KVType.Q4_0, kv_type_v=KVType.Q4_0))
    assert result.overall.mean_kld > 0
    assert (result.kv_type_k, result.kv_type_v) == ("q4_0", "q4_0")


def test_a_window_longer_than_the_traces_changes_nothing_and_a_short_one_does(
    family: dict[WeightQuant, Path], traced_db: Path
) -> None:
    assert _kld(traced_db, _request(family, WeightQuant.F16, kv_window=256)).overall.mean_kld == 0.0
    short = _kld(traced_db, _request(family, WeightQuant.F16, kv_window=16)).overall
    assert short.mean_kld > 0.05
    assert short.top1_agreement < 1.0


def test_teacher_forcing_with_a_window_evicts_as_generation_did() -> None:
    """Greedy generation with a 16-token window, then its tokens scored with the same window: each row's top token
    is the token generation chose. Scored without the window, the same rows disagree (eviction changed them)."""
    source = demo.family_sources()[0]
    with engine.Model(source) as model, engine.Context(model, engine.ContextOptions(n_ctx=512)) as ctx:
        prompt = arith_prompts(model, 1)[0] + model.tokenize(prompts.THINK_OPEN + "\n")
        out = ctx.generate(prompt, max_tokens=40, sampling=GREEDY, seeds=(0,), window=16)
        tokens = list(out.tokens[0])
        assert out.evicted[0] > 0 and len(tokens) >= 30
        windowed = ctx.score(prompt, tokens, lambda row: int(np.argmax(row)), window=16)
        plain = ctx.score(prompt, tokens, lambda row: int(np.argmax(row)))
    assert windowed == tokens
    assert plain != tokens


def test_kld_command_prints_json_and_a_table_and_reuses_what_is_stored(
    family: dict[WeightQuant, Path], traced_db: Path
) -> None:
    args = ["kld", str(family[WeightQuant.Q4_K_M]), "--reference", str(family[WeightQuant.F16]), "--task", "arith",
            "--budget-tokens", str(BUDGET), "--kv", "q8_0", "--no-repack", "--db", str(traced_db)]  # fmt: skip
    first = CliRunner().invoke(cli, [*args, "--json"])
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data.keys() >= {"mean_kld", "kld_ci95", "top1_agreement", "tokens", "by_position", "median_kld", "p99_kld"}
    assert data["mean_kld"] > 0 and data["kv_type_k"] == "q8_0" and data["scored_now"] == 8
    assert data["kld_ci95"][0] <= data["mean_kld"] <= data["kld_ci95"][1]
    assert sum(b["tokens"] for b in data["by_position"]) == data["tokens"]
    untasked = [a for a in args if a not in ("--task", "arith")]  # the task the reference has samples of
    again = CliRunner().invoke(cli, [*untasked, "--json"])
    assert json.loads(again.output)["scored_now"] == 0  # every trace was stored
    assert (
        json.loads(again.output)["kld_id"] == data["kld_id"]
        and json.loads(again.output)["mean_kld"] == data["mean_kld"]
    )
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    for label in ("mean KLD", "top-1 agreement", "by position", "0–16"):
        assert label in table.output
    with Store(traced_db) as store:
        row = next(r for r in store.kld_runs() if r["id"] == data["kld_id"])
        assert row["mean_kld"] == data["mean_kld"] and row["tokens"] == data["tokens"]
        assert row["n_traces"] == 8 and json.loads(row["by_position"])[0]["label"] == "0–16"


def test_an_unknown_reference_is_one_line(family: dict[WeightQuant, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["kld", str(family[WeightQuant.Q8_0]), "--reference", "qwen3-nonesuch:Q4_K_M", "--db", str(tmp_path / "x.db")],
    )
    assert result.exit_code == 1
    assert "qwen3-nonesuch" in result.output and len(result.output.strip().splitlines()) == 1


def test_files_of_another_vocabulary_are_refused_in_one_line(
    family: dict[WeightQuant, Path], tiny_models: dict[WeightQuant, Path], traced_db: Path
) -> None:
    args = ["kld", str(tiny_models[WeightQuant.F16]), "--reference", str(family[WeightQuant.F16]), "--task", "arith",
            "--budget-tokens", str(BUDGET), "--no-repack", "--db", str(traced_db)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "vocabulary" in line and "512" in line and "1,024" in line


def test_report_and_compare_show_the_stored_kld(
    family: dict[WeightQuant, Path], traced_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kld(traced_db, _request(family, WeightQuant.F16))
    _kld(traced_db, _request(family, WeightQuant.Q2_K))
    with Store(traced_db) as store:
        [comparison] = compare.from_store(store, "arith")
        # the reference's own configuration was scored against itself (F16 weights, f16 KV): its KLD is 0
        assert {r.kld for r in comparison.rows} == {0.0}
        written = report.write(store, comparison, tmp_path / "reports")
    for width, shown in ((100, "┃ KLD ┃"), (80, "KLD from `edgeval kld` (nats per token): tiny-s:F16 f16 0")):
        out = io.StringIO()
        monkeypatch.setattr(ui, "console", Console(file=out, width=width))
        ui_compare.render_compare([comparison])
        assert shown in out.getvalue()
        assert max(len(line) for line in out.getvalue().splitlines()) <= width
    text = written.markdown.read_text()
    assert "## KL divergence from a reference" in text and "tiny-s:Q2_K, KV f16/f16" in text
    assert written.kld_plot is not None and written.kld_plot.stat().st_size > 10_000
    assert f"]({written.kld_plot.name})" in text
    assert "| KLD |" in text


def test_each_pass_runs_in_a_worker_of_its_own_with_its_peak_beside_the_prediction(
    family: dict[WeightQuant, Path], traced_db: Path
) -> None:
    request = _request(family, WeightQuant.Q2_K, kv_type_k=KVType.Q8_0, kv_type_v=KVType.F16)
    result = _kld(traced_db, request)
    assert result.scored_now == 8 and result.to_json()["tested_peak_rss_bytes"] == result.memory["tested"][0]
    with Store(traced_db) as store:  # the traces' own run: the same F16 file through `run`'s worker
        traced = store.config(result.trace_config_id)
    run_error = traced["peak_rss_bytes"] / traced["predicted_bytes"]
    for kind in ("reference", "tested"):
        peak, predicted = result.memory[kind]
        assert peak and predicted, kind
        # Measured in the pass's own worker: the scoring buffers are predicted as well as `run`'s are (on these
        # 60 MB files the runtime base dominates both, and both are low by a few MiB of it; `run`'s path by ~3 MiB
        # more since its obsolete forced-batch term, which had covered that, left the model — not yet placed).
        assert peak / predicted == pytest.approx(run_error, abs=0.06), (kind, peak, predicted, run_error)


def _on_a_copy(traced_db: Path, tmp_path: Path, tested: Path, reference: Path, *extra: str) -> tuple[Path, list[str]]:
    """A copy of the traced store, and `edgeval kld` of `tested` against `reference` on it."""
    db = tmp_path / "copy.db"
    db.write_bytes(traced_db.read_bytes())
    return db, ["kld", str(tested), "--reference", str(reference), "--task", "arith", "--budget-tokens", str(BUDGET),
                "--no-repack", "--db", str(db), *extra]  # fmt: skip


def _cli_under_a_cap(args: list[str], slack: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`edgeval ARGS` in a process whose address space is capped at what it has mapped once its modules are
    loaded, plus `slack` bytes: room for itself, less than a pass needs."""
    code = (  # what the command imports and initialises first, then the cap: it bounds what comes after
        "import resource, sys, psutil\n"
        "from edgeval.faces.cli import cli\n"
        "from edgeval.faces import cmd_evaluate\n"
        "from edgeval.llama import engine\n"
        "engine.backend_name()\n"
        f"cap = psutil.Process().memory_info().vms + {slack}\n"
        "resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))\n"
        f"cli({args!r}, prog_name='edgeval')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_under_a_capped_address_space_a_pass_is_refused_before_loading_naming_both_figures(
    family: dict[WeightQuant, Path], traced_db: Path, tmp_path: Path
) -> None:
    db, args = _on_a_copy(traced_db, tmp_path, family[WeightQuant.Q2_K], family[WeightQuant.F16], "--kv", "q4_0")
    done = _cli_under_a_cap(args, 24 << 20, tmp_path)
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "address space" in line and "predicted to need" in line, line
    assert re.search(r"need [\d.]+ [MG]B of address space \(ulimit -v\) but [\d.]+ [MkG]?B is available", line), line
    with Store(db) as store:
        (row,) = store.db.execute("SELECT * FROM kld WHERE status != 'done'").fetchall()
        assert row["status"] == "unfit" and "address space" in row["message"] and row["kv_type_k"] == "q4_0"
        assert not store.kld_traces(int(row["id"])) and row["reference_peak_rss_bytes"] is None  # nothing loaded


def test_a_pass_killed_midway_is_one_line_and_the_same_command_resumes(
    family: dict[WeightQuant, Path], traced_db: Path, tmp_path: Path
) -> None:
    db, args = _on_a_copy(traced_db, tmp_path, family[WeightQuant.Q8_0], family[WeightQuant.F16], "--kv-window", "32")
    assert CliRunner().invoke(cli, [*args, "--limit", "3"]).exit_code == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "COLUMNS": "300"}
    child = subprocess.Popen([sys.executable, "-m", "edgeval", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    parent, deadline, killed = psutil.Process(child.pid), time.monotonic() + 60, None
    while killed is None and time.monotonic() < deadline and child.poll() is None:
        for worker in parent.children():
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(worker.cmdline()):  # not multiprocessing's resource tracker
                    worker.kill()  # the first pass's worker (the reference's, on the traces its cache lacks)
                    killed = worker
        time.sleep(0.005)
    _, err = child.communicate(timeout=60)
    assert killed is not None and child.returncode == 1, err
    assert len(err.strip().splitlines()) == 1 and "pass of" in err and "SIGKILL" in err, err
    with Store(db) as store:
        (row,) = store.db.execute("SELECT * FROM kld WHERE status != 'done'").fetchall()
        assert row["status"] == "failed" and "SIGKILL" in row["message"] and row["kv_window"] == 32
        assert len(store.kld_traces(int(row["id"]))) == 3  # what the first command stored survives
    again = CliRunner().invoke(cli, [*args, "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.output)
    assert data["traces"] == 8 and data["scored_now"] == 5
