"""One sequence and k votes decoding through `edgeval run`'s own path, against llama.cpp's llama-batched-bench built
from the installed llama-cpp-python's sources, interleaved in one run: medians of three.

Model: random weights with Qwen3-0.6B's exact shapes (edgeval.llama.synth), Q4_K_M, f16 KV, flash attention, the
same threads, llama.cpp's own repacking on both sides (edgeval's default where its probe passes). Random weights
rarely write an end token, so every sample decodes its whole budget: a fixed amount of work.
edgeval: `sweep.run` (what `edgeval run` calls), k = 1 and k = 8, a 128-token budget, its decode tokens/s (every
sequence's tokens over the decode time, sampling included: top-k 20, top-p 0.95, temperature 0.6, a seeded draw).
llama.cpp: llama-batched-bench's S_TG at B = 1 and 8 at the same depths — its shared prompt as long as edgeval's, and
as many tokens per sequence as each of edgeval's sequences decoded (the budget, the forced message and the answer:
a step's attention grows with depth, so a shorter run would be less work) — and no sampling: an upper bound for any
runner that samples. The issue's target: edgeval ≥ 0.95 × S_TG at each width.

Run: python -m benchmarks.decode_parity --batched-bench PATH [--reps 3] [--threads 2] [--tokens 128]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
from pathlib import Path

from benchmarks.throughput import batched_bench
from edgeval.core.paths import cache_dir
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges.store import Store
from edgeval.llama import engine, synth
from edgeval.running import sweep

WIDTHS = (1, 8)


def edgeval_rate(path: Path, k: int, tokens: int, threads: int, questions: int) -> tuple[float, int, int]:
    """One `edgeval run` (a fresh store): its aggregate decode tokens/s, its mean prompt tokens and the mean tokens
    each sequence decoded."""
    spec = sweep.RunSpec(
        model_path=path, model_label=path.stem, task="arith", kv_type_k=KVType.F16, kv_type_v=KVType.F16,
        budget_tokens=tokens, k=k, limit=questions, threads=threads,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        with Store(Path(tmp) / "s.db") as store:
            result = sweep.run(spec, store, command="benchmarks.decode_parity")
        if result.status != "done" or not result.decode_tokens_per_s:
            raise SystemExit(f"k={k}: {result.status} ({result.message})")
        with sqlite3.connect(Path(tmp) / "s.db") as con:
            prompt, decoded = con.execute(
                "SELECT avg(prompt_tokens), avg(generated_tokens) FROM item_timings"
            ).fetchone()
    return float(result.decode_tokens_per_s), round(prompt), round(decoded / k)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batched-bench", type=Path, required=True, help="the llama-batched-bench binary")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--questions", type=int, default=2)
    args = parser.parse_args()
    path = synth.build(synth.QWEN3_SHAPES["0.6b"], WeightQuant.Q4_K_M, cache_dir("models"), threads=args.threads)
    print(f"llama.cpp build {engine.build_version()}, llama-cpp-python {engine.LLAMA_CPP_PYTHON_VERSION}, {path.name}")
    ours: dict[int, list[float]] = {w: [] for w in WIDTHS}
    theirs: dict[int, list[float]] = {w: [] for w in WIDTHS}
    for rep in range(args.reps):
        for w in WIDTHS:
            rate, prompt, per_seq = edgeval_rate(path, w, args.tokens, args.threads, args.questions)
            ours[w].append(rate)
            theirs[w].append(batched_bench(args.batched_bench, path, [w], args.threads, prompt, per_seq)[w])
            print(f"rep {rep + 1}: k = {w}: edgeval {ours[w][-1]:.1f} tok/s, llama-batched-bench {theirs[w][-1]:.1f} "
                  f"(prompt {prompt}, {per_seq} tokens a sequence)", flush=True)  # fmt: skip
    # Each repetition runs the two back to back, so its ratio is paired (this VM's speed drifts between minutes).
    print("| k | edgeval run (tok/s) | llama-batched-bench S_TG | ratio of medians | ratio per repetition (median) |")
    print("|---|---|---|---|---|")
    for w in WIDTHS:
        mine, base = statistics.median(ours[w]), statistics.median(theirs[w])
        paired = [a / b for a, b in zip(ours[w], theirs[w], strict=True)]
        print(f"| {w} | {' · '.join(f'{x:.1f}' for x in ours[w])} (median {mine:.1f}) | "
              f"{' · '.join(f'{x:.1f}' for x in theirs[w])} (median {base:.1f}) | {mine / base:.2f} | "
              f"{' · '.join(f'{r:.2f}' for r in paired)} ({statistics.median(paired):.2f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
