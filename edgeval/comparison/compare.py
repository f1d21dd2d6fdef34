"""Equal-footprint comparison as an anytime race: which configurations fit a budget, the runs that answer them
(one generation per model × KV type answers every token budget and vote count), rounds of questions that drop a
configuration as soon as a cheaper one is better by a paired interval, and an answer that says how sure it is.

The statistics are in `racing` (pure); this module plans the arms, runs them round by round within the time given,
and builds the comparison from the store.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeval.comparison import plan
from edgeval.comparison.verdict import Comparison, Row, band_of, build, contenders
from edgeval.core import racing
from edgeval.core.errors import EdgevalError, describe
from edgeval.core.quants import KVType, WeightQuant
from edgeval.core.units import format_tokens
from edgeval.edges import hub, results, tasks
from edgeval.edges.catalog import Catalog, ModelRef
from edgeval.edges.results import ConfigResult
from edgeval.edges.store import Claim, NodeRun, Store
from edgeval.running import sweep

if TYPE_CHECKING:  # ray is an optional extra, imported only with --ray
    from edgeval.running import detached
    from edgeval.running.cluster import Cluster

# The defaults (documented in the README). Qwen3 in thinking mode writes thousands of tokens on MATH-500, so the
# ladder runs from 1k to 4k tokens (capped to what the model's context holds); votes generated once at 4 and compared
# at 1 and 4 (maj@2 equals avg@1 under the tie rule, so it is never compared); 4- and 8-bit weights of the two
# largest sizes that fit, with an f16 KV cache — the study's question is whether memory buys a bigger model or more
# precision, tokens and votes. Each extra run (a KV type, 8 votes, an 8k rung) roughly doubles the time a question
# costs, and a laptop CPU writes a few thousand tokens a minute: the defaults keep one run per file.
DEFAULT_QUANTS = (WeightQuant.Q4_K_M, WeightQuant.Q8_0)
DEFAULT_SIZES = 2
DEFAULT_KV = (KVType.F16,)
DEFAULT_BUDGETS = (1024, 2048, 4096)
DEFAULT_VOTES = (1, 4)
DEFAULT_TIME_S = 3600.0
DEFAULT_EXHAUSTIVE_LIMIT = 10
DEFAULT_TASK = tasks.DEFAULT_TASK
FIRST_ROUND = 10  # questions every configuration answers before the first look
ROUND_GROWTH = 4  # each round asks for this many times the questions of the one before
# Rough single-sequence decode speed on a CPU, scaled by weight bytes (memory-bound): 27 tok/s at 0.39 GB measured
# here for Qwen3-0.6B Q4_K_M; k sequences together about twice as fast in aggregate.
_TOKENS_PER_S_AT_1GB = 27 * 0.39


@dataclass(frozen=True)
class Request:
    """What `edgeval compare` was asked."""

    budget_bytes: int
    tasks: tuple[str, ...] = (DEFAULT_TASK,)
    models: tuple[str, ...] = ()
    kv: tuple[KVType, ...] = DEFAULT_KV
    kv_window: tuple[int, ...] = (0,)  # KV windows (0: no eviction)
    budgets: tuple[int, ...] = DEFAULT_BUDGETS  # the token-budget ladder
    votes: tuple[int, ...] = DEFAULT_VOTES
    limit: int | None = None  # questions per configuration at most (None: the whole task)
    time_s: float | None = DEFAULT_TIME_S  # wall-time cap (None: no cap)
    exhaustive: bool = False  # every configuration on every question up to `limit`, nothing dropped
    thinking: bool = True
    seed: int = 0
    threads: int | None = None
    repack: bool | None = None  # None: the doctor's probe decides, when a configuration first runs
    catalogs: tuple[Path, ...] = ()
    prompt_tokens: int = plan.DEFAULT_PROMPT_TOKENS
    alpha: float = racing.ALPHA
    ray: str | None = None  # run the runs as tasks on a Ray cluster: its address, `auto` or `local`
    parallel: int = sweep.AUTO  # questions in flight per run (sweep.AUTO: what gains throughput and fits)
    gpu_layers: int | None = None  # None: every layer on a build that offloads, none on a CPU build
    cpu_moe: int = 0
    vram_bytes: int | None = None  # the GPU's memory, when the device part must also fit it
    ram_bytes: int | None = None  # the host part's limit under offload (None: the RAM free now)

    @property
    def offload(self) -> int:
        """Layers on the GPU as `plan --gpu-layers` reads it (-1: all)."""
        return (-1 if plan.offload_build() else 0) if self.gpu_layers is None else self.gpu_layers

    def fitting(self) -> Callable[[Any], bool]:
        """Whether a predicted footprint fits the budget: on a GPU its device part, with its host part in the RAM
        (as `plan` reads a budget; the RAM free is read once, here, when --ram does not say)."""
        ram = self.ram_bytes
        if ram is None and self.offload:
            import psutil

            ram = int(psutil.virtual_memory().available)
        return lambda footprint: plan.fits(footprint, self.budget_bytes, vram_bytes=self.vram_bytes, ram_bytes=ram)

    @property
    def question_limit(self) -> int | None:
        """The questions each configuration may answer (exhaustive: ten unless --limit says otherwise)."""
        return self.limit or (DEFAULT_EXHAUSTIVE_LIMIT if self.exhaustive else None)


@dataclass(frozen=True)
class Arm:
    """One run: a model file and KV type, generating k votes once up to the largest budget of its ladder. It
    answers every (budget, j ≤ k votes) configuration of the ladder."""

    ref: ModelRef
    kv: KVType
    budgets: tuple[int, ...]
    k: int
    votes: tuple[int, ...]  # the vote counts compared, each ≤ k
    predicted: dict[tuple[int, int], int]  # (budget, votes) -> predicted bytes of a separate run
    estimated_s: float  # per question
    window: int = 0  # the KV window (0: no eviction)
    device: dict[tuple[int, int], int] = field(default_factory=dict)  # (budget, votes) -> the GPU part of `predicted`
    estimate: Estimate | None = None

    @property
    def label(self) -> str:
        """`qwen3-8b:Q4_K_M kv q8_0 budgets 1024–8192 k=8` (`kv q8_0, window 2k` with a KV window)."""
        ladder = "–".join(str(b) for b in (self.budgets[0], self.budgets[-1])) if len(self.budgets) > 1 else ""
        kv = self.kv.value + (f", window {format_tokens(self.window)}" if self.window else "")
        return f"{self.ref.label} kv {kv} budget {ladder or self.budgets[0]} k={self.k}"

    @property
    def configurations(self) -> int:
        """How many compared configurations this run answers."""
        return len(self.budgets) * len(self.votes)


def arms(
    request: Request, task: str, catalog: Catalog | None = None, speeds: dict[str, float] | None = None
) -> list[Arm]:
    """The runs that answer every configuration fitting the budget.

    For each model file, KV type and KV window, each budget of the ladder can afford some largest number of votes
    K(b) in the budget (K falls as b grows); budgets with the same K are one run with K votes, which answers (b, j)
    for every j ≤ K in the votes axis. Memory is predicted from the catalog's facts, as `edgeval plan` does (a
    window no shorter than a budget is that budget without a window, so it is not run twice)."""
    book = catalog or Catalog.load(request.catalogs)
    refs = book.resolve_all(request.models) if request.models else default_refs(book, request)
    votes = tuple(sorted(set(request.votes)))
    gpu_layers = request.offload
    repacking, types = plan.repack_setting(request.repack, gpu_layers)
    axes = plan.Axes(kv=request.kv, ctx=tuple(request.prompt_tokens + b for b in request.budgets), k=votes,
                     kv_window=request.kv_window, prompt_tokens=request.prompt_tokens, repack=repacking,
                     repack_types=types, gpu_layers=gpu_layers, cpu_moe=request.cpu_moe)  # fmt: skip
    fitting: dict[tuple[str, KVType, int], dict[int, dict[int, int]]] = {}
    devices: dict[tuple[str, KVType, int, int, int], int] = {}
    refs_by_label = {r.label: r for r in refs}
    fits_budget = request.fitting()
    for c in plan.configurations(refs, axes):
        if fits_budget(c.footprint):
            per_budget = fitting.setdefault((c.ref.label, c.kv_type_k, c.kv_window), {})
            per_budget.setdefault(c.budget_tokens, {})[c.k] = c.footprint.total_bytes
            devices[(c.ref.label, c.kv_type_k, c.kv_window, c.budget_tokens, c.k)] = c.footprint.device_bytes
    out = []
    for (label, kv, window), per_budget in fitting.items():
        by_k: dict[int, list[int]] = {}
        for budget, ks in per_budget.items():
            by_k.setdefault(max(ks), []).append(budget)
        for k, budgets in sorted(by_k.items()):
            ladder = tuple(sorted(budgets))
            compared = tuple(j for j in votes if j <= k)
            predicted = {(b, j): per_budget[b][j] for b in ladder for j in compared}
            device = {(b, j): devices[(label, kv, window, b, j)] for b in ladder for j in compared}
            ref = refs_by_label[label]
            estimate = estimate_s(ref, ladder[-1], k, gpu_layers, speeds)
            out.append(Arm(ref, kv, ladder, k, compared, predicted, estimate.seconds, window, device, estimate))
    return sorted(out, key=lambda a: (a.ref.weight_bytes, a.kv.value, a.window, a.k))


def default_refs(book: Catalog, request: Request) -> list[ModelRef]:
    """The default models: 4- and 8-bit files of the largest hybrid Qwen3 sizes whose 4-bit file fits with room to
    think."""
    # The hybrid Qwen3 family the study measured (the 2507 Thinking/Instruct models join by --models).
    candidates = [r for r in book.everything() if r.file.quant in DEFAULT_QUANTS and r.model.thinking == "hybrid"]
    repacking, types = plan.repack_setting(request.repack, request.offload)
    smallest_run = plan.Axes(kv=(KVType.Q8_0,), ctx=(request.prompt_tokens + min(request.budgets),), k=(1,),
                             prompt_tokens=request.prompt_tokens, repack=repacking, repack_types=types,
                             gpu_layers=request.offload, cpu_moe=request.cpu_moe)  # fmt: skip
    fitting = request.fitting()
    fits = {c.ref.label for c in plan.configurations(candidates, smallest_run) if fitting(c.footprint)}
    sizes = sorted({r.model.params for r in candidates if r.label in fits}, reverse=True)[:DEFAULT_SIZES]
    return [r for r in candidates if r.model.params in sizes and r.label in fits]


@dataclass(frozen=True)
class Estimate:
    """What a question of a run is expected to cost, and where the speed comes from."""

    seconds: float
    tokens_per_s: float  # aggregate decode rate assumed
    source: str  # "measured" (earlier runs of this file here), "probe" (the throughput knee) or "rough"
    width: int = 1  # questions in flight assumed


def estimate_s(
    ref: ModelRef, budget: int, k: int, gpu_layers: int = 0, speeds: dict[str, float] | None = None
) -> Estimate:
    """Time per question: k samples using half their largest budget, at the aggregate decode rate this machine
    measured — its earlier runs of this file (`measured_speeds`), else the throughput probe's knee for the model's
    size class (an upper bound: no sampling, a short context), else a rate scaled from one CPU's figure by weight
    bytes (memory-bound decoding), twice as fast for k > 1."""
    tokens = k * budget * 0.5
    if speeds and speeds.get(ref.label):
        return Estimate(tokens / speeds[ref.label], speeds[ref.label], "measured")
    from edgeval.llama import throughput

    knee = throughput.remembered_for(ref.weight_bytes, gpu_layers != 0)
    if knee is not None:
        width = max(1, knee.knee // k)
        rate = knee.rate(width * k)
        return Estimate(tokens / rate, rate, "probe", width)
    rate = _TOKENS_PER_S_AT_1GB / max(ref.weight_bytes / 1e9, 0.05) * (2 if k > 1 else 1)
    return Estimate(tokens / rate, rate, "rough")


def measured_speeds(store: Store) -> dict[str, float]:
    """The best aggregate decode rate each model file reached in this store's earlier runs on this backend."""
    rows = store.db.execute(
        "SELECT model, MAX(decode_tokens_per_s) FROM configs WHERE decode_tokens_per_s > 0 GROUP BY model"
    ).fetchall()
    return {str(r[0]): float(r[1]) for r in rows}


