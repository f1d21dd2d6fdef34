"""The answer of a compare (pure over its rows): footprint bands, the Pareto frontier, the set tied with the best,
the paired statements behind each claim, and the recommendation in words."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from edgeval.core import racing
from edgeval.core.units import format_bytes, format_duration, format_seconds
from edgeval.edges.results import ConfigResult
from edgeval.edges.store import NodeRun

if TYPE_CHECKING:
    from edgeval.comparison.arms import TooSlow

OUT = ("failed", "too_slow")  # statuses that never compete: nothing to score, or over --answer-time


@dataclass(frozen=True)
class Row:
    """A configuration's outcome, placed for comparison."""

    key: str  # `config_id:votes`
    model: str
    params: int
    weight_quant: str
    bits: int
    result: ConfigResult
    memory_bytes: int
    memory_source: str  # measured, calibrated or predicted
    band: str
    status: str  # done, eliminated, running, failed, too_slow (its worst case measured over --answer-time)
    scores: dict[int, float] = field(default_factory=dict, repr=False)  # maj@j per question index
    pareto: bool = False
    eliminated_by: str | None = None
    kld: float | None = None  # mean KL divergence from a reference (`edgeval kld`), where one was measured
    generation: str = "qwen3"  # the model's architecture generation (`--family`): qwen3 or qwen3.5 (hybrid)

    @property
    def label(self) -> str:
        """`edgeval-tiny-l:Q8_0, kv f16, budget 48, k=4` (`kv f16, window 2k, …` with a KV window)."""
        res = self.result
        return f"{self.model}, kv {res.kv_label}, budget {res.budget_tokens}, k={res.k}"

    def to_json(self) -> dict[str, object]:
        """The row as `compare --json` prints it."""
        res = self.result
        return {"key": self.key, "model": self.model, "params": self.params, "weight_quant": self.weight_quant,
                "bits": self.bits, "kv_type_k": res.kv_type_k, "kv_type_v": res.kv_type_v, "kv_window": res.kv_window,
                "budget_tokens": res.budget_tokens, "k": res.k, "n_done": res.n_done, "accuracy_maj": res.accuracy_maj,
                "accuracy_avg": res.accuracy_avg, "ci95": list(res.ci95), "memory_bytes": self.memory_bytes,
                "memory_source": self.memory_source, "status": self.status, "eliminated_by": self.eliminated_by,
                "pareto": self.pareto, "band": self.band, "forced_share": res.forced_share,
                "decode_tokens_per_s": res.decode_tokens_per_s, "answer_s": res.answer_s,
                "answer_s_p90": res.answer_s_p90, "answer_s_worst": res.answer_s_worst, "config_id": res.config_id,
                "kld": self.kld, "generation": self.generation}  # fmt: skip


@dataclass(frozen=True)
class Statement:
    """A paired comparison behind a sentence of the recommendation: a − b."""

    a: str
    b: str
    difference: racing.Difference
    about: str  # "tied", "margin", "eliminated", or the frontier change ("a bigger model", …)

    def to_json(self) -> dict[str, object]:
        """As `compare --json` prints it."""
        return {"a": self.a, "b": self.b, "about": self.about, **self.difference.to_json()}


@dataclass(frozen=True)
class Comparison:
    """The compared rows (footprint order), the set tied with the best, the paired statements, the recommendation."""

    budget_bytes: int
    task: str
    rows: tuple[Row, ...]
    recommendation: tuple[str, ...]
    failures: tuple[str, ...] = ()
    best: str | None = None
    tied: tuple[str, ...] = ()
    recommended: str | None = None
    statements: tuple[Statement, ...] = ()
    alpha: float = racing.ALPHA
    time_s: float = 0.0
    tokens_decoded: int = 0
    stopped: str = ""  # why the race ended: settled, time, questions, interrupted, exhaustive, stored
    nodes: tuple[NodeRun, ...] = ()  # what each Ray node measured of each configuration (compare --ray)
    memory_frontier: tuple[str, ...] = ()  # the keys on the memory-accuracy frontier (what the statements walk)
    too_slow: tuple[TooSlow, ...] = ()  # left out before running: worst case predicted over --answer-time
    answer_time_s: float | None = None  # --answer-time (None: no limit)

    @property
    def frontier(self) -> tuple[Row, ...]:
        """Pareto-optimal rows: no other row needs no more memory, answers no slower (median seconds per answer,
        where measured) and is at least as accurate, one of them strictly (point estimates)."""
        return tuple(r for r in self.rows if r.pareto)

    def row(self, key: str | None) -> Row | None:
        """The row with this key."""
        return next((r for r in self.rows if r.key == key), None)


def contenders(rows: Sequence[Row]) -> list[racing.Contender]:
    """The rows still able to compete: scored and not failed."""
    return [racing.Contender(r.key, r.scores, r.memory_bytes) for r in rows if r.status not in OUT and r.scores]


