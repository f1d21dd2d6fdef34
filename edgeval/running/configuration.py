"""One configuration before it runs: what the user asked for (`RunSpec`), and what it takes (`prepare`: the
task's questions, the longest prompt, KV cells and sequences, the predicted footprint with one question and with
several in flight, its rows in the store), and how many questions it keeps in flight (`resolve_width`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from edgeval.core import memory, prompts, resident
from edgeval.core.errors import ConfigurationError
from edgeval.core.quants import KVType
from edgeval.core.units import format_bytes
from edgeval.edges import gguf_info, hub, tasks
from edgeval.edges.catalog import GENERATIONS, generation_of
from edgeval.edges.store import Store
from edgeval.edges.tasks import prompt_text
from edgeval.llama import throughput

if TYPE_CHECKING:  # engine (llama.cpp) is imported where a configuration is prepared or run, not with this module
    from edgeval.llama import engine

DEFAULT_BUDGET_TOKENS = 2048  # lowered, with a note, where the model's context cannot hold it
ANSWER_TOKENS = 32  # what a forced sample may still write after its reasoning is closed
AUTO = 0  # RunSpec.parallel: as many questions in flight as gain throughput and fit


# A KV window evicts a sample's oldest tokens; a hybrid cannot forget them (and needs little KV cache to begin with).
HYBRID_WINDOW = (
    "a KV window cannot apply to {name}: it is a hybrid (Gated DeltaNet), most of its layers carry a recurrent "
    "state that holds every token read and cannot drop old ones, and its attention layers cannot shift positions"
)


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides one configuration's samples, plus how to run it."""

    model_path: Path
    model_label: str
    task: str
    kv_type_k: KVType = KVType.F16
    kv_type_v: KVType = KVType.F16
    budget_tokens: int | None = None  # None: DEFAULT_BUDGET_TOKENS, or what the model's context holds
    ctx: int | None = None  # tokens one sample may see (prompt + budget + forced answer); None: what it needs
    k: int = 1
    thinking: bool = True
    sampling: prompts.Sampling | None = None  # None: Qwen's recommendation for the mode
    seed: int = 0
    limit: int | None = None
    threads: int | None = None
    # Weight repacking: True/None the doctor probe's mode (probed once, when a run needs it; True forces llama.cpp's
    # own choice where the probe found none), False off; `prepare` resolves it to a RepackMode.
    repack: bool | memory.RepackMode | None = None
    gpu_layers: int | None = None
    cpu_moe: int = 0  # mixture of experts: the first N layers keep their expert weights on the CPU (-1: all)
    answer_tokens: int = ANSWER_TOKENS  # room to answer after the budget's forced tokens (part of n_predict)
    budget_message: str = prompts.BUDGET_MESSAGE  # forced before `</think>` at the thinking budget
    ladder: tuple[int, ...] = ()  # smaller token budgets answered by the same generation (the budget ladder)
    kv_window: int = 0  # each sample keeps the prompt and its most recent N tokens in the KV cache (0: all)
    deadline: float | None = None  # wall-clock time (time.time()) after which no new question is started
    expected_sha256: str | None = None  # the catalog's hash: a file that does not match is never evaluated
    force: bool = False  # run even where the prediction exceeds the memory available
    parallel: int = 1  # questions in flight at once (AUTO: what this machine's knee and free memory allow)

    @property
    def budget(self) -> int:
        """The largest token budget (the default until `prepare` has fitted it to the model)."""
        return DEFAULT_BUDGET_TOKENS if self.budget_tokens is None else self.budget_tokens

    @property
    def repack_mode(self) -> memory.RepackMode:
        """The repacking mode (`prepare` resolves True/None through the doctor's probe)."""
        return memory.RepackMode.of(self.repack or False)

    @property
    def rungs(self) -> tuple[int, ...]:
        """Every token budget this run answers for, smallest first (the largest is `budget`)."""
        return tuple(sorted({*self.ladder, self.budget}))

    @property
    def effective_sampling(self) -> prompts.Sampling:
        """The sampler settings used (`prepare` sets Qwen's advice for the file's generation when none was
        given; before it, Qwen3's)."""
        return self.sampling or prompts.recommended_sampling(self.thinking)

    def load_options(self) -> engine.LoadOptions:
        """How the answering worker loads the file."""
        from edgeval.llama import engine

        return engine.LoadOptions(n_gpu_layers=self.gpu_layers, repack=self.repack_mode, cpu_moe=self.cpu_moe)