# ---------------------------------------------------------------- running the race


@dataclass
class RaceProgress:
    """Where a compare is: the round, the run in progress, the leader, how many are still in the race, time left."""

    round: int = 0
    done: int = 0  # runs finished in this round
    total: int = 0  # runs in this round
    current: str = ""
    leader: str = ""
    in_race: int = 0
    configurations: int = 0
    time_left_s: float | None = None
    questions: int = 0  # what this round asks of each configuration
    inner: sweep.Progress = field(default_factory=sweep.Progress)


@dataclass
class _Race:
    """The mutable state of one task's race."""

    request: Request
    task: str
    arms: list[Arm]
    run_id: int
    started: float
    deadline: float | None
    failed: dict[int, str] = field(default_factory=dict)  # arm index -> message
    config_ids: dict[int, dict[int, int]] = field(default_factory=dict)  # arm index -> budget -> config id
    eliminated: dict[str, racing.Elimination] = field(default_factory=dict)
    verdict: racing.Verdict | None = None  # as of the last round's end
    tokens: int = 0
    n_questions: int = 0  # the task's questions within --limit
    cache: dict[int, tuple[tuple[int, str, bool], list[tuple[ConfigResult, dict[int, float]]]]] = field(
        default_factory=dict
    )  # config id -> (what it was built from, its result and scores per vote count)
    cluster: Cluster | None = None  # where the runs go with --ray (None: one after another on this machine)

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()