def band_of(memory: int) -> str:
    """Footprint bands, doubling from 0.5 GB."""
    upper = 0.5
    while memory > upper * 1e9:
        upper *= 2
    return f"≤{upper:g} GB"


def pareto(points: Sequence[tuple[float, ...]]) -> list[bool]:
    """For (cost, …, accuracy) points — (memory, accuracy), (seconds, accuracy) or (memory, seconds, accuracy):
    True where no other point costs no more in every cost and is at least as accurate, with one of them strictly
    better."""

    def beats(o: tuple[float, ...], p: tuple[float, ...]) -> bool:
        return o != p and o[-1] >= p[-1] and all(a <= b for a, b in zip(o[:-1], p[:-1], strict=True))

    return [not any(beats(o, p) for j, o in enumerate(points) if j != i) for i, p in enumerate(points)]


def seconds(r: Row) -> float:
    """A row's median seconds per answer; infinite where none was measured (it then wins on nothing but speed)."""
    return r.result.answer_s if r.result.answer_s is not None else math.inf


def build(
    rows_in: Sequence[Row], budget: int, task: str, *, alpha: float,
    eliminated: dict[str, racing.Elimination] | None = None, failures: Sequence[str] = (), time_s: float = 0.0,
    tokens: int = 0, stopped: str = "", seconds_per_question: dict[str, float] | None = None, questions: int = 0,
) -> Comparison:  # fmt: skip
    """Rows in footprint order with bands and Pareto marks, the verdict and the recommendation in words."""
    gone = eliminated or {}
    rows = sorted(rows_in, key=lambda r: (r.memory_bytes, -r.result.accuracy_maj, r.model, r.result.kv_type_k,
                                          r.result.budget_tokens, r.result.k))  # fmt: skip
    scored = [r for r in rows if r.status not in OUT and r.result.n_done > 0 and r.memory_bytes <= budget]
    marks = pareto([(r.memory_bytes, seconds(r), r.result.accuracy_maj) for r in scored])
    on_frontier = {r.key for r, mark in zip(scored, marks, strict=True) if mark}
    by_memory = pareto([(r.memory_bytes, r.result.accuracy_maj) for r in scored])
    memory_frontier = tuple(r.key for r, mark in zip(scored, by_memory, strict=True) if mark)
    rows = [replace(r, pareto=r.key in on_frontier, eliminated_by=gone[r.key].winner if r.key in gone else None)
            for r in rows]  # fmt: skip
    alive = [r for r in rows if r.status not in OUT and r.scores and r.key not in gone and r.memory_bytes <= budget]
    verdict = racing.verdict(contenders(alive), alpha)
    statements = _statements(rows, verdict, gone, alpha, memory_frontier)
    words = _recommend(rows, budget, verdict, statements, stopped, seconds_per_question or {}, questions)
    return Comparison(
        budget, task, tuple(rows), tuple(words), tuple(failures), best=verdict.best if verdict else None,
        tied=verdict.tied if verdict else (), recommended=verdict.recommended if verdict else None,
        statements=tuple(statements), alpha=alpha, time_s=time_s, tokens_decoded=tokens, stopped=stopped,
        memory_frontier=memory_frontier,
    )  # fmt: skip


def _statements(
    rows: Sequence[Row], verdict: racing.Verdict | None, gone: dict[str, racing.Elimination], alpha: float,
    memory_frontier: Sequence[str],
) -> list[Statement]:  # fmt: skip
    """The paired differences behind the recommendation: best against every other configuration still in the
    race, each elimination, and each kind of change along the memory-accuracy frontier."""
    out = []
    if verdict is not None:
        for key, d in verdict.against_best.items():
            out.append(Statement(verdict.best, key, d, "tied" if key in verdict.tied else "behind the best"))
    for e in gone.values():
        out.append(Statement(e.winner, e.loser, e.difference, "eliminated"))
    frontier = [r for r in rows if r.key in memory_frontier]
    for a, b in itertools.pairwise(frontier):
        out.append(Statement(b.key, a.key, racing.difference(b.scores, a.scores, alpha), _change(a, b)))
    return out


_SPEND = {"weights": "a bigger or more precise model", "tokens": "a longer token budget", "votes": "more votes",
          "KV precision": "a more precise KV cache", "KV window": "a different KV window"}  # fmt: skip


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
    if b.result.kv_window != a.result.kv_window:
        kinds.append("KV window")
    return " and ".join(_SPEND[k] for k in kinds) or "the same configuration"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _points(d: racing.Difference) -> str:
    return f"{100 * d.mean:+.1f} points ({100 * d.low:+.1f} to {100 * d.high:+.1f}, n={d.n})"


