"""Seconds per answer: how long one request takes when a configuration is deployed as it was measured — its prompt
read, then its k votes decoded together until the last one ends (end token, or n_predict) — derived from each
stored question's token counts and the deployment shape's speed, measured once per run (`Speed`, pure).

A decode step with w sequences at depth d (cells already in the cache) takes about a_w + b_w·d seconds: the
weights read once a step (a_w), attention over the cache (b_w). Both are measured at 1 and k sequences and two
depths, and interpolated linearly in w between them. A question whose samples wrote n_1 ≤ … ≤ n_k tokens takes
prompt / rate + Σ over its steps of step(live sequences, depth).
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Speed:
    """The deployment shape's speed on the machine that ran it."""

    prompt_tps: float  # prompt tokens read per second
    steps: Mapping[int, tuple[float, float]]  # width -> (seconds per step at depth 0, seconds per step per cell)
    forced_tokens: int = 0  # tokens a forced sample wrote beyond what the model chose (the message and end tag)
    extra: int = 0  # what a sample may write beyond its budget (n_predict = budget + extra)
    probe: Mapping[int, Sequence[tuple[int, float]]] = field(default_factory=dict)  # width -> (depth, s) measured

    @classmethod
    def fit(cls, prompt_tps: float, probe: Mapping[int, Sequence[tuple[int, float]]], *, forced_tokens: int,
            extra: int) -> Speed:  # fmt: skip
        """A line through each width's measured steps (least squares over its depths)."""
        steps = {}
        for width, points in probe.items():
            if len(points) == 1:
                steps[width] = (points[0][1], 0.0)
                continue
            xs, ys = [float(d) for d, _ in points], [s for _, s in points]
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            sxx = sum((x - mx) ** 2 for x in xs)
            slope = max(0.0, sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx) if sxx else 0.0
            steps[width] = (max(my - slope * mx, 0.0), slope)
        return cls(prompt_tps, steps, forced_tokens, extra, {w: tuple(p) for w, p in probe.items()})

    @functools.cached_property
    def _monotone(self) -> dict[int, tuple[float, float]]:
        """The measured lines, never cheaper for more sequences: a step of more sequences does at least the work
        of fewer, so a wider width measured faster is timing noise (taken as the narrower one's). Without this a
        question whose votes end apart could be derived slower than the worst case, every vote to the end."""
        out: dict[int, tuple[float, float]] = {}
        a_max = b_max = 0.0
        for width in sorted(self.steps):
            a_max, b_max = max(a_max, self.steps[width][0]), max(b_max, self.steps[width][1])
            out[width] = (a_max, b_max)
        return out

    def line(self, width: int) -> tuple[float, float]:
        """(seconds per step at depth 0, seconds per step per cell) for `width` sequences, interpolated linearly
        between the measured widths around it (the nearest one outside them)."""
        steps = self._monotone
        widths = sorted(steps)
        lo = max([w for w in widths if w <= width], default=widths[0])
        hi = min([w for w in widths if w >= width], default=widths[-1])
        (a_lo, b_lo), (a_hi, b_hi) = steps[lo], steps[hi]
        t = (width - lo) / (hi - lo) if hi != lo else 0.0
        return a_lo + t * (a_hi - a_lo), b_lo + t * (b_hi - b_lo)

    def step_s(self, width: int, depth: float) -> float:
        """Seconds of one decode step of `width` sequences at `depth` cells."""
        a, b = self.line(width)
        return a + b * depth

    def answer_s(self, prompt_tokens: int, written: Sequence[int]) -> float:
        """One request: the prompt read, then a decode step per token while any sample writes (each sample's
        tokens, forced ones included; a step's sampling is part of it)."""
        total = prompt_tokens / self.prompt_tps if self.prompt_tps > 0 else 0.0
        done = 0
        ends = sorted(written)  # a decode per token written (the prompt's logits give the first token)
        for i, end in enumerate(ends):
            live, n = len(ends) - i, end - done
            if n > 0:
                a, b = self.line(live)
                # steps at depths prompt + done … prompt + end - 1
                total += n * a + b * (n * (prompt_tokens + done) + n * (n - 1) / 2)
                done = end
        return total

    def worst_s(self, prompt_tokens: int, budget: int, k: int) -> float:
        """The most a request may take: every vote writing all its n_predict."""
        return self.answer_s(prompt_tokens, [budget + self.extra] * k)

    def to_json(self) -> str:
        return json.dumps({
            "prompt_tps": self.prompt_tps, "steps": {str(w): list(v) for w, v in self.steps.items()},
            "forced_tokens": self.forced_tokens, "extra": self.extra,
            "probe": {str(w): [list(p) for p in v] for w, v in self.probe.items()},
        })  # fmt: skip

    @classmethod
    def from_json(cls, text: str | None) -> Speed | None:
        if not text:
            return None
        raw = json.loads(text)
        return cls(
            float(raw["prompt_tps"]), {int(w): (float(v[0]), float(v[1])) for w, v in raw["steps"].items()},
            int(raw["forced_tokens"]), int(raw["extra"]),
            {int(w): tuple((int(d), float(s)) for d, s in v) for w, v in raw.get("probe", {}).items()},
        )  # fmt: skip


@dataclass(frozen=True)
class AnswerTime:
    """Seconds per answer over the questions answered: median, 90th percentile, and the budget's worst case."""

    median_s: float | None
    p90_s: float | None
    worst_s: float | None


def figures(
    speed: Speed | None, questions: Sequence[tuple[int, Sequence[int]]], *, budget: int, k: int, longest: int
) -> AnswerTime:
    """`questions`: (prompt tokens, each vote's written tokens) of every question answered."""
    if speed is None:
        return AnswerTime(None, None, None)
    times = sorted(speed.answer_s(p, w) for p, w in questions)
    worst = speed.worst_s(longest, budget, k)
    if not times:
        return AnswerTime(None, None, worst)
    return AnswerTime(statistics.median(times), _quantile(times, 0.9), worst)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
