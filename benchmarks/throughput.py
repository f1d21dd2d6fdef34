"""Questions per hour through `edgeval run`'s own path, one question in flight against `--parallel auto`, beside
llama.cpp's own llama-batched-bench (built from the installed llama-cpp-python's sources) at the same widths.

On random-weight models with Qwen3's exact shapes (edgeval.llama.synth; they rarely write an end token, so every sample
reasons to its budget and is forced to answer: a fixed amount of work), Q4_K_M, f16 KV, thinking mode, 2 threads,
repacking as the doctor's probe found:
for each k, `sweep.run_ladder` (what `edgeval run` calls) answers arith questions with `--parallel 1` and with
`--parallel auto` (the knee probe, the footprint pass and the throughput run, all timed), in fresh stores.
Printed per row: questions answered, wall seconds (everything the command does after loading the task), questions
per hour, aggregate decode tokens/s (every sequence's tokens over the decode time, sampling included) and the
width auto chose; then llama-batched-bench's S_TG (no sampling: an upper bound) at B = 1 and at B = width × k,
at the same 96-token prompt and as many tokens per sequence as the budget (attention over a longer cache costs
more: a short-context S_TG is not this ceiling), and the two ratios the issue asks for: edgeval's auto ÷ its --parallel 1, against S_TG(B) ÷ S_TG(1).

Build llama-batched-bench once (about 4 minutes on 2 cores):
    pip download --no-deps --no-binary :all: llama-cpp-python==$(python -c 'import llama_cpp; print(llama_cpp.__version__)')
    tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/
    cmake -S vendor/llama.cpp -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
    cmake --build build -j2 --target llama-batched-bench

Run: python -m benchmarks.throughput --batched-bench PATH [--shape 0.6b,1.7b] [--k 1,4] [--budget 512]
                                     [--questions N] [--threads 2]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

from edgeval.core.paths import cache_dir
from edgeval.core.quants import WeightQuant
from edgeval.edges.store import Store
from edgeval.llama import engine, synth, throughput
from edgeval.running import sweep


def edgeval_row(path: Path, k: int, parallel: int, budget: int, questions: int, threads: int) -> dict[str, float]:
    """One `edgeval run` in a fresh store: questions, wall s, questions/hour, decode tokens/s, width."""
    spec = sweep.RunSpec(
        model_path=path, model_label=path.stem, task="arith", budget_tokens=budget, k=k, limit=questions,
        threads=threads, repack=None, parallel=parallel,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
        t0 = time.perf_counter()
        result = sweep.run(spec, store)
        wall = time.perf_counter() - t0
        row = store.config(result.config_id)
    return {
        "questions": result.n_done, "wall_s": wall, "qph": result.n_done / wall * 3600,
        "decode_tps": float(row["decode_tokens_per_s"] or 0.0), "width": int(row["parallel"] or 1),
        "memory": float(row["peak_rss_bytes"] or 0), "predicted": float(row["predicted_bytes"] or 0),
        "wide_peak": float(row["throughput_peak_rss_bytes"] or 0),
        "wide_predicted": float(row["throughput_predicted_bytes"] or 0),
    }  # fmt: skip


def batched_bench(
    binary: Path, path: Path, widths: list[int], threads: int, prompt: int, tokens: int, *, unified: bool = True
) -> dict[int, float]:
    """llama-batched-bench's S_TG (aggregate decode tokens/s) at each width: shared prompt, flash attention, the
    same threads, llama.cpp's own repacking (edgeval's default where its probe passes); one unified KV buffer, or
    with `unified` off a KV stream per sequence (as edgeval keeps several questions in flight)."""
    cells = max(widths) * (prompt + tokens + 256)
    done = subprocess.run(
        [str(binary), "-m", str(path), "-c", str(cells), "-b", "2048", "-ub", "512", "-npp", str(prompt),
         "-ntg", str(tokens), "-npl", ",".join(map(str, widths)), "-t", str(threads), "-fa", "on",
         "-kvu" if unified else "-no-kvu", "-pps"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rates = {}
    for line in done.stdout.splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) >= 8 and re.fullmatch(r"\d+", cols[2] or ""):
            rates[int(cols[2])] = float(cols[7])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batched-bench", type=Path, required=True, help="the llama-batched-bench binary")
    parser.add_argument("--shape", default="0.6b,1.7b")
    parser.add_argument("--k", default="1,4")
    parser.add_argument("--budget", type=int, default=512)
    parser.add_argument("--questions", type=int, default=0, help="questions per auto run (default: its width)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"llama.cpp build {engine.build_version()}, llama-cpp-python {engine.LLAMA_CPP_PYTHON_VERSION}")
    print("| shape | k | --parallel | width | questions | wall s | questions/h | decode tok/s | S_TG(B) unified | "
          "S_TG(B) streams | auto ÷ 1 | S_TG(B) ÷ S_TG(k) | edgeval ÷ S_TG(B) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in args.shape.split(","):
        path = synth.build(synth.QWEN3_SHAPES[shape], WeightQuant.Q4_K_M, cache_dir("models"), threads=2)
        for k in (int(v) for v in args.k.split(",")):
            weights = path.stat().st_size
            knee = throughput.cached(throughput.knee_key(weights, 0))
            width = max(1, (knee.knee if knee else 16) // k)
            n = args.questions or width
            auto = edgeval_row(path, k, sweep.AUTO, args.budget, n, args.threads)
            one = edgeval_row(path, k, 1, args.budget, max(1, min(n, 2 if k > 1 else 3)), args.threads)
            b = int(auto["width"]) * k
            rates = batched_bench(args.batched_bench, path, sorted({1, k, b}), args.threads, 96, args.budget)
            streams = (
                batched_bench(args.batched_bench, path, [b], args.threads, 96, args.budget, unified=False)
                if auto["width"] > 1 else {}
            )  # fmt: skip
            for label, row in (("1", one), ("auto", auto)):
                seqs = k * int(row["width"])
                # The ceiling of the layout edgeval ran: one question on a unified cache, several on streams.
                own = streams.get(seqs, 0.0) if row["width"] > 1 else rates.get(seqs, 0.0)
                gain = auto["qph"] / one["qph"] if label == "auto" else 1.0
                bb_gain = own / rates[k] if label == "auto" and rates.get(k) else 1.0
                print(f"| {shape} | {k} | {label} | {int(row['width'])} | {int(row['questions'])} | "
                      f"{row['wall_s']:.0f} | {row['qph']:.0f} | {row['decode_tps']:.1f} | "
                      f"{rates.get(seqs, 0.0):.1f} | {f'{streams[seqs]:.1f}' if seqs in streams and row['width'] > 1 else '—'} | "
                      f"{gain:.2f}× | {bb_gain:.2f}× | {row['decode_tps'] / own if own else 0:.2f}× |",
                      flush=True)  # fmt: skip
            print(f"memory: auto's throughput run peak / predicted ({shape}, k = {k}): "
                  f"{auto['wide_peak'] / 2**20:.0f} / {auto['wide_predicted'] / 2**20:.0f} MiB; the configuration's "
                  f"own (footprint pass): {auto['memory'] / 2**20:.0f} / {auto['predicted'] / 2**20:.0f} MiB",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
