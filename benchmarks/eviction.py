"""KV-cache eviction against KV quantization, what eviction costs in decode speed, and the issue's acceptance run.

1. accuracy: on edgeval's trained tiny family (F16 weights), the arith questions at a 48-token budget, k=4 votes
   (Qwen's thinking sampling, fixed seeds), with the whole cache in f16, q8_0 and q4_0, and with f16 windows of
   16, 32 and 64 tokens — positions kept (edgeval's choice) and shifted over the gap (StreamingLLM). Each row
   gives maj@4, avg@4 and the KV bytes one sample's own tokens take (its window and eviction chunk, or its
   budget, and the forced answer), beside the whole KV cache of a k=4 context.
2. speed: decode tokens/s on Qwen3-0.6B's shape (random weights, Q4_K_M, f16 KV) with and without a window.
3. acceptance (--acceptance): the same model, `run --budget-tokens 1500 --kv-window 256` with f16 and q8_0 K:
   tokens each sample wrote and the KV cells its context held.

Run: python -m benchmarks.eviction [--limit 200] [--speed-tokens 384] [--acceptance]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeval.core import grading, memory, prompts, vote
from edgeval.core.paths import cache_dir
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges import gguf_info, tasks
from edgeval.edges.store import Store
from edgeval.faces import demo
from edgeval.llama import engine, synth
from edgeval.running import sweep, worker

BUDGET = 48
K = 4
ANSWER_TOKENS = 12


@dataclass(frozen=True)
class Arm:
    """One row of the accuracy table."""

    name: str
    kv: KVType = KVType.F16
    window: int = 0
    shift: bool = False


ARMS = (
    Arm("kv f16"),
    Arm("kv q8_0", KVType.Q8_0),
    Arm("kv q4_0", KVType.Q4_0),
    Arm("f16, window 16", window=16),
    Arm("f16, window 16 shifted", window=16, shift=True),
    Arm("f16, window 32", window=32),
    Arm("f16, window 32 shifted", window=32, shift=True),
    Arm("f16, window 64", window=64),
    Arm("q8_0, window 32", KVType.Q8_0, window=32),
)


def accuracy(path: Path, arm: Arm, limit: int) -> tuple[float, float, float]:
    """maj@K, avg@K and mean evicted tokens of one arm on the first `limit` arith questions."""
    task = tasks.load_task("arith")
    sampling = prompts.recommended_sampling(True)
    maj, avg, evicted = [], [], []
    with engine.Model(path) as model:
        forcing = engine.Forcing(
            think_close=model.tokenize(prompts.THINK_CLOSE)[0],
            tokens=tuple(model.tokenize(prompts.forced_answer(task.answer_prefix))),
            answer_tokens=ANSWER_TOKENS,
        )
        options = engine.ContextOptions(n_ctx=1024, n_seq=K, type_k=arm.kv, type_v=arm.kv)
        with engine.Context(model, options) as ctx:
            for item in task.take(limit):
                prompt = model.tokenize(prompts.chat_prompt(item.question, task.instruction))
                out = ctx.generate(prompt, k=K, max_tokens=BUDGET, sampling=sampling,
                                   seeds=worker.item_seeds(0, item.id, K), forcing=forcing, window=arm.window,
                                   shift=arm.shift)  # fmt: skip
                answers = [grading.extract(t, task.kind) for t in out.texts]
                correct: list[bool | None] = [grading.is_correct(a, item.answer, task.kind) for a in answers]
                maj.append(vote.maj_at(answers, correct, K))
                avg.append(vote.avg_at(correct))
                evicted.append(sum(out.evicted) / K)
    n = len(maj)
    return sum(maj) / n, sum(avg) / n, sum(evicted) / n


def kv_per_sample(arch: memory.Architecture, arm: Arm, answer_cells: int) -> float:
    """KV bytes one sample's own cells take: its budget (or window and chunk) and its forced answer."""
    return memory.kv_bytes_per_token(arch, arm.kv, arm.kv) * (memory.own_cells(BUDGET, arm.window) + answer_cells)


