"""Equal-footprint comparison as an anytime race: which configurations fit a budget, the runs that answer them
(one generation per model × KV type answers every token budget and vote count), rounds of questions that drop a
configuration as soon as a cheaper one is better by a paired interval, and an answer that says how sure it is.

The statistics are in `racing` (pure), the arms and their costs in `arms`; this module runs the arms round by
round within the time given and builds the comparison from the store.
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

from edgeval.comparison.arms import DEFAULT_BUDGETS as DEFAULT_BUDGETS
from edgeval.comparison.arms import DEFAULT_EXHAUSTIVE_LIMIT as DEFAULT_EXHAUSTIVE_LIMIT
from edgeval.comparison.arms import DEFAULT_KV as DEFAULT_KV
from edgeval.comparison.arms import DEFAULT_QUANTS as DEFAULT_QUANTS
from edgeval.comparison.arms import DEFAULT_SIZES as DEFAULT_SIZES
from edgeval.comparison.arms import DEFAULT_TASK as DEFAULT_TASK
from edgeval.comparison.arms import DEFAULT_TIME_S as DEFAULT_TIME_S
from edgeval.comparison.arms import DEFAULT_VOTES as DEFAULT_VOTES
from edgeval.comparison.arms import FIRST_ROUND as FIRST_ROUND
from edgeval.comparison.arms import ROUND_GROWTH as ROUND_GROWTH
from edgeval.comparison.arms import Arm as Arm
from edgeval.comparison.arms import Estimate as Estimate
from edgeval.comparison.arms import Measured as Measured
from edgeval.comparison.arms import Request as Request
from edgeval.comparison.arms import TooSlow as TooSlow
from edgeval.comparison.arms import arms as arms
from edgeval.comparison.arms import default_refs as default_refs
from edgeval.comparison.arms import estimate_s as estimate_s
from edgeval.comparison.arms import measured as measured
from edgeval.comparison.arms import measured_speeds as measured_speeds
from edgeval.comparison.arms import race_plan as race_plan
from edgeval.comparison.verdict import OUT, Comparison, Row, band_of, build, contenders
from edgeval.core import racing
from edgeval.core.errors import EdgevalError, describe
from edgeval.core.quants import WeightQuant
from edgeval.edges import gguf_info, hub, results
from edgeval.edges.catalog import Catalog, ModelRef, generation_of
from edgeval.edges.results import ConfigResult
from edgeval.edges.store import Claim, NodeRun, Store
from edgeval.running import sweep
from edgeval.running.configuration import Loading

if TYPE_CHECKING:  # ray is an optional extra, imported only with --ray
    from edgeval.running import detached
    from edgeval.running.cluster import Cluster

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
    too_slow: list[TooSlow] = field(default_factory=list)  # left out before running (predicted over the limit)
    slow: set[str] = field(default_factory=set)  # rows whose measured worst case is over --answer-time
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
        known = measured(store)
        for task in request.tasks:
            planned = race_plan(request, task, book, known)
            n_task = len(tasks_mod.load_task(task).items)
            race = _Race(
                request, task, planned.arms, run_id, started, deadline, too_slow=planned.too_slow, cluster=cluster
            )
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

    def inner(p: sweep.Progress) -> None:
        state.inner = p
        if progress is not None:
            progress(state)

    try:
        with sweep.Early() as early:  # its worker starts while the arm prepares
            prepared = _prepare(race, index, asked, store, unreachable, deadline, race.request.threads, early.preload)
            before = sum(t.generated_tokens for t in store.timings(prepared.config_id))
            out = sweep.execute_ladder(prepared, store, inner, early)
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
    out = race.eliminated.keys() | race.slow
    left = tuple(b for b in arm.budgets if any(f"{ids[b]}:{j}" not in out for j in arm.votes))
    return left or arm.budgets


def _prepare(
    race: _Race, index: int, asked: int, store: Store, unreachable: list[EdgevalError], deadline: float | None,
    threads: int | None, loading: Loading | None = None,
) -> sweep.Prepared:  # fmt: skip
    """An arm's model file (downloaded if missing) and its configuration rows, asking `asked` questions (`loading`:
    `prepare`'s, told the checked file)."""
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
        parallel=request.parallel, budget_message=request.budget_message,
    )  # fmt: skip
    prepared = sweep.prepare(spec, store, race.run_id, loading)
    race.config_ids[index] = {**race.config_ids.get(index, {}), **prepared.config_ids}
    return prepared