def run(
    request: Request,
    store: Store,
    progress: Callable[[RaceProgress], None] | None = None,
    command: str = "",
) -> list[Comparison]:
    """For each task: race the configurations that fit within the time given; return what the data support.

    Ctrl-C ends the race where it is: the comparison so far is returned with `stopped="interrupted"`."""
    from edgeval.edges import tasks as tasks_mod

    book = Catalog.load(request.catalogs)
    cluster = None
    if request.ray:
        from edgeval.running.cluster import Cluster

        cluster = Cluster(request.ray)
    try:
        run_id = store.add_run(sweep.provenance(), command or "edgeval compare")
        started = time.time()
        deadline = started + request.time_s if request.time_s and not request.exhaustive else None
        out = []
        for task in request.tasks:
            planned = arms(request, task, book, measured_speeds(store))
            n_task = len(tasks_mod.load_task(task).items)
            race = _Race(request, task, planned, run_id, started, deadline, cluster=cluster)
            race.n_questions = min(n_task, request.question_limit or n_task)
            try:
                stopped = _race(race, store, progress)
            except KeyboardInterrupt:
                stopped = "interrupted"
            out.append(_comparison(race, store, stopped))
            if stopped == "interrupted":
                break
        return out
    finally:
        if cluster is not None:
            cluster.close()


