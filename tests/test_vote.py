"""Voting and estimators: the documented tie rule, unparsed samples, and the unbiased estimators."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeval.core import vote

answers_st = st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=8)


def _correct(answers: list[str | None], gold: str = "1") -> list[bool | None]:
    return [a == gold if a is not None else None for a in answers]


@pytest.mark.parametrize(
    ("answers", "score"),
    [
        (["1", "1", "2"], 1.0),
        (["2", "2", "1"], 0.0),
        (["1", "2"], 0.5),  # a tie between right and wrong is worth half
        (["1", "2", "3"], 1 / 3),
        ([None, None, "1"], 1.0),  # unparsed samples cast no vote
        ([None, None, None], 0.0),
        ([None, "2", "2", "1"], 0.0),
    ],
)
def test_majority_and_its_tie_rule(answers: list[str | None], score: float) -> None:
    assert vote.majority_score(answers, _correct(answers)) == pytest.approx(score)


@given(answers=answers_st)
def test_order_never_decides(answers: list[str | None]) -> None:
    score = vote.majority_score(answers, _correct(answers))
    assert vote.majority_score(answers[::-1], _correct(answers[::-1])) == pytest.approx(score)
    assert 0.0 <= score <= 1.0


@given(answers=answers_st)
def test_an_invalid_answer_never_wins(answers: list[str | None]) -> None:
    leaders, votes = vote.majority(answers)
    assert None not in leaders
    assert votes == (max(answers.count(a) for a in set(answers) if a is not None) if any(answers) else 0)


@given(answers=answers_st)
def test_maj_at_one_is_mean_accuracy_and_maj_at_n_is_the_vote(answers: list[str | None]) -> None:
    correct = _correct(answers)
    assert vote.maj_at(answers, correct, 1) == pytest.approx(vote.avg_at(correct))
    assert vote.maj_at(answers, correct, len(answers)) == pytest.approx(vote.majority_score(answers, correct))


@given(answers=answers_st, j=st.integers(1, 8))
def test_maj_at_j_averages_every_subset(answers: list[str | None], j: int) -> None:
    if j > len(answers):
        return
    correct = _correct(answers)
    subsets = list(itertools.combinations(range(len(answers)), j))
    brute = sum(vote.majority_score([answers[i] for i in s], [correct[i] for i in s]) for s in subsets) / len(subsets)
    assert vote.maj_at(answers, correct, j) == pytest.approx(brute)


@given(n=st.integers(1, 20), data=st.data())
def test_pass_at_k_is_the_chance_a_random_k_subset_has_a_correct_sample(n: int, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    flags = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    if len(subsets) > 5000:
        return
    brute = sum(any(flags[i] for i in s) for s in subsets) / len(subsets)
    assert vote.pass_at(n, c, k) == pytest.approx(brute)


def test_pass_at_edges() -> None:
    assert vote.pass_at(8, 0, 8) == 0.0
    assert vote.pass_at(8, 8, 1) == 1.0
    assert vote.pass_at(4, 1, 1) == 0.25
    with pytest.raises(ValueError):
        vote.pass_at(4, 5, 1)


@given(scores=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=1, max_size=60))
def test_confidence_interval_holds_the_mean_within_0_1(scores: list[float]) -> None:
    est = vote.mean_ci(scores)
    assert 0.0 <= est.low <= est.mean <= est.high <= 1.0
    assert est.n == len(scores)
    assert est.mean == pytest.approx(sum(scores) / len(scores))


def test_confidence_interval_shrinks_with_n() -> None:
    small = vote.mean_ci([1.0, 0.0] * 5)
    large = vote.mean_ci([1.0, 0.0] * 500)
    assert (large.high - large.low) < (small.high - small.low)
    assert vote.mean_ci([1.0] * 30).low > 0.85  # Wilson: not a degenerate [1, 1]
    assert vote.mean_ci([1.0] * 30).high == 1.0
    assert math.isclose(vote.mean_ci([]).high, 1.0)
