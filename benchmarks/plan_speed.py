"""How fast `plan` answers over the whole built-in catalog × 8 KV types × 8 contexts × 5 vote counts (no network).

Run: python -m benchmarks.plan_speed
"""

from __future__ import annotations

import time

from edgeval.comparison import plan
from edgeval.core.quants import KVType
from edgeval.edges.catalog import Catalog


def main() -> None:
    """Print the time to load the catalog and plan the full grid, best of five."""
    axes = plan.Axes(
        kv=tuple(KVType),
        ctx=(1024, 2048, 4096, 8192, 12288, 16384, 24576, 32768),
        k=(1, 2, 4, 8, 16),
    )
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        refs = Catalog.load().everything()
        result = plan.plan(refs, axes, 8 * 10**9)
        timings.append(time.perf_counter() - start)
    print(f"catalog: {len(refs)} files; grid: {result.considered} configurations; {len(result.fits)} fit 8 GB")
    print(f"catalog load + plan: best {min(timings) * 1000:.1f} ms, worst {max(timings) * 1000:.1f} ms (target < 1 s)")


if __name__ == "__main__":
    main()
