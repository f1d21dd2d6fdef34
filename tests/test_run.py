"""`edgeval run`: one configuration end to end — worker process, store, resume, crashes, bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from edgeval.core import prompts
from edgeval.core.errors import ConfigurationError
from edgeval.core.memory import RepackMode
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges.store import Store
from edgeval.faces.cli import cli
from edgeval.llama import doctor, engine
from edgeval.running import sweep, worker

JSON_KEYS = {"model", "task", "kv_type_k", "kv_type_v", "ctx", "budget_tokens", "k", "n_items", "accuracy_maj",
             "accuracy_avg", "ci95", "peak_rss_bytes", "peak_rss_anon_bytes", "peak_rss_file_bytes", "predicted_bytes",
             "prompt_tokens_per_s", "decode_tokens_per_s", "ttft_s", "wall_s", "status", "repack"}  # fmt: skip


def _run(model: Path, db: Path, *extra: str) -> list[str]:
    return ["run", str(model), "--task", "arith", "--no-repack", "--db", str(db), *extra]


def test_run_prints_a_table_and_json_with_every_key(tiny_models: dict[WeightQuant, Path], tmp_path: Path) -> None:
    args = _run(tiny_models[WeightQuant.Q8_0], tmp_path / "r.db", "--k", "4", "--kv", "q8_0", "--limit", "3",
                "--budget-tokens", "24")  # fmt: skip
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    for label in ("maj@4", "avg@k", "memory", "speed", "answers forced"):
        assert label in table.output
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data.keys() >= JSON_KEYS
    assert data["status"] == "done" and data["n_items"] == 3 and data["k"] == 4
    assert data["kv_type_k"] == data["kv_type_v"] == "q8_0"
    assert 0.0 <= data["ci95"][0] <= data["accuracy_maj"] <= data["ci95"][1] <= 1.0
    assert data["peak_rss_bytes"] > 0 and data["predicted_bytes"] > 0
    assert data["decode_tokens_per_s"] > 0
    with sqlite3.connect(tmp_path / "r.db") as db:
        assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 3 * 4  # the second call ran nothing new
        run = db.execute("SELECT edgeval_version, llama_cpp_python, backend, hardware FROM runs").fetchone()
        assert run[0] and run[1] and run[2] and json.loads(run[3])["cpu"]
        assert len(db.execute("SELECT model_sha256 FROM configs").fetchone()[0]) == 64


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RssAnon/RssFile are Linux's")
@pytest.mark.parametrize("repack", ["--no-repack", None])  # None: the probe's mode (CPU_REPACK where AMX crashes)
def test_run_records_the_peak_as_anonymous_and_file_backed_parts(
    repack: str | None, tiny_models: dict[WeightQuant, Path], tmp_path: Path
) -> None:
    # --ctx beyond what the budget needs: the run's own prediction (its KV sized by --ctx) is the one measured.
    args = [a for a in _run(tiny_models[WeightQuant.Q4_K_M], tmp_path / "r.db", "--limit", "1", "--budget-tokens", "8",
                            "--ctx", "700") if a != "--no-repack"]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, *([repack] if repack else []), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    anon, file, peak = data["peak_rss_anon_bytes"], data["peak_rss_file_bytes"], data["peak_rss_bytes"]
    assert anon > 0 and file > 0
    assert 0.95 * peak <= anon + file <= peak  # the rest is shared memory (RssShmem)
    mode = doctor.repack_cached() if repack is None else RepackMode.OFF
    assert mode is not None  # the run probed (once) when repacking was left open
    repacked = mode is not RepackMode.OFF
    assert data["repack"] is repacked and data["repack_mode"] == mode.value
    with sqlite3.connect(tmp_path / "r.db") as db:
        stored = db.execute("SELECT peak_rss_anon_bytes, peak_rss_file_bytes, repack, repack_mode FROM configs")
        assert stored.fetchone() == (anon, file, int(repacked), mode.value)


def test_the_thinking_budget_forces_the_message_and_the_end_tag_as_llama_cpp_does(
    tiny_models: dict[WeightQuant, Path],
) -> None:
    with (
        engine.Model(tiny_models[WeightQuant.Q8_0]) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=1024, n_seq=3)) as ctx,
    ):
        forcing = engine.reasoning_budget(model, message=prompts.BUDGET_MESSAGE, answer_tokens=5)
        # The prompt opens the reasoning itself (as Qwen3-2507 Thinking's template does): the count starts at once.
        prompt = model.tokenize(prompts.chat_prompt("What is 2 + 2?", "Think.", thinking=True) + "<think>\n")
        out = ctx.generate(prompt, k=3, max_tokens=20, seeds=(1, 2, 3), forcing=forcing)
        plain = ctx.generate(prompt, k=3, max_tokens=20, seeds=(1, 2, 3))
        message = model.detokenize(forcing.tokens)
    assert message == prompts.BUDGET_MESSAGE + prompts.THINK_CLOSE
    for tokens, forced, finish in zip(out.tokens, out.forced, out.finish, strict=True):
        if forced:  # a random model almost never closes its reasoning by itself
            # the prompt's "\n" after <think> counted (the server reads its generation prefix), then 19 tokens;
            # a token completing a UTF-8 character may come first
            at = next(i for i in range(len(tokens)) if tuple(tokens[i : i + len(forcing.tokens)]) == forcing.tokens)
            assert 19 <= at <= 22
            assert finish == "forced" and len(tokens) <= forcing.n_predict(20)
    assert any(out.forced)
    assert forcing.n_predict(20) == 20 + 1 + len(forcing.tokens) + 5
    assert not any(plain.forced) and set(plain.finish) <= {"length", "stop"}


def test_same_seed_same_samples(tiny_models: dict[WeightQuant, Path], tmp_path: Path) -> None:
    def texts(db: Path, seed: int) -> list[str]:
        spec = sweep.RunSpec(
            tiny_models[WeightQuant.Q4_K_M], "tiny", "arith", k=2, budget_tokens=12, limit=2, seed=seed
        )
        with Store(db) as store:
            sweep.run(spec, store)
            return [s.text for s in store.samples(1)]

    first, second = texts(tmp_path / "a.db", 5), texts(tmp_path / "b.db", 5)
    assert first == second and len(first) == 4
    assert texts(tmp_path / "c.db", 6) != first


def test_a_killed_run_resumes_without_redoing_or_duplicating(
    tiny_models: dict[WeightQuant, Path], tmp_path: Path
) -> None:
    db = tmp_path / "kill.db"
    args = _run(tiny_models[WeightQuant.Q8_0], db, "--k", "2", "--limit", "30", "--budget-tokens", "400")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, "-m", "edgeval", *args], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    stored = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and stored < 3:
        time.sleep(0.05)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    stored = conn.execute("SELECT COUNT(DISTINCT item_index) FROM samples").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    os.killpg(child.pid, signal.SIGKILL)  # the CLI and its worker, at once
    child.wait()
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT COUNT(DISTINCT item_index) FROM samples").fetchone()[0]
        kept = conn.execute("SELECT item_index, sample_index, text FROM samples ORDER BY 1, 2").fetchall()
    assert 1 <= before < 30, "the run was killed mid-way"
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT item_index, sample_index, text FROM samples ORDER BY 1, 2").fetchall()
        timings = conn.execute("SELECT COUNT(*) FROM item_timings").fetchone()[0]
    assert len(rows) == 30 * 2 == len(set((r[0], r[1]) for r in rows))
    assert rows[: len(kept)] == kept  # nothing finished was redone
    assert timings == 30
    assert json.loads(result.output)["n_done"] == 30


def test_a_crash_inside_the_worker_is_recorded_and_the_caller_goes_on(
    tiny_models: dict[WeightQuant, Path], tmp_path: Path
) -> None:
    spec = sweep.RunSpec(tiny_models[WeightQuant.Q8_0], "tiny", "arith", k=2, budget_tokens=300, limit=10)
    outcome: dict[str, object] = {}
    seen = threading.Event()
    pids: list[int] = []

    def progress(state: sweep.Progress) -> None:
        if state.items_done >= 1 and state.worker_pid:
            pids.append(state.worker_pid)
            seen.set()

    def target() -> None:
        with Store(tmp_path / "crash.db") as store:
            outcome["result"] = sweep.run(spec, store, progress)

    thread = threading.Thread(target=target)
    thread.start()
    assert seen.wait(60)
    worker = psutil.Process(pids[0])
    assert worker.ppid() == os.getpid()
    worker.send_signal(signal.SIGSEGV)  # what a segfault inside llama.cpp does to the process
    thread.join(60)
    result = outcome["result"]
    assert result.status == "crashed"  # type: ignore[attr-defined]
    assert "SIGSEGV" in result.message  # type: ignore[attr-defined]
    with Store(tmp_path / "crash.db") as store:
        row = store.config(1)
        assert row["log_tail"]  # llama.cpp's last lines, kept for the user
        again = sweep.run(spec, store)
    assert again.status == "done" and again.n_done == 10


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "aime24"], "unknown task 'aime24'"),
        (["--task", "arith", "--ctx", "64"], "--ctx 64 cannot hold"),
        (["--task", "arith", "--budget-tokens", "5000"], "trained for"),
    ],
)
def test_bad_run_settings_are_one_line_errors(
    extra: list[str], message: str, tiny_models: dict[WeightQuant, Path], tmp_path: Path
) -> None:
    args = ["run", str(tiny_models[WeightQuant.Q8_0]), "--no-repack", "--db", str(tmp_path / "x.db"), *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0


def test_malformed_task_file_names_the_line(tiny_models: dict[WeightQuant, Path], tmp_path: Path) -> None:
    task = tmp_path / "mine.jsonl"
    task.write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    result = CliRunner().invoke(cli, ["run", str(tiny_models[WeightQuant.Q8_0]), "--task", str(task), "--no-repack",
                                      "--db", str(tmp_path / "x.db")])  # fmt: skip
    assert result.exit_code == 1 and "line 2" in result.output


def test_bad_model_files_are_caught_before_llama_cpp(tiny_models: dict[WeightQuant, Path], tmp_path: Path) -> None:
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(tiny_models[WeightQuant.Q8_0].read_bytes()[:50_000])
    html = tmp_path / "page.gguf"
    html.write_text("<html>Not Found</html>")
    for path, message in [(tmp_path / "none.gguf", "no such file"), (truncated, "truncated"), (html, "not a GGUF")]:
        result = CliRunner().invoke(cli, ["run", str(path), "--task", "arith", "--db", str(tmp_path / "x.db")])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output


def test_kv_type_choices_are_usage_errors(tiny_models: dict[WeightQuant, Path]) -> None:
    result = CliRunner().invoke(cli, ["run", str(tiny_models[WeightQuant.Q8_0]), "--task", "arith", "--kv", "q3_k"])
    assert result.exit_code == 2


def test_mixed_kv_types_run(tiny_models: dict[WeightQuant, Path], tmp_path: Path) -> None:
    args = _run(tiny_models[WeightQuant.Q8_0], tmp_path / "m.db", "--kv-k", "q8_0", "--kv-v", "q4_0", "--limit", "2",
                "--budget-tokens", "8", "--json")  # fmt: skip
    data = json.loads(CliRunner().invoke(cli, args).output)
    assert (data["kv_type_k"], data["kv_type_v"], data["status"]) == ("q8_0", "q4_0", "done")
    assert KVType(data["kv_type_v"]).quantized


def _workers() -> set[int]:
    """This process's live worker processes (multiprocessing's spawned interpreters; not its resource tracker)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.Error:  # ended meanwhile
            continue
    return out


