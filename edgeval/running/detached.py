"""One configuration's questions answered away from the store — on a node of a Ray cluster — and brought back.

What travels is a `Unit`: a prepared configuration (one run of the race) and the questions this round asks of it.
The node finds the model file itself (the driver's path where the same file is there, else its own Hugging Face
cache, downloading into it), checks the sha256 and that the configuration fits its memory, runs edgeval's own
worker process with no store, and tells each answered question with its measurements as soon as it is done
(`stream`), then how the worker went (a `UnitResult`). The driver stores each question as it arrives (`keep`) and
the rest at the end (`commit`) through its one store: (configuration, question, sample) is a primary key and a
stored question is left as it is, so a node that dies loses only the questions it had in flight, and a retry asks
only for the questions not stored.

Nothing here imports Ray (`cluster` does): a unit runs the same wherever it is called.
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from edgeval.core.errors import EdgevalError, ModelFileError, NotEnoughMemoryError, describe
from edgeval.core.paths import cache_dir
from edgeval.edges import hub
from edgeval.edges.catalog import ModelFile
from edgeval.edges.store import ItemTiming, Node, SampleRow, Store
from edgeval.running import sweep
from edgeval.running.worker import Sink


@dataclass(frozen=True)
class Unit:
    """One run of the race for one round: the prepared configuration and the questions it still owes."""

    prepared: sweep.Prepared
    pending: tuple[int, ...]
    model_sha256: str  # the file the driver prepared from: a node's copy must hash the same
    file: ModelFile | None = None  # the catalog's entry, for a node without the file at the driver's path
    share_s: float | None = None  # its share of the race's time, counted from when the node starts it
    deadline: float | None = None  # the race's end (time.time()): no question is started after it
    repack_auto: bool = False  # repacking left to each machine: the node loads with what its own probe found
    measure_shape: bool = True  # the store has no memory of the configuration yet: a wider node measures it

    def deadline_from(self, start: float) -> float | None:
        """When the node stops starting questions: at the end of its share or of the race, whichever is first
        (a unit that waited for a free node gets its whole share from when it starts)."""
        ends = [t for t in (self.deadline, None if self.share_s is None else start + self.share_s) if t is not None]
        return min(ends) if ends else None

    @property
    def label(self) -> str:
        """`qwen3-8b:Q4_K_M k=4, 40 questions`."""
        return f"{self.prepared.spec.model_label} k={self.prepared.spec.k}, {len(self.pending)} questions"


@dataclass(frozen=True)
class Answer:
    """One answered question: its samples per configuration (every rung of the ladder) and its timing."""

    rows: Mapping[int, Sequence[SampleRow]]
    timing: ItemTiming


@dataclass(frozen=True)
class Started:
    """A node has begun a unit: who it is (the answers it tells next are its)."""

    node: Node


@dataclass(frozen=True)
class UnitResult:
    """What a node sends back: who it is, the questions it answered and how its worker went (`ran`), or why it
    ran nothing (`unfit`: the node's free memory; `failed`: the model file, say)."""

    node: Node
    status: str  # ran, late (the race's time was up before it started), unfit, failed
    answers: tuple[Answer, ...] = ()
    supervised: sweep.Supervised | None = None
    message: str | None = None
    width: int = 1  # questions the node kept in flight
    repack_mode: str | None = None  # how the node loaded the weights (its own probe's mode under repack_auto)


def node_facts() -> Node:
    """This machine as the store records a node: host, CPU, backend and versions."""
    facts = sweep.provenance()
    hardware = cast(dict[str, object], facts["hardware"])
    return Node(
        hostname=socket.gethostname(), cpu=str(hardware["cpu"]), backend=str(facts["backend"]),
        edgeval_version=str(facts["edgeval"]), llama_cpp_python=str(facts["llama_cpp_python"]),
        llama_cpp_build=str(facts["llama_cpp_build"]), hardware=hardware,
    )  # fmt: skip


def _scratch() -> Store:
    """A node-local store, only for remembering model files' hashes (by path, size and mtime)."""
    return Store(cache_dir("node") / "hashes.db")


def resolve_model(unit: Unit, host: str) -> Path:
    """The model file on this node: the driver's path if the file is there, else the catalog file (this node's
    Hugging Face cache, downloaded if missing); its sha256 must be the one the driver prepared from."""
    wanted = unit.prepared.spec.model_path
    path = wanted if wanted.exists() else (hub.local_path(unit.file) if unit.file is not None else None)
    with _scratch() as scratch:
        if path is None:
            if unit.file is None or unit.file.path is not None:
                raise ModelFileError(
                    wanted, f"not found on node {host}",
                    hint="copy the file to the same path on every node, or name a Hub file in the catalog",
                )  # fmt: skip
            path = hub.pull(unit.file, sha256=lambda p: scratch.file_sha256(p, hub.sha256_of))
        actual = scratch.file_sha256(path, hub.sha256_of)
    if actual != unit.model_sha256:
        raise hub.reject(path, unit.model_sha256, actual)
    return path


@contextmanager
def _bare_main() -> Iterator[None]:
    """Start worker processes without re-running this process's main script in them: under a cluster's task that
    script is Ray's worker, whose imports would count in the worker's measured memory."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _ready(unit: Unit, node: Node) -> sweep.Prepared | UnitResult:
    """The unit made ready to run on this node (its model file found and checked, this node's repacking and width,
    the fit checked), or why it runs nothing here."""
    deadline = unit.deadline_from(time.time())
    if deadline is not None and time.time() >= deadline:
        return UnitResult(node, "late")
    try:
        path = resolve_model(unit, node.hostname)
        spec = replace(unit.prepared.spec, model_path=path, deadline=deadline)
        if unit.repack_auto:  # the driver's CPU may repack in a way that crashes this one (AMX), or the other way
            from edgeval.llama import doctor

            spec = replace(spec, repack=doctor.repack_default())
        prepared = sweep.resolve_width(replace(unit.prepared, spec=spec), len(unit.pending))  # this node's width
        if not prepared.spec.force:
            sweep.check_fits(prepared)
    except NotEnoughMemoryError as exc:
        return UnitResult(node, "unfit", message=f"on {node.hostname}: {describe(exc)}")
    except EdgevalError as exc:
        return UnitResult(node, "failed", message=f"on {node.hostname}: {describe(exc)}")
    return prepared


def _answer(unit: Unit, prepared: sweep.Prepared, node: Node, keep: Sink) -> UnitResult:
    """Run edgeval's worker process with no store over the unit's questions; each answered question goes to
    `keep` as it is done. The result carries how the worker went, not the answers."""
    log_path = cache_dir("logs") / f"unit-{prepared.config_id}.log"
    log_path.write_text("")
    # The configuration's own memory, one question's context, measured first by the same worker when it runs wider.
    shape = prepared.width > 1 and unit.measure_shape
    payload = sweep.worker_payload(prepared, list(unit.pending), log_path, None, footprint=shape)
    with _bare_main():
        done = sweep.supervise(payload, sweep.Progress(items_total=len(unit.pending)), on_rows=keep)
    return UnitResult(node, "ran", (), done, width=prepared.width, repack_mode=prepared.spec.repack_mode.value)


def stream(unit: Unit, node: Node | None = None) -> Iterator[Started | Answer | UnitResult]:
    """Answer the unit's questions on this machine, telling as it goes: `Started` (this node's facts) once the
    worker is about to start, each `Answer` as its question is done, and last the `UnitResult` (without the
    answers already told). A unit that runs nothing here (late, unfit, failed) tells only its `UnitResult`."""
    node = node or node_facts()
    ready = _ready(unit, node)
    if isinstance(ready, UnitResult):
        yield ready
        return
    yield Started(node)
    told: queue.Queue[Answer | None] = queue.Queue()
    outcome: list[UnitResult | BaseException] = []

    def work() -> None:  # the worker's supervision, beside this generator (which hands each answer on at once)
        try:
            outcome.append(_answer(unit, ready, node, lambda rows, timing: told.put(Answer(rows, timing))))
        except BaseException as exc:  # raised again below, in the caller's thread
            outcome.append(exc)
        finally:
            told.put(None)

    thread = threading.Thread(target=work, name="edgeval unit", daemon=True)
    thread.start()
    while (answer := told.get()) is not None:
        yield answer
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    yield outcome[0]


def run(unit: Unit) -> UnitResult:
    """Answer the unit's questions on this machine and bring them back together (`stream`, gathered)."""
    answers: list[Answer] = []
    for event in stream(unit):
        if isinstance(event, Answer):
            answers.append(event)
        elif isinstance(event, UnitResult):
            return replace(event, answers=tuple(answers))
    raise AssertionError("a unit's stream ends with its result")