def _race(race: _Race, store: Store, progress: Callable[[RaceProgress], None] | None) -> str:
    """Rounds of questions until the time is up, the questions run out or the best is settled."""
    if not race.arms:
        return "settled"
    state = RaceProgress(configurations=sum(a.configurations for a in race.arms))
    asked = 0
    unreachable: list[EdgevalError] = []
    with ThreadPoolExecutor(max_workers=1) as downloads:
        while True:
            left = race.time_left()
            if left is not None and left <= 0:
                return "time"
            if asked >= race.n_questions and _all_answered(race, store):
                return "questions"
            asked = race.n_questions if race.request.exhaustive else _next_round(asked, race.n_questions)
            live = _live_arms(race, store)
            if not live:
                return "settled"
            state.round += 1
            state.done, state.total, state.questions = 0, len(live), asked
            if race.cluster is not None:
                _cluster_round(race, race.cluster, live, asked, store, state, progress, unreachable)
            elif not _local_round(race, live, asked, store, state, progress, unreachable, downloads):
                return "time"
            if not race.request.exhaustive and _settled(race):
                return "settled"
            if unreachable and not race.config_ids:
                raise unreachable[0]  # nothing could run: the one-line error names the way out (edgeval demo)


def _local_round(
    race: _Race, live: list[int], asked: int, store: Store, state: RaceProgress,
    progress: Callable[[RaceProgress], None] | None, unreachable: list[EdgevalError], downloads: ThreadPoolExecutor,
) -> bool:  # fmt: skip
    """One round on this machine: the live arms one after another, each within its share of the time left, the
    next download overlapping the current run. False when the time ran out."""
    prefetch: Future[Path] | None = None
    for position, index in enumerate(live):
        nxt = race.arms[live[position + 1]] if position + 1 < len(live) else None
        if nxt is not None and hub.local_path(nxt.ref.file) is None and not unreachable:
            prefetch = downloads.submit(hub.pull, nxt.ref.file)  # the next download overlaps this run
        _run_arm(race, index, asked, store, state, progress, unreachable, len(live) - position)
        state.done += 1
        _look(race, store, state, drop=position + 1 == len(live))
        if progress is not None:
            progress(state)
        left = race.time_left()
        if left is not None and left <= 0:
            return False
    if prefetch is not None:
        prefetch.exception()  # a failed prefetch is reported when its arm runs
    return True


