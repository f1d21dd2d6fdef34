"""Prompt and decode speed of llama.cpp's weight-repacking modes, through edgeval's own loading and generation.

For each weight quantization and repacking mode (off; CPU_REPACK only, by per-tensor buffer overrides; all of
llama.cpp's extra buffers, AMX first where the build has it), a child process loads a random-weight model with
Qwen3-0.6B's exact shapes (edgeval.llama.synth) as `edgeval run` does (`engine.LoadOptions(repack=mode)`: mmap only
without repacking), decodes a 256-token prompt, then 64 tokens for one sequence and 32 tokens each for k = 8
sequences together; 2 threads, f16 KV. A mode that crashes the child (llama.cpp's AMX path on some Xeons) is
reported with its signal. The doctor's probe picks the first of all → cpu_repack that survives; these figures say
whether that order is the right default.

Run (a minute or two, under the shared CPU lock): python -m benchmarks.repack_modes [--quant Q4_K_M Q4_0]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from pathlib import Path
from typing import Any

from edgeval.core import memory, prompts, resident
from edgeval.core.memory import RepackMode
from edgeval.core.paths import cache_dir
from edgeval.core.quants import WeightQuant
from edgeval.llama import engine, synth

MIB = 1 << 20
SAMPLING = prompts.Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
MODES = (RepackMode.OFF, RepackMode.CPU_REPACK, RepackMode.ALL)


def _child(path: str, mode: str, threads: int, queue: Any) -> None:
    load = engine.LoadOptions(n_gpu_layers=0, repack=RepackMode(mode))
    options = engine.ContextOptions(n_ctx=2048, n_seq=8, n_threads=threads)
    with engine.captured_log() as lines, engine.Model(Path(path), load) as model, engine.Context(model, options) as ctx:
        text = "<|im_start|>user\n" + " ".join(f"{i} plus {i + 1} is {2 * i + 1}." for i in range(40))
        prompt = model.tokenize(text)[:250] + model.tokenize("<|im_end|>\n<|im_start|>assistant\n")
        ctx.generate(prompt[:16], max_tokens=4, sampling=SAMPLING)  # warm-up: first touches of every buffer
        one = ctx.generate(prompt, max_tokens=64, sampling=SAMPLING, seeds=[1])
        eight = ctx.generate(prompt, k=8, max_tokens=32, sampling=SAMPLING, seeds=list(range(8)))
        rss = resident._status_rss(os.getpid())
    reported = memory.parse_llama_log(lines)
    queue.put({
        "prompt_tps": one.prompt_tokens / one.prompt_s, "k1_tps": one.generated_tokens / one.decode_s,
        "k8_tps": eight.generated_tokens / eight.decode_s, "model_mib": reported.model_bytes / MIB,
        "repack_mib": reported.repack_bytes / MIB, "rss_mib": (rss.total if rss else 0) / MIB,
    })  # fmt: skip


def measure(path: Path, mode: RepackMode, threads: int) -> dict[str, float] | str:
    """One mode's speeds, or how its child died."""
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    child = spawn.Process(target=_child, args=(str(path), mode.value, threads, queue))
    child.start()
    child.join(300)
    if child.exitcode != 0:
        code = child.exitcode or 0
        return f"crashed (signal {-code})" if code < 0 else f"failed (exit code {code})"
    result: dict[str, float] = queue.get()
    return result


def main() -> None:
    """Print one table row per quantization × mode."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quant", nargs="+", default=["Q4_K_M", "Q4_0"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=[m.value for m in MODES])
    args = parser.parse_args()
    print(f"Qwen3-0.6B shape, {args.threads} threads, f16 KV; prompt 256 tokens, k=1 64 tokens, k=8 32 tokens each")
    print("| quant | repacking | prompt tok/s | decode k=1 tok/s | decode k=8 tok/s | model buffers MiB | "
          "of them repacked | RSS MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for quant in args.quant:
        path = synth.build(synth.QWEN3_SHAPES["0.6b"], WeightQuant(quant), cache_dir("models"), threads=args.threads)
        for mode in map(RepackMode, args.modes):
            r = measure(path, mode, args.threads)
            if isinstance(r, str):
                print(f"| {quant} | {mode.value} | {r} | | | | | |", flush=True)
                continue
            print(f"| {quant} | {mode.value} | {r['prompt_tps']:.1f} | {r['k1_tps']:.1f} | {r['k8_tps']:.1f} | "
                  f"{r['model_mib']:.1f} | {r['repack_mib']:.1f} | {r['rss_mib']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
