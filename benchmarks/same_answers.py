"""Whether many questions in flight give the samples of one at a time, on the trained family: `edgeval run` with
`--parallel 1` against `--parallel 16`, repacking on and off, greedy (k = 1) and sampled (k = 4), each into its own
store; the share of samples that differ and the paired difference of accuracy (per question, the largest budget).

    python -m benchmarks.same_answers                                  # tiny-m Q4_K_M, budget 48
    python -m benchmarks.same_answers --quant Q8_0 --budget-tokens 8,48  # with a budget ladder
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeval.faces import demo

Rows = dict[tuple[int, int, int], tuple[str, bool]]


def _run(model: Path, db: Path, parallel: int, budgets: str, extra: list[str]) -> None:
    args = [sys.executable, "-m", "edgeval", "run", str(model), "--task", "arith", "--limit", "200",
            "--budget-tokens", budgets, "--parallel", str(parallel), "--db", str(db), "--json", *extra]  # fmt: skip
    json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def _rows(db: Path) -> Rows:
    with sqlite3.connect(db) as conn:
        query = ("SELECT c.budget_tokens, s.item_index, s.sample_index, s.text, s.correct FROM samples s "
                 "JOIN configs c ON c.id = s.config_id")  # fmt: skip
        return {(b, i, j): (text, bool(ok)) for b, i, j, text, ok in conn.execute(query)}


def _paired(one: Rows, wide: Rows) -> tuple[float, float, float, int]:
    """Mean per-question accuracy difference (wide − one) at the largest budget, its 95% interval and n."""
    top = max(key[0] for key in one)
    right: dict[int, list[int]] = {}
    for rows, side in ((one, 0), (wide, 1)):
        for (budget, item, _), (_, ok) in rows.items():
            if budget == top:
                right.setdefault(item, [0, 0])[side] += ok
    k = sum(1 for key in one if key[0] == top) // len(right)
    d = [(w - o) / k for o, w in right.values()]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n)
    return mean, mean - half, mean + half, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quant", default="Q4_K_M", help="the tiny-m file: Q8_0, Q4_K_M or Q2_K")
    parser.add_argument("--budget-tokens", default="48", help="a budget or a ladder (8,48)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="same-answers-"))
    setup = demo.build_family(folder / "demo", threads=2)
    (model,) = sorted((setup.folder / "models").glob(f"edgeval-tiny-m-*-{args.quant}.gguf"))
    print(f"| {args.quant}, budget {args.budget_tokens} | repacking | samples differing | paired accuracy "
          "difference, --parallel 16 − 1 (95% CI, n) |\n|---|---|---|---|")  # fmt: skip
    for votes, sampling in (("1", ["--temperature", "0"]), ("4", [])):
        for repack in ("--repack", "--no-repack"):
            extra = [repack, "--k", votes, *sampling]
            dbs = [folder / f"{votes}{repack}-{width}.db" for width in (1, 16)]
            for width, db in zip((1, 16), dbs, strict=True):
                _run(model, db, width, args.budget_tokens, extra)
            one, wide = _rows(dbs[0]), _rows(dbs[1])
            differ = sum(1 for key, row in one.items() if wide[key][0] != row[0])
            mean, low, high, n = _paired(one, wide)
            kind = "greedy, k = 1" if votes == "1" else "sampled, k = 4"
            print(f"| {kind} | {repack.removeprefix('--')} | {differ} of {len(one)} | {100 * mean:+.1f} points "
                  f"({100 * low:+.1f} to {100 * high:+.1f}, n = {n}) |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