def keep(answer: Answer, node_id: int, store: Store) -> None:
    """Store one answered question as a node tells it (a question already stored is left as it is)."""
    store.add_items(answer.rows, answer.timing, node_id)


def commit(unit: Unit, result: UnitResult, store: Store, node_id: int | None = None) -> None:
    """Store what a node sent back, once: its answers (a question already stored is left as it is; a streamed
    unit's are stored as they come, by `keep`, under `node_id`), each rung's status and measurements, and what this
    node measured of the configuration."""
    prepared = unit.prepared
    if result.status == "unfit":
        sweep.record_unfit(prepared, store, result.message or "")
        return
    if result.status == "late":
        sweep.mark(prepared, store, status="partial", message="stopped at the time limit")
        return
    if result.status != "ran" or result.supervised is None:
        fail(unit, store, result.message or "failed")
        return
    prepared = replace(prepared, width=result.width)
    if result.supervised.footprint_peak is not None:  # a node that ran wider measured the deployment shape first
        sweep.record_footprint(prepared, store, result.supervised)
    elif result.width > 1 and unit.measure_shape:  # it died measuring: recorded as the one-question run it was
        prepared = replace(prepared, width=1)
    if node_id is None:
        node_id = store.add_node(result.node)
    for answer in result.answers:
        keep(answer, node_id, store)
    done = result.supervised
    own = store.timings_by_node(prepared.config_id).get(node_id, [])
    facts: dict[str, object] = {"backend": result.node.backend, "llama_cpp_build": result.node.llama_cpp_build}
    if result.repack_mode is not None:  # the configuration's row says how it was last loaded; each node's its own
        facts |= {"repack_mode": result.repack_mode, "repack": int(result.repack_mode != "off")}
    sweep.record(prepared, store, done, own, facts)
    for config_id in prepared.config_ids.values():
        store.record_node_run(
            config_id, node_id, peak_rss=(done.peak.total or None, done.peak.anon, done.peak.file),
            peak_vram_bytes=done.peak_vram_bytes, load_s=done.load_s, wall_s=done.wall_s,
            repack_mode=result.repack_mode, parallel=result.width,
        )  # fmt: skip


def fail(unit: Unit, store: Store, message: str) -> None:
    """Record that a unit could not be run at all (its task failed on every try)."""
    sweep.mark(unit.prepared, store, status="failed", message=message)