def accuracy_table(limit: int) -> None:
    print(f"1. arith, first {limit} questions, budget {BUDGET} tokens, k={K}, F16 weights; KV bytes per sample = "
          "own cells (budget, or window + chunk) + forced answer")  # fmt: skip
    print("model | configuration | KV/sample | maj@4 | avg@4 | evicted/sample")
    for source in demo.family_sources():
        arch = gguf_info.read_local(source).architecture()
        with engine.Model(source, engine.LoadOptions(vocab_only=True)) as vocab:
            answer_cells = len(vocab.tokenize(prompts.forced_answer(tasks.BOXED))) + ANSWER_TOKENS
        for arm in ARMS:
            maj, avg, evicted = accuracy(source, arm, limit)
            kv = kv_per_sample(arch, arm, answer_cells)
            print(f"{source.stem} | {arm.name} | {kv / 1024:.1f} KiB | {100 * maj:.1f}% | {100 * avg:.1f}% | "
                  f"{evicted:.1f}", flush=True)  # fmt: skip


def speed(tokens: int) -> None:
    path = synth.build(synth.QWEN3_SHAPES["0.6b"], WeightQuant.Q4_K_M, cache_dir("models"), threads=2)
    sampling = prompts.Sampling(temperature=0.6, top_p=0.95, top_k=20)
    print(f"2. decode speed: {path.name}, 2 threads, f16 KV, k=1 and k=4, {tokens} tokens per sequence")
    options = engine.ContextOptions(n_ctx=2048, n_seq=4, n_threads=2)
    with engine.Model(path, engine.LoadOptions(n_gpu_layers=0)) as model, engine.Context(model, options) as ctx:
        prompt = model.tokenize("<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n<think>\n")
        ctx.generate(prompt, k=1, max_tokens=8, sampling=sampling, seeds=[0])  # warm-up
        for k in (1, 4):
            for window in (0, 128, 64, 0):  # no window measured first and last: drift shows
                out = ctx.generate(prompt, k=k, max_tokens=tokens, sampling=sampling, seeds=list(range(k)),
                                   window=window)  # fmt: skip
                chunk = memory.eviction_chunk(window) if window else 0
                print(f"k={k} window {window or 'none'} (chunk {chunk}): {out.generated_tokens / out.decode_s:.1f} "
                      f"tok/s, {sum(out.evicted)} tokens evicted", flush=True)  # fmt: skip


def acceptance() -> None:
    path = synth.build(synth.QWEN3_SHAPES["0.6b"], WeightQuant.Q4_K_M, cache_dir("models"), threads=2)
    print("3. acceptance: budget 1500, window 256, k=1, greedy, 2 threads")
    folder = Path(tempfile.mkdtemp(prefix="edgeval-eviction-"))
    with Store(folder / "eviction.db") as store:
        for type_k in (KVType.F16, KVType.Q8_0):
            spec = sweep.RunSpec(path, path.stem, "arith", kv_type_k=type_k, budget_tokens=1500, kv_window=256,
                                 k=1, limit=1, sampling=prompts.Sampling(temperature=0.0), threads=2)  # fmt: skip
            result = sweep.run(spec, store)
            written = [s.tokens for s in store.samples(result.config_id)]
            evicted = [s.evicted for s in store.samples(result.config_id)]
            print(f"K {type_k.value}: status {result.status}, tokens written {written}, evicted {evicted}, "
                  f"kv_cells {result.kv_cells}, peak RSS {result.peak_rss_bytes}, "
                  f"decode {result.decode_tokens_per_s or 0:.1f} tok/s", flush=True)  # fmt: skip


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--speed-tokens", type=int, default=384)
    parser.add_argument("--acceptance", action="store_true", help="also the 1,500-token acceptance run")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    if not args.skip_accuracy:
        accuracy_table(args.limit)
    if not args.skip_speed:
        speed(args.speed_tokens)
    if args.acceptance:
        acceptance()


if __name__ == "__main__":
    main()
