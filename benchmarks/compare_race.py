"""How the race answers on the trained family, against the exhaustive grid, and what the budget ladder saves.

    python -m benchmarks.compare_race race --seeds 0,1,2,3,4,5 --time 120
    python -m benchmarks.compare_race exhaustive        # the 200-question truth and its token count
    python -m benchmarks.compare_race ladder            # tokens: one ladder of 4 rungs against 4 separate runs

Each step runs what `edgeval demo` / `edgeval compare` run (compare.run, sweep's worker processes) into a fresh store
and prints figures; it asserts nothing. `race` and `exhaustive` keep their stores in the folder given by --folder so
that `race` can say whether each answer agrees with the exhaustive truth.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edgeval.comparison import compare
from edgeval.comparison.verdict import Row
from edgeval.core import prompts
from edgeval.edges.store import Store
from edgeval.faces import demo
from edgeval.running import sweep


def _setup(folder: Path) -> demo.DemoSetup:
    return demo.build_family(folder / "demo", threads=2)


def _short(row: Row | None) -> str:
    if row is None:
        return "—"
    return f"{row.model.removeprefix('edgeval-')} b{row.result.budget_tokens} k{row.result.k}"


def race(folder: Path, seeds: list[int], time_s: float, parallel: int | None = None) -> None:
    setup = _setup(folder)
    truth_file = folder / "truth.json"
    truth = json.loads(truth_file.read_text()) if truth_file.exists() else None
    print(f"race: trained family × {demo.QUANTS}, arith, budgets {demo.BUDGETS}, votes 1,4, --time {time_s:g}s")
    print("| seed | wall | in time+25% | tokens | best | recommended | tied | tiny-l@48 tied | no tiny-s/8 tied |"
          " rec. m/l@48 | truth best tied |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        request = demo.request(setup, time_s=time_s, seed=seed)
        if parallel is not None:  # the demo's own is 1
            request = replace(request, parallel=parallel)
        with Store(folder / f"race-{seed}-{time.time_ns()}.db") as store:
            start = time.monotonic()
            (c,) = compare.run(request, store)
            wall = time.monotonic() - start
        tied = [c.row(k) for k in c.tied]
        tied_rows = [r for r in tied if r is not None]
        has_l48 = any("tiny-l" in r.model and r.result.budget_tokens == 48 for r in tied_rows)
        clean = not any("tiny-s" in r.model or r.result.budget_tokens == 8 for r in tied_rows)
        rec = c.row(c.recommended)
        rec_ok = rec is not None and ("tiny-m" in rec.model or "tiny-l" in rec.model) and rec.result.budget_tokens == 48
        truth_tied = "—"
        if truth is not None:
            names = {(r.model, r.result.kv_type_k, r.result.budget_tokens, r.result.k) for r in tied_rows}
            truth_tied = "yes" if tuple(truth["best"]) in names else "no"
        print(f"| {seed} | {wall:.0f} s | {'yes' if wall <= 1.25 * time_s else 'no'} | {c.tokens_decoded:,} | "
              f"{_short(c.row(c.best))} | {_short(rec)} | {len(tied_rows)} | {'yes' if has_l48 else 'no'} | "
              f"{'yes' if clean else 'no'} | {'yes' if rec_ok else 'no'} | {truth_tied} |")  # fmt: skip


def exhaustive(folder: Path) -> None:
    setup = _setup(folder)
    request = compare.Request(**{**demo.request(setup).__dict__, "exhaustive": True, "limit": 200, "time_s": None})
    with Store(folder / f"exhaustive-{time.time_ns()}.db") as store:
        start = time.monotonic()
        (c,) = compare.run(request, store)
        wall = time.monotonic() - start
    done = sorted((r for r in c.rows if r.status != "failed"), key=lambda r: -r.result.accuracy_maj)
    best = done[0]
    print(f"exhaustive: {len(c.rows)} configurations × 200 questions in {wall:.0f} s, {c.tokens_decoded:,} tokens")
    for r in done[:8]:
        print(f"  {_short(r):<22} {100 * r.result.accuracy_maj:5.1f}%  {r.memory_bytes / 1e6:.1f} MB")
    tied = [_short(c.row(k)) for k in c.tied]
    print(f"  tied with the best at n=200: {', '.join(tied)}")
    (folder / "truth.json").write_text(json.dumps({
        "best": [best.model, best.result.kv_type_k, best.result.budget_tokens, best.result.k],
        "tokens": c.tokens_decoded, "wall_s": wall,
    }))  # fmt: skip


def ladder(folder: Path, questions: int = 40) -> None:
    """Tokens decoded by one ladder generation of 4 rungs against 4 separate runs (the product's worker)."""
    model = demo.family_sources()[1]
    rungs = (8, 16, 32, 48)
    greedy = prompts.Sampling(temperature=0.6)
    base = sweep.RunSpec(model, model.stem, "arith", budget_tokens=48, k=4, limit=questions, sampling=greedy)
    with Store(folder / f"ladder-{time.time_ns()}.db") as store:
        t0 = time.monotonic()
        sweep.run_ladder(sweep.RunSpec(**{**base.__dict__, "ladder": rungs[:-1]}), store)
        ladder_s = time.monotonic() - t0
        together = sum(t.generated_tokens for t in store.timings(store.configs()[0]["id"]))
    with Store(folder / f"separate-{time.time_ns()}.db") as store:
        t0 = time.monotonic()
        for b in rungs:
            sweep.run(sweep.RunSpec(**{**base.__dict__, "budget_tokens": b}), store)
        separate_s = time.monotonic() - t0
        apart = sum(t.generated_tokens for c in store.configs() for t in store.timings(int(c["id"])))
    print(f"ladder {rungs}, {model.stem}, k=4, {questions} questions: one generation decoded {together:,} tokens "
          f"({ladder_s:.1f} s); four separate runs {apart:,} ({separate_s:.1f} s): {apart / together:.2f}× the "
          "tokens")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["race", "exhaustive", "ladder"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--time", type=float, default=120.0)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "edgeval-race-bench")
    parser.add_argument(
        "--parallel",
        type=lambda v: sweep.AUTO if v == "auto" else int(v),
        default=None,
        help="questions in flight per run, N or auto (default: the demo's own, 1)",
    )
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.step == "race":
        race(args.folder, [int(s) for s in args.seeds.split(",")], args.time, args.parallel)
    elif args.step == "exhaustive":
        exhaustive(args.folder)
    else:
        ladder(args.folder)


if __name__ == "__main__":
    main()
