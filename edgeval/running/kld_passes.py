"""The two scoring passes of `edgeval kld`, each in a worker process of its own, as `run` answers in one: refused
before loading when its predicted footprint does not fit, its peak memory measured from outside beside that
prediction, and a crash inside llama.cpp recorded with the log's last lines — the traces already stored survive,
and the same command resumes.

The reference pass scores the traces its cache lacks and keeps what KL needs of each position in a cache file
(`kld.RefRow`: its top-K log-probabilities and the rest's mass; `--exact`: the whole rows); the tested pass scores
every trace against those and commits each trace's values to the store as it finishes."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeval.core import kld, memory
from edgeval.core.errors import LlamaError
from edgeval.core.paths import cache_dir
from edgeval.core.quants import KVType
from edgeval.edges import gguf_info
from edgeval.edges.store import Store
from edgeval.running import sweep, worker

if TYPE_CHECKING:
    from edgeval.llama import engine


@dataclass(frozen=True)
class Trace:
    """One reference sample to teacher-force: its prompt's and its own tokens, and where eviction stops."""

    item_index: int
    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    evict_until: int | None  # the forced answer's text starts after this token: a KV window evicts no further


@dataclass(frozen=True)
class Pass:
    """One scoring pass: which model, how it loads and what it keeps. `kind` is `reference` or `tested`."""

    kind: str
    model: Path
    label: str
    threads: int | None
    gpu_layers: int  # as llama.cpp counts them (-1: all)
    repack: memory.RepackMode
    type_k: KVType = KVType.F16  # the tested pass's KV cache (the reference's is f16)
    type_v: KVType = KVType.F16
    window: int = 0  # the tested pass's KV window
    top_k: int = kld.TOP_K
    max_k: int = kld.MAX_K
    exact: bool = False
    n_ctx: int = 0  # the context every trace of the request needs (`contexts`)

    def load(self) -> engine.LoadOptions:
        from edgeval.llama import engine

        return engine.LoadOptions(n_gpu_layers=self.gpu_layers, repack=self.repack)


def contexts(traces: Sequence[Trace], window: int) -> tuple[int, int]:
    """The reference's context and the tested one's for every trace of a request (not only those a pass scores
    now). Unwindowed they are one size, so a configuration against itself computes bit for bit what the reference
    did; a KV window holds the window, an eviction chunk and the forced answer of each trace's own tokens."""
    reference = max(len(t.prompt) + len(t.tokens) for t in traces)
    return reference, max(len(t.prompt) + own_cells(window, t) for t in traces)


@dataclass(frozen=True)
class Measured:
    """How a pass went: its scoring speed (tokens/s), peak memory and the prediction beside it."""

    tokens_per_s: float | None
    peak_rss_bytes: int
    peak_vram_bytes: int | None
    predicted_bytes: int


def own_cells(window: int, trace: Trace) -> int:
    """KV cells a trace's own tokens take when scored: all of them, or with a window the window, an eviction chunk
    and the forced answer that evicts nothing."""
    n = len(trace.tokens)
    if not window:
        return n
    return min(n, window + memory.eviction_chunk(window) + n - (trace.evict_until or n))


def predict(spec: Pass, traces: Sequence[Trace]) -> tuple[memory.Footprint, int]:
    """The pass's predicted footprint, and what it holds beside llama.cpp's buffers: the reference rows of the
    longest trace (whole rows with `--exact`, mapped from their file; else at most MAX_K kept values a position)."""
    from edgeval.llama import engine

    header = gguf_info.read_local(spec.model)
    arch = header.architecture()
    mode = spec.repack
    repack = (
        header.repack(engine.repacked_types(mode), tied_copy=mode.repacks_tied_output) if mode.on else memory.Repack()
    )
    setting = memory.Setting(
        n_ctx=spec.n_ctx, type_k=spec.type_k, type_v=spec.type_v, gpu_layers=spec.gpu_layers,
        repack=mode.on, score_batch=engine.SCORE_BATCH,
    )  # fmt: skip
    footprint = memory.predict(arch, header.weight_bytes, setting, embd_bytes=header.embd_bytes,
                               expert_bytes=header.expert_bytes, repack=repack)  # fmt: skip
    longest = max(len(t.tokens) for t in traces)
    per_position = arch.n_vocab * 4 if spec.exact else (spec.max_k * 8 if spec.kind == "reference" else 0)
    return footprint, longest * per_position