def _all_answered(race: _Race, store: Store) -> bool:
    """Every configuration still in the race has answered every question within --limit."""
    rows = [r for r in _rows(race, store) if r.status == "running" and _arm_of(race, r) not in race.failed]
    return all(r.result.n_done >= race.n_questions for r in rows)


def _next_round(asked: int, total: int) -> int:
    return min(total, FIRST_ROUND if asked == 0 else asked * ROUND_GROWTH)


def _run_arm(
    race: _Race, index: int, asked: int, store: Store, state: RaceProgress,
    progress: Callable[[RaceProgress], None] | None, unreachable: list[EdgevalError], runs_left: int,
) -> None:  # fmt: skip
    """Run one arm up to `asked` questions, within its share of the time left; a failure is recorded, not raised."""
    arm = race.arms[index]
    left = race.time_left()
    deadline = None if left is None else time.time() + left / max(1, runs_left)
    state.current = arm.label
    try:
        prepared = _prepare(race, index, asked, store, unreachable, deadline, race.request.threads)

        def inner(p: sweep.Progress) -> None:
            state.inner = p
            if progress is not None:
                progress(state)

        before = sum(t.generated_tokens for t in store.timings(prepared.config_id))
        out = sweep.execute_ladder(prepared, store, inner)
        race.tokens += sum(t.generated_tokens for t in store.timings(prepared.config_id)) - before
        top = out[prepared.spec.budget]
        if top.status not in ("done", "partial"):
            race.failed[index] = f"{arm.label}: {top.status} — {top.message or ''}"
    except (hub.HubUnreachableError, hub.OfflineNotCachedError) as exc:
        unreachable.append(exc)  # other configurations may have their files already
        race.failed[index] = f"{arm.label}: {describe(exc)}"
    except EdgevalError as exc:
        race.failed[index] = f"{arm.label}: {describe(exc)}"


def _budgets_in_race(race: _Race, index: int) -> tuple[int, ...]:
    """The token budgets of an arm that still hold a configuration in the race (all of them before its first run).
    A rung's samples equal a separate run at its budget, so once the larger budgets are beaten, the arm generates
    only up to the largest one left: the same rows, fewer tokens."""
    arm = race.arms[index]
    ids = race.config_ids.get(index)
    if not ids:
        return arm.budgets
    left = tuple(b for b in arm.budgets if any(f"{ids[b]}:{j}" not in race.eliminated for j in arm.votes))
    return left or arm.budgets


def _prepare(
    race: _Race, index: int, asked: int, store: Store, unreachable: list[EdgevalError], deadline: float | None,
    threads: int | None,
) -> sweep.Prepared:  # fmt: skip
    """An arm's model file (downloaded if missing) and its configuration rows, asking `asked` questions."""
    arm = race.arms[index]
    request = race.request
    path = hub.local_path(arm.ref.file)
    if path is None and unreachable:
        raise unreachable[0]  # the Hub did not answer once already: do not wait on it again
    path = path or hub.pull(arm.ref.file, sha256=lambda p: store.file_sha256(p, hub.sha256_of))
    budgets = _budgets_in_race(race, index)
    spec = sweep.RunSpec(
        model_path=path, model_label=arm.ref.label, task=race.task, kv_type_k=arm.kv, kv_type_v=arm.kv,
        budget_tokens=budgets[-1], ladder=budgets[:-1], kv_window=arm.window, k=arm.k,
        thinking=arm.ref.model.thinks(request.thinking),
        seed=request.seed, limit=asked, threads=threads, repack=request.repack, deadline=deadline,
        expected_sha256=arm.ref.file.sha256, gpu_layers=request.gpu_layers, cpu_moe=request.cpu_moe,
        parallel=request.parallel,
    )  # fmt: skip
    prepared = sweep.prepare(spec, store, race.run_id)
    race.config_ids[index] = {**race.config_ids.get(index, {}), **prepared.config_ids}
    return prepared


