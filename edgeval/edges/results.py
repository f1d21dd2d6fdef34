"""Accuracy and speed of a stored configuration, computed from its samples (pure over the store's rows)."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from edgeval.core import answer_time, vote
from edgeval.edges.store import ItemTiming, SampleRow


@dataclass(frozen=True)
class ConfigResult:
    """What `edgeval run` reports for one configuration."""

    config_id: int
    model: str
    task: str
    kv_type_k: str
    kv_type_v: str
    ctx: int
    budget_tokens: int
    k: int
    n_items: int
    n_done: int
    accuracy_maj: float
    accuracy_avg: float
    ci95: tuple[float, float]
    pass_at_k: float
    maj_at: dict[int, float]  # maj@j for j = 1..k
    forced_share: float
    mean_tokens: float
    peak_rss_bytes: int | None
    peak_rss_anon_bytes: int | None  # the peak's anonymous part (Linux RssAnon)
    peak_rss_file_bytes: int | None  # the peak's file-backed part (Linux RssFile: a mapped model, libraries)
    peak_vram_bytes: int | None
    predicted_bytes: int
    load_s: float | None
    prompt_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    ttft_s: float | None
    wall_s: float | None
    status: str
    message: str | None
    memory_bytes: int = 0  # what this configuration takes: measured, calibrated or predicted (memory_source)
    memory_source: str = "predicted"
    repack: bool | None = None  # whether the run loaded with weight repacking (None: not recorded)
    repack_mode: str | None = None  # which mode: all, cpu_repack or off (None: not recorded)
    kv_window: int = 0  # each sample's KV window in tokens (0: no eviction)
    kv_cells: int = 0  # KV cells the run's context held
    mean_evicted: float = 0.0  # tokens a sample evicted from the KV cache, on average
    # Seconds one request takes deployed as measured (its prompt, its k votes together): the median and 90th
    # percentile over the questions answered, and the worst the budget allows (`answer_time`); None: not measured.
    answer_s: float | None = None
    answer_s_p90: float | None = None
    answer_s_worst: float | None = None
    forcing: str | None = None  # how the thinking budget was forced (None: edgeval's own, before llama.cpp's)

    @property
    def kv_label(self) -> str:
        """`f16`, `q8_0/f16`, `f16, window 2k`: the KV cache's types and its window."""
        from edgeval.core.units import format_tokens

        kv = self.kv_type_k if self.kv_type_k == self.kv_type_v else f"{self.kv_type_k}/{self.kv_type_v}"
        return f"{kv}, window {format_tokens(self.kv_window)}" if self.kv_window else kv

    def to_json(self) -> dict[str, object]:
        """The `--json` object."""
        out = dict(self.__dict__)
        out["ci95"] = list(self.ci95)
        out["maj_at"] = {str(j): v for j, v in self.maj_at.items()}
        return out


def memory_of(row: sqlite3.Row, votes: int | None = None) -> tuple[int, str]:
    """What a configuration takes with `votes` ≤ k votes, and where the figure comes from.

    `measured`: the peak RSS (plus the peak GPU memory, when offloading) of a run of exactly this configuration. `calibrated`: the prediction for a separate
    run of this budget and vote count, corrected by how far the run that produced the samples (a budget ladder,
    or more votes) was from its own prediction. `predicted`: nothing was measured yet.
    """
    k = int(row["k"])
    votes = votes or k
    by_votes = json.loads(row["predicted_by_votes"]) if row["predicted_by_votes"] else {}
    predicted = int(by_votes.get(str(votes), row["predicted_bytes"]))
    peak, arm = row["peak_rss_bytes"], row["arm_predicted_bytes"]
    if not peak:
        return predicted, "predicted"
    peak += row["peak_vram_bytes"] or 0  # with GPU offload the footprint is host and device memory together
    if votes == k and (arm is None or arm == row["predicted_bytes"]):
        return int(peak), "measured"
    return max(1, predicted + int(peak) - int(arm or row["predicted_bytes"])), "calibrated"


def complete_items(samples: Sequence[SampleRow], k: int) -> dict[int, list[SampleRow]]:
    """The samples of every question whose k samples are stored, by question index in order."""
    by_item: dict[int, list[SampleRow]] = defaultdict(list)
    for s in samples:
        by_item[s.item_index].append(s)
    return {i: group for i, group in sorted(by_item.items()) if len(group) >= k}


def item_scores(samples: Sequence[SampleRow], k: int, votes: int) -> dict[int, float]:
    """maj@votes of every question whose k samples are stored (the tie rule and subset average in vote.py)."""
    return {
        i: vote.maj_at([s.answer for s in group], [s.correct for s in group], votes)
        for i, group in complete_items(samples, k).items()
    }


