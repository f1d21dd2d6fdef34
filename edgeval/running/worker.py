"""The worker process: a fresh process that loads one configuration's model once and answers its pending
questions, handing each question's k samples on as it finishes (to the store, or back to the parent).

`sweep` starts it (`main` is the process's target), samples its memory from outside and reads its events; a crash
inside llama.cpp ends only this process. Nothing here is imported by the parent beyond the prompt text and the
vote seeds, which `sweep` also needs to size a run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import queue
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeval.core import grading, prompts
from edgeval.core.errors import describe
from edgeval.core.quants import KVType
from edgeval.core.resident import own_peak_bytes
from edgeval.edges import tasks
from edgeval.edges.store import ItemTiming, SampleRow, Store
from edgeval.edges.tasks import prompt_text

if TYPE_CHECKING:
    from edgeval.llama import engine
    from edgeval.running.configuration import RunSpec


def item_seeds(seed: int, item_id: str, k: int) -> list[int]:
    """One sampler seed per vote, fixed by the run's seed and the question's id (not its position): s, s + 1, …,
    as llama-server seeds a request's `n_cmpl` completions (`export` sends s as the request's seed)."""
    base = question_seed(seed, item_id)
    return [(base + j) & 0xFFFFFFFF for j in range(k)]


def question_seed(seed: int, item_id: str) -> int:
    """The first vote's seed of a question (below 2^31 - 1, so that llama.cpp never reads it as its random
    default, 0xFFFFFFFF, nor wraps it for a following vote)."""
    return int(hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()[:8], 16) % 0x7FFF0000


def main(
    payload: dict[str, Any], events: Any, measured: Any = None, work: Callable[..., None] | None = None,
    preloaded: engine.Model | None = None,
) -> None:  # fmt: skip
    """Runs in a fresh process: load once, answer every pending question, commit each as it finishes (to the store,
    or — with no store — back to the parent as an event). `measured` is the parent's event that it has taken the
    deployment shape's peak (a worker asked to measure that shape first waits for it). `work` is another job for
    the same process life (`kld_passes`: a scoring pass); by default, answering (with the model `waiting` loaded
    while the parent prepared, where it did).

    A Python failure is written to the log as one `edgeval:` line and the process exits with code 1;
    a crash inside llama.cpp kills the process, and the parent reads the log's last lines.
    """
    from edgeval.llama import engine

    _die_with_parent(payload["parent_pid"])
    engine.LOG.tee(Path(payload["log_path"]))
    engine.LOG.set_echo(payload["verbose"])
    if preloaded is not None:
        engine.LOG.replay(preloaded.load_log)
    try:
        if work is None:
            _work(payload, events, measured, preloaded)
        else:
            work(payload, events, measured)
    except BaseException as exc:
        with Path(payload["log_path"]).open("a", encoding="utf-8") as log:
            log.write(f"\nedgeval: {describe(exc)}\n")
        raise SystemExit(1) from None
    finally:
        events.put(("peak", own_peak_bytes()))  # the kernel's own peak of this process: exact, and only it can tell


def waiting(parent: int, go: Any, events: Any, measured: Any, interruptible: bool = True) -> None:
    """A worker started before its configuration is prepared (`sweep.Early`): Python's start, llama.cpp's import and
    the template helper's start happen while the parent prepares — and the model's load, once the parent has checked
    the file and sent ("load", path, options) — then `main` runs on the payload handed over `go` (None: nothing to
    run). It starts with Ctrl-C ignored (the parent ends a worker it has not handed work) and takes Python's own
    handling back with its payload when the parent had it (`interruptible`). `parent` is the parent's pid as the
    parent gave it (had it died already, this process's parent is another)."""
    _die_with_parent(parent)
    preloaded = None
    try:
        from edgeval.core import rendering
        from edgeval.llama import engine  # (the slow part of a worker's start)

        # the chat template's helper process, which the first prompt would start (again then, if it cannot now)
        rendering.warm_soon()
        while True:
            try:
                got = go.get(timeout=1.0)
            except queue.Empty:
                if _orphaned(parent):
                    os._exit(1)
                continue
            if not (isinstance(got, tuple) and got[0] == "load"):
                payload = got
                break
            if preloaded is not None:
                preloaded.close()
                preloaded = None
            with contextlib.suppress(Exception):  # loaded again with the payload, where its failure is told
                preloaded = engine.Model(Path(got[1]), got[2])
            events.put(("preloaded", preloaded is not None))
    except KeyboardInterrupt:  # (started from a thread, Ctrl-C is not ignored here): the parent says it
        raise SystemExit(1) from None
    if payload is not None:
        if interruptible:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        main(payload, events, measured, preloaded=preloaded)


def _die_with_parent(parent: int) -> None:
    """End this worker when the process that supervises it dies (killed, say, as a cluster's task): an orphaned
    llama.cpp would go on taking the cores and memory of whatever runs next. Linux asks the kernel; elsewhere the
    worker checks between questions (`_orphaned`)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if _orphaned(parent):
        os._exit(1)


def _orphaned(parent: int) -> bool:
    return os.getppid() != parent


Sink = Callable[[Mapping[int, Sequence[SampleRow]], ItemTiming], None]


def _work(payload: dict[str, Any], events: Any, measured: Any = None, preloaded: engine.Model | None = None) -> None:
    if payload["db_path"] is None:  # no store here: each question goes back to the parent, which hands it on

        def send(rows: Mapping[int, Sequence[SampleRow]], timing: ItemTiming) -> None:
            events.put(("rows", (dict(rows), timing)))

        _answer_all(payload, events, send, measured, preloaded)
        return
    with Store(Path(payload["db_path"])) as store:
        _answer_all(payload, events, store.add_items, measured, preloaded)


def spec_of(raw: dict[str, Any]) -> RunSpec:
    """The run's spec from its payload (`sweep.worker_payload`: JSON-safe values)."""
    from edgeval.running.configuration import RunSpec

    sampling = prompts.Sampling(**raw["sampling"]) if raw["sampling"] else None
    return RunSpec(**{
        **raw, "model_path": Path(raw["model_path"]), "kv_type_k": KVType(raw["kv_type_k"]),
        "kv_type_v": KVType(raw["kv_type_v"]), "sampling": sampling, "ladder": tuple(raw["ladder"]),
    })  # fmt: skip


class _Pace:
    """How long a decode step takes lately (a moving average over steps)."""

    def __init__(self) -> None:
        self.last = 0.0
        self.step_s = 0.0

    def stepped(self, _: int, __: float) -> None:
        now = time.perf_counter()
        if self.last:
            self.step_s = 0.8 * self.step_s + 0.2 * (now - self.last) if self.step_s else now - self.last
        self.last = now


def _answer_all(
    payload: dict[str, Any], events: Any, sink: Sink, measured: Any = None, preloaded: engine.Model | None = None
) -> None:
    from edgeval.llama import engine

    spec = spec_of(payload["spec"])
    task: tasks.Task = payload["task"]
    items = task.take(spec.limit)
    pending = payload["pending"]
    config_ids = {int(b): int(c) for b, c in payload["config_ids"].items()}
    chat = prompts.ChatFormat(payload["chat_template"])
    width = payload["width"]
    t0 = time.perf_counter()
    with _loaded(spec.model_path, spec.load_options(), preloaded) as model:
        if model is preloaded:  # its load's seconds, spent before the payload came
            t0 -= model.load_s
        forcing = engine.reasoning_budget(
            model, message=spec.budget_message, answer_tokens=spec.answer_tokens,
            starts_reasoning=spec.thinking or chat.opens_reasoning(spec.thinking),
        )  # fmt: skip
        recipe = engine.Recipe(
            k=spec.k, budgets=spec.rungs, sampling=spec.effective_sampling, forcing=forcing, window=spec.kv_window
        )
        one = engine.ContextOptions(
            n_ctx=payload["n_ctx"], n_seq=payload["n_seq"], type_k=spec.kv_type_k, type_v=spec.kv_type_v,
            n_threads=spec.threads, n_batch=batch_size(recipe.step_tokens(), 1),
        )  # fmt: skip
        probe = payload.get("speed", False)
        alone = payload.get("footprint", False) or (probe and width > 1)
        if alone:  # the deployment shape first, in a context of its own (its speed probed there too)
            _one_question(payload, events, measured, t0, model, one, chat, task, items[pending[0]], spec, recipe)
        wide = replace(one, n_batch=batch_size(recipe.step_tokens(), width))
        with engine.Context(model, engine.in_flight(wide, width, payload["stream_cells"])) as ctx:
            if not payload.get("footprint", False):
                events.put(("loaded", time.perf_counter() - t0))
            if probe and not alone:  # width 1: this context is the deployment shape
                events.put(("speed", _speed(ctx, chat, task, items[pending[0]], spec, recipe)))

            def jobs() -> Iterator[engine.Job]:
                for index in pending:
                    prompt = model.tokenize(prompt_text(chat, task, items[index], spec.thinking))
                    yield engine.Job(index, prompt, item_seeds(spec.seed, items[index].id, spec.k))

            pace = _Pace()

            def admit() -> bool:
                # With many questions in flight a step is slower, so a question started late would end long after
                # the deadline: start one only if its budget of steps, at the present pace, ends before it.
                late = spec.budget * pace.step_s if width > 1 else 0.0
                if spec.deadline is not None and time.time() + late >= spec.deadline:
                    events.put(("stopped", None))
                    return False
                if _orphaned(payload["parent_pid"]):
                    os._exit(1)
                return True

            def done(job: engine.Job, ladder: dict[int, engine.Generation]) -> None:
                _answer(sink, config_ids, chat, task, job.key, items[job.key], spec, ladder, events)

            ctx.generate_many(recipe, jobs(), done, width=width, admit=admit, on_step=pace.stepped)
    events.put(("finished", None))


def _loaded(path: Path, load: engine.LoadOptions, preloaded: engine.Model | None) -> engine.Model:
    """The model to answer with: the one loaded while the parent prepared where it is this file loaded this way,
    else (that one closed) loaded now."""
    from edgeval.llama import engine

    if preloaded is not None:
        if preloaded.path == path and preloaded.options == load:
            return preloaded
        preloaded.close()
    return engine.Model(path, load)


def batch_size(step_tokens: int, width: int) -> int:
    """The context's batch (tokens one decode may carry): llama.cpp's 512, or what `width` questions may feed
    one step when that is more (each of their sequences' token and a forcing text)."""
    return max(512, step_tokens * width)


FOOTPRINT_STEPS = 4  # tokens each vote writes in the footprint pass before it is forced to answer


def _footprint(
    ctx: engine.Context, chat: prompts.ChatFormat, task: tasks.Task, item: tasks.Item, spec: RunSpec,
    recipe: engine.Recipe,
) -> None:  # fmt: skip
    """The deployment shape, briefly: one question's context (created at the caller), its prompt read, its k votes
    decoding together for a few steps, forked once (a ladder) and forced to answer (in thinking mode). llama.cpp allocates and clears
    the whole KV cache when the context is created, so what is resident then is what answering the question takes."""
    from edgeval.llama import engine

    prompt = ctx.model.tokenize(prompt_text(chat, task, item, spec.thinking))
    top = min(FOOTPRINT_STEPS, recipe.rungs[-1])
    budgets = (top // 2, top) if len(recipe.rungs) > 1 and top > 1 else (top,)  # a ladder: fork once too
    forcing = replace(recipe.forcing, answer_tokens=2) if recipe.forcing else None
    short = replace(recipe, budgets=budgets, forcing=forcing)
    ctx.generate_many(short, [engine.Job(0, prompt, item_seeds(spec.seed, item.id, spec.k))], lambda *_: None)


def _one_question(
    payload: dict[str, Any], events: Any, measured: Any, t0: float, model: engine.Model, one: engine.ContextOptions,
    chat: prompts.ChatFormat, task: tasks.Task, item: tasks.Item, spec: RunSpec, recipe: engine.Recipe,
) -> None:  # fmt: skip
    """The deployment shape (one question's context) before the run's own context: its footprint pass, after which
    the parent takes the peak, and its speed probe (once per configuration). The probe reads the prompt and decodes
    the k votes together, as the pass does, so it is the pass wherever there is no ladder fork to measure."""
    from edgeval.llama import engine

    footprint, speed = payload.get("footprint", False), payload.get("speed", False)
    with engine.Context(model, one) as ctx:
        if footprint:
            events.put(("loaded", time.perf_counter() - t0))
        if footprint and (not speed or len(recipe.rungs) > 1):
            _footprint(ctx, chat, task, item, spec, recipe)
        if speed:
            events.put(("speed", _speed(ctx, chat, task, item, spec, recipe)))
    if footprint:
        events.put(("footprint", own_peak_bytes()))  # its context closed: the parent takes the peak, then this widens
        if measured is not None:
            measured.wait(timeout=60)


SPEED_STEPS = 8  # decode steps timed at each width and depth of the speed probe
SPEED_GENERATION = 12  # tokens a sample writes in the probe's short real generation (the run's budget if smaller)
SPEED_REPEATS = 30  # the most repetitions of the probe's short real generation at each width ...
SPEED_REPEAT_S = 0.25  # ... repeated while they have taken less than this together
SPEED_GAP = 32  # the fewest cells between the probe's two depths for a slope (a smaller budget's line is flat)


def _speed(
    ctx: engine.Context, chat: prompts.ChatFormat, task: tasks.Task, item: tasks.Item, spec: RunSpec,
    recipe: engine.Recipe,
) -> str:  # fmt: skip
    """The deployment shape's speed (`answer_time.Speed`, as JSON): decode steps of one and of k sequences near the
    prompt's depth (a short real generation's) and half way to the deepest a sample may reach (the largest budget's
    n_predict: a step grows linearly with depth, and the cells filled to reach a depth are the probe's main cost),
    and the prompt read. The line's slope is the decode's own (a step's sampling, batch and decode at both depths);
    its height at the prompt is a real step's whole cost, the loop's bookkeeping included."""
    from edgeval.core import answer_time
    from edgeval.llama.speed import speed_probe

    prompt = ctx.model.tokenize(prompt_text(chat, task, item, spec.thinking))
    forcing = recipe.forcing
    n_predict = forcing.n_predict(recipe.rungs[-1]) if forcing else recipe.rungs[-1]
    widths = sorted({1, spec.k})
    deep = speed_probe(ctx, prompt, widths, (len(prompt) + n_predict // 2,), recipe.sampling, steps=SPEED_STEPS)
    near = _loop_steps(ctx, prompt, widths, item_seeds(spec.seed, item.id, max(widths)), recipe)
    # a deep point too close to the generation's steps would give a slope of noise: none (a flat line) then
    probe = {w: [(near.depth, near.decode_s[w]), *[(d, t) for d, t in deep[w] if d >= near.depth + SPEED_GAP]]
             for w in widths}  # fmt: skip
    reasoning = forcing is not None and forcing.starts_reasoning
    raw = answer_time.Speed.fit(
        near.prompt_tps, probe, forced_tokens=len(forcing.tokens) if forcing and reasoning else 0,
        extra=forcing.extra if forcing else 0,
    )  # fmt: skip
    steps = {w: (max(0.0, near.step_s[w] - b * near.depth), b) for w, (_, b) in raw.steps.items()}
    return replace(raw, steps=steps).to_json()


@dataclass(frozen=True)
class _Near:
    """A short real generation's steps near the prompt's depth, per width: their whole cost (the median time
    between steps) and their decode's (sampling, batch and decode), and the prompt's read rate."""

    depth: int  # the generation's middle step's depth
    step_s: dict[int, float]
    decode_s: dict[int, float]
    prompt_tps: float


def _loop_steps(
    ctx: engine.Context, prompt: Sequence[int], widths: Sequence[int], seeds: Sequence[int], recipe: engine.Recipe
) -> _Near:
    """A step's cost near the prompt's depth for each width — whole (llama_decode with sampling, the reasoning
    budget and the loop's bookkeeping: the median of the times between a short real generation's steps, so that a
    preemption of this process is one step's, not the figure's) and its decode's alone (the median of the steps'
    own seconds) — and the prompt's read rate. The generation is forced as the run forces when it is the run's
    whole budget; a longer budget is not forced in it (its message would be most of the steps, where a run's
    samples spend few). Repeated while the repetitions are short: on a small model a step lasts a fraction of a
    millisecond. The prompt's rate from the same generations (the probe before them has read the prompt once:
    warm)."""
    short = min(SPEED_GENERATION, recipe.rungs[-1])
    forcing = recipe.forcing if short == recipe.rungs[-1] else None
    step_s: dict[int, float] = {}
    decode_s: dict[int, float] = {}
    rates: list[float] = []
    for width in widths:
        gaps: list[float] = []
        took: list[float] = []
        started = time.perf_counter()
        for _ in range(SPEED_REPEATS):
            stamps: list[float] = []
            out = ctx.generate(prompt, k=width, max_tokens=short, sampling=recipe.sampling, seeds=seeds[:width],
                               forcing=forcing, on_step=functools.partial(_stamp, stamps, took))  # fmt: skip
            gaps += [b - a for a, b in itertools.pairwise(stamps)] or [out.decode_s / max(out.decode_steps, 1)]
            rates += [len(prompt) / out.prompt_s] if out.prompt_s > 0 else []
            if time.perf_counter() - started >= SPEED_REPEAT_S:
                break
        step_s[width] = statistics.median(gaps)
        decode_s[width] = statistics.median(took) if took else step_s[width]
    return _Near(len(prompt) + short // 2, step_s, decode_s, statistics.median(rates) if rates else 0.0)


def _stamp(into: list[float], took: list[float], _: int, seconds: float) -> None:
    into.append(time.perf_counter())
    took.append(seconds)


def _answer(
    sink: Sink,
    config_ids: dict[int, int],
    chat: prompts.ChatFormat,
    task: tasks.Task,
    index: int,
    item: tasks.Item,
    spec: RunSpec,
    ladder: dict[int, engine.Generation],
    events: Any,
) -> None:
    """Grade one question's samples at every rung and hand them on in one piece, with its timing."""
    # A template that opens the reasoning itself (Qwen3-2507 Thinking) leaves `<think>` in the prompt: the stored
    # text gets it back, so grading (and a later regrade) knows an unclosed reasoning from an answer.
    opener = f"{prompts.THINK_OPEN}\n" if chat.opens_reasoning(spec.thinking) else ""
    rows: dict[int, Sequence[SampleRow]] = {}
    for budget, out in ladder.items():
        rung: list[SampleRow] = []
        rows[config_ids[budget]] = rung
        for j in range(spec.k):
            text = opener + out.texts[j]
            verdict = grading.judge(task.kind, text, item.answer)
            rung.append(
                SampleRow(index, item.id, j, item.answer, text, verdict.answer, verdict.correct,
                          out.generated[j], out.forced[j], out.finish[j], out.prompt_tokens, out.evicted[j])
            )  # fmt: skip
    out = ladder[spec.budget]
    # Every rung's row gets the generation's timing: the rungs were produced together, by one decode.
    timing = ItemTiming(index, out.prompt_tokens, out.prompt_s, out.decoded_tokens, out.decode_s, out.ttft_s)
    sink(rows, timing)
    events.put(("item", (index, out.decoded_tokens, out.decode_s + out.prompt_s)))
