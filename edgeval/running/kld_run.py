"""`edgeval kld`: how far a tested configuration's next-token distributions are from a reference's, teacher-forced
on the reference's own reasoning traces.

The traces are the reference configuration's stored samples for the task (generated once through the normal run
path when there are none). The reference is loaded alone, scored on every pending trace, and what KL needs of each
position is kept in a cache file (`kld.RefRow`: its top-K log-probabilities and the rest's mass); then it is closed
and the tested configuration — another weight file, KV types, a KV window — is loaded and scored on the same
tokens. Each trace's per-position values are committed as it finishes, so a rerun resumes and the same command
again computes nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeval.core import kld, memory, prompts
from edgeval.core.errors import EdgevalError, LlamaError, NotEnoughMemoryError, describe
from edgeval.core.paths import cache_dir
from edgeval.core.quants import KVType
from edgeval.edges import gguf_info, hub, tasks
from edgeval.edges.catalog import quant_of
from edgeval.edges.store import SampleRow, Store
from edgeval.edges.tasks import prompt_text
from edgeval.running import kld_passes, sweep
from edgeval.running.kld_passes import Trace

if TYPE_CHECKING:  # engine (llama.cpp) is imported where a model is scored, not with this module
    pass

DEFAULT_TRACES = 10  # traces generated when the reference has none stored for the task


class KLDError(EdgevalError):
    """Two configurations that cannot be compared by KL divergence, or a reference without traces."""

    hint = "name a reference that shares the tested file's tokenizer (the same model at another precision)"


@dataclass(frozen=True)
class Request:
    """One `edgeval kld`: the reference, the tested configuration, which traces."""

    reference: Path
    reference_label: str
    tested: Path
    tested_label: str
    task: str | None = None  # None: the task the reference has most samples of (else sweep's default, math500)
    kv_type_k: KVType = KVType.F16
    kv_type_v: KVType = KVType.F16
    kv_window: int = 0
    limit: int | None = None  # traces (one per question); None: every stored one, or DEFAULT_TRACES generated
    budget_tokens: int | None = None  # only for traces generated here (and to choose among stored ones)
    thinking: bool = True
    seed: int = 0
    threads: int | None = None
    gpu_layers: int | None = None
    repack: bool | None = None  # None: where the doctor's probe says repacking works
    top_k: int = kld.TOP_K  # reference tokens kept per position, at least
    max_k: int = kld.MAX_K  # at most, where the top_k leave more than kld.REST_MASS of its probability outside
    exact: bool = (
        False  # keep the reference's whole rows (float32, in a temporary file) instead: KL over the vocabulary
    )
    reference_sha256: str | None = None  # the catalog's hashes: a file that does not match is refused
    tested_sha256: str | None = None
    force: bool = False  # score even where a pass's prediction exceeds the memory available


@dataclass(frozen=True)
class Progress:
    """Where a KLD run is: `phase` (traces, reference, tested) and traces done of total."""

    phase: str
    done: int
    total: int


@dataclass(frozen=True)
class Result:
    """A tested configuration's divergence from the reference over the traces."""

    kld_id: int
    reference: str
    tested: str
    task: str
    kv_type_k: str
    kv_type_v: str
    kv_window: int
    top_k: int
    max_k: int
    trace_config_id: int
    overall: kld.Summary
    by_position: tuple[kld.Bucket, ...]
    tested_tokens_per_s: float | None
    reference_tokens_per_s: float | None
    scored_now: int  # traces scored by this call (0: every one was stored)
    # Each pass's measured peak and its prediction, bytes (None: not measured, as a reference whose traces were cached)
    memory: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The `--json` object."""
        return {"kld_id": self.kld_id, "reference": self.reference, "tested": self.tested, "task": self.task,
                "kv_type_k": self.kv_type_k, "kv_type_v": self.kv_type_v, "kv_window": self.kv_window,
                "top_k": self.top_k, "max_k": self.max_k, **self.overall.to_json(), "by_position": [b.to_json() for b in self.by_position],
                "tested_tokens_per_s": self.tested_tokens_per_s, "reference_tokens_per_s": self.reference_tokens_per_s,
                "trace_config_id": self.trace_config_id, "scored_now": self.scored_now,
                **{f"{kind}_{name}": value for kind, pair in self.memory.items()
                   for name, value in zip(("peak_rss_bytes", "predicted_bytes"), pair, strict=True)}}  # fmt: skip


ProgressCallback = Callable[[Progress], None]


def run(
    request: Request, store: Store, progress: ProgressCallback | None = None, command: str = ""
) -> Result:  # fmt: skip
    """The library call behind `edgeval kld`: find or generate the traces, score what is not stored, summarize."""
    ref_header, tested_header = gguf_info.read_local(request.reference), gguf_info.read_local(request.tested)
    _same_vocabulary(request, ref_header.architecture().n_vocab, tested_header.architecture().n_vocab)
    if request.kv_window and tested_header.architecture().hybrid:
        from edgeval.core.errors import ConfigurationError
        from edgeval.running.configuration import HYBRID_WINDOW

        raise ConfigurationError(HYBRID_WINDOW.format(name=request.tested.name), hint="drop --kv-window")
    if request.exact:  # the whole vocabulary kept: the divergence is the full one
        vocab = ref_header.architecture().n_vocab
        request = replace(request, top_k=vocab, max_k=vocab)
    ref_sha = _checked_sha(store, request.reference, request.reference_sha256)
    tested_sha = _checked_sha(store, request.tested, request.tested_sha256)
    task = tasks.load_task(request.task or _default_task(store, ref_sha))
    config = _trace_config(request, store, ref_sha, task, progress, command)
    samples = [s for s in store.samples(int(config["id"])) if s.sample_index == 0 and s.text]
    samples = samples[: request.limit] if request.limit else samples
    key = _key(request, ref_sha, tested_sha, str(config["key"]))
    run_id = store.add_run(sweep.provenance(), command)
    kld_id = store.upsert_kld(key, {
        "run_id": run_id, "reference_model": request.reference_label, "reference_path": str(request.reference),
        "reference_sha256": ref_sha, "trace_config_id": int(config["id"]), "tested_model": request.tested_label,
        "tested_path": str(request.tested), "tested_sha256": tested_sha,
        "tested_weight_quant": quant_of(tested_header).value,
        "kv_type_k": request.kv_type_k.value, "kv_type_v": request.kv_type_v.value, "kv_window": request.kv_window,
        "task": task.name, "task_fingerprint": task.fingerprint, "top_k": request.top_k, "max_k": request.max_k,
        "rest_target": kld.REST_MASS,
    })  # fmt: skip
    stored = {int(r["item_index"]) for r in store.kld_traces(kld_id)}
    pending = [s for s in samples if s.item_index not in stored]
    speeds: tuple[float | None, float | None] = (None, None)
    if pending:
        traces = _traces(request, config, task, pending, prompts.ChatFormat(ref_header.chat_template))
        store.update_kld(kld_id, status="running")
        speeds = _score(request, store, kld_id, ref_sha, traces, progress) if traces else speeds
    wanted = {s.item_index for s in samples}
    scores = [_stored(r) for r in store.kld_traces(kld_id) if int(r["item_index"]) in wanted]
    return _finish(request, store, kld_id, config, task, scores, speeds, len(pending))


def _same_vocabulary(request: Request, reference: int, tested: int) -> None:
    if reference != tested:
        raise KLDError(
            f"{request.tested.name} has a vocabulary of {tested:,} tokens and {request.reference.name} of "
            f"{reference:,}: KL divergence compares distributions over one vocabulary"
        )


def _checked_sha(store: Store, path: Path, expected: str | None) -> str:
    digest = store.file_sha256(path, hub.sha256_of)
    if expected and digest != expected.lower():
        raise hub.reject(path, expected, digest)
    return digest


def _default_task(store: Store, ref_sha: str) -> str:
    """The task the reference has the most stored samples of (compare's default task when none)."""
    return store.most_sampled_task(ref_sha) or tasks.DEFAULT_TASK


def _trace_config(
    request: Request, store: Store, ref_sha: str, task: tasks.Task, progress: ProgressCallback | None, command: str
) -> sqlite3.Row:
    """The reference configuration whose samples are the traces: a stored one (f16 KV, no window; the most
    questions answered, then the longest budget) holding enough, else one generated now through `sweep.run`."""
    rows = [
        r for r in store.plain_configs(ref_sha, task.fingerprint, thinking=request.thinking)
        if request.budget_tokens is None or int(r["budget_tokens"]) == request.budget_tokens
    ]  # fmt: skip
    done = {int(r["id"]): len(store.done_items(int(r["id"]), 1)) for r in rows}
    rows.sort(key=lambda r: (done[int(r["id"])], int(r["budget_tokens"]), -int(r["id"])), reverse=True)
    if rows and done[int(rows[0]["id"])] >= (request.limit or 1):
        return rows[0]
    if progress is not None:
        progress(Progress("traces", 0, request.limit or DEFAULT_TRACES))
    spec = sweep.RunSpec(
        model_path=request.reference, model_label=request.reference_label, task=request.task or task.name,
        budget_tokens=request.budget_tokens, k=1, thinking=request.thinking, seed=request.seed,
        limit=request.limit or DEFAULT_TRACES, threads=request.threads, repack=request.repack,
        gpu_layers=request.gpu_layers,
    )  # fmt: skip
    result = sweep.run(spec, store, command=command)
    if result.status != "done":
        raise KLDError(
            f"the reference's traces could not be generated ({result.status}: {result.message})",
            hint="run `edgeval run` on the reference to see why",
        )
    return store.config(result.config_id)


def _key(request: Request, ref_sha: str, tested_sha: str, trace_key: str) -> str:
    """What decides the values: both files, the tested KV types and window, the traces, K (not how many traces:
    a later run with a higher --limit adds traces to the same run)."""
    from edgeval.llama import engine

    decisive: dict[str, object] = {
        "reference": ref_sha, "traces": trace_key, "tested": tested_sha, "top_k": request.top_k,
        "max_k": request.max_k, "rest_target": kld.REST_MASS,
        "kv": [request.kv_type_k.value, request.kv_type_v.value], "kv_window": request.kv_window,
    }  # fmt: skip
    offload = engine.LoadOptions(n_gpu_layers=request.gpu_layers).gpu_layers()
    if offload:  # GPU kernels give other numbers
        decisive["gpu_layers"] = offload
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:24]


