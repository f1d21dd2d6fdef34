"""Predicted footprint against measured peak RSS, through `edgeval run`'s own path, repacking on and off.

Each cell is one `sweep.run` — the library call behind `edgeval run`: the parent predicts, spawns the worker,
the worker loads the model as the product does (repacking on — the doctor probe's mode on this machine, read without
mmap; off: mmapped) and answers one
arith question, and the parent samples the worker's RSS (with its RssAnon and RssFile parts) every 10 ms.
Models: random weights with Qwen3-0.6B's and Qwen3-1.7B's exact shapes, and the hybrid Qwen3.5-0.8B's (`--shape
qwen3.5-0.8b`: 18 Gated DeltaNet layers with a recurrent state per vote, 6 attention layers with a KV cache, a
248,320-token vocabulary) (edgeval.llama.synth), Q4_K_M, CPU.

Decoding a 4,096-token budget on this 2-core machine takes minutes per cell, and the resident memory does not
depend on it: llama.cpp allocates the whole KV cache and clears it (writes every byte) when the context is made,
and the compute buffer's touched part is set by the batch shapes, not the tokens decoded. So each cell runs with
`--ctx` set to what budget B needs (prompt + B + forced answer per sample; k samples share the prompt: the same
KV cells as a run with budget B) and a 16-token budget. `--check` verifies that claim by also running two cells
with their full budgets and comparing the peaks.

Run (each call a few minutes, under the shared CPU lock):
    python -m benchmarks.memory_prediction --shape 0.6b --repack on  --out results.jsonl
    python -m benchmarks.memory_prediction --table results.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from edgeval.core.paths import cache_dir
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges.store import Store
from edgeval.llama import doctor, synth
from edgeval.running import sweep

MIB = 1 << 20
DECODED = 16  # tokens each sample writes before its answer is forced (the run's --budget-tokens)
BUDGETS = {1: (128, 1024, 4096), 8: (128, 512, 4096)}
KV = (KVType.F16, KVType.Q8_0, KVType.Q4_0)
CHECKS = ((1, 1024), (8, 512))  # (k, budget) run with the full budget too, f16


# Qwen3's dense shapes by size (0.6b …) and Qwen3.5's hybrids by generation and size (qwen3.5-0.8b).
SHAPES = {**synth.QWEN3_SHAPES, **{f"qwen3.5-{size}": spec for size, spec in synth.QWEN35_SHAPES.items()}}


def _spec(path: Path, k: int, kv: KVType, repack: bool, budget: int, ctx: int | None) -> sweep.RunSpec:
    return sweep.RunSpec(
        model_path=path, model_label=path.stem, task="arith", kv_type_k=kv, kv_type_v=kv, budget_tokens=budget,
        ctx=ctx, k=k, limit=1, repack=repack,
    )  # fmt: skip


def measure(path: Path, store: Store, k: int, kv: KVType, repack: bool, budget: int, full: bool) -> dict[str, object]:
    """One `edgeval run` of a cell: KV sized for `budget`; decoding 16 tokens per sample unless `full`."""
    sized = _spec(path, k, kv, repack, budget, None)
    spec = sized if full else dataclasses.replace(sized, budget_tokens=DECODED, ctx=sweep.sample_tokens(sized))
    result = sweep.run(spec, store, command="benchmarks.memory_prediction")
    if result.status != "done":
        raise SystemExit(f"{path.name} k={k} {kv.value} budget {budget}: {result.status} ({result.message})")
    row = store.config(result.config_id)
    return {
        "model": path.stem, "k": k, "kv": kv.value, "budget": budget, "repack": doctor.repack_mode(repack).value,
        "full": full,
        "cells": row["kv_cells"], "predicted": result.predicted_bytes, "peak": result.peak_rss_bytes,
        "anon": result.peak_rss_anon_bytes, "file": result.peak_rss_file_bytes,
        "decode_tps": result.decode_tokens_per_s, "tokens": result.mean_tokens,
    }  # fmt: skip


def run_cells(shape: str, repack: bool, out: Path, check: bool, votes: tuple[int, ...] = tuple(BUDGETS)) -> None:
    """Every cell of one model shape and repacking setting (and of the given k), appended to `out` as JSON lines."""
    path = synth.build(SHAPES[shape], WeightQuant.Q4_K_M, cache_dir("models"), threads=2)
    cells = [(k, kv, b, False) for k, budgets in BUDGETS.items() if k in votes for kv in KV for b in budgets]
    if check:
        cells += [(k, KVType.F16, b, True) for k, b in CHECKS]
    with tempfile.TemporaryDirectory() as tmp, out.open("a") as sink:
        for i, (k, kv, budget, full) in enumerate(cells):
            # A store per cell: --ctx is not part of a configuration's key, so one store would run a cell once.
            with Store(Path(tmp) / f"cell-{i}.db") as store:
                record = measure(path, store, k, kv, repack, budget, full)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(_line(record), flush=True)


def _repack_label(value: object) -> str:
    """Records before modes existed hold a bool."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _line(r: dict[str, object]) -> str:
    predicted, peak = int(r["predicted"]), int(r["peak"])  # type: ignore[call-overload]
    anon = f"{int(r['anon']) / MIB:.1f}" if r["anon"] is not None else "—"  # type: ignore[call-overload]
    file = f"{int(r['file']) / MIB:.1f}" if r["file"] is not None else "—"  # type: ignore[call-overload]
    name = str(r["model"])
    size = "3.5-" + name.split("-")[1].upper() if name.startswith("qwen3.5-") else name.split("-")[1].upper()
    decoded = "full budget" if r["full"] else f"{DECODED} + answer"
    return (
        f"| {size} | {_repack_label(r['repack'])} | {r['k']} | {r['kv']} | {r['budget']} | {r['cells']} | "
        f"{decoded} | {predicted / MIB:.1f} | {peak / MIB:.1f} | {anon} | {file} | {(predicted - peak) / peak:+.1%} |"
    )


def table(path: Path) -> None:
    """Print the markdown table of every recorded cell."""
    print("| model | repack | k | KV | budget | KV cells | decoded per sample | predicted MiB | peak RSS MiB |"
          " RssAnon MiB | RssFile MiB | error |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for line in path.read_text().splitlines():
        print(_line(json.loads(line)))


def main() -> None:
    """Measure one shape × repacking setting, or print the table of what was measured."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.6b")
    parser.add_argument("--repack", choices=("on", "off"), default="on")
    parser.add_argument("--k", type=int, nargs="+", default=list(BUDGETS), help="only these vote counts")
    parser.add_argument("--check", action="store_true", help="also run two cells with their full budget")
    parser.add_argument("--out", type=Path, default=Path("memory_prediction.jsonl"))
    parser.add_argument("--table", type=Path, help="print the table of a results file and exit")
    args = parser.parse_args()
    if args.table:
        table(args.table)
        return
    run_cells(args.shape, args.repack == "on", args.out, args.check, tuple(args.k))


if __name__ == "__main__":
    main()