def _cluster_round(
    race: _Race, cluster: Cluster, live: list[int], asked: int, store: Store, state: RaceProgress,
    progress: Callable[[RaceProgress], None] | None, unreachable: list[EdgevalError],
) -> None:  # fmt: skip
    """One round on a Ray cluster: every live arm is a task at once (as many run together as the cluster's CPUs
    hold), each within its share of the time left; each is committed to the store as it comes back."""
    threads = cluster.threads(race.request.threads)
    left = race.time_left()
    share = None if left is None else left / max(1, math.ceil(len(live) / cluster.slots(threads)))
    me = sweep.claimant()
    flying: dict[Any, tuple[int, detached.Unit]] = {}
    state.current = f"{len(live)} runs on {len(cluster.nodes())} Ray nodes"
    state.inner = sweep.Progress()
    try:
        for index in live:
            unit = _unit(race, index, asked, store, unreachable, share, threads, me, cluster)
            if unit is None:
                state.done += 1
                continue
            need = unit.prepared.predicted
            handle = cluster.submit(unit, threads, need.host_bytes, gpus=1 if need.device_bytes else 0)
            flying[handle] = (index, unit)
            state.inner.items_total += len(unit.pending)
        beat = time.monotonic()
        while flying:
            for handle in cluster.wait(list(flying), timeout_s=1.0):
                index, unit = flying.pop(handle)
                result = cluster.result(handle)
                _land(race, index, unit, result, store)
                if not isinstance(result, str):
                    state.inner.items_done += len(result.answers)
                    state.inner.tokens += result.tokens
                    state.inner.decode_s += sum(a.timing.decode_s + a.timing.prompt_s for a in result.answers)
                store.release(unit.prepared.config_id, me)
                state.done += 1
                _look(race, store, state, drop=False)
                if progress is not None:
                    progress(state)
            if time.monotonic() - beat > sweep.HEARTBEAT_S:
                beat = time.monotonic()
                for _, unit in flying.values():
                    store.heartbeat(unit.prepared.config_id, me, time.time())
        _look(race, store, state, drop=True)
        if progress is not None:
            progress(state)
    except KeyboardInterrupt:
        cluster.cancel(list(flying))
        for _, unit in flying.values():  # every finished question is stored; these wait, resumable
            for config_id in unit.prepared.config_ids.values():
                store.update_config(config_id, status="pending", message="interrupted")
            store.release(unit.prepared.config_id, me)
        raise


def _unit(
    race: _Race, index: int, asked: int, store: Store, unreachable: list[EdgevalError], share: float | None,
    threads: int, me: Claim, cluster: Cluster,
) -> detached.Unit | None:  # fmt: skip
    """An arm's unit of work for this round, claimed for this process; None when there is nothing to send (a
    failure is recorded, a configuration another process is running is left to it)."""
    from edgeval.running import detached

    arm = race.arms[index]
    try:
        prepared = _prepare(race, index, asked, store, unreachable, None, threads)
    except (hub.HubUnreachableError, hub.OfflineNotCachedError) as exc:
        unreachable.append(exc)
        race.failed[index] = f"{arm.label}: {describe(exc)}"
        return None
    except EdgevalError as exc:
        race.failed[index] = f"{arm.label}: {describe(exc)}"
        return None
    pending = sweep.pending(prepared, store)
    if not pending:
        for config_id in prepared.config_ids.values():
            store.update_config(config_id, status="done")
        return None
    need = prepared.predicted
    unfit = cluster.unfit(threads, need.host_bytes, 1 if need.device_bytes else 0)
    if unfit is not None:
        sweep.record_unfit(prepared, store, unfit)
        race.failed[index] = f"{arm.label}: unfit — {unfit}"
        return None
    if store.claim(prepared.config_id, me, sweep.claim_alive) is not None:
        return None  # another edgeval process runs it now: the next round sees what it stored
    sweep.mark_running(prepared, store)
    sha = store.file_sha256(prepared.spec.model_path, hub.sha256_of)
    measured = bool(store.config(prepared.config_id)["peak_rss_bytes"])
    return detached.Unit(prepared, tuple(pending), sha, arm.ref.file, share_s=share, deadline=race.deadline,
                         repack_auto=race.request.repack is None, measure_shape=not measured)  # fmt: skip


