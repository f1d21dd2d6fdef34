"""The statistics of an adaptive compare (pure): paired differences, confidence sequences that stay valid however
often one looks, the elimination rule, the set tied with the best, and the recommendation's figures.

Every configuration answers the same questions in the same order, so two configurations are compared through the
per-question differences of their scores (maj@j of each question, in [0, 1]). Questions differ far more in
difficulty than configurations do, so the paired difference is much tighter than two separate intervals.

The interval on a difference is a confidence sequence: Waudby-Smith & Ramdas's betting construction for bounded
means ("Estimating means of bounded random variables by betting", JRSS-B 2024; hedged capital with predictable
plug-in bets). A value m of the mean difference is rejected once a gambler betting against m, question after
question, has multiplied their capital by 1/α at any point so far (Ville's inequality): the interval is valid at
every look, so a compare may look after every round and stop whenever it likes. Each interval is taken at α / (n − 1)
for n configurations (Bonferroni over the intervals one configuration is part of): a configuration as good as the
best is wrongly dropped, or the best wrongly left out of the tied set, with probability at most α.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # the whole compare's error rate: every statement holds together with probability ≥ 95%
GRID = np.linspace(0.0, 1.0, 801)[1:-1]  # candidate means of (difference + 1) / 2, 0.0025 apart on the difference
_BET_CAP = 0.5  # the largest fraction of capital bet on one question (keeps every factor ≥ 0.5)
RIVALS_CHECKED = 3


@dataclass(frozen=True)
class Difference:
    """The paired difference of two configurations' accuracies over the questions both answered."""

    mean: float  # mean of (score of a − score of b), in points of accuracy / 100
    low: float
    high: float
    n: int  # questions both answered
    alpha: float  # the level each of these intervals was taken at

    @property
    def decided(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0

    def to_json(self) -> dict[str, object]:
        """As `compare --json` prints it."""
        return {"mean": self.mean, "ci": [self.low, self.high], "n": self.n, "alpha": self.alpha}


def _bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable plug-in bets: each question's bet uses only the questions before it."""
    t = np.arange(1, len(x) + 1, dtype=float)
    mean = (0.5 + np.cumsum(x)) / (t + 1)
    previous_mean = np.concatenate(([0.5], mean[:-1]))
    var = (0.25 + np.cumsum((x - previous_mean) ** 2)) / (t + 1)
    previous_var = np.concatenate(([0.25], var[:-1]))
    lam: np.ndarray = np.sqrt(2 * math.log(2 / alpha) / (previous_var * t * np.log1p(t)))
    return lam


def confidence_sequence(differences: Sequence[float], alpha: float) -> tuple[float, float]:
    """The (1 − alpha) anytime-valid interval of the mean of per-question differences in [−1, 1].

    The values of the mean not yet rejected at any prefix of the sequence (its running intersection); (−1, 1)
    with no data."""
    if not differences:
        return -1.0, 1.0
    x = (np.asarray(differences, dtype=float)[:, None] + 1) / 2  # in [0, 1]
    lam = _bets(x[:, 0], alpha)[:, None]
    m = GRID[None, :]
    up = np.minimum(lam, _BET_CAP / m)
    down = np.minimum(lam, _BET_CAP / (1 - m))
    log_up = np.cumsum(np.log1p(up * (x - m)), axis=0)
    log_down = np.cumsum(np.log1p(-down * (x - m)), axis=0)
    # Hedged capital: half on "the mean is above m", half on "below"; m is rejected once it reaches 1/alpha.
    capital = np.logaddexp(log_up, log_down) - math.log(2)
    alive = GRID[(capital.max(axis=0) < math.log(1 / alpha))]
    if alive.size == 0:  # every candidate was rejected at some look: keep the last look's least-rejected value
        alive = GRID[[int(np.argmin(capital[-1]))]]
    step = GRID[1] - GRID[0]
    low = max(0.0, float(alive.min()) - step)
    high = min(1.0, float(alive.max()) + step)
    return 2 * low - 1, 2 * high - 1


def pairs_alpha(n_configs: int, alpha: float = ALPHA) -> float:
    """The level of each paired interval: alpha / (n − 1).

    What must hold is about one configuration at a time: a configuration as good as the best is dropped only if
    one of its n − 1 intervals against the others misses, and the best is left out of the tied set only if its
    interval against the leader misses. Bonferroni over those n − 1 intervals bounds either error by alpha, at
    every look (the intervals are confidence sequences)."""
    return alpha / max(1, n_configs - 1)


def difference(a: Mapping[int, float], b: Mapping[int, float], alpha: float) -> Difference:
    """a − b over the questions both answered, in question order, with its confidence sequence."""
    common = sorted(a.keys() & b.keys())
    diffs = [a[i] - b[i] for i in common]
    low, high = confidence_sequence(diffs, alpha)
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    return Difference(mean, min(low, mean), max(high, mean), len(diffs), alpha)


@dataclass(frozen=True)
class Contender:
    """A configuration in the race: its per-question scores and the memory it needs."""

    key: str
    scores: Mapping[int, float]
    memory_bytes: int

    @property
    def accuracy(self) -> float:
        """Mean score over the questions answered."""
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0


@dataclass(frozen=True)
class Elimination:
    """A configuration dropped: another needing no more memory is better, and the paired interval excludes 0."""

    loser: str
    winner: str
    difference: Difference  # winner − loser


def eliminate(contenders: Sequence[Contender], alpha: float, already: Sequence[str] = ()) -> list[Elimination]:
    """Which contenders another one, needing no more memory, beats by a paired interval above zero.

    Once dropped, always dropped: `already` names earlier eliminations, and a contender is checked against every
    other one (dropped or not) whose memory is no larger — its evidence is as good either way."""
    out = []
    gone = set(already)
    for c in contenders:
        if c.key in gone or not c.scores:
            continue
        rivals = [r for r in contenders if r.key != c.key and r.memory_bytes <= c.memory_bytes and r.scores
                  and r.accuracy > c.accuracy]  # fmt: skip
        # The few most accurate cheaper rivals: checking fewer pairs keeps the rule valid (a drop still needs an
        # interval above zero) and the looks cheap.
        for rival in sorted(rivals, key=lambda r: -r.accuracy)[:RIVALS_CHECKED]:
            d = difference(rival.scores, c.scores, alpha)
            if d.low > 0:
                out.append(Elimination(c.key, rival.key, d))
                break
    return out


@dataclass(frozen=True)
class Verdict:
    """What the data say about the best: the best by point estimate, those tied with it, the recommendation."""

    best: str
    tied: tuple[str, ...]  # the best included, least memory first
    recommended: str
    against_best: dict[str, Difference]  # best − other, for every other contender still in the race


def leader(contenders: Sequence[Contender]) -> Contender | None:
    """The most accurate contender so far (more questions, then less memory, break ties); None without scores."""
    scored = [c for c in contenders if c.scores]
    return max(scored, key=lambda c: (c.accuracy, len(c.scores), -c.memory_bytes)) if scored else None


def verdict(contenders: Sequence[Contender], alpha: float) -> Verdict | None:
    """The best contender, the set statistically tied with it, and the least-memory member of that set."""
    scored = [c for c in contenders if c.scores]
    best = leader(scored)
    if best is None:
        return None
    against = {c.key: difference(best.scores, c.scores, alpha) for c in scored if c.key != best.key}
    tied = [best] + [c for c in scored if c.key != best.key and against[c.key].low <= 0]
    tied.sort(key=lambda c: (c.memory_bytes, -c.accuracy))
    return Verdict(best.key, tuple(c.key for c in tied), tied[0].key, against)


def questions_to_settle(d: Difference) -> int | None:
    """Roughly how many questions in all would let the interval exclude zero, if the difference is what it seems
    (the interval's half-width shrinks as 1/√n); None when the difference looks like zero."""
    if d.n == 0 or abs(d.mean) < 1e-9:
        return None
    half = (d.high - d.low) / 2
    return max(d.n + 1, math.ceil(d.n * (half / abs(d.mean)) ** 2))
