"""The race's statistics against brute force: exact enumeration, and simulation under repeated looks."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeval.core import racing

scores = st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=40)


@given(a=scores, b=scores)
@settings(max_examples=60, deadline=None)
def test_a_paired_difference_is_antisymmetric_and_holds_its_mean(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    x, y = dict(enumerate(a[:n])), dict(enumerate(b[:n]))
    ab, ba = racing.difference(x, y, 0.05), racing.difference(y, x, 0.05)
    assert ab.n == n and math.isclose(ab.mean, -ba.mean, abs_tol=1e-12)
    assert ab.low <= ab.mean <= ab.high
    assert math.isclose(ab.low, -ba.high, abs_tol=1e-9) and math.isclose(ab.high, -ba.low, abs_tol=1e-9)
    same = racing.difference(x, x, 0.05)
    assert same.mean == 0 and same.low <= 0 <= same.high and not same.decided


def test_the_interval_narrows_as_questions_accumulate_and_decides_a_clear_difference() -> None:
    rng = np.random.default_rng(1)
    d = rng.choice([1.0, 0.0, -1.0], p=[0.35, 0.55, 0.10], size=400)  # a 25-point difference
    widths = [np.subtract(*racing.confidence_sequence(list(d[:n]), 0.001)[::-1]) for n in (25, 100, 400)]
    assert widths[0] > widths[1] > widths[2]
    assert racing.confidence_sequence(list(d), 0.001)[0] > 0


def test_exact_enumeration_the_miss_rate_is_at_most_alpha() -> None:
    # Every sequence of 7 paired 0/1 outcomes (−1, 0, +1), weighted by its exact probability: the chance that the
    # interval, looked at after every question, ever leaves out the true mean is at most alpha.
    alpha = 0.3
    for probs in ((0.2, 0.5, 0.3), (0.1, 0.3, 0.6), (0.45, 0.1, 0.45)):
        truth = probs[2] - probs[0]
        miss = 0.0
        for seq in itertools.product((-1.0, 0.0, 1.0), repeat=7):
            p = math.prod(probs[int(v) + 1] for v in seq)
            low, high = racing.confidence_sequence(list(seq), alpha)
            miss += p if not low <= truth <= high else 0.0
        assert miss <= alpha, (probs, miss)


def _simulate_race(rng: np.random.Generator, accuracies: list[float], n: int, looks: list[int]) -> set[int]:
    """Configurations answer the same questions (shared difficulty); return those dropped at any look."""
    difficulty = rng.normal(0, 1.2, size=n)
    logits = [math.log(p / (1 - p)) for p in accuracies]
    scored = [(rng.random(n) < 1 / (1 + np.exp(-(lg - difficulty)))).astype(float) for lg in logits]
    alpha = racing.pairs_alpha(len(accuracies))
    dropped: set[int] = set()
    for look in looks:
        contenders = [racing.Contender(str(i), dict(enumerate(s[:look])), memory_bytes=i)
                      for i, s in enumerate(scored)]  # fmt: skip
        for e in racing.eliminate(contenders, alpha, tuple(str(i) for i in dropped)):
            dropped.add(int(e.loser))
    return dropped


def test_a_configuration_as_good_as_the_best_is_wrongly_dropped_at_most_about_five_percent() -> None:
    # Six configurations, cheapest first; the last is as good as the cheaper best (index 2): it may only be dropped
    # by a wrong interval. Looks after every round of the race, as compare makes them.
    rng = np.random.default_rng(7)
    accuracies = [0.55, 0.7, 0.8, 0.6, 0.75, 0.8]
    trials, wrong, right = 150, 0, 0
    for _ in range(trials):
        dropped = _simulate_race(rng, accuracies, 200, [10, 40, 160, 200])
        wrong += 5 in dropped
        right += 3 in dropped  # a truly worse configuration the race should usually drop
    assert wrong / trials <= 0.05
    assert right / trials >= 0.5  # the rule is not vacuous: it does drop what is clearly worse
