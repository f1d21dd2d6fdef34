"""A thinking budget with llama.cpp's own semantics: the reasoning-budget sampler of `common/reasoning-budget.cpp`
(what `llama-server --reasoning-budget N --reasoning-budget-message MSG` runs), as a state machine per sample that
`edgeval.llama.generation` steps with every token a sample writes. Pure Python: nothing here calls llama.cpp."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# The reasoning budget's states, as llama.cpp's sampler (`common/reasoning-budget.cpp`) names them.
IDLE, COUNTING, WAITING_UTF8, FORCING, DONE = range(5)


@dataclass(frozen=True)
class Forcing:
    """A thinking budget with llama.cpp's own semantics (`common/reasoning-budget.cpp`, what `llama-server
    --reasoning-budget N --reasoning-budget-message MSG` does): a sample is IDLE until it writes the start tag
    (`<think>`; the prompt's own generation prefix is read first, so a template that opens the reasoning starts it
    COUNTING), then every token it writes counts against the budget; a natural end tag ends the count (DONE). At
    zero the sample waits until its last token completes a UTF-8 character, then the message's tokens and the end
    tag's are forced one a step, each through the sampler chain (its random draw taken, as llama.cpp's masked
    logits take it) — and the sample goes on to answer by itself. Everything it writes, forced tokens included, is
    capped at `n_predict(budget)`: what the exported request's `n_predict` is."""

    start: tuple[int, ...]  # the thinking start tag's tokens
    end: tuple[int, ...]  # the end tag's tokens
    tokens: tuple[int, ...]  # forced at the budget: the message's tokens, then the end tag's
    answer_tokens: int = 32  # room to answer after the forced tokens (part of n_predict)
    starts_reasoning: bool = True  # thinking mode: samples reason, so may be forced (False: n_predict = budget)
    turn: int = -1  # the token a turn starts with (`<|im_start|>`): the generation prefix begins at its last one

    def n_predict(self, budget: int) -> int:
        """Tokens one sample may write in all at this thinking budget (llama.cpp's `n_predict`)."""
        if not self.starts_reasoning:
            return budget
        return budget + len(self.start) + len(self.tokens) + self.answer_tokens

    @property
    def extra(self) -> int:
        """What a sample may write beyond its budget."""
        return self.n_predict(0)


def utf8_complete(piece: bytes) -> bool:
    """Whether a token's bytes end on a whole UTF-8 character (llama.cpp's `common_utf8_is_complete`)."""
    for i in range(1, min(4, len(piece)) + 1):
        c = piece[-i]
        if c & 0xC0 != 0x80:
            return i >= (4 if c >= 0xF0 else 3 if c >= 0xE0 else 2 if c >= 0xC0 else 1)
    return not piece


@dataclass
class Budget:
    """One sample's reasoning-budget state machine: llama.cpp's, token for token (tags matched as the last tokens
    written since the state began)."""

    forcing: Forcing
    budget: int
    state: int = IDLE
    remaining: int = 0
    force_pos: int = 0
    recent: list[int] = field(default_factory=list)

    def accept(self, token: int, piece: Callable[[int], bytes]) -> None:
        """The sample wrote `token` (sampled or forced)."""
        f = self.forcing
        if self.state in (IDLE, DONE):
            if self._matched(token, f.start):
                self.state, self.remaining = COUNTING, self.budget
                if self.remaining <= 0:
                    self.state, self.force_pos = FORCING, 0
        elif self.state in (COUNTING, WAITING_UTF8):
            if self._matched(token, f.end):
                self.state = DONE
                return
            complete = utf8_complete(piece(token))
            if self.state == WAITING_UTF8:
                if complete:
                    self.state, self.force_pos = FORCING, 0
            else:
                self.remaining -= 1
                if self.remaining <= 0:
                    self.state = FORCING if complete else WAITING_UTF8
                    self.force_pos = 0
                    self.recent.clear()
        elif self.state == FORCING:
            self.force_pos += 1
            if self.force_pos >= len(f.tokens):
                self.state = DONE
                self.recent.clear()

    @property
    def counted(self) -> int:
        """Tokens counted against the budget so far."""
        return self.budget - self.remaining if self.state != IDLE else 0

    def forced_token(self) -> int:
        return self.forcing.tokens[self.force_pos]

    def exhausted_at(self, budget: int, last_piece: bytes) -> Budget:
        """A copy of this state as a run at the smaller `budget` has it on the token that used the budget up."""
        state = FORCING if utf8_complete(last_piece) else WAITING_UTF8
        return Budget(self.forcing, budget, state, 0, 0, [])

    def _matched(self, token: int, tag: tuple[int, ...]) -> bool:
        self.recent.append(token)
        del self.recent[: -len(tag) or None]
        if tag and tuple(self.recent) == tag:
            self.recent.clear()
            return True
        return False
