"""What edgeval's trained tiny family shows, measured through edgeval's own runner on held-out arith questions.

For each size: accuracy at F16 and each quantization (budget 64 tokens, k=1), with a budget shorter than the
reasoning (8 tokens: answers forced), and maj@4 against a single sample (temperature 0.6, Qwen's thinking default).
Fixed seeds; the 200 questions of the built-in `arith` task, none of which the models were trained on.

Run: python -m benchmarks.family [--limit 200]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from edgeval.core.quants import WeightQuant
from edgeval.edges.store import Store
from edgeval.faces import demo
from edgeval.running import sweep

QUANTS = (WeightQuant.F16, WeightQuant.Q8_0, WeightQuant.Q4_K_M, WeightQuant.Q3_K_M, WeightQuant.Q2_K)


def accuracy(store: Store, label: str, path: Path, limit: int, budget: int = 64, k: int = 1) -> float:
    """maj@k of one configuration on the first `limit` arith questions."""
    spec = sweep.RunSpec(path, label, "arith", budget_tokens=budget, k=k, limit=limit)
    return sweep.run(spec, store).accuracy_maj


def main() -> None:
    """Print one row per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="edgeval-family-"))
    models = folder / "models"
    models.mkdir()
    header = ["model", *(q.value for q in QUANTS), "F16 budget 8", "F16 k=1", "F16 maj@4"]
    print(" | ".join(header))
    with Store(folder / "family.db") as store:
        for source in demo.family_sources():
            row = [source.stem]
            for quant in QUANTS:
                path = source if quant is WeightQuant.F16 else demo.quantized(source, quant, models)
                row.append(f"{100 * accuracy(store, f'{source.stem}:{quant.value}', path, args.limit):.1f}%")
            row.append(f"{100 * accuracy(store, source.stem, source, args.limit, budget=8):.1f}%")
            row.append(f"{100 * accuracy(store, source.stem, source, args.limit, k=1):.1f}%")
            row.append(f"{100 * accuracy(store, source.stem, source, args.limit, k=4):.1f}%")
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