@dataclass(frozen=True)
class Prepared:
    """A configuration ready to run: its task items, KV cells, prediction and store rows (one per rung of the
    budget ladder; the samples of each rung equal a separate run at that budget)."""

    spec: RunSpec
    task: tasks.Task
    items: tuple[tasks.Item, ...]
    n_ctx: int
    n_seq: int  # the votes and the ladder's forks
    predicted: memory.Footprint  # the whole run: the largest budget, k votes and the ladder's forks
    config_ids: dict[int, int]  # token budget -> its configuration row
    notes: tuple[str, ...] = ()  # what the user should know about settings edgeval chose (one line each)
    chat: prompts.ChatFormat = field(default_factory=prompts.ChatFormat)  # the file's template, or the built-in
    # What a run with w questions in flight takes, for w = 1, 2, …: w × the sequences and forced tokens, each
    # sequence on a KV stream of its own. The first is `predicted`, the deployment shape: one question (one unified
    # cache, the votes sharing the prompt's cells), which is the configuration's own memory.
    by_width: tuple[memory.Footprint, ...] = ()
    width: int = 1  # questions in flight (`resolve_width` sets it before the run)
    stream_cells: int = 0  # with several questions in flight, each sequence's own KV stream (`engine.in_flight`)

    @property
    def wide(self) -> memory.Footprint:
        """The footprint of the run as it will go: `width` questions in flight."""
        return self.by_width[self.width - 1] if self.width > 1 else self.predicted

    @property
    def config_id(self) -> int:
        """The row of the largest budget."""
        return self.config_ids[self.spec.budget]


def _config_key(spec: RunSpec, task: tasks.Task, model_sha: str, budget: int) -> str:
    """What decides a configuration's samples. Not the number of questions: a later run with a higher --limit adds
    questions to the same configuration; not the ladder: a rung's samples equal a separate run at its budget."""
    decisive = {
        "model_sha256": model_sha,
        "task": task.fingerprint,
        "kv": [spec.kv_type_k.value, spec.kv_type_v.value],
        "budget": budget,
        "answer_tokens": spec.answer_tokens,
        "k": spec.k,
        "thinking": spec.thinking,
        "sampling": spec.effective_sampling.fields(),
        "seed": spec.seed,
        "forcing": prompts.FORCING,
        "budget_message": spec.budget_message,
    }
    from edgeval.llama import engine

    offload = engine.LoadOptions(n_gpu_layers=spec.gpu_layers).gpu_layers()
    if offload:  # GPU kernels give other numbers and other measurements: not the CPU run's configuration
        decisive["gpu_layers"] = offload
        if spec.cpu_moe:  # experts computed on the CPU: other kernels again
            decisive["cpu_moe"] = spec.cpu_moe
    if spec.kv_window:  # only when set: the keys of configurations without a window stay what they were
        decisive["kv_window"] = spec.kv_window
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:24]


def _arm_key(spec: RunSpec, task: tasks.Task, model_sha: str) -> str:
    """The rows one generation fills: the same configuration at every rung of the ladder."""
    return _config_key(spec, task, model_sha, 0)


