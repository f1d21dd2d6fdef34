"""Equal-footprint comparison: which configurations fit a budget, running what the store lacks, the Pareto
frontier of memory against accuracy, and a recommendation in words."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgeval import hub, plan, sweep
from edgeval.catalog import Catalog, ModelRef
from edgeval.errors import EdgevalError, describe
from edgeval.quants import KVType, WeightQuant
from edgeval.results import ConfigResult
from edgeval.store import Store
from edgeval.units import format_bytes

# The default grid (documented in the README): the study's 4- and 8-bit weights plus 16-bit where it fits, two KV
# types, two token budgets (512 and 2,048), one vote and four, ten questions: a night on a laptop, not a week.
DEFAULT_QUANTS = (WeightQuant.Q4_K_M, WeightQuant.Q8_0, WeightQuant.BF16, WeightQuant.F16)
DEFAULT_KV = (KVType.F16, KVType.Q8_0)
DEFAULT_CTX = (768, 2304)  # 256-token prompt + budgets of 512 and 2,048 tokens
DEFAULT_K = (1, 4)
DEFAULT_LIMIT = 10
DEFAULT_TASK = "math500"
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
    ctx: tuple[int, ...] = DEFAULT_CTX
    k: tuple[int, ...] = DEFAULT_K
    limit: int | None = DEFAULT_LIMIT
    thinking: bool = True
    seed: int = 0
    threads: int | None = None
    repack: bool = False
    catalogs: tuple[Path, ...] = ()
    prompt_tokens: int = plan.DEFAULT_PROMPT_TOKENS


@dataclass(frozen=True)
class Planned:
    """One configuration of the grid, before it runs."""

    config: plan.Config
    task: str
    estimated_s: float

    @property
    def label(self) -> str:
        """`qwen3-8b:Q4_K_M kv q8_0 budget 1024 k=4`."""
        c = self.config
        return f"{c.ref.label} kv {c.kv_type_k.value} budget {c.budget_tokens} k={c.k}"


@dataclass(frozen=True)
class Row:
    """A configuration's outcome, placed for comparison."""

    model: str
    params: int
    weight_quant: str
    bits: int
    result: ConfigResult
    memory_bytes: int  # measured peak RSS when the run finished, else the prediction
    band: str
    pareto: bool = False

    def to_json(self) -> dict[str, object]:
        """The row as `compare --json` prints it."""
        return {"model": self.model, "params": self.params, "weight_quant": self.weight_quant, "bits": self.bits,
                "memory_bytes": self.memory_bytes, "band": self.band, "pareto": self.pareto,
                **self.result.to_json()}  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    """The compared rows (footprint order), the frontier, and the recommendation."""

    budget_bytes: int
    task: str
    rows: tuple[Row, ...]
    recommendation: tuple[str, ...]
    failures: tuple[str, ...] = ()

    @property
    def frontier(self) -> tuple[Row, ...]:
        """Pareto-optimal rows: no other row is both smaller and more accurate."""
        return tuple(r for r in self.rows if r.pareto)


@dataclass
class SweepProgress:
    """Where a sweep is: configurations done, the one running, an estimate of the time left."""

    done: int = 0
    total: int = 0
    current: str = ""
    inner: sweep.Progress = field(default_factory=sweep.Progress)
    eta_s: float | None = None


def grid(request: Request, task: str, catalog: Catalog | None = None) -> list[Planned]:
    """The configurations to compare: the plan's fitting grid, with a rough time estimate for each."""
    book = catalog or Catalog.load(request.catalogs)
    refs = book.resolve_all(request.models) if request.models else _default_refs(book)
    axes = plan.Axes(kv=request.kv, ctx=request.ctx, k=request.k, prompt_tokens=request.prompt_tokens)
    fitting = plan.plan(refs, axes, request.budget_bytes).fits
    items = request.limit or DEFAULT_LIMIT
    return [Planned(c, task, _estimate_s(c, items)) for c in fitting]


def _default_refs(book: Catalog) -> list[ModelRef]:
    return [r for r in book.everything() if r.file.quant in DEFAULT_QUANTS]


