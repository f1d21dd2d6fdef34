"""What `compare --ray local` costs against the same compare on this machine alone.

    python -m benchmarks.ray_overhead [--limit 20] [--repeat 2]

The demo's grid (the trained family × F16, Q8_0, Q4_K_M, Q2_K: 12 runs, a ladder of 8 and 48 tokens, votes 1 and 4)
on arith, `--exhaustive`, into fresh stores: once on this machine, once as Ray tasks on a throw-away local cluster
(one task per run; on a 2-core machine one runs at a time, as the local compare does). It prints wall times, the
cluster's start and stop, and the time each task adds beyond its worker process; it asserts nothing, but says
whether both stores hold the same samples.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edgeval.comparison import compare
from edgeval.edges.store import Store
from edgeval.faces import demo


def _samples(db: Path) -> set[tuple[str, int, int, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT c.key, s.item_index, s.sample_index, s.text FROM samples s JOIN configs c ON c.id = s.config_id"
        ).fetchall()
    return {(str(k), int(i), int(j), str(t)) for k, i, j, t in rows}


def _worker_wall(db: Path) -> float:
    """The worker processes' own wall time (start, load, questions), one per run (rungs share it)."""
    with sqlite3.connect(db) as conn:
        return float(
            conn.execute("SELECT SUM(w) FROM (SELECT MAX(wall_s) AS w FROM configs GROUP BY arm)").fetchone()[0]
        )


def once(folder: Path, limit: int, ray: str | None, tag: str) -> tuple[float, float, Path]:
    setup = demo.build_family(folder / "demo", threads=2)
    request = replace(demo.request(setup, limit=limit), exhaustive=True, ray=ray)
    db = folder / f"{tag}.db"
    with Store(db) as store:
        start = time.monotonic()
        compare.run(request, store)
        wall = time.monotonic() - start
    return wall, _worker_wall(db), db


def cluster_start_stop() -> tuple[float, float]:
    from edgeval.running.cluster import Cluster

    start = time.monotonic()
    cluster = Cluster("local")
    up = time.monotonic() - start
    start = time.monotonic()
    cluster.close()
    return up, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    n_runs = len(demo.family_sources()) * len(demo.QUANTS)
    print(f"the demo grid, --exhaustive --limit {args.limit}: {n_runs} runs (tasks), each one worker process")
    print("| mode | wall | workers' own wall | wall − workers | per run |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        demo.build_family(folder / "demo", threads=2)  # quantize first, outside the timings
        stores = {}
        for i in range(args.repeat):
            for mode, ray in (("this machine", None), ("--ray local", "local")):
                wall, workers, db = once(folder, args.limit, ray, f"{'ray' if ray else 'here'}-{i}")
                stores[mode] = db
                print(f"| {mode} | {wall:.1f} s | {workers:.1f} s | {wall - workers:.1f} s | "
                      f"{(wall - workers) / n_runs:.2f} s |")  # fmt: skip
        up, down = cluster_start_stop()
        print(f"local cluster alone: start {up:.1f} s, stop {down:.1f} s")
        same = _samples(stores["this machine"]) == _samples(stores["--ray local"])
        print(f"same samples in both stores: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