def _traces(
    request: Request, config: sqlite3.Row, task: tasks.Task, samples: Sequence[SampleRow], chat: prompts.ChatFormat
) -> list[Trace]:
    """The samples as token sequences (prompted with the reference's `chat` format), after refusing a tested file
    whose tokenizer differs from the reference's (`run` has already compared their vocabulary sizes)."""
    from edgeval.llama import engine

    thinking = bool(config["thinking"])
    opener = f"{prompts.THINK_OPEN}\n" if chat.opens_reasoning(thinking) else ""
    forced_text = prompts.forced_answer(task.answer_prefix)
    items = task.take(None)
    vocab_only = engine.LoadOptions(vocab_only=True)
    with engine.Model(request.reference, vocab_only) as ref, engine.Model(request.tested, vocab_only) as tested:
        out = []
        for s in samples:
            text = s.text[len(opener) :] if opener and s.text.startswith(opener) else s.text
            question = prompt_text(chat, task, items[s.item_index], thinking)
            prompt, tokens = ref.tokenize(question), ref.tokenize(text)
            if prompt != tested.tokenize(question) or tokens != tested.tokenize(text):
                raise KLDError(
                    f"{request.tested.name} and {request.reference.name} tokenize the same text differently: "
                    "KL divergence compares distributions over one vocabulary"
                )
            at = text.rfind(forced_text) if s.forced else -1
            evict_until = len(ref.tokenize(text[:at])) - 1 if at > 0 else None
            out.append(Trace(s.item_index, tuple(prompt), tuple(tokens), evict_until))
    return [t for t in out if t.tokens]


