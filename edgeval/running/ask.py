"""`edgeval ask`: one question to a running llama-server with the exported request, its k samples' answers
extracted with edgeval's own extractor and majority-voted with edgeval's tie rule."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgeval.core import grading, prompts, vote
from edgeval.edges import server
from edgeval.running.export import ENDPOINT, Deployment, question_seed, request

# llama-server's stop types (`stop_type_to_str`) as the store's finish reasons.
FINISH = {"eos": "stop", "word": "stop", "limit": "length", "none": "length"}


@dataclass(frozen=True)
class Sample:
    """One vote: its text as the store keeps it, its extracted answer (None: none), why it ended."""

    text: str
    answer: str | None
    finish: str = "stop"


@dataclass(frozen=True)
class Answer:
    """The voted answer (None: no sample answered), the votes each answer got, the answers tied at the top (the
    answer is a seeded uniform draw among them, as edgeval scores a tie), the samples and the request's seconds."""

    answer: str | None
    votes: dict[str, int]
    tied: tuple[str, ...]
    samples: tuple[Sample, ...]
    seconds: float

    def to_json(self) -> dict[str, object]:
        """The `ask --json` object."""
        return {
            "answer": self.answer, "votes": self.votes, "tied": list(self.tied),
            "samples": [{"text": s.text, "answer": s.answer, "finish": s.finish} for s in self.samples],
            "seconds": self.seconds,
        }  # fmt: skip


def tally(answers: Sequence[str | None], seed: int) -> tuple[str | None, dict[str, int], tuple[str, ...]]:
    """The majority answer, the vote counts (most first) and the answers tied at the top. A sample with no answer
    casts no vote; a tie is a uniform draw among the leaders (`vote.majority`), seeded so the same question gives
    the same answer."""
    leaders, _ = vote.majority(answers)
    counts = Counter(a for a in answers if a is not None)
    votes = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    if not leaders:
        return None, votes, ()
    chosen = leaders[0] if len(leaders) == 1 else random.Random(seed).choice(leaders)
    return chosen, votes, tuple(leaders) if len(leaders) > 1 else ()


def samples_of(d: Deployment, answer: object, kind: grading.AnswerKind) -> list[Sample]:
    """The samples of a `/completion` answer (one object, or a list by `index`), each text as the store keeps it:
    a template that opens the reasoning left `<think>` in the prompt, and the stored text gets it back."""
    results = answer if isinstance(answer, list) else [answer]
    opener = f"{prompts.THINK_OPEN}\n" if d.opens_reasoning else ""
    out = []
    for result in sorted(results, key=lambda r: int(r.get("index", 0)) if isinstance(r, dict) else 0):
        if not isinstance(result, dict) or "content" not in result:
            raise server.ServerError(f"llama-server answered something other than a completion: {str(result)[:80]}")
        text = opener + str(result["content"])
        out.append(Sample(text, grading.extract(text, kind), FINISH.get(str(result.get("stop_type")), "stop")))
    return out


def ask(
    d: Deployment, url: str, question: str, *, task: str | None = None, timeout: float = 600.0
) -> Answer:  # fmt: skip
    """Send the question with the exported request (k completions) and vote its answers; `task` grades as
    another task's answers are graded (its kind: aime25, math500, gpqa-diamond, gsm8k, arith, or a kind)."""
    kind = grading.kind_of(task) if task else d.kind
    deployed = replace(d, kind=kind)
    seed = question_seed(d.seed, question)
    body = request(deployed, deployed.prompt(question), seed)
    t0 = time.perf_counter()
    answer = server.post_json(server.endpoint(url, ENDPOINT), body, timeout=timeout)
    seconds = time.perf_counter() - t0
    samples = samples_of(deployed, answer, kind)
    voted, votes, tied = tally([s.answer for s in samples], seed)
    return Answer(voted, votes, tied, tuple(samples), seconds)
