"""What a GPU build does that a CPU machine cannot check: run it where a GPU is lent (benchmarks/gpu_check.sh
builds llama-cpp-python with CUDA first).

1. The build offloads (llama_supports_gpu_offload) and `doctor` reads the GPU through NVML.
2. `edgeval run` with every layer on the GPU, 0.6B shape Q4_K_M, f16 KV, budget 256, k = 1 and 4: the
   configuration's peak VRAM (NVML, the worker's own process) against the device part of the prediction, and
   its host RSS against the host part — within 3% is the CPU path's standard.
3. The same with `--parallel 1` and `--parallel auto`: questions per hour and aggregate decode tokens/s, the width
   auto chose (the knee probe on the GPU goes to 256 sequences), and whether the samples agree (GPU kernels pick
   other paths by batch shape: the share that differs is printed, not hidden).
4. `compare --budget <90% of VRAM> --dry-run` plans with offload: device and host parts per run.

Run: python -m benchmarks.gpu_check [--shape 0.6b] [--questions 16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeval.core.paths import cache_dir
from edgeval.core.quants import WeightQuant
from edgeval.core.units import format_bytes
from edgeval.edges.store import Store
from edgeval.llama import engine, synth
from edgeval.running import sweep


def run_once(path: Path, k: int, parallel: int, questions: int, store: Store) -> dict[str, object]:
    spec = sweep.RunSpec(model_path=path, model_label=path.stem, task="arith", budget_tokens=256, k=k,
                         limit=questions, parallel=parallel, gpu_layers=-1)  # fmt: skip
    t0 = time.perf_counter()
    result = sweep.run(spec, store)
    wall = time.perf_counter() - t0
    row = store.config(result.config_id)
    texts = [s.text for s in store.samples(result.config_id)]
    return {"wall": wall, "qph": result.n_done / wall * 3600, "tps": row["decode_tokens_per_s"],
            "width": row["parallel"], "vram": row["peak_vram_bytes"], "rss": row["peak_rss_bytes"],
            "predicted": row["predicted_bytes"], "texts": texts}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shape", default="0.6b")
    parser.add_argument("--questions", type=int, default=16)
    args = parser.parse_args()
    print("offload:", engine.supports_gpu_offload(), "backend:", engine.backend_name())
    print([(d.description, format_bytes(d.memory_total)) for d in engine.gpu_devices()])
    path = synth.build(synth.QWEN3_SHAPES[args.shape], WeightQuant.Q4_K_M, cache_dir("models"), threads=4)
    for k in (1, 4):
        with tempfile.TemporaryDirectory() as tmp:
            one = run_once(path, k, 1, max(2, args.questions // 4), Store(Path(tmp) / "one.db"))
            auto = run_once(path, k, sweep.AUTO, args.questions, Store(Path(tmp) / "auto.db"))
        same = sum(a == b for a, b in zip(one["texts"], auto["texts"], strict=False))  # type: ignore[call-overload]
        n = min(len(one["texts"]), len(auto["texts"]))  # type: ignore[arg-type]
        for label, r in (("--parallel 1", one), ("--parallel auto", auto)):
            print(f"k={k} {label}: width {r['width']}, {r['qph']:.0f} questions/h, {r['tps']:.1f} tok/s, "
                  f"peak VRAM {r['vram']}, RSS {r['rss']}, predicted {r['predicted']}")  # fmt: skip
        print(f"k={k}: samples equal in {same} of {n}")
    budget = f"{int(0.9 * sum(d.memory_total for d in engine.gpu_devices()) / 1e9)}GB"
    subprocess.run([sys.executable, "-m", "edgeval", "compare", "--budget", budget, "--dry-run"], check=False)


if __name__ == "__main__":
    main()