def _describe(r: Row) -> str:
    res = r.result
    return (f"{r.label} — {_pct(res.accuracy_maj)} maj@{res.k} ({_pct(res.ci95[0])}–{_pct(res.ci95[1])}, "
            f"n={res.n_done}), {format_bytes(r.memory_bytes)} {r.memory_source}{_per_answer(res)}")  # fmt: skip


def _per_answer(res: ConfigResult) -> str:
    """`, 0.4 s per answer (worst 1.2 s)` where the run measured its speed; empty where not."""
    if res.answer_s is None:
        return ""
    worst = f" (worst {format_seconds(res.answer_s_worst)})" if res.answer_s_worst is not None else ""
    return f", {format_seconds(res.answer_s)} per answer{worst}"


def _recommend(
    rows: Sequence[Row], budget: int, verdict: racing.Verdict | None, statements: Sequence[Statement], stopped: str,
    seconds_per_question: dict[str, float], questions: int,
) -> list[str]:  # fmt: skip
    """The answer in words: the best, those tied with it, the recommendation and its margin, what the frontier
    says memory is best spent on (only with its paired interval), and why the race stopped."""
    by_key = {r.key: r for r in rows}
    if verdict is None:
        return [f"No configuration within {format_bytes(budget)} answered a question: raise --budget or --time, "
                "or check the failures listed above."]  # fmt: skip
    best, chosen = by_key[verdict.best], by_key[verdict.recommended]
    lines = [f"Best under {format_bytes(budget)}: {_describe(best)}."]
    others = [by_key[k] for k in verdict.tied if k != verdict.best]
    if others:
        shown = ", ".join(r.label for r in others[:6]) + (f" and {len(others) - 6} more" if len(others) > 6 else "")
        lines.append(f"Statistically tied with it (paired interval includes 0): {shown}.")
    else:
        lines.append("Every other configuration still in the race is behind it by a paired interval that excludes 0.")
    if chosen.key != best.key:
        margin = verdict.against_best[chosen.key]
        lines.append(f"Recommended: {_describe(chosen)} — the least memory among those tied; the best is "
                     f"{_points(margin)} ahead of it.")  # fmt: skip
    else:
        lines.append(f"Recommended: {chosen.label}.")
    timed = [by_key[k] for k in verdict.tied if by_key[k].result.answer_s is not None]
    fastest = min(timed, key=lambda r: (seconds(r), r.memory_bytes), default=None)
    if fastest is not None and fastest.key != chosen.key and seconds(fastest) < seconds(chosen):
        lines.append(f"Fastest among those tied: {_describe(fastest)}.")
    lines += _frontier_lines(statements, by_key, seconds_per_question, questions)
    lines.append(_stop_line(stopped, rows))
    return lines


def _frontier_lines(
    statements: Sequence[Statement], by_key: dict[str, Row], seconds_per_question: dict[str, float], questions: int
) -> list[str]:
    """For each kind of change along the frontier, its best step per byte — said only with its paired interval."""
    best_step: dict[str, Statement] = {}
    for s in statements:
        if s.about in ("tied", "behind the best", "eliminated", "the same configuration"):
            continue
        extra = max(by_key[s.a].memory_bytes - by_key[s.b].memory_bytes, 1)
        held = best_step.get(s.about)
        if held is None or s.difference.mean / extra > held.difference.mean / max(
            by_key[held.a].memory_bytes - by_key[held.b].memory_bytes, 1
        ):
            best_step[s.about] = s
    lines = []
    for about, s in best_step.items():
        more_memory = format_bytes(max(by_key[s.a].memory_bytes - by_key[s.b].memory_bytes, 0))
        d = s.difference
        if d.low > 0:
            lines.append(f"Memory is best spent on {about} here: {_points(d)} for {more_memory} more.")
            continue
        need = racing.questions_to_settle(d)
        per = seconds_per_question.get(s.a, 0.0) + seconds_per_question.get(s.b, 0.0)
        if need is None or (questions and need > questions):
            more = f"; even all {questions} questions of the task would likely not settle it" if questions else ""
        else:
            more = f"; about {need - d.n} more questions (~{format_duration((need - d.n) * per)}) would settle it"
        lines.append(f"Cannot tell yet whether {about} pays: {_points(d)} for {more_memory} more{more}.")
    return lines


def _stop_line(stopped: str, rows: Sequence[Row]) -> str:
    running = sum(1 for r in rows if r.status == "running")
    return {
        "settled": "The race is settled: the best is ahead of every other configuration still in it.",
        "time": f"Stopped at the time limit with {running} configurations still in the race: run the same command "
                "again to add questions (nothing is redone), or give more --time.",
        "interrupted": "Interrupted: this is the answer so far; run the same command again to continue.",
        "questions": "Every question within --limit was answered.",
        "exhaustive": "Every configuration answered every question (--exhaustive): nothing was dropped.",
    }.get(stopped, "From the stored results.")  # fmt: skip
