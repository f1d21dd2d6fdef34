"""How many sequences this machine should decode at once: the throughput knee, measured once and remembered.

llama.cpp's aggregate decode rate grows with the sequences one batch carries until compute, not memory
bandwidth, is the limit. The probe loads a model in a child process, decodes batches of 1, 2, 4, … sequences and
times them (no sampling: an upper bound, as llama-batched-bench's S_TG); the knee is the narrowest batch within
5% of the best rate. It is remembered per llama.cpp build, device and model-size class (as the repacking probe
is), so a run with `--parallel auto` probes at most once per class, and `doctor` tells what was found.

`auto_width` then takes the widest run that both reaches the knee and fits beside the configuration in the memory
actually free: never a width that does not fit, never wider than there are questions.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import queue
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeval.core.paths import edgeval_home

MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ: sequence ids one context may hold
CPU_WIDTHS = (1, 2, 4, 8, 16, 32, 64)
GPU_WIDTHS = (*CPU_WIDTHS, 128, 256)
KNEE_SHARE = 0.95  # the knee: the narrowest batch decoding at least this share of the best rate
PROBE_PROMPT = 32  # prompt tokens each probed sequence attends to
PROBE_STEPS = 8  # decode steps timed per width
PROBE_LAYOUT = "streams"  # how the probe lays out its KV cache (a KV stream per sequence, as a wide run has)
AUTO_MEMORY_SHARE = 0.9  # a throughput run may take this share of the memory free (the rest: headroom)


@dataclass(frozen=True)
class Knee:
    """What the probe measured: aggregate decode tokens/s at each batch width, and the knee."""

    key: str
    rates: tuple[tuple[int, float], ...]  # (sequences in one batch, aggregate decode tokens/s)
    knee: int  # sequences
    model: str  # the file probed
    measured_at: float

    def rate(self, sequences: int) -> float:
        """The aggregate rate at a width (the nearest measured width at or below it)."""
        below = [r for w, r in self.rates if w <= sequences] or [self.rates[0][1]]
        return below[-1]

    @property
    def gain(self) -> float:
        """The knee's rate over one sequence's."""
        return self.rate(self.knee) / self.rates[0][1]


def size_class(weight_bytes: int) -> str:
    """The model-size class a knee is remembered for: weights rounded up to a power of two GiB (from 0.5)."""
    gib = max(weight_bytes / (1 << 30), 0.5)
    return f"{2 ** math.ceil(math.log2(gib)):g}GiB"


def build_prefix() -> str:
    """The start of every knee key this probe and this llama.cpp build write."""
    from edgeval.llama import engine

    return f"{PROBE_LAYOUT}:{engine.build_version()}|{engine.LLAMA_CPP_PYTHON_VERSION}|"


def knee_key(weight_bytes: int, gpu_layers: int) -> str:
    """The build, device and size class a knee holds for."""
    from edgeval.core.machine import cpu_model
    from edgeval.llama import engine

    device = "gpu:" + ",".join(d.description for d in engine.gpu_devices(with_memory=False)) if gpu_layers else "cpu"
    return f"{build_prefix()}{cpu_model()}|{device}|{size_class(weight_bytes)}"


def _cache() -> Path:
    return edgeval_home() / "throughput-probe.json"


def remembered() -> list[Knee]:
    """Every knee measured on this machine (any build or class)."""
    try:
        raw = json.loads(_cache().read_text())
        return [
            Knee(r["key"], tuple((int(w), float(t)) for w, t in r["rates"]), int(r["knee"]), r["model"],
                 float(r["measured_at"]))
            for r in raw.values()
        ]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return []


def cached(key: str) -> Knee | None:
    """The remembered knee for `key`, without probing."""
    return next((k for k in remembered() if k.key == key), None)


def remembered_for(weight_bytes: int, offload: bool) -> Knee | None:
    """The latest knee measured on this machine for a size class on the CPU or a GPU, whatever the build (for
    time plans, which load nothing)."""
    tail = f"|{size_class(weight_bytes)}"
    found = [
        k for k in remembered()
        if k.key.startswith(f"{PROBE_LAYOUT}:") and k.key.endswith(tail) and (k.key.split("|")[-2] != "cpu") == offload
    ]  # fmt: skip
    return max(found, key=lambda k: k.measured_at) if found else None


def _remember(knee: Knee) -> Knee:
    records = {k.key: asdict(k) for k in remembered()}
    records[knee.key] = asdict(knee)
    path = _cache()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1))
    tmp.replace(path)
    return knee


def knee_of(rates: list[tuple[int, float]]) -> int:
    """The narrowest width within KNEE_SHARE of the best rate."""
    best = max(r for _, r in rates)
    return next(w for w, r in rates if r >= KNEE_SHARE * best)


def _probe_child(path: str, gpu_layers: int, repack: str, threads: int | None, widths: list[int], out: Any) -> None:
    from edgeval.core.memory import RepackMode
    from edgeval.llama import engine

    load = engine.LoadOptions(n_gpu_layers=gpu_layers, repack=RepackMode(repack))
    most = max(widths)
    # A KV stream per sequence, as a run with several questions in flight has (`engine.in_flight`).
    options = engine.ContextOptions(n_ctx=most * (PROBE_PROMPT + PROBE_STEPS + 2), n_seq=most, n_threads=threads,
                                    n_batch=max(512, most), unified=False)  # fmt: skip
    with engine.Model(Path(path), load) as model, engine.Context(model, options) as ctx:
        rates: list[tuple[int, float]] = []
        for width in widths:
            rates.append((width, ctx.decode_rate(width, prompt_tokens=PROBE_PROMPT, steps=PROBE_STEPS)))
            out.put(("rate", rates[-1]))
            gains = [b / a for (_, a), (_, b) in itertools.pairwise(rates)]
            if len(gains) >= 2 and gains[-1] < 1.05 and gains[-2] < 1.05:
                break  # two doublings that gained nothing: past the knee


def probe(
    model_path: Path, weight_bytes: int, *, gpu_layers: int = 0, repack: str = "off", threads: int | None = None,
    timeout_s: float = 600.0, notify: Callable[[str], None] | None = None,
) -> Knee:  # fmt: skip
    """Measure (in a child process) and remember the knee for this model's size class."""
    key = knee_key(weight_bytes, gpu_layers)
    widths = list(GPU_WIDTHS if gpu_layers else CPU_WIDTHS)
    if notify is not None:
        notify(
            f"measuring how many sequences this machine decodes at once best ({model_path.name}; once per size class)"
        )
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    child = spawn.Process(target=_probe_child, args=(str(model_path), gpu_layers, repack, threads, widths, out),
                          daemon=True)  # fmt: skip
    child.start()
    rates: list[tuple[int, float]] = []
    deadline = time.monotonic() + timeout_s
    while child.is_alive() or not out.empty():
        try:
            kind, value = out.get(timeout=0.2)
        except queue.Empty:
            if time.monotonic() > deadline:
                child.kill()
                break
            continue
        if kind == "rate":
            rates.append((int(value[0]), float(value[1])))
    child.join()
    if not rates:
        return Knee(key, ((1, 0.0),), 1, model_path.name, time.time())  # not remembered: probed again next time
    return _remember(Knee(key, tuple(rates), knee_of(rates), model_path.name, time.time()))


