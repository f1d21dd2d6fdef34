"""Running configurations: each in its own worker process, measured from outside, resumable through the store.

The parent prepares a configuration (task, prompt lengths, KV cells, predicted memory, its row in the store)
while the worker it will hand it to starts (`Early`), then samples that worker's resident memory as it loads the
model once and answers the pending questions — committing each question's k samples as it finishes. A worker that
crashes or is killed is recorded with its status and llama.cpp's last log lines; the caller goes on.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edgeval
from edgeval.core import memory, rendering, resident
from edgeval.core.errors import NotEnoughMemoryError, describe
from edgeval.core.paths import cache_dir
from edgeval.edges import results
from edgeval.edges.store import Claim, ItemTiming, Store
from edgeval.running.worker import Sink
from edgeval.running.worker import main as worker_main
from edgeval.running.worker import waiting as worker_waiting

if TYPE_CHECKING:  # engine (llama.cpp) is imported where a configuration is prepared or run, not with this module
    from edgeval.llama import engine
from edgeval.running.configuration import ANSWER_TOKENS as ANSWER_TOKENS
from edgeval.running.configuration import AUTO as AUTO
from edgeval.running.configuration import DEFAULT_BUDGET_TOKENS as DEFAULT_BUDGET_TOKENS
from edgeval.running.configuration import Prepared as Prepared
from edgeval.running.configuration import RunSpec as RunSpec
from edgeval.running.configuration import free_memory
from edgeval.running.configuration import prepare as prepare
from edgeval.running.configuration import resolve_width as resolve_width
from edgeval.running.configuration import sample_tokens as sample_tokens

HEARTBEAT_S = 10.0  # how often a running configuration's claim says its process is alive
STALE_CLAIM_S = 120.0  # a claim from another host silent this long is taken over


@dataclass
class Progress:
    """What the worker reported so far."""

    items_done: int = 0
    items_total: int = 0
    worker_pid: int | None = None
    tokens: int = 0
    decode_s: float = 0.0
    events: list[str] = field(default_factory=list)


ProgressCallback = Callable[[Progress], None]


def provenance() -> dict[str, object]:
    """Where results come from: versions, backend, hardware."""
    import psutil

    from edgeval.llama import doctor, engine

    return {
        "edgeval": edgeval.__version__,
        "llama_cpp_python": engine.LLAMA_CPP_PYTHON_VERSION,
        "llama_cpp_build": engine.build_version(),
        "backend": engine.backend_name(),
        "hardware": {
            "cpu": doctor.cpu_model(),
            "cores": psutil.cpu_count(logical=False),
            "ram_bytes": psutil.virtual_memory().total,
            "platform": platform.platform(),
            "gpus": [d.description for d in engine.gpu_devices(with_memory=False)],
        },
    }


# ---------------------------------------------------------------- the parent


def _log_tail(path: Path, n: int = 5) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _exit_status(code: int | None) -> tuple[str, str]:
    if code is None:
        return "killed", "the worker did not exit"
    if code < 0:
        name = signal.Signals(-code).name
        status = "killed" if -code in (signal.SIGKILL, signal.SIGTERM) else "crashed"
        why = " (the system may have run out of memory)" if -code == signal.SIGKILL else ""
        return status, f"the worker died from {name}{why}"
    return "failed", f"the worker exited with code {code}"


def pending(prepared: Prepared, store: Store) -> list[int]:
    """Questions not yet answered at every rung."""
    done = set(range(len(prepared.items)))
    for config_id in prepared.config_ids.values():
        done &= store.done_items(config_id, prepared.spec.k)
    return [i for i in range(len(prepared.items)) if i not in done]


def execute(prepared: Prepared, store: Store, progress: ProgressCallback | None = None) -> results.ConfigResult:
    """Run the configuration's pending questions in a worker process; record measurements or the failure.

    Returns the result at the largest budget; `execute_ladder` returns every rung's."""
    return execute_ladder(prepared, store, progress)[prepared.spec.budget]


