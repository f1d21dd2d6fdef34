"""Decode speed through edgeval against a plain llama.cpp loop, and k votes decoded together against k in a row.

On a random-weight model with Qwen3-0.6B's exact shapes (edgeval.llama.synth), 2 threads, f16 KV, repacking off or in
one of edgeval's modes (`--repack cpu_repack` / `all`; the plain loop loads the same way: extra buffers or the same
per-tensor overrides, the file read rather than mapped):
1. one sequence: edgeval's Context.generate ÷ a minimal loop on llama-cpp-python's low-level API with the same
   model, context and sampler settings (target ≥ 0.95);
2. k = 8 sequences decoded together in one context ÷ 8 generations one after another, aggregate tokens/s
   (target ≥ 2.7×; llama.cpp's own llama-batched reaches 2.8× on a 2-core machine).

Run: python -m benchmarks.decode_speed [--quant Q4_K_M] [--tokens 128] [--threads 2] [--repack off|cpu_repack|all]
"""

from __future__ import annotations

import argparse
import ctypes
import time
from pathlib import Path

import llama_cpp  # the plain loop is the baseline, so this benchmark talks to llama.cpp directly

from edgeval.core import prompts
from edgeval.core.memory import RepackMode
from edgeval.core.paths import cache_dir
from edgeval.core.quants import WeightQuant
from edgeval.llama import engine, synth

PROMPT = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n<think>\n"
SAMPLING = prompts.Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)


def plain_loop(path: Path, tokens: int, threads: int, repack: RepackMode) -> float:
    """Decode tokens/s of a minimal llama.cpp loop: one token per llama_decode, one sampler chain."""
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    mparams.use_extra_bufts = repack is RepackMode.ALL
    overrides = engine._override_array(engine._cpu_repack_overrides(path)) if repack is RepackMode.CPU_REPACK else None
    if overrides is not None:
        mparams.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
    mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE if repack.on else llama_cpp.LLAMA_LOAD_MODE_MMAP
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = 1024, 512, 512, 1
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    cparams.kv_unified = True
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    vocab = llama_cpp.llama_model_get_vocab(model)
    raw = PROMPT.encode()
    buf = (llama_cpp.llama_token * 256)()
    n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, 256, False, True)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in (
        llama_cpp.llama_sampler_init_top_k(SAMPLING.top_k),
        llama_cpp.llama_sampler_init_top_p(SAMPLING.top_p, 1),
        llama_cpp.llama_sampler_init_temp(SAMPLING.temperature),
        llama_cpp.llama_sampler_init_dist(1),
    ):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    for i in range(n):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = buf[i], i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, i == n - 1
    batch.n_tokens = n
    llama_cpp.llama_decode(ctx, batch)
    logits_at, pos = n - 1, n
    start = time.perf_counter()
    for _ in range(tokens):
        token = llama_cpp.llama_sampler_sample(chain, ctx, logits_at)
        batch.token[0], batch.pos[0], batch.n_seq_id[0] = token, pos, 1
        batch.seq_id[0][0], batch.logits[0] = 0, True
        batch.n_tokens = 1
        llama_cpp.llama_decode(ctx, batch)
        logits_at, pos = 0, pos + 1
    rate = tokens / (time.perf_counter() - start)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_sampler_free(chain)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return rate


def edgeval_rate(ctx: engine.Context, prompt: list[int], k: int, tokens: int, seeds: list[int]) -> tuple[int, float]:
    """Tokens generated and decode seconds of one edgeval generation."""
    out = ctx.generate(prompt, k=k, max_tokens=tokens, sampling=SAMPLING, seeds=seeds)
    return out.generated_tokens, out.decode_s


def main() -> None:
    """Print both ratios with the figures behind them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quant", default="Q4_K_M")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repack", choices=[m.value for m in RepackMode], default="off", help="weight repacking mode")
    args = parser.parse_args()
    path = synth.build(synth.QWEN3_SHAPES["0.6b"], WeightQuant(args.quant), cache_dir("models"), threads=2)
    repack = RepackMode(args.repack)
    print(f"model: {path.name}, {args.threads} threads, repacking {repack.value}, f16 KV, {args.tokens} tokens each")
    plain = plain_loop(path, args.tokens, args.threads, repack)
    options = engine.ContextOptions(n_ctx=2048, n_seq=args.k, n_threads=args.threads)
    load = engine.LoadOptions(n_gpu_layers=0, repack=repack)
    with engine.Model(path, load) as model, engine.Context(model, options) as ctx:
        prompt = model.tokenize(PROMPT)
        edgeval_rate(ctx, prompt, 1, 8, [0])  # warm-up
        n, s = edgeval_rate(ctx, prompt, 1, args.tokens, [1])
        single = n / s
        together_n, together_s = edgeval_rate(ctx, prompt, args.k, args.tokens, list(range(args.k)))
        row_n = row_s = 0.0
        for seed in range(args.k):
            n, s = edgeval_rate(ctx, prompt, 1, args.tokens, [seed])
            row_n, row_s = row_n + n, row_s + s
    print(f"1. one sequence: edgeval {single:.1f} tok/s, plain llama.cpp loop {plain:.1f} tok/s "
          f"→ ratio {single / plain:.3f} (target ≥ 0.95)")  # fmt: skip
    together, in_row = together_n / together_s, row_n / row_s
    print(f"2. k={args.k}: together {together:.1f} tok/s aggregate, one after another {in_row:.1f} tok/s "
          f"→ {together / in_row:.2f}× (target ≥ 2.7×)")  # fmt: skip


if __name__ == "__main__":
    main()
