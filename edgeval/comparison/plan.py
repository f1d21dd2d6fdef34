"""Which configurations fit a memory budget, predicted from catalog facts alone (no download, no network)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from edgeval.core.memory import (
    Footprint,
    Repack,
    RepackMode,
    RepackRule,
    Setting,
    cells_for,
    kv_bytes_per_token,
    own_cells,
    predict,
    repack_for_offload,
)
from edgeval.core.quants import KVType
from edgeval.edges.catalog import ModelRef

# Defaults for each axis (documented in the README): the KV types the study compares, per-sample contexts from
# a short answer to Qwen3's native 32k, and the vote counts where majority voting starts to pay.
DEFAULT_KV = (KVType.F16, KVType.Q8_0, KVType.Q4_0)
DEFAULT_CTX = (2048, 4096, 8192, 16384, 32768)
DEFAULT_K = (1, 4, 8)
DEFAULT_PROMPT_TOKENS = 256


@dataclass(frozen=True)
class Axes:
    """The grid a plan spans. `ctx` is the tokens one sample sees (prompt + token budget)."""

    kv: tuple[KVType, ...] = DEFAULT_KV
    ctx: tuple[int, ...] = DEFAULT_CTX
    k: tuple[int, ...] = DEFAULT_K
    kv_window: tuple[int, ...] = (0,)  # KV windows (0: no eviction); a window as long as the budget is skipped
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    n_ubatch: int = 512
    gpu_layers: int = 0
    cpu_moe: int = 0  # mixture of experts under offload: the first N layers keep their experts on the host (-1: all)
    repack: RepackMode = RepackMode.OFF  # llama.cpp's weight repacking, as `edgeval run` would load
    repack_types: Mapping[str, tuple[RepackRule, ...]] = field(
        default_factory=dict
    )  # what repacks on this CPU (memory.repacked_types)


def too_short(ctx: Sequence[int], prompt_tokens: int) -> list[int]:
    """The per-sample contexts that cannot hold the prompt and one generated token (usage errors, not rows)."""
    return [c for c in ctx if c <= prompt_tokens]


@dataclass(frozen=True)
class Config:
    """One configuration and its predicted footprint."""

    ref: ModelRef
    kv_type_k: KVType
    kv_type_v: KVType
    ctx: int
    k: int
    prompt_tokens: int
    footprint: Footprint
    kv_window: int = 0

    @property
    def budget_tokens(self) -> int:
        """Tokens each sample may generate."""
        return self.ctx - self.prompt_tokens

    def to_json(self) -> dict[str, object]:
        """The row as `plan --json` prints it."""
        fp = self.footprint
        return {
            "model": self.ref.label,
            "title": self.ref.model.title,
            "params": self.ref.model.params,
            "active_params": self.ref.model.active_params or self.ref.model.params,
            "weight_quant": self.ref.file.quant.value,
            "weight_bits": self.ref.file.quant.bits,
            "kv_type_k": self.kv_type_k.value,
            "kv_type_v": self.kv_type_v.value,
            "ctx": self.ctx,
            "k": self.k,
            "budget_tokens": self.budget_tokens,
            "kv_window": self.kv_window,
            "kv_cells": fp.kv_cells,
            "weight_bytes": fp.weight_bytes,
            "kv_bytes": fp.kv_bytes,
            "other_bytes": fp.other_bytes,
            "generation": self.ref.model.generation,
            "state_bytes": fp.state_bytes,
            "state_bytes_per_vote": self.ref.model.arch.state_bytes_per_seq,
            "total_bytes": fp.total_bytes,
            "device_bytes": fp.device_bytes,
            "host_bytes": fp.host_bytes,
        }


@dataclass(frozen=True)
class GenerationRow:
    """What the budget buys one architecture generation: its largest model that fits (at the most bits), the
    arithmetic that decides the rest — KV per 1,000 tokens, recurrent state per vote — and, for that file, the
    longest token budget one vote may have and the most votes of `votes_budget` tokens each that fit."""

    generation: str
    ref: ModelRef
    kv_type: KVType
    kv_per_1k: int
    state_per_vote: int
    longest_budget: int  # up to the model's native context
    most_votes: int  # 0 when not even one vote of votes_budget fits
    votes_budget: int


@dataclass(frozen=True)
class Plan:
    """Configurations that fit, smallest footprint first, and how many were considered."""

    budget_bytes: int
    fits: tuple[Config, ...]
    considered: int
    vram_bytes: int | None = None  # the GPU's memory, when the device part was checked too
    generations: tuple[GenerationRow, ...] = ()  # side by side, when a hybrid generation was considered

    @property
    def mixed(self) -> bool:
        """Whether the fitting configurations span more than one generation."""
        return len({c.ref.model.generation for c in self.fits}) > 1

    def largest_per_precision(self, generation: str | None = None) -> dict[int, Config]:
        """For each weight precision (bits), the fitting configuration with the most parameters (of one
        generation, when given)."""
        best: dict[int, Config] = {}
        for c in self.fits:
            if generation is not None and c.ref.model.generation != generation:
                continue
            bits = c.ref.file.quant.bits
            held = best.get(bits)
            if held is None or (c.ref.model.params, -c.footprint.total_bytes) > (
                held.ref.model.params,
                -held.footprint.total_bytes,
            ):
                best[bits] = c
        return dict(sorted(best.items(), reverse=True))


def repack_setting(repack: bool | None, gpu_layers: int = 0) -> tuple[RepackMode, Mapping[str, tuple[RepackRule, ...]]]:
    """The repacking mode a plan predicts for, and the types this build repacks on this CPU in it: off when
    `repack` is False, else as `edgeval run` will load (the probe's remembered verdict; never the probe itself;
    CPU_REPACK only becomes off with layers on a GPU, as a run's load does)."""
    if repack is False:  # without asking llama.cpp anything: `plan --no-repack` never loads it
        return RepackMode.OFF, {}
    from edgeval.llama import doctor

    mode = repack_for_offload(doctor.repack_expected(repack), gpu_layers)
    if not mode.on:
        return mode, {}
    from edgeval.llama import engine

    return mode, engine.repacked_types(mode)


def footprint_of(ref: ModelRef, axes: Axes, kv: KVType, budget: int, k: int, window: int = 0) -> Footprint:
    """The predicted footprint of k votes of `budget` tokens each after the axes' prompt."""
    setting = Setting(
        n_ctx=cells_for(axes.prompt_tokens, k, budget, window), n_seq=k, type_k=kv, type_v=kv,
        n_ubatch=axes.n_ubatch, prompt_tokens=axes.prompt_tokens,
        gpu_layers=axes.gpu_layers, cpu_moe=axes.cpu_moe, repack=axes.repack.on,
    )  # fmt: skip
    tied_copy = axes.repack.repacks_tied_output
    repack = ref.repack(axes.repack_types, tied_copy=tied_copy) if axes.repack.on else Repack()
    return predict(ref.model.arch, ref.weight_bytes, setting, embd_bytes=ref.embd_bytes,
                   expert_bytes=ref.expert_bytes, repack=repack)  # fmt: skip


def configurations(refs: Sequence[ModelRef], axes: Axes) -> list[Config]:
    """Every model × KV type × context × KV window × k on the grid that the model can run, with its footprint (a
    window no shorter than the budget evicts nothing and is left out)."""
    out = []
    for ref in refs:
        for kv in axes.kv:
            for ctx in axes.ctx:
                if ctx > ref.model.arch.n_ctx_train or ctx <= axes.prompt_tokens:
                    continue
                budget = ctx - axes.prompt_tokens
                windows = [w for w in axes.kv_window if w == 0 or own_cells(budget, w) < budget]
                if ref.model.arch.hybrid:  # a recurrent state cannot evict: a window never applies
                    windows = [w for w in windows if w == 0]
                for window, k in itertools.product(windows, axes.k):
                    footprint = footprint_of(ref, axes, kv, budget, k, window)
                    out.append(Config(ref, kv, kv, ctx, k, axes.prompt_tokens, footprint, window))
    return out


def _most(fitting: Callable[[int], bool], high: int) -> int:
    """The largest n in 1..high with fitting(n) (fitting shrinks as n grows), 0 when none."""
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fitting(mid) else (low, mid - 1)
    return low


MAX_VOTES = 1024  # the side-by-side search's ceiling on votes


def generations(refs: Sequence[ModelRef], axes: Axes, fitted: Sequence[Config],
                fitting: Callable[[Footprint], bool]) -> tuple[GenerationRow, ...]:  # fmt: skip
    """Each generation's largest fitting model side by side (see GenerationRow), at the axes' first KV type,
    without a KV window; the votes at the smallest per-sample context of the axes."""
    rows = []
    kv = axes.kv[0]
    votes_budget = min(axes.ctx) - axes.prompt_tokens
    for generation in sorted({r.model.generation for r in refs}):
        ours = [c.ref for c in fitted if c.ref.model.generation == generation]
        if not ours:
            continue
        ref = max(ours, key=lambda r: (r.model.params, r.file.quant.bits, -r.weight_bytes))
        rows.append(_side_by_side(generation, ref, axes, kv, votes_budget, fitting))
    return tuple(rows)


def _side_by_side(generation: str, ref: ModelRef, axes: Axes, kv: KVType, votes_budget: int,
                  fitting: Callable[[Footprint], bool]) -> GenerationRow:  # fmt: skip
    arch = ref.model.arch
    longest = _most(lambda b: fitting(footprint_of(ref, axes, kv, b, 1)), arch.n_ctx_train - axes.prompt_tokens)
    votes = _most(lambda k: fitting(footprint_of(ref, axes, kv, votes_budget, k)), MAX_VOTES)
    kv_1k = round(kv_bytes_per_token(arch, kv, kv) * 1000)
    return GenerationRow(generation, ref, kv, kv_1k, arch.state_bytes_per_seq, longest, votes, votes_budget)


def fits(
    footprint: Footprint, budget_bytes: int, *, vram_bytes: int | None = None, ram_bytes: int | None = None
) -> bool:
    """What a budget means. On the CPU: the whole footprint within it. With layers on a GPU: the device part within
    it (and within `vram_bytes`, the GPU's memory, when given) and the host part within `ram_bytes` (the RAM free,
    when given) — the budget a GPU machine's doctor suggests is its GPU memory."""
    if footprint.device_bytes <= 0:
        return footprint.total_bytes <= budget_bytes
    return (
        footprint.device_bytes <= budget_bytes
        and (vram_bytes is None or footprint.device_bytes <= vram_bytes)
        and (ram_bytes is None or footprint.host_bytes <= ram_bytes)
    )


def plan(
    refs: Sequence[ModelRef], axes: Axes, budget_bytes: int, *, vram_bytes: int | None = None,
    ram_bytes: int | None = None,
) -> Plan:  # fmt: skip
    """The configurations whose predicted footprint fits `budget_bytes` as `fits` reads it, smallest first."""
    every = configurations(refs, axes)

    def fitting(footprint: Footprint) -> bool:
        return fits(footprint, budget_bytes, vram_bytes=vram_bytes, ram_bytes=ram_bytes)

    fitted = sorted(
        (c for c in every if fitting(c.footprint)),
        key=lambda c: (c.footprint.total_bytes, c.ref.label, c.kv_type_k.value, c.ctx, c.kv_window, c.k),
    )
    side = generations(refs, axes, fitted, fitting) if any(r.model.arch.hybrid for r in refs) else ()
    return Plan(budget_bytes, tuple(fitted), len(every), vram_bytes, side)


@functools.cache
def offload_build() -> bool:
    """Whether the installed llama-cpp-python was built with a GPU backend (CUDA, Metal, Vulkan, HIP, SYCL), read
    from its library files without loading llama.cpp (so plans stay quick and llama.cpp-free)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return False
    names = [p.name.lower() for loc in spec.submodule_search_locations for p in Path(loc).rglob("*ggml-*")]
    return any(f"ggml-{b}" in n for n in names for b in ("cuda", "metal", "vulkan", "hip", "sycl", "opencl"))