def claimant() -> Claim:
    """This process, as a claim names it."""
    import psutil

    return Claim(os.getpid(), socket.gethostname(), psutil.Process().create_time(), time.time())


def claim_alive(claim: Claim) -> bool:
    """Whether the process holding a claim still runs: on this host, the same pid started at the same time;
    on another, a heartbeat within STALE_CLAIM_S."""
    import psutil

    if claim.host != socket.gethostname():
        return time.time() - claim.heartbeat < STALE_CLAIM_S
    try:
        return abs(psutil.Process(claim.pid).create_time() - claim.started) < 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _wait_for_claim(
    store: Store, config_id: int, me: Claim, state: Progress, progress: ProgressCallback | None
) -> None:
    """Claim the configuration, waiting while another live edgeval process runs it."""
    while (holder := store.claim(config_id, me, claim_alive)) is not None:
        waiting = f"waiting for process {holder.pid} on {holder.host}, which is running this configuration"
        if waiting not in state.events:
            state.events.append(waiting)
            if progress is not None:
                progress(state)
        time.sleep(0.5)


def check_fits(prepared: Prepared, held: int = 0) -> None:
    """Refuse a configuration whose predicted footprint — with its questions in flight — exceeds the free RAM (with
    the `held` bytes its own worker, started early, already holds: the prediction counts them), or the free GPU
    memory for the part that goes there."""
    label = f"{prepared.spec.model_label} with k={prepared.spec.k}"
    if prepared.width > 1:
        label += f" and {prepared.width} questions in flight"
    check_room(label, prepared.wide, -held)


def check_room(label: str, predicted: memory.Footprint, extra_host_bytes: int = 0) -> None:
    """Refuse before loading what is predicted not to fit: its host part in the free RAM (or what an address-space
    cap leaves), its device part in the free GPU memory."""
    host = predicted.host_bytes + extra_host_bytes
    available, free = free_memory(predicted.device_bytes > 0)
    if host > available:
        capped = available == resident.address_space_left()
        raise NotEnoughMemoryError(label, "address space (ulimit -v)" if capped else "RAM", host, available)
    if predicted.device_bytes > 0 and predicted.device_bytes > (free or 0):
        raise NotEnoughMemoryError(label, "GPU memory", predicted.device_bytes, free or 0)


def execute_ladder(
    prepared: Prepared, store: Store, progress: ProgressCallback | None = None, early: Early | None = None
) -> dict[int, results.ConfigResult]:
    """Run the pending questions of every rung in one worker process (`early`'s, if given); record measurements or
    the failure.

    Any number of edgeval processes may share a store: a configuration another live process is running is
    waited for (then only what it left is run), and a claim left by a process that died is taken over.
    """
    me = claimant()
    state = Progress(items_total=len(prepared.items))
    _wait_for_claim(store, prepared.config_id, me, state, progress)
    try:
        return _execute_claimed(prepared, store, me, state, progress, early)
    finally:
        store.release(prepared.config_id, me)


@dataclass(frozen=True)
class Supervised:
    """How a worker process went: its exit code, peak memory, load and wall time, whether it stopped at the
    deadline, and the last lines of its log."""

    exitcode: int | None
    peak: memory.RSS
    peak_vram_bytes: int | None
    load_s: float | None
    stopped: bool
    wall_s: float
    log_tail: str
    # The peak when the worker had measured the deployment shape (`footprint`), before it widened: one question's
    # context, the configuration's own memory. None when it was not asked to, or died first.
    footprint_peak: memory.RSS | None = None
    footprint_vram_bytes: int | None = None
    speed: str | None = None  # the deployment shape's speed the worker measured (`answer_time.Speed` JSON)

    def outcome(self, unfinished: bool) -> tuple[str, str | None]:
        """The configuration's status after this worker, and its message: `done` when no question is left,
        `partial` when it stopped at its deadline, else how the worker failed (its own `edgeval:` line if any)."""
        if self.exitcode == 0 and not unfinished:
            return "done", None
        if self.exitcode == 0 and self.stopped:
            return "partial", "stopped at the time limit"
        status, message = _exit_status(self.exitcode)
        error_line = next((line for line in reversed(self.log_tail.splitlines()) if line.startswith("edgeval:")), None)
        return status, error_line or message


