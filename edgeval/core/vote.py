"""Majority voting and accuracy estimators (pure).

Tie rule: when several answers share the most votes, the vote is a uniform draw among them, and edgeval scores
its *expected* correctness — 1/t if the right answer is one of the t tied answers, else 0. Nothing is decided
by sample order. A sample with no parseable answer casts no vote; if no sample voted, the item scores 0.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# Above this many subsets, maj@j is estimated from this many random subsets (fixed seed) instead of all of them.
MAX_EXACT_SUBSETS = 20_000


def majority(answers: Sequence[str | None]) -> tuple[list[str], int]:
    """The answers with the most votes (all of them when tied) and that vote count; None casts no vote."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return [], 0
    top = max(counts.values())
    return sorted(a for a, c in counts.items() if c == top), top


def majority_score(answers: Sequence[str | None], correct: Sequence[bool | None]) -> float:
    """Expected correctness of the majority vote: 1/t when the right answer is among t tied leaders."""
    right = {a for a, ok in zip(answers, correct, strict=True) if a is not None and ok}
    leaders, _ = majority(answers)
    if not leaders:
        return 0.0
    return sum(1 for a in leaders if a in right) / len(leaders)


def maj_at(answers: Sequence[str | None], correct: Sequence[bool | None], j: int) -> float:
    """maj@j from n ≥ j samples: the majority score averaged over j-subsets (all of them, or a fixed sample).
    Remembered by its arguments: a race scores every question it has again at each look."""
    return _maj_at(tuple(answers), tuple(correct), j)


@functools.lru_cache(maxsize=1 << 16)
def _maj_at(answers: tuple[str | None, ...], correct: tuple[bool | None, ...], j: int) -> float:
    n = len(answers)
    if not 1 <= j <= n:
        raise ValueError(f"maj@{j} needs 1 ≤ j ≤ {n}")
    if j == n:
        return majority_score(answers, correct)
    total = math.comb(n, j)
    if total <= MAX_EXACT_SUBSETS:
        subsets: Sequence[Sequence[int]] = list(itertools.combinations(range(n), j))
    else:
        rng = random.Random(n * 1_000_003 + j)
        subsets = [rng.sample(range(n), j) for _ in range(MAX_EXACT_SUBSETS)]
    score = 0.0
    for idx in subsets:
        score += majority_score([answers[i] for i in idx], [correct[i] for i in idx])
    return score / len(subsets)


def avg_at(correct: Sequence[bool | None]) -> float:
    """Mean per-sample correctness (pass@1 estimated from all samples); unparsed samples count as wrong."""
    return sum(1 for c in correct if c) / len(correct) if correct else 0.0


def pass_at(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 − C(n−c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 0 ≤ c ≤ n and 1 ≤ k ≤ n (n={n}, c={c})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass(frozen=True)
class Estimate:
    """A mean over items with its 95% confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def mean_ci(scores: Sequence[float], z: float = 1.96) -> Estimate:
    """Mean of per-item scores with a 95% interval over items.

    Wilson's interval when every score is 0 or 1 (it behaves at 0% and 100% and for small n); otherwise the
    normal approximation with the sample standard deviation, clipped to [0, 1].
    """
    n = len(scores)
    if n == 0:
        return Estimate(0.0, 0.0, 1.0, 0)
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        # Floating point can put an end a hair inside the mean at 0% or 100%; the mean is always inside.
        return Estimate(mean, max(0.0, min(mean, centre - half)), min(1.0, max(mean, centre + half)), n)
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return Estimate(mean, max(0.0, mean - half), min(1.0, mean + half), n)