@dataclass
class _Flight:
    """One arm's unit out on the cluster: its tries so far, and the node it told it runs on."""

    index: int
    unit: detached.Unit
    sent: float  # time.time() when this try was sent
    tries: int = 1
    node_id: int | None = None


def _cluster_round(
    race: _Race, cluster: Cluster, live: list[int], asked: int, store: Store, state: RaceProgress,
    progress: Callable[[RaceProgress], None] | None, unreachable: list[EdgevalError],
) -> None:  # fmt: skip
    """One round on a Ray cluster: every live arm is a task at once (as many run together as the cluster's CPUs
    hold), each within its share of the time left; each answered question is stored as it comes back."""
    threads = cluster.threads(race.request.threads)
    left = race.time_left()
    share = None if left is None else left / max(1, math.ceil(len(live) / cluster.slots(threads)))
    me = sweep.claimant()
    flying: dict[Any, _Flight] = {}
    state.current = f"{len(live)} runs on {len(cluster.nodes())} Ray nodes"
    state.inner = sweep.Progress()
    try:
        for index in live:
            unit = _unit(race, index, asked, store, unreachable, share, threads, me, cluster)
            if unit is None:
                state.done += 1
                continue
            flying[_send(cluster, unit, threads)] = _Flight(index, unit, time.time())
            state.inner.items_total += len(unit.pending)
        beat = time.monotonic()
        while flying:
            for handle in cluster.wait(list(flying), timeout_s=1.0):
                flight = flying.pop(handle)
                again = _tell(race, cluster, flight, handle, store, state, threads)
                if again is not None:
                    flying[again] = flight
                else:
                    store.release(flight.unit.prepared.config_id, me)
                    state.done += 1
                    _look(race, store, state, drop=False)
                if progress is not None:
                    progress(state)
            if time.monotonic() - beat > sweep.HEARTBEAT_S:
                beat = time.monotonic()
                for flight in flying.values():
                    store.heartbeat(flight.unit.prepared.config_id, me, time.time())
        _look(race, store, state, drop=True)
        if progress is not None:
            progress(state)
    except KeyboardInterrupt:
        cluster.cancel(list(flying))
        for flight in flying.values():  # every finished question is stored; these wait, resumable
            sweep.mark(flight.unit.prepared, store, status="pending", message="interrupted")
            store.release(flight.unit.prepared.config_id, me)
        raise


def _send(cluster: Cluster, unit: detached.Unit, threads: int) -> Any:
    need = unit.prepared.predicted
    return cluster.submit(unit, threads, need.host_bytes, gpus=1 if need.device_bytes else 0)


def _tell(
    race: _Race, cluster: Cluster, flight: _Flight, handle: Any, store: Store, state: RaceProgress, threads: int
) -> Any | None:  # fmt: skip
    """Take what a task tells next: store an answered question at once, land its result, or send the questions
    not stored yet again where its worker died. Returns the handle to go on listening to (None: it has ended)."""
    from edgeval.running import detached
    from edgeval.running.cluster import MAX_RETRIES, Failure

    event = cluster.next_event(handle)
    if isinstance(event, detached.Started):
        flight.node_id = store.add_node(event.node)
        return handle
    if isinstance(event, detached.Answer):
        assert flight.node_id is not None, "a node tells that it started before its first answer"
        detached.keep(event, flight.node_id, store)
        race.tokens += event.timing.generated_tokens
        state.inner.items_done += 1
        state.inner.tokens += event.timing.generated_tokens
        state.inner.decode_s += event.timing.decode_s + event.timing.prompt_s
        return handle
    if isinstance(event, Failure):
        left = sweep.pending(flight.unit.prepared, store)
        if event.crashed and flight.tries <= MAX_RETRIES and left:
            spent = time.time() - flight.sent  # a retry has what is left of the unit's share
            share = None if flight.unit.share_s is None else max(0.0, flight.unit.share_s - spent)
            flight.unit = replace(flight.unit, pending=tuple(left), share_s=share)
            flight.tries, flight.sent = flight.tries + 1, time.time()
            return _send(cluster, flight.unit, threads)
        if event.crashed and not left:  # it died after its last answer was stored: nothing is missing
            sweep.mark(flight.unit.prepared, store, status="done")
            return None
        _land(race, flight, event.message + (f" on each of {flight.tries} tries" if event.crashed else ""), store)
        return None
    _land(race, flight, event, store)
    return None


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
        sweep.mark(prepared, store, status="done")
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