def _land(race: _Race, index: int, unit: detached.Unit, result: detached.UnitResult | str, store: Store) -> None:
    """Commit what a task brought back (once), and note the arm as failed where it did not run."""
    from edgeval.running import detached

    arm = race.arms[index]
    if isinstance(result, str):
        detached.fail(unit, store, result)
        race.failed[index] = f"{arm.label}: {result}"
        return
    detached.commit(unit, result, store)
    race.tokens += result.tokens
    top = store.config(unit.prepared.config_id)
    if top["status"] not in ("done", "partial"):
        race.failed[index] = f"{arm.label}: {top['status']} — {top['message'] or ''}"


def _live_arms(race: _Race, store: Store) -> list[int]:
    """Arms with a configuration still in the race: those holding a configuration tied with the best first (the
    decision is open there), then by memory."""
    rows = _rows(race, store)
    tied = set(race.verdict.tied) if race.verdict else set()
    live = []
    for index, arm in enumerate(race.arms):
        if index in race.failed:
            continue
        keys = [r.key for r in rows if r.status != "failed" and _arm_of(race, r) == index]
        if index not in race.config_ids or any(k not in race.eliminated for k in keys):
            live.append((0 if tied & set(keys) else 1, arm.ref.weight_bytes, index))
    return [index for *_, index in sorted(live)]


def _arm_of(race: _Race, row: Row) -> int | None:
    for index, ids in race.config_ids.items():
        if row.result.config_id in ids.values():
            return index
    return None


def _alpha(race: _Race) -> float:
    return racing.pairs_alpha(sum(a.configurations for a in race.arms), race.request.alpha)


def _look(race: _Race, store: Store, state: RaceProgress, *, drop: bool) -> None:
    """After a run: update the leader; at the end of a round, also drop what a cheaper configuration now beats and
    take the verdict (its intervals are the costly part, so only once a round)."""
    rows = _rows(race, store)
    if drop and not race.request.exhaustive:
        for e in racing.eliminate(contenders(rows), _alpha(race), tuple(race.eliminated)):
            race.eliminated[e.loser] = e
    alive = [c for c in contenders(rows) if c.key not in race.eliminated]
    if drop:
        race.verdict = racing.verdict(alive, _alpha(race))
    top = racing.leader(alive)
    best = next((r for r in rows if top and r.key == top.key), None)
    state.leader = f"{best.label} {100 * best.result.accuracy_maj:.1f}%" if best else ""
    state.in_race = sum(1 for r in rows if r.key not in race.eliminated and r.status != "failed")
    state.time_left_s = race.time_left()


def _settled(race: _Race) -> bool:
    """The best is settled when no configuration still in the race is tied with it."""
    return race.verdict is not None and len(race.verdict.tied) == 1


def _rows(race: _Race, store: Store) -> list[Row]:
    """Every configuration of the race as it stands in the store (a run's rows are rebuilt only when it changed)."""
    rows = []
    klds = store.kld_means()
    for index, arm in enumerate(race.arms):
        ids = race.config_ids.get(index)
        if ids is None:
            continue
        for budget in arm.budgets:
            config = store.config(ids[budget])
            stamp = (store.sample_count(ids[budget]), str(config["status"]), index in race.failed)
            cached = race.cache.get(ids[budget])
            if cached is None or cached[0] != stamp:
                samples = store.samples(ids[budget])
                built = []
                for j in arm.votes:
                    result = results.summarize(config, samples, votes=j)
                    built.append((result, results.item_scores(samples, arm.k, j)))
                cached = race.cache[ids[budget]] = (stamp, built)
            for result, scores in cached[1]:
                key = f"{result.config_id}:{result.k}"
                row = _row(key, arm.ref, result, _status(race, index, key, result), scores)
                rows.append(replace(row, kld=kld_of(config, klds)))
    return rows