def prepare(spec: RunSpec, store: Store, run_id: int | None = None, loading: Loading | None = None) -> Prepared:
    """Load the task, measure prompts with the model's tokenizer, size the KV cache, predict memory, find or
    create the configuration's row. A file whose sha256 is not the catalog's is refused first; repacking left
    open is decided here (the doctor's probe, run once), since the prediction depends on it. `loading` hears the
    file and how it will be loaded once its header has been read and checked (`sweep.Early` loads it meanwhile)."""
    from edgeval.llama import doctor, engine

    model_sha = store.file_sha256(spec.model_path, hub.sha256_of)
    if spec.expected_sha256 and model_sha != spec.expected_sha256.lower():
        raise hub.reject(spec.model_path, spec.expected_sha256, model_sha)
    if not isinstance(spec.repack, memory.RepackMode):
        spec = replace(spec, repack=doctor.repack_mode(spec.repack))
    header = gguf_info.read_local(spec.model_path)
    task = tasks.load_task(spec.task)
    items = task.take(spec.limit)
    if not items:
        raise ConfigurationError(f"task {task.name} has no items", hint="check --limit and the task file")
    chat = prompts.ChatFormat(header.chat_template)
    arch = header.architecture()
    if spec.sampling is None:  # Qwen's advice for the file's generation (a hybrid's is not Qwen3's)
        spec = replace(spec, sampling=GENERATIONS[generation_of(arch)][spec.thinking])
    if arch.hybrid and spec.kv_window:
        raise ConfigurationError(HYBRID_WINDOW.format(name=spec.model_path.name), hint="drop --kv-window")
    _check_sizes(spec, task, items, header, arch.n_ctx_train)
    gpu_layers = engine.LoadOptions(n_gpu_layers=spec.gpu_layers).gpu_layers()
    mode = memory.repack_for_offload(spec.repack_mode, gpu_layers)
    spec = replace(spec, repack=mode)
    if loading is not None:
        loading(spec.model_path, spec.load_options(), header.weight_bytes)
    longest, needed = _sample_tokens(spec, task, items, chat)
    answer_cells = needed - longest - spec.budget
    budget, notes = _budget(spec, arch.n_ctx_train, longest, answer_cells)
    spec = replace(spec, budget_tokens=budget)
    per_sample = _check_sample(spec, arch.n_ctx_train, longest, answer_cells)
    n_rungs = len(spec.rungs)
    # Each sample may see --ctx tokens (what it needs by default); the k samples share the prompt's cells. With a KV
    # window a sample holds its window and an eviction chunk of its own tokens instead of its whole budget.
    own = memory.own_cells(budget, spec.kv_window)
    chunk = memory.eviction_chunk(spec.kv_window) if own < budget else 0
    n_ctx = engine.cells_needed(longest, spec.k, (spec.ctx or per_sample) - longest - budget + own)
    if spec.thinking:  # the ladder's forks, with a window also what a vote evicts meanwhile
        n_ctx += engine.fork_cells(spec.k, n_rungs, answer_cells, chunk=chunk)
    n_seq = engine.ladder_sequences(spec.k, n_rungs, spec.thinking)
    tied_copy = mode.repacks_tied_output
    repack = header.repack(engine.repacked_types(mode), tied_copy=tied_copy) if mode.on else memory.Repack()

    footprint = _Footprints(spec, header, arch, longest, gpu_layers, repack)
    predicted = footprint(n_ctx, n_seq)
    most = 1 if spec.parallel == 1 else min(len(items), throughput.MAX_SEQUENCES // n_seq)
    # A sequence's stream holds a copy of the prompt and what the sample may see (--ctx, by default what it needs).
    stream_cells = (spec.ctx or per_sample) - budget + own
    wider = (footprint(stream_cells * n_seq * w, n_seq * w, streams=True) for w in range(2, most + 1))
    by_width = (predicted, *wider)
    shape = _Shape(longest, answer_cells, per_sample, n_ctx, predicted.total_bytes)
    config_ids = _config_rows(spec, store, run_id, task, len(items), header, chat, model_sha, footprint, shape)
    return Prepared(spec, task, items, n_ctx, n_seq, predicted, config_ids, notes, chat, by_width,
                    stream_cells=stream_cells)  # fmt: skip


# What `prepare` tells once a file's header is checked: the file, how it will be loaded, its weights' bytes.
Loading = Callable[[Path, "engine.LoadOptions", int], None]


@dataclass(frozen=True)
class _Footprints:
    """The memory equation for one file and configuration: the footprint at any cells, sequences and forcing."""

    spec: RunSpec
    header: gguf_info.GGUFInfo
    arch: memory.Architecture
    prompt_tokens: int
    gpu_layers: int
    repack: memory.Repack

    def __call__(self, cells: int, seqs: int, streams: bool = False) -> memory.Footprint:
        spec, header = self.spec, self.header
        setting = memory.Setting(
            n_ctx=cells, n_seq=seqs, type_k=spec.kv_type_k, type_v=spec.kv_type_v, prompt_tokens=self.prompt_tokens,
            gpu_layers=self.gpu_layers, cpu_moe=spec.cpu_moe, repack=spec.repack_mode.on, streams=streams,
        )  # fmt: skip
        return memory.predict(
            self.arch, header.weight_bytes, setting, embd_bytes=header.embd_bytes,
            expert_bytes=header.expert_bytes, repack=self.repack,
        )  # fmt: skip


@dataclass(frozen=True)
class _Shape:
    """The sizes `prepare` measured that every rung's row records."""

    longest: int  # the longest prompt, in tokens
    answer_cells: int  # a forced answer's cells
    per_sample: int  # the cells one sample needs at the largest budget
    n_ctx: int  # the run's KV cells with one question
    arm_predicted: int  # the whole run's predicted bytes


def _check_sizes(
    spec: RunSpec, task: tasks.Task, items: tuple[tasks.Item, ...], header: gguf_info.GGUFInfo, n_ctx_train: int
) -> None:
    """Refuse a question the context cannot hold from its length in bytes, before tokenizing it: a token stands for
    at most the vocabulary's longest token text, so a question of n bytes is at least n / that many tokens."""
    piece = header.longest_token_bytes
    context = n_ctx_train
    for item in items:
        if piece is None or len(item.question) <= context:  # (characters ≤ bytes: at most `context` tokens)
            continue
        size = len(item.question.encode("utf-8", errors="replace"))
        if -(-size // piece) > context:
            _too_long(spec, task, item, f"{format_bytes(size)}, at least {-(-size // piece):,} tokens", context)


def _too_long(spec: RunSpec, task: tasks.Task, item: tasks.Item, size: str, context: int) -> NoReturn:
    raise ConfigurationError(
        f"question {item.id} of {task.name} is too long ({size}): more than {spec.model_path.name} holds "
        f"(trained for {context:,} tokens)",
        hint="shorten that question or leave it out of the task file (`--limit` takes the first questions only)",
    )


def _check_sample(spec: RunSpec, n_ctx_train: int, longest: int, answer_cells: int) -> int:
    """The cells one sample needs (the longest prompt, the budget, a forced answer), refused where --ctx or the
    model's training context cannot hold it."""
    budget = spec.budget
    per_sample = longest + budget + answer_cells
    if spec.ctx is not None and spec.ctx < per_sample:
        raise ConfigurationError(
            f"--ctx {spec.ctx} cannot hold the longest prompt ({longest} tokens) + the token budget "
            f"({budget}) + a forced answer ({answer_cells})",
            hint=f"use --ctx {per_sample} or more, or a smaller --budget-tokens",
        )
    if longest + answer_cells > n_ctx_train:  # the prompt itself leaves no room: the question is too long
        raise ConfigurationError(
            f"the longest prompt is {longest:,} tokens: with a forced answer ({answer_cells}) it is more than "
            f"{spec.model_path.name} holds (trained for {n_ctx_train:,} tokens)",
            hint="shorten the task's longest question or leave it out of the task file",
        )
    if per_sample > n_ctx_train:
        raise ConfigurationError(
            f"a sample needs {per_sample} tokens but {spec.model_path.name} was trained for {n_ctx_train}",
            hint="lower --budget-tokens",
        )
    return per_sample


def _config_rows(
    spec: RunSpec, store: Store, run_id: int | None, task: tasks.Task, n_items: int, header: gguf_info.GGUFInfo,
    chat: prompts.ChatFormat, model_sha: str, footprint: _Footprints, shape: _Shape,
) -> dict[int, int]:  # fmt: skip
    """Find or create the configuration's row at every rung of the ladder; its id by budget."""
    budget, longest, answer_cells = spec.budget, shape.longest, shape.answer_cells
    arm = _arm_key(spec, task, model_sha)
    config_ids = {}
    for rung in spec.rungs:
        # What a separate run at this budget with j ≤ k votes would take (the rung's memory is that, calibrated by
        # what this run measures).
        # The largest budget holds what --ctx gives each sample (by default what it needs), as the run itself does.
        own = memory.own_cells(rung, spec.kv_window)
        cells = own + answer_cells if rung != budget else (spec.ctx or shape.per_sample) - longest - budget + own
        by_votes = {j: footprint(longest + j * cells, j).total_bytes for j in range(1, spec.k + 1)}
        fields: dict[str, object] = {
            "run_id": run_id, "model": spec.model_label, "model_path": str(spec.model_path), "model_sha256": model_sha,
            "weight_quant": _quant_name(header), "params": header.n_params, "task": task.name,
            "task_fingerprint": task.fingerprint, "answer_kind": task.kind.value, "prompt_format": chat.source,
            "kv_type_k": spec.kv_type_k.value, "kv_type_v": spec.kv_type_v.value,
            "ctx": longest + rung + answer_cells if rung != budget or spec.ctx is None else spec.ctx,
            "budget_tokens": rung, "k": spec.k, "thinking": int(spec.thinking),
            "sampling": json.dumps(spec.effective_sampling.fields()), "seed": spec.seed, "n_items": n_items,
            "kv_cells": memory.padded_cells(shape.n_ctx), "predicted_bytes": by_votes[spec.k],
            "predicted_by_votes": json.dumps(by_votes), "arm": arm, "arm_predicted_bytes": shape.arm_predicted,
            "kv_window": spec.kv_window, "forcing": prompts.FORCING, "budget_message": spec.budget_message,
        }  # fmt: skip
        config_ids[rung] = store.upsert_config(_config_key(spec, task, model_sha, rung), fields)
        store.raise_items(config_ids[rung], n_items)
    return config_ids


def free_memory(gpu: bool) -> tuple[int, int | None]:
    """Free RAM, and with `gpu` the free GPU memory (NVML where it answers: asking llama.cpp would put a GPU
    context here); None when not asked."""
    import psutil

    from edgeval.llama import engine

    free = memory.gpu_free_bytes() if gpu else None
    if gpu and free is None:
        free = sum(d.memory_free for d in engine.gpu_devices())
    available = int(psutil.virtual_memory().available)
    left = resident.address_space_left()
    return (available if left is None else min(available, left)), free


def resolve_width(
    prepared: Prepared, questions: int, notify: Callable[[str], None] | None = None, *, probe: bool = True,
    held: int = 0,
) -> Prepared:  # fmt: skip
    """How many of `questions` the run keeps in flight: --parallel N (at most what fits and what there is), or
    with AUTO the knee this machine measured for the model's size class (measured now, once, if `probe`) — never
    a width whose prediction does not fit in AUTO_MEMORY_SHARE of the memory free (with the `held` bytes its own
    worker, started early, already holds: the prediction counts them), so a configuration that fits with one
    question in flight still runs."""
    spec = prepared.spec
    if spec.parallel == 1 or questions <= 1 or len(prepared.by_width) <= 1:
        return replace(prepared, width=1)
    ram, vram = free_memory(prepared.predicted.device_bytes > 0)
    ram += held
    share = throughput.AUTO_MEMORY_SHARE

    def fits(width: int) -> bool:
        need = prepared.by_width[width - 1]
        return need.host_bytes <= share * ram and (need.device_bytes == 0 or (vram or 0) * share >= need.device_bytes)

    available = min(questions, len(prepared.by_width))
    if spec.parallel != AUTO:
        width = throughput.widest_fitting(min(spec.parallel, available), fits)
        if width < min(spec.parallel, available) and notify is not None:
            notify(f"--parallel {spec.parallel}: {width} question(s) in flight fit in the memory free")
        return replace(prepared, width=width)
    from edgeval.llama import engine

    weights = prepared.predicted.weight_bytes
    gpu_layers = engine.LoadOptions(n_gpu_layers=spec.gpu_layers).gpu_layers()
    knee = throughput.cached(throughput.knee_key(weights, gpu_layers))
    if knee is None and probe:
        knee = throughput.probe(spec.model_path, weights, gpu_layers=gpu_layers, repack=spec.repack_mode.value,
                                threads=spec.threads, notify=notify)  # fmt: skip
    chosen = throughput.auto_width(prepared.n_seq, available, knee, fits)
    if notify is not None:
        notify(f"--parallel auto: {chosen.questions} question(s) in flight ({chosen.reason})")
    return replace(prepared, width=chosen.questions)


def _budget(spec: RunSpec, n_ctx_train: int, prompt: int, answer: int) -> tuple[int, tuple[str, ...]]:
    """The token budget: the one asked for, else the default — lowered, with a note, to what the model's context
    (or --ctx) holds beside the longest prompt and a forced answer."""
    if spec.budget_tokens is not None:
        return spec.budget_tokens, ()
    room = min(n_ctx_train, spec.ctx or n_ctx_train) - prompt - answer
    if room >= DEFAULT_BUDGET_TOKENS or room < 1:
        return DEFAULT_BUDGET_TOKENS, ()  # (room < 1: not even the prompt fits; prepare's checks say so)
    holds = f"--ctx {spec.ctx}" if spec.ctx and spec.ctx < n_ctx_train else f"{spec.model_path.name} ({n_ctx_train})"
    note = (
        f"token budget {room}, not the default {DEFAULT_BUDGET_TOKENS}: that is what {holds} holds beside the "
        f"{prompt}-token prompt and a {answer}-token forced answer (set --budget-tokens to choose)"
    )
    return room, (note,)


def _sample_tokens(
    spec: RunSpec, task: tasks.Task, items: tuple[tasks.Item, ...], chat: prompts.ChatFormat
) -> tuple[int, int]:
    """The longest prompt, and the tokens one sample needs: that prompt + its n_predict (the budget, the start
    tag, the forced message and end tag, and the room to answer). Each
    prompt is tokenized once per process (a race prepares every run again each round, with more questions)."""
    from edgeval.llama import engine

    stat = spec.model_path.stat()
    file = (str(spec.model_path), stat.st_size, stat.st_mtime_ns, chat.template, spec.thinking, task.fingerprint)
    forced_key = (*file, "beyond the budget", spec.budget_message)

    def key(item: tasks.Item) -> tuple[object, ...]:
        return (*file, item.id)

    missing = [item for item in items if key(item) not in _TOKENS]
    if missing or forced_key not in _TOKENS:
        with engine.Model(spec.model_path, engine.LoadOptions(vocab_only=True)) as vocab:
            _TOKENS[forced_key] = engine.reasoning_budget(vocab, message=spec.budget_message, answer_tokens=0).extra
            for item in missing:
                _TOKENS[key(item)] = len(vocab.tokenize(prompt_text(chat, task, item, spec.thinking)))
    longest = max(_TOKENS[key(item)] for item in items)
    return longest, longest + spec.budget + _TOKENS[forced_key] + spec.answer_tokens


# Tokens of each prompt (and forced answer) already counted: (file, its size and mtime, chat template, thinking,
# task fingerprint, item id) -> tokens.
_TOKENS: dict[tuple[object, ...], int] = {}


def sample_tokens(spec: RunSpec) -> int:
    """The context one sample of `spec` needs (what `--ctx` defaults to)."""
    task = tasks.load_task(spec.task)
    chat = prompts.ChatFormat(gguf_info.read_local(spec.model_path).chat_template)
    return _sample_tokens(spec, task, task.take(spec.limit), chat)[1]


def _quant_name(header: gguf_info.GGUFInfo) -> str:
    from edgeval.edges.catalog import quant_of

    return quant_of(header).value
