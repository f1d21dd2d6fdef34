"""Side by side with llama-server: the same questions through `edgeval run --parallel N` and through `llama-server
-np N` with N concurrent requests, in one run, on one machine.

A random-weight file with Qwen3's exact shapes (edgeval.llama.synth; it never opens its reasoning nor writes an end
token, so every answer is n_predict tokens on both sides: a fixed amount of work), arith questions, k = 1, Qwen's
thinking sampling. For each tokens-per-answer budget and each width — 1, and the width `--parallel auto` chose —
`sweep.run` (what `edgeval run` does) answers the questions into a fresh store and its wall time is taken (load,
prompts, answers: everything after the task is read); then llama-server, built from the installed
llama-cpp-python's own sources and started with `edgeval export`'s command line for that configuration, widened to
N slots (`-np N`, `-c` N × one answer's cells, a cache per slot as edgeval's streams), answers the same prompts
with the exported request, N at a time from N client threads. Printed per row: questions, wall seconds, questions
per hour and answer tokens per second on each side, and edgeval ÷ server. Server load time is not counted (it is
started and waited for first); edgeval's wall includes its model load, footprint pass and speed probe — a fixed cost
a longer run spreads out, which `--questions` sets. The last column gives the server's start (process to ready: load,
context, warm-up) and the ratio with it counted on the server's side, as edgeval's are on its own.

Build llama-server once (about 25 minutes on 2 cores), in the llama-cpp-python sdist's folder:
    cmake -S vendor/llama.cpp -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
    cmake --build build -j2 --target llama-server

Each row is repeated (`--reps`, default 3), edgeval and the server back to back with their order alternating, each
edgeval repetition in a fresh store (its fixed costs paid each time, as for a new configuration): the medians, and
the ratio per repetition with its median.

Run: python -m benchmarks.server_side_by_side --server PATH [--shape 0.6b] [--quant Q4_K_M] [--tokens 256,1024]
                                              [--questions 16] [--threads 2] [--repack | --no-repack] [--reps 3]
                                              [--widths 1,auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import llama_server
from edgeval.core.paths import cache_dir
from edgeval.core.quants import WeightQuant
from edgeval.edges import server, tasks
from edgeval.edges.store import Store
from edgeval.llama import synth
from edgeval.running import export, sweep


def edgeval_side(path: Path, tokens: int, parallel: int, args: argparse.Namespace, db: Path) -> dict[str, float]:
    """One `edgeval run` in a fresh store: questions, wall seconds, answer tokens, the width it ran at."""
    spec = sweep.RunSpec(
        model_path=path, model_label=path.stem, task="arith", budget_tokens=tokens, k=1, limit=args.questions,
        threads=args.threads, repack=args.repack, parallel=parallel,
    )  # fmt: skip
    with Store(db) as store:
        t0 = time.perf_counter()
        result = sweep.run(spec, store)
        wall = time.perf_counter() - t0
        if not result.n_done:
            raise SystemExit(f"edgeval's run answered nothing: {result.status} {result.message}")
        row = store.config(result.config_id)
        written = sum(s.tokens + (1 if s.forced else 0) for s in store.samples(result.config_id))
    return {"questions": result.n_done, "wall_s": wall, "tokens": written, "width": int(row["parallel"] or 1),
            "config_id": result.config_id}  # fmt: skip


def server_side(binary: Path, db: Path, config_id: int, width: int, folder: Path) -> dict[str, float]:
    """The same configuration's questions through llama-server with `width` slots and as many requests at once."""
    with Store(db) as store:
        d = export.deployment(store, export.Selection(config_id=config_id))
        indices = sorted({s.item_index for s in store.samples(config_id)})
    items = tasks.load_task("arith").items
    port = llama_server.free_port()
    argv = export.server_argv(d, port=port)[1:]
    # N slots, each with one answer's cache (edgeval's streams); the export's one unified cache is for k votes
    at = argv.index("-c")
    argv[at + 1] = str(d.context * width)
    argv.remove("--kv-unified")
    argv[argv.index("--parallel") + 1] = str(width)
    bodies = [export.request(d, d.prompt(items[i].question), export.question_seed(d.seed, items[i].id))
              for i in indices]  # fmt: skip
    started = time.perf_counter()
    with llama_server.running(binary, argv, port, folder / f"server-{config_id}-{width}.log") as url:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=width) as pool:
            answers = list(pool.map(lambda b: server.post_json(url + export.ENDPOINT, b, timeout=3600), bodies))
        wall = time.perf_counter() - t0
    written = sum(int(a.get("tokens_predicted", 0)) for a in answers if isinstance(a, dict))
    return {"questions": len(answers), "wall_s": wall, "tokens": written, "start_s": t0 - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", type=Path, required=True, help="the llama-server binary")
    parser.add_argument("--shape", default="0.6b", choices=sorted(synth.QWEN3_SHAPES))
    parser.add_argument("--quant", default="Q4_K_M", type=WeightQuant)
    parser.add_argument("--tokens", default="256,1024", help="thinking budgets (each answer writes its n_predict)")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repack", action=argparse.BooleanOptionalAction, default=None,
                        help="weight repacking (default: the doctor's probe decides)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each row (medians; paired ratios)")
    parser.add_argument("--widths", default="1,auto", help="--parallel values: 1, auto, or a number")
    args = parser.parse_args()
    path = synth.build(synth.QWEN3_SHAPES[args.shape], args.quant, cache_dir("models"), threads=args.threads)
    print(f"{path.name}, arith, {args.questions} questions, k = 1, {args.threads} threads, llama-server {args.server}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for tokens in (int(t) for t in args.tokens.split(",")):
            for parallel in (sweep.AUTO if w == "auto" else int(w) for w in args.widths.split(",")):
                rows.append(side_by_side(path, tokens, parallel, args, folder))
    print("| tokens/answer | N | edgeval q/h | server q/h | edgeval tok/s | server tok/s | edgeval ÷ server (q/h), "
          "per repetition (median) | server's start; ÷ with it counted (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


def side_by_side(path: Path, tokens: int, parallel: int, args: argparse.Namespace, folder: Path) -> str:
    """One row: `args.reps` repetitions of edgeval and the server back to back, their order alternating (edgeval
    first, then the server first, ...) so a drift of this VM's speed within a repetition falls on both sides."""
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    first: dict[str, float] = {}
    for rep in range(args.reps):
        db = folder / f"side-{tokens}-{parallel}-{rep}.db"
        if rep % 2 == 0 or not first:
            ours.append(edgeval_side(path, tokens, parallel, args, db))
            first = first or ours[-1]
            theirs.append(server_side(args.server, db, int(ours[-1]["config_id"]), int(ours[-1]["width"]), folder))
        else:  # the server first, with the configuration edgeval stored in the first repetition
            source = folder / f"side-{tokens}-{parallel}-0.db"
            theirs.append(server_side(args.server, source, int(first["config_id"]), int(first["width"]), folder))
            ours.append(edgeval_side(path, tokens, parallel, args, db))
        print(f"{tokens} tokens, N = {int(ours[-1]['width'])}, repetition {rep + 1}: edgeval {rate(ours[-1]):.0f} "
              f"q/h, server {rate(theirs[-1]):.0f}", flush=True)  # fmt: skip
    qph = [statistics.median(rate(r) for r in side) for side in (ours, theirs)]
    tps = [statistics.median(r["tokens"] / r["wall_s"] for r in side) for side in (ours, theirs)]
    paired = [rate(a) / rate(b) for a, b in zip(ours, theirs, strict=True)]
    # The server's start (load, context, warm-up) counted as edgeval's load and probes are: what answering these
    # questions from nothing takes on either side
    started = [rate(a) / rate(b, b["start_s"]) for a, b in zip(ours, theirs, strict=True)]
    label = f"{int(first['width'])}" + (" (auto)" if parallel == sweep.AUTO else "")
    return (f"| {tokens} | {label} | {qph[0]:.0f} | {qph[1]:.0f} | {tps[0]:.1f} | {tps[1]:.1f} | "
            f"{' · '.join(f'{r:.2f}' for r in paired)} (**{statistics.median(paired):.2f}**) | "
            f"{statistics.median(b['start_s'] for b in theirs):.1f} s, {statistics.median(started):.2f} |")  # fmt: skip


def rate(side: dict[str, float], extra_s: float = 0.0) -> float:
    """Questions per hour (with `extra_s` more seconds on the wall)."""
    return side["questions"] / (side["wall_s"] + extra_s) * 3600


if __name__ == "__main__":
    main()
