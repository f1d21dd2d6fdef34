"""What a compare races: the arms that fit the budget (one run per model × KV type answers every token budget
and vote count), the defaults, and what each arm will cost in time on this machine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeval.comparison import plan
from edgeval.core import prompts, racing
from edgeval.core.answer_time import Speed
from edgeval.core.errors import EdgevalError
from edgeval.core.quants import KVType, WeightQuant
from edgeval.core.units import format_tokens
from edgeval.edges import tasks
from edgeval.edges.catalog import Catalog, ModelRef, in_family
from edgeval.edges.store import Store
from edgeval.running import sweep
from edgeval.running.configuration import ANSWER_TOKENS

if TYPE_CHECKING:  # ray is an optional extra, imported only with --ray
    pass


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


def _extra_tokens(message: str) -> int:
    """What a sample may write beyond its thinking budget, for predictions before any run measured it: the start
    tag, the budget message (about four characters a token), the end tag and the room to answer
    (`budget.Forcing.extra`, exact once a run tokenized it); a measured speed carries its own."""
    return 2 + -(-len(message) // 4) + ANSWER_TOKENS


@dataclass(frozen=True)
class Request:
    """What `edgeval compare` was asked."""

    budget_bytes: int
    tasks: tuple[str, ...] = (DEFAULT_TASK,)
    models: tuple[str, ...] = ()
    family: str = "all"  # architecture generation (catalog.FAMILIES): the default lets the generations compete
    kv: tuple[KVType, ...] = DEFAULT_KV
    kv_window: tuple[int, ...] = (0,)  # KV windows (0: no eviction)
    budgets: tuple[int, ...] = DEFAULT_BUDGETS  # the token-budget ladder
    votes: tuple[int, ...] = DEFAULT_VOTES
    limit: int | None = None  # questions per configuration at most (None: the whole task)
    time_s: float | None = DEFAULT_TIME_S  # wall-time cap (None: no cap)
    exhaustive: bool = False  # every configuration on every question up to `limit`, nothing dropped
    thinking: bool = True
    seed: int = 0
    budget_message: str = prompts.BUDGET_MESSAGE  # forced before `</think>` at the thinking budget
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
    answer_time_s: float | None = None  # the most one answer may take in the worst case (None: no limit)

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
    answer_times: dict[tuple[int, int], AnswerEstimate] = field(default_factory=dict)  # (budget, votes) -> predicted

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
    """The runs that answer every configuration fitting the budget (and the answer time, when limited)."""
    return race_plan(request, task, catalog, Measured(speeds or {})).arms


@dataclass(frozen=True)
class RacePlan:
    """What a compare runs for one task, and what it leaves out before running: the configurations whose worst
    case is predicted over --answer-time."""

    arms: list[Arm]
    too_slow: list[TooSlow]


def race_plan(request: Request, task: str, catalog: Catalog | None = None, known: Measured | None = None) -> RacePlan:
    """The runs that answer every configuration fitting the budget, and those predicted too slow.

    For each model file, KV type and KV window, each budget of the ladder can afford some largest number of votes
    K(b) in the budget (K falls as b grows); budgets with the same K are one run with K votes, which answers (b, j)
    for every j ≤ K in the votes axis. Memory is predicted from the catalog's facts, as `edgeval plan` does (a
    window no shorter than a budget is that budget without a window, so it is not run twice); seconds per answer
    from what this machine measured (`answer_estimate`), and a configuration whose worst case exceeds
    `request.answer_time_s` is left out before it costs anything."""
    book = catalog or Catalog.load(request.catalogs)
    known = known or Measured({})
    refs = (
        in_family(book.resolve_all(request.models), request.family) if request.models else default_refs(book, request)
    )
    if request.models and not refs:
        raise EdgevalError(f"none of --models is of generation {request.family}", hint="drop --family or name others")
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
    times, too_slow = _answer_times(request, task, fitting, refs_by_label, known)
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
            estimate = estimate_s(ref, ladder[-1], k, gpu_layers, known.rates)
            answer = {(b, j): times[(label, kv, window, b, j)] for b in ladder for j in compared}
            out.append(Arm(ref, kv, ladder, k, compared, predicted, estimate.seconds, window, device, estimate,
                           answer))  # fmt: skip
    return RacePlan(sorted(out, key=lambda a: (a.ref.weight_bytes, a.kv.value, a.window, a.k)), too_slow)


def _answer_times(
    request: Request, task: str, fitting: dict[tuple[str, KVType, int], dict[int, dict[int, int]]],
    refs: dict[str, ModelRef], known: Measured,
) -> tuple[dict[tuple[str, KVType, int, int, int], AnswerEstimate], list[TooSlow]]:  # fmt: skip
    """Each fitting configuration's predicted seconds per answer; those whose worst case exceeds the limit are
    taken out of `fitting` (a budget left with no vote count goes too) and returned as too slow."""
    times = {}
    too_slow = []
    for (label, kv, window), per_budget in fitting.items():
        for budget, ks in list(per_budget.items()):
            for j in sorted(ks):
                answer = answer_estimate(refs[label], kv, window, budget, j, request, task, known)
                times[(label, kv, window, budget, j)] = answer
                if request.answer_time_s is not None and answer.worst_s > request.answer_time_s:
                    too_slow.append(TooSlow(refs[label], kv, window, budget, j, ks.pop(j), answer))
            if not ks:
                del per_budget[budget]
    for key in [key for key, per_budget in fitting.items() if not per_budget]:
        del fitting[key]
    return times, too_slow


def default_refs(book: Catalog, request: Request) -> list[ModelRef]:
    """The default models: 4- and 8-bit files of the largest hybrid Qwen3 sizes whose 4-bit file fits with room to
    think."""
    # Models with both modes (the 2507 Thinking/Instruct models join by --models), of the generations asked for.
    candidates = [r for r in in_family(book.everything(), request.family)
                  if r.file.quant in DEFAULT_QUANTS and r.model.thinking == "hybrid"]  # fmt: skip
    repacking, types = plan.repack_setting(request.repack, request.offload)
    smallest_run = plan.Axes(kv=(KVType.Q8_0,), ctx=(request.prompt_tokens + min(request.budgets),), k=(1,),
                             prompt_tokens=request.prompt_tokens, repack=repacking, repack_types=types,
                             gpu_layers=request.offload, cpu_moe=request.cpu_moe)  # fmt: skip
    fitting = request.fitting()
    fits = {c.ref.label for c in plan.configurations(candidates, smallest_run) if fitting(c.footprint)}
    return [r for r in candidates if r.model.name in _largest(candidates, fits) and r.label in fits]


def _largest(candidates: list[ModelRef], fits: set[str]) -> set[str]:
    """The DEFAULT_SIZES largest models that fit, the largest of each generation first — so with `--family all`
    the generations meet at about the same footprint; at equal size the later name (Qwen3.6 over Qwen3.5)."""
    models = sorted({r.model for r in candidates if r.label in fits}, key=lambda m: (m.params, m.name), reverse=True)
    firsts = [m for i, m in enumerate(models) if m.generation not in {n.generation for n in models[:i]}]
    ordered = firsts + [m for m in models if m not in firsts]
    return {m.name for m in ordered[:DEFAULT_SIZES]}


@dataclass(frozen=True)
class Estimate:
    """What a question of a run is expected to cost, and where the speed comes from."""

    seconds: float
    tokens_per_s: float  # aggregate decode rate assumed
    source: str  # "measured" (earlier runs of this file here), "probe" (the throughput knee) or "rough"
    width: int = 1  # questions in flight assumed


def estimate_s(
    ref: ModelRef, budget: int, k: int, gpu_layers: int = 0, speeds: dict[str, float] | None = None,
    questions: int | None = None,
) -> Estimate:  # fmt: skip
    """Time per question: k samples using half their largest budget, at the aggregate decode rate this machine
    measured — its earlier runs of this file (`measured_speeds`), else the throughput probe's knee for the model's
    size class (an upper bound: no sampling, a short context), else a rate scaled from one CPU's figure by weight
    bytes (memory-bound decoding), twice as fast for k > 1. `questions` in flight: as many as reach the probe's
    knee (None), or 1 for the deployment shape (one request's k votes)."""
    tokens = k * budget * 0.5
    if speeds and speeds.get(ref.label):
        return Estimate(tokens / speeds[ref.label], speeds[ref.label], "measured")
    from edgeval.llama import throughput

    knee = throughput.remembered_for(ref.weight_bytes, gpu_layers != 0)
    if knee is not None:
        width = questions or max(1, knee.knee // k)
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


# ---------------------------------------------------------------- seconds per answer, predicted


@dataclass(frozen=True)
class Measured:
    """What earlier runs in the store measured, for predictions: each model file's aggregate decode rate, the
    deployment shapes' speeds (model file, K and V types, window -> [(votes measured, speed)], newest first) and
    the longest prompt each model file read on each task."""

    rates: dict[str, float]
    shapes: dict[tuple[str, str, str, int], list[tuple[int, Speed]]] = field(default_factory=dict)
    prompts: dict[tuple[str, str], int] = field(default_factory=dict)


def measured(store: Store) -> Measured:
    """The store's speeds and prompt lengths (`Measured`)."""
    shapes: dict[tuple[str, str, str, int], list[tuple[int, Speed]]] = {}
    rows = store.db.execute("SELECT model, kv_type_k, kv_type_v, kv_window, k, speed FROM configs "
                            "WHERE speed IS NOT NULL ORDER BY id DESC").fetchall()  # fmt: skip
    for model, kv_k, kv_v, window, k, text in rows:
        speed = Speed.from_json(text)
        if speed is not None:
            shapes.setdefault((str(model), str(kv_k), str(kv_v), int(window)), []).append((int(k), speed))
    prompts = store.db.execute("SELECT c.model, c.task, MAX(s.prompt_tokens) FROM samples s JOIN configs c "
                               "ON c.id = s.config_id GROUP BY c.model, c.task").fetchall()  # fmt: skip
    return Measured(measured_speeds(store), shapes, {(str(m), str(t)): int(n) for m, t, n in prompts})


@dataclass(frozen=True)
class AnswerEstimate:
    """Seconds per answer of a configuration predicted before it runs: typical (its votes writing half their
    budget, as the time plan assumes) and the worst case (every vote writing all it may: prompt + budget + forcing
    + answer), and where the speed comes from: `shape` (this model file, KV cache and window measured here as
    deployed), else the time plan's decode rate (`measured`, `probe` or `rough`)."""

    typical_s: float
    worst_s: float
    source: str

    def to_json(self) -> dict[str, object]:
        return {"answer_s": round(self.typical_s, 4), "answer_s_worst": round(self.worst_s, 4),
                "answer_time_source": self.source, "answer_time_predicted": True}  # fmt: skip


@dataclass(frozen=True)
class TooSlow:
    """A configuration left out before running: its predicted worst case exceeds --answer-time."""

    ref: ModelRef
    kv: KVType
    window: int
    budget: int
    k: int
    predicted_bytes: int
    answer: AnswerEstimate

    @property
    def label(self) -> str:
        window = f", window {format_tokens(self.window)}" if self.window else ""
        return f"{self.ref.label}, kv {self.kv.value}{window}, budget {self.budget}, k={self.k}"

    def to_json(self) -> dict[str, object]:
        """As a `compare --json` row: status `too_slow`, nothing measured, its predicted figures."""
        quant = self.ref.file.quant
        return {"key": None, "model": self.ref.label, "params": self.ref.model.params, "weight_quant": quant.value,
                "bits": quant.bits, "kv_type_k": self.kv.value, "kv_type_v": self.kv.value, "kv_window": self.window,
                "budget_tokens": self.budget, "k": self.k, "n_done": 0, "accuracy_maj": None, "ci95": None,
                "memory_bytes": self.predicted_bytes, "memory_source": "predicted", "status": "too_slow",
                "pareto": False, **self.answer.to_json()}  # fmt: skip


def answer_estimate(
    ref: ModelRef, kv: KVType, window: int, budget: int, k: int, request: Request, task: str, known: Measured
) -> AnswerEstimate:  # fmt: skip
    """Seconds one answer of (budget, k votes) will take deployed: from this shape's speed measured here before
    (the one whose votes cover k, newest first), else from the time plan's decode rate for one request of k votes
    (`estimate_s` with one question in flight; the prompt read at no more than one sequence's decode rate). The
    prompt is the longest this model file read on the task here, else the plan's prompt length."""
    prompt = known.prompts.get((ref.label, task), request.prompt_tokens)
    found = known.shapes.get((ref.label, kv.value, kv.value, window), [])
    speed = next((s for n, s in found if n >= k), _widened(found[0][1], k) if found else None)
    source = "shape"
    if speed is None:
        one = estimate_s(ref, budget, 1, request.offload, known.rates, questions=1)
        wide = estimate_s(ref, budget, k, request.offload, known.rates, questions=1)
        extra = _extra_tokens(request.budget_message) if ref.model.thinks(request.thinking) else 0
        steps = {1: (1 / one.tokens_per_s, 0.0), k: (k / wide.tokens_per_s, 0.0)}
        speed, source = Speed(one.tokens_per_s, steps, extra=extra), wide.source
    typical = speed.answer_s(prompt, [budget // 2] * k)
    return AnswerEstimate(typical, speed.worst_s(prompt, budget, k), source)


def _widened(speed: Speed, k: int) -> Speed:
    """A speed measured with fewer sequences than k, taken to k sequences as no faster than k/w steps of its widest
    width w (an upper bound: one batch of k never costs more than decoding them w at a time)."""
    width = max(speed.steps)
    a, b = speed.steps[width]
    return replace(speed, steps={**speed.steps, k: (a * k / width, b * k / width)})
