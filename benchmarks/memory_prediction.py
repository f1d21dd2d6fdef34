"""Predicted footprint against measured peak RSS, each configuration in a fresh process.

On a random-weight model with Qwen3-0.6B's exact shapes (built by edgeval.synth), CPU, repacking off: the child
loads the model, creates the context, decodes a 256-token prompt and generates 16 tokens per sequence; the parent
samples the child's RSS with psutil every 10 ms. (The kernel's ru_maxrss is no help here: on Linux a spawned
child keeps the peak its forked parent had before exec.) Target: within 5%.

Run: python -m benchmarks.memory_prediction [--quant Q4_K_M] [--ctx 4096] [--k 1,8]
"""

from __future__ import annotations

import argparse
import multiprocessing
from pathlib import Path

from edgeval import engine, gguf_info, memory, synth
from edgeval.paths import cache_dir
from edgeval.quants import KVType, WeightQuant

PROMPT_TOKENS = 256
GENERATED = 16


def _child(path: str, n_ctx: int, k: int, kv: str) -> None:
    import edgeval.sweep  # noqa: F401  (the same modules edgeval's worker process has loaded)

    options = engine.ContextOptions(n_ctx=n_ctx, n_seq=k, type_k=KVType(kv), type_v=KVType(kv))
    with engine.Model(Path(path)) as model, engine.Context(model, options) as ctx:
        prompt = model.tokenize("<|im_start|>user\n" + " hello" * 400)[: PROMPT_TOKENS - 2]
        prompt += model.tokenize("<|im_end|><|im_start|>")
        ctx.generate(prompt, k=k, max_tokens=GENERATED, seeds=list(range(k)))


def measure(path: Path, n_ctx: int, k: int, kv: KVType) -> int:
    """Peak RSS of a fresh process running the configuration, sampled from outside."""
    child = multiprocessing.get_context("spawn").Process(target=_child, args=(str(path), n_ctx, k, kv.value))
    child.start()
    with memory.PeakRSS(child.pid or 0) as sampler:
        child.join()
    if child.exitcode != 0:
        raise SystemExit(f"the child failed with exit code {child.exitcode}")
    return sampler.peak_bytes


def main() -> None:
    """Print a table: configuration, predicted total, measured peak, error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quant", default="Q4_K_M")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--k", default="1,8")
    parser.add_argument("--kv", default="f16")
    args = parser.parse_args()
    path = synth.build(synth.QWEN3_SHAPES["0.6b"], WeightQuant(args.quant), cache_dir("models"), threads=2)
    info = gguf_info.read_local(path)
    kv = KVType(args.kv)
    mib = 1 << 20
    print(f"model: {path.name} ({info.weight_bytes / mib:.1f} MiB of tensors), KV {kv.value}, CPU, 2 threads")
    print(f"{'k':>3} {'ctx':>6} {'predicted MiB':>14} {'peak RSS MiB':>13} {'error':>7}")
    for k in (int(x) for x in args.k.split(",")):
        setting = memory.Setting(n_ctx=args.ctx, n_seq=k, type_k=kv, type_v=kv, prompt_tokens=PROMPT_TOKENS)
        predicted = memory.predict(info.architecture(), info.weight_bytes, setting).total_bytes
        measured = measure(path, args.ctx, k, kv)
        error = (predicted - measured) / measured
        print(f"{k:>3} {args.ctx:>6} {predicted / mib:>14.1f} {measured / mib:>13.1f} {error:>+7.1%}")


if __name__ == "__main__":
    main()
