"""Regrading a results store with the current grader: samples keep their raw text, so verdicts can be redone."""

from __future__ import annotations

from dataclasses import dataclass

from edgeval.core import grading
from edgeval.edges.store import SampleRow, Store


@dataclass(frozen=True)
class Regraded:
    """What a regrade changed."""

    configs: int
    samples: int
    now_right: int  # samples that were wrong and are now right
    now_wrong: int  # samples that were right and are now wrong
    answers_changed: int  # samples whose vote (answer) changed, verdict moved or not

    @property
    def moved(self) -> int:
        """Verdicts that changed."""
        return self.now_right + self.now_wrong


def answer_kind(row_kind: str | None, task: str, samples: list[SampleRow]) -> grading.AnswerKind:
    """How a stored configuration is graded: as recorded; for older rows, by its task name or its references."""
    if row_kind:
        return grading.AnswerKind(row_kind)
    try:
        return grading.kind_of(task)
    except grading.GradingError:
        pass
    references = [s.reference for s in samples]
    if references and all(grading.normalize(r, grading.AnswerKind.CHOICE) == r.strip() for r in references):
        return grading.AnswerKind.CHOICE
    if all(grading.normalize(r, grading.AnswerKind.NUMBER) is not None for r in references):
        return grading.AnswerKind.NUMBER
    return grading.AnswerKind.MATH


def regrade(store: Store) -> Regraded:
    """Grade every stored sample again from its text; store the verdicts that changed (a second run changes none)."""
    configs = samples = now_right = now_wrong = answers_changed = 0
    for row in store.configs():
        stored = store.samples(row["id"])
        kind = answer_kind(row["answer_kind"], row["task"], stored)
        changed: list[tuple[int, int, str | None, bool]] = []
        for sample in stored:
            verdict = grading.judge(kind, sample.text, sample.reference)
            if (verdict.answer, verdict.correct) != (sample.answer, sample.correct):
                changed.append((sample.item_index, sample.sample_index, verdict.answer, verdict.correct))
                now_right += verdict.correct and not sample.correct
                now_wrong += sample.correct and not verdict.correct
                answers_changed += verdict.answer != sample.answer
        if changed:
            store.set_verdicts(row["id"], changed)
        if not row["answer_kind"]:
            store.update_config(row["id"], answer_kind=kind.value)
        configs += 1
        samples += len(stored)
    return Regraded(configs, samples, now_right, now_wrong, answers_changed)