def _estimate_s(config: plan.Config, items: int) -> float:
    """A rough time: every sample uses half its budget, decode is memory-bound, k sequences go twice as fast."""
    rate = _TOKENS_PER_S_AT_1GB / max(config.footprint.weight_bytes / 1e9, 0.05)
    if config.k > 1:
        rate *= 2
    return items * config.k * config.budget_tokens * 0.5 / rate


def _spec(planned: Planned, path: Path, request: Request) -> sweep.RunSpec:
    c = planned.config
    return sweep.RunSpec(
        model_path=path, model_label=c.ref.label, task=planned.task, kv_type_k=c.kv_type_k, kv_type_v=c.kv_type_v,
        budget_tokens=c.budget_tokens, k=c.k, thinking=request.thinking, seed=request.seed, limit=request.limit,
        threads=request.threads, repack=request.repack,
    )  # fmt: skip


def run(
    request: Request, store: Store, progress: Callable[[SweepProgress], None] | None = None, command: str = ""
) -> list[Comparison]:
    """For each task: run every fitting configuration the store lacks (one failing does not stop the others)."""
    book = Catalog.load(request.catalogs)
    run_id = store.add_run(sweep.provenance(), command or "edgeval compare")
    comparisons = []
    for task in request.tasks:
        planned = grid(request, task, book)
        state = SweepProgress(total=len(planned))
        results: list[tuple[Planned, ConfigResult]] = []
        failures: list[str] = []
        unreachable: list[EdgevalError] = []
        remaining = sum(p.estimated_s for p in planned)
        for item in planned:
            state.current, state.eta_s = item.label, remaining
            if progress is not None:
                progress(state)
            try:
                path = hub.local_path(item.config.ref.file)
                if path is None and unreachable:
                    raise unreachable[0]  # the Hub did not answer once already: do not wait on it again
                path = path or hub.pull(item.config.ref.file)
                prepared = sweep.prepare(_spec(item, path, request), store, run_id)

                def inner(p: sweep.Progress, state: SweepProgress = state) -> None:
                    state.inner = p
                    if progress is not None:
                        progress(state)

                results.append((item, sweep.execute(prepared, store, inner)))
            except (hub.HubUnreachableError, hub.OfflineNotCachedError) as exc:
                unreachable.append(exc)  # other configurations may have their files already
                failures.append(f"{item.label}: {describe(exc)}")
            except EdgevalError as exc:
                failures.append(f"{item.label}: {describe(exc)}")
            remaining -= item.estimated_s
            state.done += 1
        if progress is not None:
            progress(state)
        if unreachable and not results:
            raise unreachable[0]  # nothing could run: the one-line error names the way out (edgeval demo)
        rows = [row_of(p.config.ref.label, p.config.ref.model.params, p.config.ref.file.quant, r) for p, r in results]
        comparisons.append(compare(rows, request.budget_bytes, task, failures))
    return comparisons


# ---------------------------------------------------------------- the comparison itself (pure)


def band_of(memory: int) -> str:
    """Footprint bands, doubling from 0.5 GB."""
    upper = 0.5
    while memory > upper * 1e9:
        upper *= 2
    return f"≤{upper:g} GB"


def pareto(points: Sequence[tuple[int, float]]) -> list[bool]:
    """For (memory, accuracy) points: True where no other point is both smaller (≤ memory) and more accurate
    (with one of the two strictly better)."""
    marks = []
    for i, (mem, acc) in enumerate(points):
        dominated = any(j != i and m <= mem and a >= acc and (m < mem or a > acc) for j, (m, a) in enumerate(points))
        marks.append(not dominated)
    return marks


def row_of(model: str, params: int, quant: WeightQuant, result: ConfigResult) -> Row:
    """A result placed for comparison: its memory is the measured peak when the run finished, else the prediction."""
    measured = result.peak_rss_bytes if result.status == "done" and result.peak_rss_bytes else None
    memory = measured or result.predicted_bytes
    return Row(model, params, quant.value, quant.bits, result, memory, band_of(memory))


