"""Generation on a llama.cpp context: k votes of a question, its budget ladder, and many questions in flight.

A question's k votes share its prompt's KV cells (decoded once, then copied to the other sequences by reference).
Each vote is generated to the largest budget; a vote still reasoning at a smaller rung is forked, so every rung
equals a separate run at its budget (`_Question`). Several questions are in flight at once (`run_batched`):
each step samples one token for every live sequence of every question and decodes them in one batch (continuous
batching, as llama.cpp's server does). A question that is done frees its sequences and cells, and the next
question's prompt is read in the same step, in decodes of its own.

With `edgeval.llama.engine` this is the only code that calls llama.cpp; it reaches the context's pointers through
`engine.Context`, which imports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import llama_cpp

from edgeval.core.errors import ConfigurationError, LlamaError
from edgeval.core.memory import eviction_chunk, own_cells
from edgeval.core.prompts import THINKING_SAMPLING, Sampling
from edgeval.llama.budget import FORCING, Budget, Forcing
from edgeval.llama.sampler import draw, sampler_chain

if TYPE_CHECKING:
    from edgeval.llama.engine import Context


@dataclass(frozen=True)
class Recipe:
    """What every question of a run is generated with: k votes, the ladder's budgets, sampling, forcing and the
    KV window (0: none; `shift` moves kept tokens down over an eviction's gap)."""

    k: int = 1
    budgets: tuple[int, ...] = (256,)
    sampling: Sampling = THINKING_SAMPLING
    forcing: Forcing | None = None
    window: int = 0
    shift: bool = False

    @property
    def rungs(self) -> list[int]:
        return sorted(set(self.budgets))

    @property
    def reasoning(self) -> bool:
        return self.forcing is not None and self.forcing.starts_reasoning

    @property
    def sequences(self) -> int:
        """Sequence ids one question may hold at once (its votes and its ladder's forks)."""
        return ladder_sequences(self.k, len(self.rungs), self.reasoning)

    def cells(self, prompt_tokens: int) -> int:
        """KV cells one question with a prompt of this length may hold at once."""
        return cells_needed(prompt_tokens, self.k, self.rungs[-1], self.forcing, n_rungs=len(self.rungs),
                            window=self.window)  # fmt: skip

    def stream_cells(self, prompt_tokens: int) -> int:
        """KV cells one sequence may hold (its own copy of the prompt, its budget or KV window and what it may
        write beyond it): a context with a stream per sequence gives each at least this many."""
        extra = self.forcing.extra if self.forcing else 0
        return prompt_tokens + own_cells(self.rungs[-1], self.window) + extra

    def step_tokens(self) -> int:
        """The most tokens one question may feed a single decode: one for each of its sequences (forced tokens too
        are fed one a step)."""
        return self.sequences


@dataclass(frozen=True)
class Job:
    """One question to generate: the caller's handle for it, its prompt tokens and one seed per vote."""

    key: Any
    prompt: Sequence[int]
    seeds: Sequence[int]


@dataclass
class _Sample:
    """One sequence being generated: a vote, or a fork of a vote at a smaller rung of the budget ladder."""

    seq: int  # its sequence id in the KV cache
    pos: int
    sampler: Any
    budget: Budget | None = None  # its reasoning budget's state (None: no forcing)
    cap: int = 0  # n_predict: the most tokens it may write in all
    tokens: list[int] = field(default_factory=list)
    generated: int = 0  # tokens the model wrote (forced tokens excluded)
    forced: bool = False
    finish: str = ""  # "stop" (end token), "length" (n_predict reached) or "forced" (forced, then either)
    vote: int = 0  # which of the k votes it is (a fork: the vote it was forked from)
    rung: int | None = None  # a fork: the budget it answers for
    kept_from: int = 0  # the first position of its own tokens still in the KV cache (a KV window evicts before it)
    evicted: int = 0  # own tokens evicted from the KV cache

    @property
    def forcing_now(self) -> bool:
        return self.budget is not None and self.budget.state == FORCING


@dataclass(frozen=True)
class Generation:
    """The k samples of one prompt at one token budget, and how they were produced."""

    texts: tuple[str, ...]
    tokens: tuple[tuple[int, ...], ...]
    generated: tuple[int, ...]  # tokens each sample's model wrote (forced tokens excluded)
    forced: tuple[bool, ...]
    finish: tuple[str, ...]
    prompt_tokens: int
    prompt_tokens_decoded: int  # prompt tokens sent to llama_decode (== prompt_tokens: decoded once for all k)
    max_batch_seqs: int  # the most of this question's sequences one decode step carried
    decode_steps: int
    prompt_s: float  # this question's share of the time its prompt's batches took
    decode_s: float  # its share of the time the steps that carried its tokens took (sampling included)
    ttft_s: float  # from the question's start to its first sampled token
    decoded_tokens: int = 0  # tokens the whole generation decoded (every rung's forks included)
    evicted: tuple[int, ...] = ()  # own tokens each sample evicted from the KV cache (a KV window)
    max_batch_tokens: int = 0  # the most tokens (every question's) one generation step it took part in carried

    @property
    def generated_tokens(self) -> int:
        """Tokens generated over all sequences (forced tokens excluded)."""
        return sum(self.generated)


def fork_cells(k: int, n_rungs: int, answer_cells: int, *, chunk: int = 0) -> int:
    """KV cells the forks of a budget ladder may hold at once: at every smaller rung, each vote still reasoning is
    forked for its forced answer (its last token and `answer_cells`: what it may write beyond the budget). When
    votes evict in chunks of `chunk` tokens (a KV window), a fork also holds the cells its vote evicts while the
    fork lives: the fork writes one token a step, so its vote writes at most as many and a token meanwhile, and
    evicts that rounded up to a chunk. Forks happen only where samples reason and are
    forced: callers count none otherwise."""
    if n_rungs <= 1:
        return 0
    return k * (n_rungs - 1) * (1 + answer_cells + (answer_cells + 1 + chunk if chunk else 0))


def cells_needed(
    prompt_tokens: int, k: int, max_tokens: int, forcing: Forcing | None = None, *, n_rungs: int = 1, window: int = 0
) -> int:
    """KV cells a generation needs: the shared prompt, each sample's budget — or its KV window and an eviction
    chunk — and what it may write beyond it, and the forks of a budget ladder's smaller rungs."""
    extra = forcing.extra if forcing else 0
    own = own_cells(max_tokens, window)
    chunk = eviction_chunk(window) if own < max_tokens else 0
    reasoning = forcing is not None and forcing.starts_reasoning
    forks = fork_cells(k, n_rungs, extra, chunk=chunk) if forcing and reasoning else 0
    return prompt_tokens + k * (own + extra) + forks


def ladder_sequences(k: int, n_rungs: int, reasoning: bool) -> int:
    """Sequences a ladder generation may use at once: the k votes and up to k forks per smaller rung (forks only
    where samples reason and are forced)."""
    return k * max(1, n_rungs) if reasoning else k


def check_job(ctx: Context, recipe: Recipe, job: Job, width: int = 1) -> None:
    """Refuse a question the context cannot generate with `width` questions in flight."""
    rungs = recipe.rungs
    if not job.prompt:
        raise ValueError("an empty prompt")
    if not rungs or rungs[0] < 1:
        raise ValueError("token budgets must be positive")
    if recipe.k < 1 or recipe.sequences * width > ctx.n_seq:
        raise ConfigurationError(
            f"{width} question(s) of k={recipe.k} sequences over {len(rungs)} budgets, but this context holds "
            f"{ctx.n_seq} sequences"
        )
    if len(job.seeds) != recipe.k:
        raise ValueError("one seed per sequence")
    if recipe.window < 0:
        raise ValueError("a KV window cannot be negative")
    if recipe.shift and len(rungs) > 1:
        raise ValueError("shifted positions cannot share cells with a ladder's forks")
    forcing = recipe.forcing
    extra = forcing.extra if forcing else 0
    if len(job.prompt) + rungs[-1] + extra > ctx.model.n_ctx_train:
        raise ConfigurationError(
            f"prompt ({len(job.prompt)} tokens) + {rungs[-1] + extra} generated tokens is longer than the "
            f"{ctx.model.n_ctx_train} tokens {ctx.model.path.name} was trained for",
            hint="lower the token budget",
        )
    if ctx.options.unified:
        needed, room = recipe.cells(len(job.prompt)), ctx.n_ctx // width
        each = f" ({ctx.n_ctx} cells for {width} questions)" if width > 1 else ""
    else:
        needed, room, each = recipe.stream_cells(len(job.prompt)), ctx.n_ctx_seq, " for each sequence"
    if needed > room:
        raise ConfigurationError(
            f"prompt ({len(job.prompt)} tokens) + {recipe.k} × {own_cells(rungs[-1], recipe.window) + extra} tokens "
            f"needs {needed} KV cells, the context has {room}{each}",
            hint="raise --ctx or lower the token budget, the KV window or k",
        )


def run_batched(
    ctx: Context,
    recipe: Recipe,
    jobs: Iterable[Job],
    on_done: Callable[[Job, dict[int, Generation]], None],
    *,
    width: int = 1,
    admit: Callable[[], bool] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> None:
    """Generate `jobs` with up to `width` questions in flight, calling `on_done` with each question's rungs as it
    finishes (in the order questions finish). `admit` is asked before each new question starts: once it says no,
    the questions in flight finish and nothing more starts. `on_step` hears the tokens each decode carried and the
    seconds its step took (sampling, the batch and the decode; not the questions handed on nor the prompts read).

    Question i of the flight holds sequence ids [slot × s, (slot + 1) × s) for s = `recipe.sequences`, and at most
    n_ctx / width cells of a unified cache — or, in a context with a stream per sequence (`engine.in_flight`), the
    streams of those ids: each vote then holds its own copy of the prompt (llama.cpp copies a stream whole) and
    attends over its own cells only. The decode batch carries every live sequence's next token. New questions' prompts
    are read in decodes of prompt tokens only — the prompts admitted at a step packed together, chunks of the
    context's n_batch — not mixed into the step's batch as llama.cpp's server does: on the CPU, llama.cpp's attention
    picks its kernel by the batch's shape (tiled from 64 query rows, the KV split over threads for a single row), and
    a prompt among decode rows would round as it never does with one question in flight. Prompt rows among prompt
    rows give the samples reading them alone gives (the same-samples tests, quantized files included)."""
    capacity = ctx.options.n_batch
    if width * recipe.step_tokens() > capacity:
        raise ConfigurationError(
            f"{width} question(s) may feed {width * recipe.step_tokens()} tokens to one decode, the context's batch "
            f"is {capacity}",
            hint="create the context with n_batch of at least width × Recipe.step_tokens()",
        )
    batch = llama_cpp.llama_batch_init(capacity, 0, 1)
    flight = _Flight(ctx, recipe, iter(jobs), width, admit)
    llama_cpp.llama_memory_clear(ctx._memory, True)
    try:
        flight.fill()
        while flight.questions:
            carried, took = flight.step(batch, on_done)
            if carried and on_step is not None:
                on_step(carried, took)
    finally:
        llama_cpp.llama_batch_free(batch)
        for q in flight.questions:
            q.free_samplers()


class _Flight:
    """The questions in flight and the slots (blocks of sequence ids) free for the next ones."""

    def __init__(
        self, ctx: Context, recipe: Recipe, pending: Iterator[Job], width: int, admit: Callable[[], bool] | None
    ) -> None:
        self.ctx, self.recipe, self.pending, self.width, self.admit = ctx, recipe, pending, width, admit
        self.free_slots = list(range(width - 1, -1, -1))  # smallest popped first
        self.questions: list[_Question] = []
        self.exhausted = False

    def fill(self) -> None:
        """Start pending questions in the free slots, while `admit` allows."""
        while self.free_slots and not self.exhausted:
            if self.admit is not None and not self.admit():
                self.exhausted = True
                return
            job = next(self.pending, None)
            if job is None:
                self.exhausted = True
                return
            check_job(self.ctx, self.recipe, job, self.width)
            base = self.free_slots.pop() * self.recipe.sequences
            self.questions.append(_Question(self.ctx, self.recipe, job, base=base))

    def step(
        self, batch: llama_cpp.llama_batch, on_done: Callable[[Job, dict[int, Generation]], None]
    ) -> tuple[int, float]:
        """One step: sample every live sequence, hand on the questions that finished, start the next ones (their
        prompts read alone), and decode the step's batch. Returns the tokens the decode carried (0: none) and the
        seconds the step took beside what it did aside (the questions handed on, the prompts read)."""
        t0 = time.perf_counter()
        step: list[_Item] = []
        parts: list[tuple[_Question, int, int]] = []  # (question, first item, end) in this batch
        for q in self.questions:
            if q.reading:
                continue
            start = len(step)
            step += q.sample()
            parts.append((q, start, len(step)))
        # Not the step's decode time: finished questions handed on (their commit and grading) and prompts read
        # (each question's prompt time).
        r0 = time.perf_counter()
        for q in [q for q in self.questions if q.done]:
            self.questions.remove(q)
            self.free_slots.append(q.base // self.recipe.sequences)
            q.release()
            on_done(q.job, q.result())
        parts = [p for p in parts if not p[0].done]
        self.fill()  # a new question's prompt is read at this very step
        readers = [q for q in self.questions if q.reading]
        if readers:
            # Prefill-only decodes (the new prompts together, never mixed with decode rows), then their first
            # tokens join this step's batch.
            parts += _read_prompts(self.ctx, readers, batch, self.ctx.options.n_batch, step)
        aside_s = time.perf_counter() - r0
        if not step:
            return 0, 0.0  # every question in flight finished at this step; the next ones were admitted
        fill_batch(batch, step)
        self.ctx._decode(batch)
        dt = time.perf_counter() - t0 - aside_s
        for q, start, end in parts:
            q.stepped(step, start, end, dt * (end - start) / len(step), len(step))
        return len(step), dt


_Item = tuple[int, int, int, bool]  # (token, position, sequence, wants_logits)


def _read_prompts(
    ctx: Context, readers: list[_Question], batch: llama_cpp.llama_batch, capacity: int, step: list[_Item]
) -> list[tuple[_Question, int, int]]:
    """Read new questions' prompts in decodes of prompt tokens only (as many prompts' chunks as fit the batch), and
    as soon as a prompt is read sample its votes' first tokens from its last row (before the next decode replaces
    the logits); what they feed goes into `step`."""
    out: list[tuple[_Question, int, int]] = []
    pending = list(readers)
    while pending:
        items: list[_Item] = []
        spans: list[tuple[_Question, int, int]] = []
        for q in pending:
            if len(items) >= capacity:
                break
            chunk = q.prompt_items(capacity - len(items))
            spans.append((q, len(items), len(chunk)))
            items += chunk
        t0 = time.perf_counter()
        fill_batch(batch, items)
        ctx._decode(batch)
        seconds = time.perf_counter() - t0
        for q, start, n in spans:
            q.read(n, seconds * n / len(items), last_row=start + n - 1)
            if not q.reading:
                first = len(step)
                step += q.sample()
                if not q.done:
                    out.append((q, first, len(step)))
        pending = [q for q in pending if q.reading]
    return out


class _Question:
    """The state of one question's ladder generation: its prompt (read in chunks), its votes and their forks, and
    each rung's finished samples. Its sequence ids are [base, base + recipe.sequences)."""

    def __init__(self, ctx: Context, recipe: Recipe, job: Job, *, base: int) -> None:
        self.ctx, self.recipe, self.job, self.base = ctx, recipe, job, base
        self.prompt, self.k, self.rungs, self.forcing = job.prompt, recipe.k, recipe.rungs, recipe.forcing
        self.window, self.chunk, self.shift = recipe.window, eviction_chunk(recipe.window), recipe.shift
        self.top = self.rungs[-1]
        self.free_seqs = list(range(base + recipe.sequences - 1, base + self.k - 1, -1))  # fork ids, smallest first
        # rung -> vote -> (tokens, generated, forced, finish, evicted)
        self.results: dict[int, dict[int, tuple[list[int], int, bool, str, int]]] = {b: {} for b in self.rungs}
        self.decoded = 0
        self.read_to = 0  # prompt tokens fed so far
        self.logits_at: dict[int, int] = {}
        self.started = time.perf_counter()
        self.prompt_s = self.decode_s = self.ttft_s = 0.0
        self.steps = self.max_seqs = self.max_tokens = 0
        self.handled: set[tuple[int, int]] = set()  # (vote, smaller rung) forked or recorded
        start = self._prefilled(self.top)
        self.live = [
            _Sample(seq=base + v, pos=len(self.prompt), sampler=sampler_chain(recipe.sampling, job.seeds[v], ctx.model.n_vocab),
                    budget=None if start is None else replace(start, recent=list(start.recent)),
                    cap=self.n_predict(self.top), vote=v, kept_from=len(self.prompt))
            for v in range(self.k)
        ]  # fmt: skip
        if recipe.sampling.presence_penalty:  # llama-server accepts the prompt into a request's sampler first
            for seq in self.live:
                for token in self.prompt:
                    llama_cpp.llama_sampler_accept(seq.sampler, token)

    def n_predict(self, budget: int) -> int:
        return self.forcing.n_predict(budget) if self.forcing else budget

    def _prefilled(self, budget: int) -> Budget | None:
        """The budget's state at the prompt's end: llama.cpp's sampler reads the generation prefix (from the last
        turn's start) first, so a prompt that opens the reasoning starts the count, one that closes it (thinking
        off) leaves it done."""
        forcing = self.forcing
        if forcing is None or not forcing.starts_reasoning:
            return None
        state = Budget(forcing, budget)
        prompt = list(self.prompt)
        turn = len(prompt) - 1 - prompt[::-1].index(forcing.turn) if forcing.turn in prompt else len(prompt)
        for token in prompt[turn:]:
            state.accept(token, self.ctx.model.piece)
        return state

    @property
    def reading(self) -> bool:
        """Whether the prompt is still being read (no vote has logits yet)."""
        return self.read_to < len(self.prompt)

    @property
    def done(self) -> bool:
        return not self.reading and not self.live

    def prompt_items(self, room: int) -> list[_Item]:
        """The next chunk of the prompt, at most `room` tokens, on the first vote's sequence."""
        n = len(self.prompt)
        end = min(n, self.read_to + room)
        items = [(self.prompt[p], p, self.base, p == n - 1) for p in range(self.read_to, end)]
        self.read_to = end
        return items

    def read(self, tokens: int, seconds: float, *, last_row: int | None = None) -> None:
        """A chunk of `tokens` prompt tokens was decoded (its last row at `last_row` of the batch: by default the
        chunk was the batch); after the last chunk the other votes share the prompt's cells, and every vote's first
        logits are that row."""
        self.prompt_s += seconds
        if self.reading:
            return
        memory = self.ctx._memory
        for v in range(1, self.k):
            llama_cpp.llama_memory_seq_cp(memory, self.base, self.base + v, -1, -1)
        self.logits_at = dict.fromkeys(
            range(self.base, self.base + self.k), tokens - 1 if last_row is None else last_row
        )

    def sample(self) -> list[_Item]:
        """Sample one token for each live sequence (a forced one where its budget forces); return what to feed the
        next decode."""
        items: list[_Item] = []
        for seq in list(self.live):
            items += self._forced(seq) if seq.forcing_now else self._advance(seq, self.logits_at[seq.seq])
        self._retire()
        if not self.ttft_s:
            self.ttft_s = time.perf_counter() - self.started
        return items

    def stepped(self, step: Sequence[_Item], start: int, end: int, share_s: float, batch_tokens: int) -> None:
        """This question's items [start, end) of a decoded batch: where each sequence's logits are."""
        for i in range(start, end):
            if step[i][3]:
                self.logits_at[step[i][2]] = i
        self.decode_s += share_s
        self.decoded += end - start
        self.steps += 1
        self.max_seqs = max(self.max_seqs, len({step[i][2] for i in range(start, end)}))
        self.max_tokens = max(self.max_tokens, batch_tokens)

    def release(self) -> None:
        """Free the question's cells: every sequence id of its block."""
        for s in range(self.base, self.base + self.recipe.sequences):
            llama_cpp.llama_memory_seq_rm(self.ctx._memory, s, -1, -1)

    def free_samplers(self) -> None:
        for seq in self.live:
            llama_cpp.llama_sampler_free(seq.sampler)
        self.live = []

    def result(self) -> dict[int, Generation]:
        model = self.ctx.model
        out = {}
        for b in self.rungs:
            got = [self.results[b][v] for v in range(self.k)]
            out[b] = Generation(
                texts=tuple(model.detokenize(r[0]) for r in got),
                tokens=tuple(tuple(r[0]) for r in got),
                generated=tuple(r[1] for r in got),
                forced=tuple(r[2] for r in got),
                finish=tuple(r[3] for r in got),
                prompt_tokens=len(self.prompt), prompt_tokens_decoded=len(self.prompt), max_batch_seqs=self.max_seqs,
                decode_steps=self.steps, prompt_s=self.prompt_s, decode_s=self.decode_s, ttft_s=self.ttft_s,
                decoded_tokens=self.decoded, evicted=tuple(r[4] for r in got), max_batch_tokens=self.max_tokens,
            )  # fmt: skip
        return out

    def _record(self, rung: int, seq: _Sample, finish: str) -> None:
        self.results[rung][seq.vote] = (list(seq.tokens), seq.generated, seq.forced, finish, seq.evicted)

    def _finish(self, seq: _Sample, finish: str) -> None:
        """A sequence is done: a vote gives its result to the top rung and to every rung it never reached."""
        seq.finish = finish
        if seq.rung is not None:
            self._record(seq.rung, seq, finish)
            return
        for b in self.rungs:
            if seq.vote not in self.results[b] and (seq.vote, b) not in self.handled:
                self._record(b, seq, finish)

    def _retire(self) -> None:
        """Drop finished sequences. A finished fork keeps its cells and sequence id to the question's end (there are
        enough for every fork at once): freed, they would take the votes' next tokens, so a vote's cells would no
        longer lie in position order in one question's cache — and CPU attention sums the cells in their order, so
        it would round otherwise than in a stream of the vote's own, as with several questions in flight. With a KV
        window the votes' evictions leave such gaps anyway, and a fork's cells are freed for the next fork."""
        for seq in [s for s in self.live if s.finish]:
            self.live.remove(seq)
            if seq.rung is not None and self.window:
                llama_cpp.llama_memory_seq_rm(self.ctx._memory, seq.seq, -1, -1)
                self.free_seqs.append(seq.seq)
            llama_cpp.llama_sampler_free(seq.sampler)

    def _forced(self, seq: _Sample) -> list[_Item]:
        """The next forced token of a sample whose budget ran out: llama.cpp masks every other logit and runs the
        sampler chain, whose seeded draw is taken all the same; here the chain sees the one candidate, which takes
        the same draw without the logits (a forced token's row needs none)."""
        assert seq.budget is not None
        token = seq.budget.forced_token()
        draw(seq.sampler, token)
        return self._wrote(seq, token, forced=True)

    def _fork(self, vote: _Sample, token: int, rung: int) -> list[_Item]:
        """A copy of a reasoning vote at a smaller rung whose budget it just used up: a run at that budget,
        forced from here (its random state carries on in a clone of the vote's sampler chain)."""
        assert vote.budget is not None
        seq_id = self.free_seqs.pop()
        llama_cpp.llama_memory_seq_cp(self.ctx._memory, vote.seq, seq_id, -1, -1)
        fork = _Sample(
            seq=seq_id, pos=vote.pos, sampler=llama_cpp.llama_sampler_clone(vote.sampler),
            budget=vote.budget.exhausted_at(rung, self.ctx.model.piece(token)), cap=self.n_predict(rung),
            tokens=list(vote.tokens), generated=vote.generated, vote=vote.vote, rung=rung, kept_from=vote.kept_from,
            evicted=vote.evicted,
        )  # fmt: skip
        self.live.append(fork)
        return self._step(fork, token)

    def _advance(self, seq: _Sample, logits_at: int) -> list[_Item]:
        """Sample one token for a sequence; return what to feed the next decode (nothing when it finished)."""
        token = int(llama_cpp.llama_sampler_sample(seq.sampler, self.ctx._ptr, logits_at))
        if self.ctx.model.is_end(token):
            self._finish(seq, "forced" if seq.forced else "stop")
            return []
        return self._wrote(seq, token)

    def _wrote(self, seq: _Sample, token: int, *, forced: bool = False) -> list[_Item]:
        """A sequence wrote `token`: its budget hears it, a vote's smaller rungs are forked or recorded where a run
        at that budget would part from it, and the sequence stops at its n_predict."""
        seq.tokens.append(token)
        if forced:
            seq.forced = True
        else:
            seq.generated += 1
        items: list[_Item] = []
        counted = False
        if seq.budget is not None:
            before = seq.budget.counted
            seq.budget.accept(token, self.ctx.model.piece)
            counted = seq.budget.counted > before
        if seq.rung is None and len(self.rungs) > 1:
            items += self._smaller_rungs(seq, token, counted)
        if len(seq.tokens) >= seq.cap:
            self._finish(seq, "forced" if seq.forced else "length")
            return items
        return items + self._step(seq, token)

    def _smaller_rungs(self, vote: _Sample, token: int, counted: bool) -> list[_Item]:
        """Where a run at a smaller rung parts from this vote: its budget used up by this token (a fork, forced
        from here), or its n_predict reached (the vote's tokens so far are that run's sample)."""
        items: list[_Item] = []
        for rung in self.rungs[:-1]:
            if (vote.vote, rung) in self.handled:
                continue
            if counted and vote.budget is not None and vote.budget.counted == rung:
                self.handled.add((vote.vote, rung))
                items += self._fork(vote, token, rung)
            elif len(vote.tokens) >= self.n_predict(rung):
                self.handled.add((vote.vote, rung))
                self._record(rung, vote, "forced" if vote.forced else "length")
        return items

    def _step(self, seq: _Sample, token: int) -> list[_Item]:
        """Feed a written token (its logits wanted unless the next token is forced). A KV window evicts until the
        budget forces: a forced sample keeps what it holds (its forced text and answer come on top, as
        `cells_needed` counts them) — a rule of the sample's own state, so a fork evicts as a run at its rung."""
        if (self.window and not seq.forced and not seq.forcing_now
                and seq.pos - seq.kept_from >= self.window + self.chunk):  # fmt: skip
            self._evict(seq)
        item = (token, seq.pos, seq.seq, not seq.forcing_now)
        seq.pos += 1
        return [item]

    def _evict(self, seq: _Sample) -> None:
        """Remove a sample's oldest chunk of own tokens from the cache (cells a fork shares stay, the fork's)."""
        start, end = seq.kept_from, seq.kept_from + self.chunk
        memory = self.ctx._memory
        if not llama_cpp.llama_memory_seq_rm(memory, seq.seq, start, end):
            raise LlamaError(f"llama.cpp could not evict positions {start}–{end} of sequence {seq.seq}")
        seq.evicted += self.chunk
        if self.shift:
            # StreamingLLM: the kept tokens move down over the gap (llama.cpp re-ropes K at the next decode).
            llama_cpp.llama_memory_seq_add(memory, seq.seq, end, -1, -self.chunk)
            seq.pos -= self.chunk
        else:
            seq.kept_from = end


def fill_batch(batch: llama_cpp.llama_batch, items: Sequence[tuple[int, int, int, bool]]) -> None:
    """Put (token, position, sequence, wants_logits) items into a llama_batch."""
    for i, (token, pos, seq, logits) in enumerate(items):
        batch.token[i] = token
        # llama-cpp-python annotates pos as an array of arrays; at run time it is a flat int32 array.
        batch.pos[i] = pos  # type: ignore[call-overload]
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
    batch.n_tokens = len(items)