def worker_payload(
    prepared: Prepared, pending: list[int], log_path: Path, db_path: Path | None, *, footprint: bool = False,
    speed: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """What the worker process is given: the configuration, its questions, how many in flight, and where the
    answers go (the store at `db_path`, or with None back to the parent as events). With `footprint` the worker
    first measures the deployment shape (`worker._footprint`: one question's context, briefly), waits for the
    parent to take that peak, then answers with its questions in flight. With `speed` it also measures the
    deployment shape's speed (`worker._speed`), once per configuration."""
    from edgeval.llama import engine

    spec = prepared.spec
    return {
        "spec": {**asdict(spec), "model_path": str(spec.model_path), "kv_type_k": spec.kv_type_k.value,
                 "kv_type_v": spec.kv_type_v.value},
        "task": prepared.task, "db_path": None if db_path is None else str(db_path),
        "config_ids": {str(b): c for b, c in prepared.config_ids.items()}, "n_ctx": prepared.n_ctx,
        "n_seq": prepared.n_seq, "stream_cells": prepared.stream_cells, "pending": pending, "log_path": str(log_path), "verbose": engine.LOG.echo,
        "chat_template": prepared.chat.template, "parent_pid": os.getpid(), "width": prepared.width,
        "footprint": footprint, "speed": speed,
    }  # fmt: skip


class Early:
    """An answering worker started before its configuration is prepared: Python's start and llama.cpp's import
    (a quarter of a second), and the model's load once `prepare` has checked the file (`preload`), overlap the
    parent's own preparation. `supervise` hands it its payload; one never
    handed any, or left running, is ended when the `with` block closes. It starts with Ctrl-C ignored (the parent
    ends it), and takes the parent's own handling back with its payload."""

    def __init__(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.events, self.go = spawn.Queue(), spawn.Queue()
        self.go.cancel_join_thread()  # a payload a dead worker never read does not hold up this process's exit
        self.measured = spawn.Event()
        # Ctrl-C's handler here, to set aside while the worker starts: only the main thread may, and None also where
        # it was not set from Python
        interrupt = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
        self.process: Any = spawn.Process(target=worker_waiting, args=(
            os.getpid(), self.go, self.events, self.measured, interrupt is not signal.SIG_IGN), daemon=True)  # fmt: skip
        if interrupt is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited through the spawn's exec
        try:
            self.process.start()
        finally:
            if interrupt is not None:
                signal.signal(signal.SIGINT, interrupt)
        self.started = time.perf_counter()
        self.used = False
        self.loading = False  # a model load asked of it, not yet ended

    def preload(self, path: Path, options: engine.LoadOptions, weight_bytes: int) -> None:
        """Have the worker load the model now, while the parent goes on preparing (`prepare`'s `loading`, called
        once the header is read and checked). Only a CPU run whose weights fit twice over in the memory available
        now — a guard, not the configuration's check: that one, on the whole footprint, comes before the payload;
        a configuration found done, or waiting on another process's claim, has had its file loaded for nothing. The
        worker loads it again if the payload asks for another file or other options."""
        import psutil

        if self.used or not self.process.is_alive() or options.gpu_layers() != 0:
            return
        if 2 * weight_bytes > psutil.virtual_memory().available:
            return
        self.go.put(("load", str(path), options))
        self.loading = True

    def settle(self) -> None:
        """Wait until a load asked for has ended (or the worker has): the memory it holds is then what the fit
        checks credit back, and a measurement of this machine's speed (the knee probe) does not share its cores."""
        while self.loading and not self.used and self.process.is_alive():
            try:
                kind, _ = self.events.get(timeout=0.25)
            except queue.Empty:
                continue
            self.loading = kind != "preloaded"

    def held_bytes(self) -> int:
        """What it holds resident now of its own (anonymous memory: Python, llama.cpp's buffers, a model read in
        rather than mapped; the template helper's): memory the prediction of its configuration counts as the
        runtime's own. Mapped file pages are left out — the memory available counts them already (the page cache)."""
        import psutil

        try:
            me = psutil.Process(self.process.pid)
            held = [resident.read_rss(p) for p in [me, *me.children(recursive=True)]]
        except psutil.Error:  # it ended
            return 0
        return sum(r.total if r.anon is None else r.anon for r in held)  # (the whole RSS where the OS has no split)

    def __enter__(self) -> Early:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


def _start(payload: dict[str, Any], target: Callable[..., None], early: Early | None) -> tuple[Any, Any, Any, float]:
    """The worker process running `target` on `payload`, its event queue, the event set once the deployment shape's
    peak is taken (a worker measuring it waits), and when it started: `early`'s, handed the payload, or a new one
    (also when the early one has died meanwhile)."""
    if early is not None and not early.used and target is worker_main and early.process.is_alive():
        early.used = True
        early.go.put(payload)
        return early.process, early.events, early.measured, early.started
    spawn = multiprocessing.get_context("spawn")
    events, measured = spawn.Queue(), spawn.Event()
    worker = spawn.Process(target=target, args=(payload, events, measured), daemon=True)
    started = time.perf_counter()
    worker.start()
    return worker, events, measured, started


def supervise(
    payload: dict[str, Any],
    state: Progress,
    progress: ProgressCallback | None = None,
    on_rows: Sink | None = None,
    tick: Callable[[], None] | None = None,
    target: Callable[..., None] = worker_main,
    early: Early | None = None,
) -> Supervised:
    """Start the worker process (`target`: answering, or another job's entry in `worker.main`; or hand the payload
    to an `early` answering worker) and follow it to its end: sample its memory, hear its events (a store-less
    worker's answers go to `on_rows`), call `tick` about every HEARTBEAT_S."""
    worker, events, measured, started = _start(payload, target, early)
    load_s = None
    stopped = False
    footprint: tuple[memory.RSS, int | None] | None = None
    speed: str | None = None
    state.worker_pid = worker.pid
    beat = time.monotonic()
    try:
        with memory.PeakRSS(worker.pid or 0) as sampler:
            while worker.is_alive() or not events.empty():
                if tick is not None and time.monotonic() - beat > HEARTBEAT_S:
                    beat = time.monotonic()
                    tick()
                try:
                    kind, value = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if kind == "loaded":
                    load_s = value
                elif kind == "stopped":
                    stopped = True
                elif kind == "footprint":
                    sampler.sample()  # the moment itself, not the last tick's
                    sampler.observe(value)  # and the worker's own high-water mark so far
                    footprint = (sampler.peak, sampler.peak_vram_bytes)
                    measured.set()
                elif kind == "peak":  # the worker's last event: it is ending (not a poll's timeout later)
                    sampler.observe(value)
                    worker.join(timeout=10)
                elif kind == "speed":
                    speed = value
                elif kind == "rows" and on_rows is not None:
                    on_rows(*value)
                elif kind == "item":
                    state.items_done += 1
                    state.tokens += value[1]
                    state.decode_s += value[2]
                if progress is not None:
                    progress(state)
            worker.join()
    except BaseException:
        worker.join(timeout=5)  # Ctrl-C reaches the worker too (one process group); anything else ends it
        if worker.is_alive():
            worker.kill()
            worker.join()
        raise
    tail = _log_tail(Path(payload["log_path"]))
    shape_peak, shape_vram = footprint or (None, None)
    return Supervised(worker.exitcode, sampler.peak, sampler.peak_vram_bytes, load_s, stopped,
                      time.perf_counter() - started, tail, shape_peak, shape_vram, speed)  # fmt: skip


def _execute_claimed(
    prepared: Prepared, store: Store, me: Claim, state: Progress, progress: ProgressCallback | None,
    early: Early | None = None,
) -> dict[int, results.ConfigResult]:  # fmt: skip
    spec = prepared.spec
    left = pending(prepared, store)
    state.items_done = len(prepared.items) - len(left)
    ids = prepared.config_ids
    if not left and all(store.config(i)["status"] == "done" for i in ids.values()):
        return _results(prepared, store)

    def tell(line: str) -> None:
        state.events.append(line)
        if progress is not None:
            progress(state)

    held = 0
    if early is not None and not early.used:
        early.settle()
        held = early.held_bytes()
    prepared = resolve_width(prepared, len(left), tell, held=held)
    if not spec.force:
        try:
            check_fits(prepared, held)
        except NotEnoughMemoryError as exc:
            record_unfit(prepared, store, describe(exc))
            raise
    log_path = cache_dir("logs") / f"config-{prepared.config_id}.log"
    log_path.write_text("")
    mark_running(prepared, store)
    try:
        # The configuration's memory is one question's (what a user deploys), not the throughput run's: a wider
        # worker measures that shape first, in the same process (one model load), and then widens.
        row = store.config(prepared.config_id)
        shape = prepared.width > 1 and not row["peak_rss_bytes"]
        payload = worker_payload(prepared, left, log_path, store.path, footprint=shape, speed=not row["speed"])
        done = supervise(payload, state, progress, tick=lambda: store.heartbeat(prepared.config_id, me, time.time()),
                         early=early)  # fmt: skip
        if shape and done.footprint_peak is None:  # it died measuring: recorded as the one-question run it was
            record(replace(prepared, width=1), store, done, store.timings(prepared.config_id))
            return _results(prepared, store)
        if shape:
            record_footprint(prepared, store, done)
    except KeyboardInterrupt:
        # Ctrl-C: every finished question is stored; the rows wait, resumable, for the next run.
        for config_id in ids.values():
            store.update_config(config_id, status="pending", message="interrupted")
        raise
    record(prepared, store, done, store.timings(prepared.config_id))
    return _results(prepared, store)


def record_footprint(prepared: Prepared, store: Store, shape: Supervised) -> None:
    """Store the deployment shape's measured peak (a footprint pass: one question's context) as every rung's
    memory, beside the prediction it calibrates."""
    assert shape.footprint_peak is not None, "a worker that measured the deployment shape"
    for config_id in prepared.config_ids.values():
        row = store.config(config_id)
        fields = _peak_fields(row, shape.footprint_peak, shape.footprint_vram_bytes, prepared.predicted.total_bytes)
        store.update_config(config_id, **fields)


def mark(prepared: Prepared, store: Store, **fields: object) -> None:
    """Set `fields` (status, message…) on every rung of a configuration."""
    for config_id in prepared.config_ids.values():
        store.update_config(config_id, **fields)


def record_unfit(prepared: Prepared, store: Store, message: str) -> None:
    """Mark every rung of a configuration as not fitting the memory available (refused before loading)."""
    mark(prepared, store, status="unfit", message=message)


def mark_running(prepared: Prepared, store: Store) -> None:
    """Mark every rung of a configuration as running now."""
    mode = prepared.spec.repack_mode
    mark(prepared, store, status="running", message=None, log_tail=None, repack=int(mode.on), repack_mode=mode.value)


def record(
    prepared: Prepared,
    store: Store,
    done: Supervised,
    timings: list[ItemTiming],
    facts: dict[str, object] | None = None,
) -> None:
    """Store how a worker went on every rung: status and message, peak memory (the highest this configuration
    reached), speed from `timings`, wall time added; `facts` names the backend and build that ran it (this
    machine's when None)."""
    from edgeval.llama import engine

    spec = prepared.spec
    # How the model was loaded, for `edgeval export` (a cluster node's own default thread count is not known here).
    load = {"gpu_layers": engine.LoadOptions(n_gpu_layers=spec.gpu_layers).gpu_layers(), "cpu_moe": spec.cpu_moe,
            "threads": spec.threads or (engine.default_threads() if facts is None else None)}  # fmt: skip
    if facts is None:
        facts = {"backend": engine.backend_name(), "llama_cpp_build": engine.build_version()}
    prompt_tps, decode_tps, ttft = results.speed(timings)
    status, message = done.outcome(unfinished=bool(pending(prepared, store)))
    for config_id in prepared.config_ids.values():
        row = store.config(config_id)
        if prepared.width > 1:  # a throughput run: its peak is its own, not the configuration's (record_footprint)
            peak: dict[str, object] = {
                "throughput_peak_rss_bytes": max(done.peak.total or 0, row["throughput_peak_rss_bytes"] or 0) or None,
                "throughput_peak_vram_bytes": done.peak_vram_bytes,
                "throughput_predicted_bytes": prepared.wide.total_bytes,
            }
        else:
            peak = _peak_fields(row, done.peak, done.peak_vram_bytes, prepared.predicted.total_bytes)
        measured: dict[str, object] = {
            **peak, "parallel": prepared.width, "prompt_tokens_per_s": prompt_tps, "decode_tokens_per_s": decode_tps,
            "ttft_s": ttft, "wall_s": (row["wall_s"] or 0.0) + done.wall_s, **facts, **load,
        }  # fmt: skip
        if done.load_s is not None:
            measured["load_s"] = done.load_s
        if done.speed is not None:
            measured["speed"] = done.speed
        failure = {} if status in ("done", "partial") else {"log_tail": done.log_tail}
        store.update_config(config_id, status=status, message=message, **failure, **measured)


def _results(prepared: Prepared, store: Store) -> dict[int, results.ConfigResult]:
    return {b: results.summarize(store.config(c), store.samples(c)) for b, c in prepared.config_ids.items()}


_PEAK_FIELDS = (
    "peak_rss_bytes",
    "peak_rss_anon_bytes",
    "peak_rss_file_bytes",
    "peak_vram_bytes",
    "arm_predicted_bytes",
)


def _peak_fields(row: Any, peak: memory.RSS, vram: int | None, arm_predicted: int) -> dict[str, object]:
    """The peak memory (RSS, its anonymous and file-backed parts, GPU memory) with the prediction of the run that
    reached it: this run's, or the stored ones if an earlier run of these rows peaked higher. The pair stays
    together, since a rung's memory is calibrated by that run's error (`results.memory_of`) — an earlier run may
    have been a larger ladder (a resumed race runs only the rungs still in it)."""
    if row["peak_rss_bytes"] and row["peak_rss_bytes"] + (row["peak_vram_bytes"] or 0) >= peak.total + (vram or 0):
        return {name: row[name] for name in _PEAK_FIELDS}
    return {
        "peak_rss_bytes": peak.total or None, "peak_rss_anon_bytes": peak.anon, "peak_rss_file_bytes": peak.file,
        "peak_vram_bytes": vram, "arm_predicted_bytes": arm_predicted,
    }  # fmt: skip


def run(
    spec: RunSpec,
    store: Store,
    progress: ProgressCallback | None = None,
    command: str = "",
    notify: Callable[[str], None] | None = None,
) -> results.ConfigResult:
    """Prepare and execute one configuration (the library call behind `edgeval run`)."""
    rungs = run_ladder(spec, store, progress, command, notify)
    return rungs[max(rungs)]


def run_ladder(
    spec: RunSpec,
    store: Store,
    progress: ProgressCallback | None = None,
    command: str = "",
    notify: Callable[[str], None] | None = None,
) -> dict[int, results.ConfigResult]:
    """Prepare and execute one configuration at every budget of its ladder, from one generation; `notify` hears
    the prepared configuration's notes (a default edgeval lowered, say)."""
    with Early() as early:
        rendering.warm_soon()  # this process's chat-template helper starts while the run is recorded
        run_id = store.add_run(provenance(), command)
        prepared = prepare(spec, store, run_id, loading=early.preload)
        for note in prepared.notes:
            if notify is not None:
                notify(note)
        return execute_ladder(prepared, store, progress, early)