def _status(race: _Race, index: int, key: str, result: ConfigResult) -> str:
    if index in race.failed and result.n_done == 0:
        return "failed"
    if key in race.eliminated:
        return "eliminated"
    return "done" if result.n_done >= race.n_questions else "running"


def _row(key: str, ref: ModelRef, result: ConfigResult, status: str, scores: dict[int, float]) -> Row:
    quant = ref.file.quant
    return Row(key, ref.label, ref.model.params, quant.value, quant.bits, result, result.memory_bytes,
               result.memory_source, band_of(result.memory_bytes), status, scores)  # fmt: skip


def _comparison(race: _Race, store: Store, stopped: str) -> Comparison:
    rows = _rows(race, store)
    if race.request.exhaustive and stopped != "interrupted":
        stopped = "exhaustive"
    failures = tuple(race.failed.values())
    built = build(rows, race.request.budget_bytes, race.task, alpha=_alpha(race), eliminated=race.eliminated,
                  failures=failures, time_s=time.time() - race.started, tokens=race.tokens, stopped=stopped,
                  seconds_per_question=_seconds_per_question(race, store), questions=race.n_questions)  # fmt: skip
    return replace(built, nodes=node_runs(store, built.rows))


def node_runs(store: Store, rows: Sequence[Row]) -> tuple[NodeRun, ...]:
    """What each Ray node measured of the rows' configurations (none for a compare run on this machine alone)."""
    ids = sorted({r.result.config_id for r in rows})
    return tuple(n for config_id in ids for n in store.node_runs(config_id, results.speed))


def _seconds_per_question(race: _Race, store: Store) -> dict[str, float]:
    """Measured seconds per question of each configuration's run (for "how much more time would settle it")."""
    out = {}
    for index, ids in race.config_ids.items():
        timings = store.timings(next(iter(ids.values())))
        if not timings:
            continue
        per = sum(t.prompt_s + t.decode_s for t in timings) / len(timings)
        for budget_id in ids.values():
            for j in race.arms[index].votes:
                out[f"{budget_id}:{j}"] = per
    return out


def kld_of(config: sqlite3.Row, klds: dict[tuple[str, str, str, int], float]) -> float | None:
    """A configuration's mean KLD from `edgeval kld` (its file, KV types and window), if one was measured."""
    return klds.get((str(config["model_sha256"]), str(config["kv_type_k"]), str(config["kv_type_v"]),
                     int(config["kv_window"])))  # fmt: skip


def from_store(store: Store, task: str | None = None, budget: int | None = None) -> list[Comparison]:
    """Comparisons rebuilt from every stored configuration (per task; within `budget` when given): every stored
    rung at every vote count its samples allow (1, 4 and 8 up to k)."""
    configs = [c for c in store.configs() if c["status"] != "pending" or c["n_items"]]
    klds = store.kld_means()
    names = sorted({str(c["task"]) for c in configs}) if task is None else [task]
    out = []
    for name in names:
        rows = []
        for c in configs:
            if c["task"] != name:
                continue
            samples = store.samples(int(c["id"]))
            quant = WeightQuant(str(c["weight_quant"]))
            for j in sorted({1, *(v for v in DEFAULT_VOTES if v <= int(c["k"])), int(c["k"])}):
                result = results.summarize(c, samples, votes=j)
                status = "failed" if result.n_done == 0 and c["status"] not in ("done", "partial") else "done"
                row = Row(f"{c['id']}:{j}", str(c["model"]), int(c["params"]), quant.value, quant.bits, result,
                          result.memory_bytes, result.memory_source, band_of(result.memory_bytes), status,
                          results.item_scores(samples, int(c["k"]), j), kld=kld_of(c, klds))  # fmt: skip
                rows.append(row)
        limit = budget if budget is not None else max((r.memory_bytes for r in rows), default=0)
        kept = [r for r in rows if budget is None or r.memory_bytes <= budget]
        built = build(kept, limit, name, alpha=racing.pairs_alpha(len(kept)), stopped="stored")
        out.append(replace(built, nodes=node_runs(store, built.rows)))
    return out