def test_the_worker_started_while_the_run_prepares_answers_and_an_unused_one_is_ended(
    tiny_models: dict[WeightQuant, Path], tmp_path: Path
) -> None:
    before = _workers()
    spec = sweep.RunSpec(tiny_models[WeightQuant.Q8_0], "tiny", "arith", budget_tokens=8, limit=2, repack=False)
    seen: list[int] = []
    with Store(tmp_path / "e.db") as store:
        early = sweep.Early()
        ours = early.process.pid

        def progress(state: sweep.Progress) -> None:
            seen.append(state.worker_pid or 0)

        with early:
            prepared = sweep.prepare(spec, store)
            assert _holds(early, 8 << 20) > 8 << 20  # an interpreter at least: what the fit check credits back
            result = sweep.execute_ladder(prepared, store, progress, early)[8]
        assert early.held_bytes() == 0
        assert result.status == "done" and result.n_done == 2
        assert set(seen) == {ours}  # the run's worker is the one started before it was prepared
        # prepare fails: the early worker is never handed work, and is ended
        with pytest.raises(ConfigurationError, match="cannot hold"):
            sweep.run(replace(spec, ctx=64), store)
    assert _workers() <= before


def _holds(early: sweep.Early, at_least: int, timeout_s: float = 30.0) -> int:
    """What `early` holds once it holds `at_least` bytes, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and early.held_bytes() < at_least:
        time.sleep(0.05)
    return early.held_bytes()


def test_the_early_worker_loads_the_checked_file_while_the_parent_prepares(
    tiny_models: dict[WeightQuant, Path], tmp_path: Path
) -> None:
    path = tiny_models[WeightQuant.Q8_0]
    spec = sweep.RunSpec(path, "tiny", "arith", budget_tokens=8, limit=2, repack=RepackMode.ALL)
    told: list[tuple[Path, engine.LoadOptions, int]] = []
    with Store(tmp_path / "p.db") as store, sweep.Early() as early:
        time.sleep(1.0)  # started: its interpreter and llama.cpp's libraries are what it holds so far
        started = early.held_bytes()
        prepared = sweep.prepare(spec, store, loading=lambda *told_: (told.append(told_), early.preload(*told_)))
        ((file, options, weights),) = told
        assert file == path and options == prepared.spec.load_options() and weights > 1 << 20
        # repacked weights are read into the worker's own memory: it holds them before it is handed any work, and
        # once the parent has heard the load end (before its fit checks and speed probes)
        assert _holds(early, started + weights) >= started + weights
        early.settle()
        assert not early.loading and early.held_bytes() >= started + weights
        result = sweep.execute_ladder(prepared, store, None, early)[8]
        assert result.status == "done" and result.n_done == 2
    with sweep.Early() as early:  # a worker that dies loading does not keep the parent waiting
        early.preload(path, options, weights)
        early.process.kill()
        early.settle()
        assert not early.process.is_alive()
    with sweep.Early() as early:  # weights that do not fit twice in the memory free now are left to the payload
        time.sleep(1.0)
        started = early.held_bytes()
        early.preload(path, options, psutil.virtual_memory().available)
        assert _holds(early, started + weights, timeout_s=2.0) < started + weights


def test_the_preloaded_model_answers_only_for_the_same_file_loaded_the_same_way(
    tiny_models: dict[WeightQuant, Path],
) -> None:
    path = tiny_models[WeightQuant.Q8_0]
    plain = engine.LoadOptions(repack=RepackMode.OFF)
    preloaded = engine.Model(path, plain)
    assert worker._loaded(path, plain, preloaded) is preloaded
    other = worker._loaded(path, engine.LoadOptions(repack=RepackMode.ALL), preloaded)
    try:
        assert other is not preloaded and other.options.repack_mode is RepackMode.ALL
        assert preloaded._ptr is None  # the one loaded the other way is closed, not kept beside it
    finally:
        other.close()


def test_an_early_worker_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    code = (
        "import time; from edgeval.running import sweep; e = sweep.Early(); print(e.process.pid, flush=True); "
        "time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    parent.kill()  # SIGKILL: no chance to end its early worker itself
    parent.wait()
    child.wait(timeout=30)  # the worker waiting for a payload that will never come ends too


def test_ctrl_c_while_a_run_prepares_leaves_the_early_worker_to_its_parent() -> None:
    # Ctrl-C reaches the whole process group; a worker still starting would print a traceback of its own, so it
    # ignores it until it has work: the parent ends one it never handed any.
    code = (
        "import signal, sys\nfrom edgeval.running import sweep\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "with sweep.Early() as e:\n    print(e.process.pid, flush=True)\n    sys.stdin.readline()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert parent.stdout is not None and parent.stdin is not None
    child = psutil.Process(int(parent.stdout.readline()))
    time.sleep(0.3)  # at any moment of its start
    child.send_signal(signal.SIGINT)
    time.sleep(1.0)
    alive = child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    _, err = parent.communicate("\n", timeout=30)  # the parent's `with` closes: it ends the worker
    assert alive and parent.returncode == 0 and "Traceback" not in err, err
    child.wait(timeout=30)