def summarize(row: sqlite3.Row, samples: list[SampleRow], votes: int | None = None) -> ConfigResult:
    """Estimators over items: maj@k (tie rule in vote.py), avg@k, pass@k, maj@j, and a 95% CI of maj@k.

    With `votes` = j < k, the result is the configuration with j votes, estimated from the same samples: maj@j
    averaged over j-subsets, pass@j, and the memory of j votes."""
    k = int(row["k"])
    j = votes or k
    complete = list(complete_items(samples, k).values())
    maj_scores, avg_scores, pass_scores = [], [], []
    maj_j: dict[int, list[float]] = {i: [] for i in range(1, j + 1)}
    for group in complete:
        answers = [s.answer for s in group]
        correct: list[bool | None] = [s.correct for s in group]
        avg_scores.append(vote.avg_at(correct))
        pass_scores.append(vote.pass_at(len(group), sum(1 for c in correct if c), j))
        for i in maj_j:
            maj_j[i].append(vote.maj_at(answers, correct, i))
        maj_scores.append(maj_j[j][-1])
    estimate = vote.mean_ci(maj_scores)
    n = len(complete)
    flat = [s for group in complete for s in group]
    memory_bytes, source = memory_of(row, j)
    by_votes = json.loads(row["predicted_by_votes"]) if row["predicted_by_votes"] else {}
    return ConfigResult(
        config_id=int(row["id"]),
        model=str(row["model"]),
        task=str(row["task"]),
        kv_type_k=str(row["kv_type_k"]),
        kv_type_v=str(row["kv_type_v"]),
        ctx=int(row["ctx"]),
        budget_tokens=int(row["budget_tokens"]),
        k=j,
        n_items=int(row["n_items"]),
        n_done=n,
        accuracy_maj=estimate.mean,
        accuracy_avg=sum(avg_scores) / n if n else 0.0,
        ci95=(estimate.low, estimate.high),
        pass_at_k=sum(pass_scores) / n if n else 0.0,
        maj_at={i: (sum(v) / n if n else 0.0) for i, v in maj_j.items()},
        forced_share=sum(s.forced for s in flat) / len(flat) if flat else 0.0,
        mean_tokens=sum(s.tokens for s in flat) / len(flat) if flat else 0.0,
        peak_rss_bytes=row["peak_rss_bytes"] if source == "measured" else None,
        peak_rss_anon_bytes=row["peak_rss_anon_bytes"] if source == "measured" else None,
        peak_rss_file_bytes=row["peak_rss_file_bytes"] if source == "measured" else None,
        peak_vram_bytes=row["peak_vram_bytes"],
        predicted_bytes=int(by_votes.get(str(j), row["predicted_bytes"])),
        load_s=row["load_s"],
        prompt_tokens_per_s=row["prompt_tokens_per_s"],
        decode_tokens_per_s=row["decode_tokens_per_s"],
        ttft_s=row["ttft_s"],
        wall_s=row["wall_s"],
        status=str(row["status"]),
        message=row["message"],
        memory_bytes=memory_bytes,
        memory_source=source,
        repack=None if row["repack"] is None else bool(row["repack"]),
        repack_mode=row["repack_mode"],
        kv_window=int(row["kv_window"]),
        kv_cells=int(row["kv_cells"]),
        mean_evicted=sum(s.evicted for s in flat) / len(flat) if flat else 0.0,
        **_answer_times(row, complete, j),
        forcing=row["forcing"],
    )


def _answer_times(row: sqlite3.Row, complete: list[list[SampleRow]], votes: int) -> dict[str, float | None]:
    """Seconds per answer of this configuration with `votes` votes, from its run's measured speed and each
    question's first `votes` samples (the tokens each wrote, forced ones included)."""
    speed = answer_time.Speed.from_json(row["speed"])
    if speed is None:
        return {}
    questions = []
    budget = int(row["budget_tokens"])
    for group in complete:
        chosen = sorted(group, key=lambda s: s.sample_index)[:votes]
        # The forced text counted whole, but never past n_predict, which caps all a sample writes: a sample that
        # reopened its reasoning after closing it can be cut by n_predict in the middle of its forced text.
        written = [min(s.tokens + (speed.forced_tokens if s.forced else 0), budget + speed.extra) for s in chosen]
        questions.append((chosen[0].prompt_tokens, written))
    longest = max((p for p, _ in questions), default=int(row["ctx"]) - budget - speed.extra)
    times = answer_time.figures(speed, questions, budget=budget, k=votes, longest=longest)
    return {"answer_s": times.median_s, "answer_s_p90": times.p90_s, "answer_s_worst": times.worst_s}


def speed(timings: list[ItemTiming]) -> tuple[float | None, float | None, float | None]:
    """Prompt tokens/s, aggregate decode tokens/s over the k sequences, and mean time to first token."""
    if not timings:
        return None, None, None
    prompt_s = sum(t.prompt_s for t in timings)
    decode_s = sum(t.decode_s for t in timings)
    prompt_tps = sum(t.prompt_tokens for t in timings) / prompt_s if prompt_s > 0 else None
    decode_tps = sum(t.generated_tokens for t in timings) / decode_s if decode_s > 0 else None
    return prompt_tps, decode_tps, sum(t.ttft_s for t in timings) / len(timings)