def _score(
    request: Request, store: Store, kld_id: int, ref_sha: str, traces: Sequence[Trace],
    progress: ProgressCallback | None,
) -> tuple[float | None, float | None]:  # fmt: skip
    """Score the reference (what its cache lacks), then the tested configuration, each in a worker process of its
    own; store each trace and what each pass measured. Returns tokens/s of the tested and the reference pass (None
    where nothing was scored)."""
    from edgeval.llama import doctor, engine

    gpu_layers = engine.LoadOptions(n_gpu_layers=request.gpu_layers).gpu_layers()
    repack = memory.repack_for_offload(doctor.repack_mode(request.repack), gpu_layers)  # off, CPU_REPACK, all
    ref_ctx, tested_ctx = kld_passes.contexts(traces, request.kv_window)
    reference = kld_passes.Pass(
        "reference",
        request.reference,
        request.reference_label,
        request.threads,
        gpu_layers,
        repack,
        top_k=request.top_k,
        max_k=request.max_k,
        exact=request.exact,
        n_ctx=ref_ctx,
    )
    tested = replace(
        reference,
        kind="tested",
        model=request.tested,
        label=request.tested_label,
        type_k=request.kv_type_k,
        type_v=request.kv_type_v,
        window=request.kv_window,
        n_ctx=tested_ctx,
    )

    def told(phase: str) -> Callable[[int, int], None]:
        return lambda done, total: progress(Progress(phase, done, total)) if progress is not None else None

    measured: dict[str, object] = {}
    with ExitStack() as stack:
        if request.exact:  # whole rows: hundreds of KB a position, kept only until the tested pass is done
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=cache_dir("kld"))))
            cached = {t.item_index: folder / f"{t.item_index}.npy" for t in traces}
        else:  # what changes the reference's kept values names its cache file
            tag = f"k{request.top_k}-{request.max_k}-{kld.REST_MASS:g}-g{gpu_layers}-r{repack.value}"
            cached = {t.item_index: _cache_path(ref_sha, t, tag) for t in traces}
        missing = [t for t in traces if not cached[t.item_index].exists()]
        try:
            ref = None
            if missing:
                ref = kld_passes.run(reference, missing, cached, store, kld_id, force=request.force,
                                     progress=told("reference"))  # fmt: skip
                measured |= _memory_fields("reference", ref)
            done = kld_passes.run(tested, traces, cached, store, kld_id, force=request.force, progress=told("tested"))
            measured |= _memory_fields("tested", done)
        except (NotEnoughMemoryError, LlamaError) as exc:
            status = "unfit" if isinstance(exc, NotEnoughMemoryError) else "failed"
            log_tail = "\n".join(exc.log_tail) if isinstance(exc, LlamaError) else None
            store.update_kld(kld_id, status=status, message=describe(exc), log_tail=log_tail, **measured)
            raise
    store.update_kld(kld_id, message=None, log_tail=None, **measured)
    return done.tokens_per_s, ref.tokens_per_s if ref else None