def compare(rows_in: Sequence[Row], budget: int, task: str, failures: Sequence[str] = ()) -> Comparison:
    """Rows in footprint order with bands, Pareto marks and the recommendation."""
    rows = list(rows_in)
    rows.sort(key=lambda r: (r.memory_bytes, -r.result.accuracy_maj, r.model, r.result.kv_type_k, r.result.k))
    done = [r for r in rows if r.result.status == "done"]
    marks = pareto([(r.memory_bytes, r.result.accuracy_maj) for r in done])
    on_frontier = {id(r) for r, mark in zip(done, marks, strict=True) if mark}
    rows = [replace(r, pareto=id(r) in on_frontier) for r in rows]
    return Comparison(budget, task, tuple(rows), tuple(recommend(rows, budget)), tuple(failures))


def from_store(store: Store, task: str | None = None, budget: int | None = None) -> list[Comparison]:
    """Comparisons rebuilt from every stored configuration (per task; within `budget` when given)."""
    from edgeval import results as results_mod

    configs = store.configs("status != 'pending'")
    names = sorted({str(c["task"]) for c in configs}) if task is None else [task]
    out = []
    for name in names:
        rows = []
        for c in configs:
            if c["task"] != name:
                continue
            result = results_mod.summarize(c, store.samples(int(c["id"])))
            rows.append(row_of(str(c["model"]), int(c["params"]), WeightQuant(str(c["weight_quant"])), result))
        limit = budget if budget is not None else max((r.memory_bytes for r in rows), default=0)
        kept = [r for r in rows if budget is None or r.memory_bytes <= budget]
        out.append(compare(kept, limit, name))
    return out


def _describe_row(r: Row) -> str:
    res = r.result
    return (f"{r.model} with KV {res.kv_type_k}, a {res.budget_tokens}-token budget and k={res.k} "
            f"({100 * res.accuracy_maj:.1f}% maj@{res.k}, {r.memory_bytes / 1e9:.2f} GB)")  # fmt: skip


_SPEND = {"weights": "a bigger or more precise model", "tokens": "a longer token budget", "votes": "more votes",
          "KV precision": "a more precise KV cache"}  # fmt: skip


def _change(a: Row, b: Row) -> str:
    """What changed from frontier point a to the next, b: weights, tokens, votes, KV precision (several may)."""
    kinds = []
    if b.result.budget_tokens != a.result.budget_tokens:
        kinds.append("tokens")
    if (b.params, b.bits) != (a.params, a.bits):
        kinds.append("weights")
    if b.result.k != a.result.k:
        kinds.append("votes")
    if (b.result.kv_type_k, b.result.kv_type_v) != (a.result.kv_type_k, a.result.kv_type_v):
        kinds.append("KV precision")
    return " and ".join(_SPEND[k] for k in kinds) or "the same configuration"


def recommend(rows: Sequence[Row], budget: int) -> list[str]:
    """The best configuration under the budget, the runner-up, and what the frontier says memory is best spent on."""
    done = [r for r in rows if r.result.status == "done" and r.memory_bytes <= budget]
    if not done:
        return ["No configuration finished within the budget: raise --budget, or check the failures listed above."]
    ranked = sorted(done, key=lambda r: (-r.result.accuracy_maj, r.memory_bytes, r.model))
    lines = [f"Best under {budget / 1e9:g} GB: {_describe_row(ranked[0])}."]
    if len(ranked) > 1:
        lines.append(f"Runner-up: {_describe_row(ranked[1])}.")
    frontier = [r for r in done if r.pareto]
    # For each kind of change along the frontier, the step that bought the most accuracy per byte.
    gains: dict[str, tuple[float, float, int]] = {}
    for a, b in itertools.pairwise(frontier):
        extra = max(b.memory_bytes - a.memory_bytes, 1)
        points = (b.result.accuracy_maj - a.result.accuracy_maj) * 100
        kind = _change(a, b)
        if kind not in gains or points / extra > gains[kind][0]:
            gains[kind] = (points / extra, points, extra)
    if gains:
        spend, (_, points, extra) = max(gains.items(), key=lambda kv: kv[1][0])
        lines.append(
            f"Along the frontier, memory is best spent on {spend} here: {points:+.1f} points for "
            f"{format_bytes(extra)} more."
        )
    elif ranked[0].result.accuracy_maj == 0:
        lines.append("Every configuration scored 0%: the task is beyond these models at these budgets.")
    else:
        lines.append("One configuration dominates all others: it is both the smallest and the most accurate.")
    return lines