@dataclass(frozen=True)
class Width:
    """How many questions a run keeps in flight, and why."""

    questions: int
    reason: str


def widest_fitting(want: int, fits: Callable[[int], bool]) -> int:
    """The widest flight of at most `want` questions that `fits`; 1 when none wider does."""
    width = want
    while width > 1 and not fits(width):
        width -= 1
    return width


def auto_width(
    per_question: int,
    questions: int,
    knee: Knee | None,
    fits: Callable[[int], bool],
) -> Width:
    """The widest flight that reaches the knee (`knee` sequences; `per_question` each), holds no more questions
    than there are, stays within llama.cpp's sequence limit and `fits` in memory; 1 when nothing wider does."""
    limit = max(1, MAX_SEQUENCES // max(per_question, 1))
    target = max(1, (knee.knee if knee else 1) // max(per_question, 1))
    want = min(target, questions, limit)
    width = widest_fitting(want, fits)
    if knee is None:
        return Width(1, "no throughput probe for this machine yet")
    why = f"the knee is {knee.knee} sequences ({knee.gain:.1f}× one sequence's decode rate)"
    if width < want:
        why += f"; {want} questions would not fit in the memory free"
    elif want < target:
        why += f"; {'only ' + str(questions) + ' questions' if questions < target else 'llama.cpp holds 256 sequences'}"
    return Width(width, why)