def _memory_fields(kind: str, measured: kld_passes.Measured) -> dict[str, object]:
    return {f"{kind}_peak_rss_bytes": measured.peak_rss_bytes, f"{kind}_peak_vram_bytes": measured.peak_vram_bytes,
            f"{kind}_predicted_bytes": measured.predicted_bytes}  # fmt: skip


def _cache_path(ref_sha: str, trace: Trace, tag: str) -> Path:
    """The reference's kept values for a trace: by the reference file, the exact tokens scored and `tag` (K and
    the load settings that change its numbers)."""
    tokens = np.array([*trace.prompt, -1, *trace.tokens], dtype=np.int32).tobytes()
    digest = hashlib.sha256(tokens).hexdigest()[:24]
    return cache_dir("kld") / f"{ref_sha[:16]}-{digest}-{tag}.npz"


def _stored(row: sqlite3.Row) -> kld.TraceScores:
    return kld.TraceScores(
        int(row["item_index"]),
        np.frombuffer(row["kld"], dtype=np.float32),
        np.frombuffer(row["agree"], dtype=np.uint8).astype(bool),
        np.frombuffer(row["rest"], dtype=np.float32),
    )


def _finish(
    request: Request, store: Store, kld_id: int, config: sqlite3.Row, task: tasks.Task,
    scores: Sequence[kld.TraceScores], speeds: tuple[float | None, float | None], scored_now: int,
) -> Result:  # fmt: skip
    from edgeval.llama import engine

    overall = kld.summarize(scores)
    buckets = kld.by_position(scores)
    row = store.kld(kld_id)
    tested_rate = speeds[0] if speeds[0] is not None else row["tested_tokens_per_s"]
    ref_rate = speeds[1] if speeds[1] is not None else row["reference_tokens_per_s"]
    ci = overall.kld_ci95
    store.update_kld(
        kld_id, status="done", n_traces=overall.traces, tokens=overall.tokens, mean_kld=overall.mean_kld,
        kld_ci_low=ci[0] if ci else None, kld_ci_high=ci[1] if ci else None, median_kld=overall.median_kld,
        p99_kld=overall.p99_kld, top1_agreement=overall.top1_agreement, rest_mass=overall.rest_mass,
        by_position=json.dumps([b.to_json() for b in buckets]), tested_tokens_per_s=tested_rate,
        reference_tokens_per_s=ref_rate, backend=engine.backend_name(), llama_cpp_build=engine.build_version(),
    )  # fmt: skip
    return Result(
        kld_id=kld_id, reference=request.reference_label, tested=request.tested_label, task=task.name,
        kv_type_k=request.kv_type_k.value, kv_type_v=request.kv_type_v.value, kv_window=request.kv_window,
        top_k=request.top_k, max_k=request.max_k, trace_config_id=int(config["id"]), overall=overall, by_position=buckets,
        tested_tokens_per_s=tested_rate, reference_tokens_per_s=ref_rate, scored_now=scored_now,
        memory={kind: (row[f"{kind}_peak_rss_bytes"], row[f"{kind}_predicted_bytes"]) for kind in ("reference", "tested")},
    )  # fmt: skip