def run(
    spec: Pass, traces: Sequence[Trace], cached: dict[int, Path], store: Store, kld_id: int, *, force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Measured:  # fmt: skip
    """Score `traces` in a worker process: refused first if the prediction does not fit (unless `force`); a
    failure raises LlamaError with its log's last lines (the store keeps every trace committed before it)."""
    footprint, held = predict(spec, traces)
    if not force:
        sweep.check_room(f"the {spec.kind} pass of {spec.label}", footprint, held)
    log_path = cache_dir("logs") / f"kld-{kld_id}-{spec.kind}.log"
    log_path.write_text("")
    from edgeval.llama import engine

    payload: dict[str, Any] = {
        "pass": spec, "traces": list(traces), "cached": {i: str(p) for i, p in cached.items()},
        "db_path": str(store.path), "kld_id": kld_id, "log_path": str(log_path), "parent_pid": os.getpid(),
        "verbose": engine.LOG.echo,
    }  # fmt: skip
    state = sweep.Progress(items_total=len(traces))

    def told(s: sweep.Progress) -> None:
        if progress is not None:
            progress(s.items_done, len(traces))

    done = sweep.supervise(payload, state, told, target=main)
    if done.exitcode != 0:
        status, message = done.outcome(unfinished=True)
        tail = tuple(done.log_tail.splitlines())
        raise LlamaError(f"the {spec.kind} pass of {spec.label} {status}: {message}", log_tail=tail[-1:],
                         hint="the traces scored before it are stored: the same command resumes; --verbose shows "
                         "llama.cpp's log")  # fmt: skip
    rate = state.tokens / state.decode_s if state.decode_s > 0 else None
    return Measured(rate, done.peak.total, done.peak_vram_bytes, footprint.total_bytes + held)


def main(payload: dict[str, Any], events: Any, measured: Any = None) -> None:
    """The worker process's entry (spawned): `worker.main`'s life — dying with its parent, the log, one
    `edgeval:` line on a Python failure — around one scoring pass."""
    worker.main(payload, events, measured, work=_work)


def _work(payload: dict[str, Any], events: Any, measured: Any = None) -> None:
    spec: Pass = payload["pass"]
    traces: list[Trace] = payload["traces"]
    cached = {int(i): Path(p) for i, p in payload["cached"].items()}
    if spec.kind == "reference":
        _score_reference(spec, traces, cached, events)
        return
    with Store(Path(payload["db_path"])) as store:
        _score_tested(spec, traces, cached, events, store, int(payload["kld_id"]))


def _score_tested(
    spec: Pass, traces: Sequence[Trace], cached: dict[int, Path], events: Any, store: Store, kld_id: int
) -> None:
    """Score the tested configuration against the reference's kept values; store each trace as it finishes."""
    from edgeval.llama import engine

    options = engine.ContextOptions(n_ctx=spec.n_ctx, n_threads=spec.threads, type_k=spec.type_k,
                                    type_v=spec.type_v)  # fmt: skip
    t0 = time.perf_counter()
    with engine.Model(spec.model, spec.load()) as model, engine.Context(model, options) as ctx:
        events.put(("loaded", time.perf_counter() - t0))
        for t in traces:
            started = time.perf_counter()
            values = ctx.score(t.prompt, t.tokens, _against(load(cached[t.item_index])), window=spec.window,
                               evict_until=t.evict_until)  # fmt: skip
            kl = np.array([v[0] for v in values], dtype=np.float32)
            agree = np.array([v[1] for v in values], dtype=np.uint8)
            rest = np.array([v[2] for v in values], dtype=np.float32)
            store.add_kld_trace(kld_id, t.item_index, int(kl.size), kl.tobytes(), agree.tobytes(), rest.tobytes())
            events.put(("item", (t.item_index, len(values), time.perf_counter() - started)))


def _score_reference(spec: Pass, traces: Sequence[Trace], cached: dict[int, Path], events: Any) -> None:
    """Score the reference on the traces its cache lacks and keep what KL needs of each position."""
    from edgeval.llama import engine

    options = engine.ContextOptions(n_ctx=spec.n_ctx, n_threads=spec.threads)
    t0 = time.perf_counter()
    with engine.Model(spec.model, spec.load()) as model, engine.Context(model, options) as ctx:
        events.put(("loaded", time.perf_counter() - t0))
        for t in traces:
            started, path = time.perf_counter(), cached[t.item_index]
            if spec.exact:
                scored = len(ctx.score(t.prompt, t.tokens, _FullRows(path, len(t.tokens), model.n_vocab)))
            else:
                rows = ctx.score(t.prompt, t.tokens, lambda row: kld.reference_row(row, spec.top_k, max_k=spec.max_k))
                save(path, rows)
                scored = len(rows)
            events.put(("item", (t.item_index, scored, time.perf_counter() - started)))


def _against(reference: Sequence[kld.RefRow]) -> Callable[[npt.NDArray[np.float32]], tuple[float, bool, float]]:
    """Row by row, the divergence of the tested logits from the reference's kept values at the same position, and
    the reference's mass outside them."""
    rows = iter(reference)

    def one(logits: npt.NDArray[np.float32]) -> tuple[float, bool, float]:
        ref = next(rows)
        return (*kld.divergence(ref, logits), ref.rest)

    return one


def save(path: Path, rows: Sequence[kld.RefRow]) -> None:
    """The kept values of every position (ragged: a position keeps 64 tokens or more), written atomically."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with partial.open("wb") as f:
        np.savez(
            f,
            ids=np.concatenate([r.ids for r in rows]),
            logp=np.concatenate([r.logp for r in rows]),
            ends=np.cumsum([r.ids.size for r in rows]),
            log_rest=np.array([r.log_rest for r in rows], dtype=np.float64),
            top1=np.array([r.top1 for r in rows], dtype=np.int32),
        )
    partial.replace(path)


class _FullRows:
    """A reference pass's whole rows, written one by one into a float32 file (`--exact`), with each row's top."""

    def __init__(self, path: Path, n: int, n_vocab: int) -> None:
        self.rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, n_vocab))
        self.top1 = np.lib.format.open_memmap(path.with_suffix(".top1.npy"), mode="w+", dtype=np.int32, shape=(n,))
        self.i = 0

    def __call__(self, logits: npt.NDArray[np.float32]) -> None:
        self.rows[self.i] = kld.log_softmax(logits)
        self.top1[self.i] = int(np.argmax(logits))
        self.i += 1


def load(path: Path) -> Sequence[kld.RefRow]:
    """A trace's kept reference values, as `save` (or `--exact`'s whole rows) wrote them."""
    if path.suffix == ".npy":  # whole rows (`--exact`), read one at a time
        rows = np.load(path, mmap_mode="r")
        top1 = np.load(path.with_suffix(".top1.npy"))
        every = np.arange(rows.shape[1], dtype=np.int32)
        return [kld.RefRow(every, rows[i], -math.inf, int(top1[i])) for i in range(len(top1))]
    with np.load(path) as data:
        ids, logp, ends, rest, top1 = data["ids"], data["logp"], data["ends"], data["log_rest"], data["top1"]
    starts = [0, *ends[:-1]]
    return [
        kld.RefRow(ids[a:b], logp[a:b], float(rest[i]), int(top1[i]))
        for i, (a, b) in enumerate(zip(starts, ends, strict=True))
    ]