def _land(race: _Race, flight: _Flight, result: detached.UnitResult | str, store: Store) -> None:
    """Commit how a task ended (once), and note the arm as failed where it did not run."""
    from edgeval.running import detached

    arm = race.arms[flight.index]
    if isinstance(result, str):
        detached.fail(flight.unit, store, result)
        race.failed[flight.index] = f"{arm.label}: {result}"
        return
    detached.commit(flight.unit, result, store, flight.node_id)
    top = store.config(flight.unit.prepared.config_id)
    if top["status"] not in ("done", "partial"):
        race.failed[flight.index] = f"{arm.label}: {top['status']} — {top['message'] or ''}"


def _live_arms(race: _Race, store: Store) -> list[int]:
    """Arms with a configuration still in the race: those holding a configuration tied with the best first (the
    decision is open there), then by memory."""
    rows = _rows(race, store)
    tied = set(race.verdict.tied) if race.verdict else set()
    live = []
    for index, arm in enumerate(race.arms):
        if index in race.failed:
            continue
        keys = [r.key for r in rows if r.status not in OUT and _arm_of(race, r) == index]
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
    state.in_race = sum(1 for r in rows if r.key not in race.eliminated and r.status not in OUT)
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
    limit = race.request.answer_time_s
    if key in race.slow or (limit is not None and (result.answer_s_worst or 0.0) > limit):
        race.slow.add(key)  # measured over the limit: dropped with its measured figure, once and for all
        return "too_slow"
    if key in race.eliminated:
        return "eliminated"
    return "done" if result.n_done >= race.n_questions else "running"


def _stored_generation(path: str, label: str) -> str:
    """A stored model's generation: from its file's header while the file is there, else its label."""
    try:
        return generation_of(gguf_info.read_local(Path(path)).architecture())
    except (EdgevalError, OSError):
        return "qwen3.5" if label.startswith(("qwen3.5", "qwen3.6")) else "qwen3"


def _row(key: str, ref: ModelRef, result: ConfigResult, status: str, scores: dict[int, float]) -> Row:
    quant = ref.file.quant
    return Row(key, ref.label, ref.model.params, quant.value, quant.bits, result, result.memory_bytes,
               result.memory_source, band_of(result.memory_bytes), status, scores,
               generation=ref.model.generation)  # fmt: skip


def _comparison(race: _Race, store: Store, stopped: str) -> Comparison:
    rows = _rows(race, store)
    if race.request.exhaustive and stopped != "interrupted":
        stopped = "exhaustive"
    failures = tuple(race.failed.values())
    built = build(rows, race.request.budget_bytes, race.task, alpha=_alpha(race), eliminated=race.eliminated,
                  failures=failures, time_s=time.time() - race.started, tokens=race.tokens, stopped=stopped,
                  seconds_per_question=_seconds_per_question(race, store), questions=race.n_questions)  # fmt: skip
    return replace(built, nodes=node_runs(store, built.rows), too_slow=tuple(race.too_slow),
                   answer_time_s=race.request.answer_time_s)  # fmt: skip


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
    generation = {(p, m): _stored_generation(p, m) for p, m in {(c["model_path"], c["model"]) for c in configs}}
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
                          results.item_scores(samples, int(c["k"]), j), kld=kld_of(c, klds),
                          generation=generation[(c["model_path"], c["model"])])  # fmt: skip
                rows.append(row)
        limit = budget if budget is not None else max((r.memory_bytes for r in rows), default=0)
        kept = [r for r in rows if budget is None or r.memory_bytes <= budget]
        built = build(kept, limit, name, alpha=racing.pairs_alpha(len(kept)), stopped="stored")
        out.append(replace(built, nodes=node_runs(store, built.rows)))
    return out
