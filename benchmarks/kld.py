"""`edgeval kld` against llama.cpp's own `llama-perplexity --kl-divergence`, on the same tokens, and its speed.

    python -m benchmarks.kld            # Qwen3-0.6B shape (random weights), F16 against Q4_K_M
    python -m benchmarks.kld --family   # the trained edgeval-tiny-l, F16 against Q4_K_M

1. `llama-perplexity` is built from the llama.cpp that the installed llama-cpp-python vendors (its sdist, fetched
   with pip; only that target, cached under ~/.cache/edgeval/llama-perplexity/<version>).
2. The reference's own traces come from `edgeval kld` (the product path: generated once and stored, then scored),
   which also gives edgeval's scoring speed beside the reference's decode speed.
3. The traces' text is written to a file; `llama-perplexity --kl-divergence-base` scores it with the reference and
   `--kl-divergence` with the tested file (context N: each chunk's second half is scored).
4. edgeval's engine scores exactly the tokens llama-perplexity stored (read back from its base file), the same
   positions, at the same context length: full-vocabulary KL and edgeval's top-K approximation.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeval.core import kld
from edgeval.core.paths import cache_dir
from edgeval.core.quants import WeightQuant
from edgeval.edges.store import Store
from edgeval.faces import demo
from edgeval.llama import engine, synth
from edgeval.running import kld_run

BUILD_ROOT = Path.home() / ".cache" / "edgeval" / "llama-perplexity"


def llama_perplexity() -> Path:
    """The llama-perplexity binary of the installed llama-cpp-python's llama.cpp (built once)."""
    version = engine.LLAMA_CPP_PYTHON_VERSION
    root = BUILD_ROOT / version
    binary = root / "build" / "bin" / "llama-perplexity"
    if binary.exists():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
                        "--no-binary", ":all:", "-d", str(root)], check=True)  # fmt: skip
    source = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not source.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(root, filter="data")
    off = ["LLAMA_CURL", "LLAMA_OPENSSL", "LLAMA_BUILD_TESTS", "LLAMA_BUILD_SERVER", "LLAMA_BUILD_EXAMPLES",
           "LLAMA_BUILD_HTML", "LLAMA_BUILD_APP"]  # fmt: skip
    subprocess.run(["cmake", "-S", str(source), "-B", str(root / "build"), "-DCMAKE_BUILD_TYPE=Release",
                    *(f"-D{name}=OFF" for name in off)], check=True)  # fmt: skip
    subprocess.run(["cmake", "--build", str(root / "build"), "--target", "llama-perplexity", "-j2"], check=True)
    return binary


def perplexity(binary: Path, model: Path, ctx: int, base: Path, text: Path | None, threads: int) -> tuple[str, float]:
    """Run llama-perplexity: writing the base file (text given) or comparing against it; its log and seconds."""
    args = [str(binary), "-m", str(model), "-c", str(ctx), "-b", str(ctx), "-t", str(threads), "-nr", "-fa", "on",
            "--kl-divergence-base", str(base)]  # fmt: skip
    args += ["-f", str(text)] if text else ["--kl-divergence"]
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"llama-perplexity failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr, seconds


def read_base(path: Path) -> tuple[int, np.ndarray]:
    """The context length and the tokens (chunks × ctx) a llama-perplexity base file holds."""
    with path.open("rb") as f:
        if f.read(8) != b"_logits_":
            raise SystemExit(f"{path} is not a llama-perplexity base file")
        ctx = int(np.frombuffer(f.read(4), dtype=np.uint32)[0])
        _, n_chunk = np.frombuffer(f.read(8), dtype=np.int32)
        tokens = np.frombuffer(f.read(4 * ctx * int(n_chunk)), dtype=np.int32).reshape(int(n_chunk), ctx)
    return ctx, tokens


def edgeval_kld(reference: Path, tested: Path, chunks: np.ndarray, threads: int) -> dict[str, float]:
    """edgeval's engine on llama-perplexity's chunks: the logits at positions ctx/2 … ctx−2 (what it scores), full
    KL from float32 reference rows held in a temporary file, and the top-K approximation."""
    n_chunk, ctx = chunks.shape
    first = ctx // 2
    with tempfile.TemporaryDirectory() as folder:
        with engine.Model(reference) as model:
            n_vocab = model.n_vocab
            rows = np.lib.format.open_memmap(Path(folder) / "ref.npy", mode="w+", dtype=np.float32,
                                             shape=(n_chunk, ctx - 1 - first, n_vocab))  # fmt: skip
            with engine.Context(model, engine.ContextOptions(n_ctx=ctx, n_threads=threads)) as c:
                for i, chunk in enumerate(chunks):
                    rows[i] = np.stack(c.score(list(chunk[: first + 1]), list(chunk[first + 1 :]), _log_probs))
        full, approx, agree = [], [], []
        every = np.arange(n_vocab, dtype=np.int32)
        with (
            engine.Model(tested) as model,
            engine.Context(model, engine.ContextOptions(n_ctx=ctx, n_threads=threads)) as c,
        ):
            t0 = time.perf_counter()
            for i, chunk in enumerate(chunks):
                logq = c.score(list(chunk[: first + 1]), list(chunk[first + 1 :]), _log_probs)
                for lp, lq in zip(rows[i], logq, strict=True):
                    # the product's own function: whole rows (`--exact`), then the kept tokens and the rest
                    value, same = kld.divergence(kld.RefRow(every, lp, -math.inf, int(np.argmax(lp))), lq)
                    full.append(value)
                    agree.append(same)
                    approx.append(kld.divergence(kld.reference_row(lp), lq)[0])
            seconds = time.perf_counter() - t0
    return {"full": float(np.mean(full)), "top_k": float(np.mean(approx)), "same_top": float(np.mean(agree)),
            "positions": len(full), "seconds": seconds}  # fmt: skip


def _log_probs(logits: np.ndarray) -> np.ndarray:
    return kld.log_softmax(logits).astype(np.float32)


def parse(log: str) -> dict[str, float]:
    def number(pattern: str) -> float:
        found = re.search(pattern, log)
        if not found:
            raise SystemExit(f"llama-perplexity printed no '{pattern}':\n{log[-2000:]}")
        return float(found.group(1))

    return {"mean": number(r"Mean\s+KLD:\s+([-\d.]+)"), "same_top": number(r"Same top p:\s+([\d.]+)") / 100}


def models(family: bool) -> tuple[Path, Path, str]:
    folder = cache_dir("models")
    if family:
        source = demo.family_sources()[-1]
        return source, demo.quantized(source, WeightQuant.Q4_K_M, folder, threads=2), "edgeval-tiny-l"
    shape = synth.QWEN3_SHAPES["0.6b"]
    return (synth.build(shape, WeightQuant.F16, folder, threads=2),
            synth.build(shape, WeightQuant.Q4_K_M, folder, threads=2), "Qwen3-0.6B shape, random weights")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", action="store_true", help="edgeval-tiny-l instead of the 0.6B shape")
    parser.add_argument("--ctx", type=int, help="llama-perplexity's context (default: 512; 128 with --family)")
    parser.add_argument("--traces", type=int, help="traces (default: 4; 40 with --family)")
    parser.add_argument("--budget", type=int, help="token budget of a trace (default: 320; 48 with --family)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    ctx = args.ctx or (128 if args.family else 512)
    traces = args.traces or (40 if args.family else 4)
    budget = args.budget or (48 if args.family else 320)
    binary = llama_perplexity()
    reference, tested, what = models(args.family)
    print(f"{what}: {reference.name} against {tested.name}; {args.threads} threads, llama-perplexity at {binary}")
    db = cache_dir("bench") / f"kld-{reference.stem}.db"
    with Store(db) as store:
        request = kld_run.Request(
            reference=reference, reference_label=f"{reference.stem}", tested=tested, tested_label=tested.stem,
            task="arith", limit=traces, budget_tokens=budget, threads=args.threads, repack=False,
        )  # fmt: skip
        result = kld_run.run(request, store)
        config = store.config(result.trace_config_id)
        text = "".join(s.text for s in store.samples(result.trace_config_id) if s.sample_index == 0)
        exact = kld_run.run(replace(request, exact=True), store)
    s = result.overall
    print(f"edgeval kld (product path, {s.traces} traces, {s.tokens:,} tokens): mean KLD {s.mean_kld:.6f}, "
          f"top-1 agreement {100 * s.top1_agreement:.2f}%, reference mass left out {s.rest_mass:.2g}; "
          f"--exact: {exact.overall.mean_kld:.6f}")  # fmt: skip
    print(f"speed: reference scored {result.reference_tokens_per_s or 0:.1f} tok/s, tested {result.tested_tokens_per_s or 0:.1f}"
          f" tok/s; the reference decoded {config['decode_tokens_per_s'] or 0:.1f} tok/s generating the traces")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        text_file, base = Path(folder) / "traces.txt", Path(folder) / "base.kld"
        text_file.write_text(text, encoding="utf-8")
        _, base_s = perplexity(binary, reference, ctx, base, text_file, args.threads)
        log, kl_s = perplexity(binary, tested, ctx, base, None, args.threads)
        theirs = parse(log)
        _, chunks = read_base(base)
    ours = edgeval_kld(reference, tested, chunks, args.threads)
    n = ours["positions"]
    print(f"same tokens: {chunks.shape[0]} chunks of {ctx}, {n} positions scored (each chunk's second half)")
    print(f"  llama-perplexity: mean KLD {theirs['mean']:.6f}, same top {100 * theirs['same_top']:.2f}% "
          f"({base_s:.1f} s base, {kl_s:.1f} s KL run)")  # fmt: skip
    for name in ("full", "top_k"):
        label = "edgeval, full vocabulary" if name == "full" else f"edgeval, top {kld.TOP_K}–{kld.MAX_K} + rest"
        print(f"  {label}: mean KLD {ours[name]:.6f} ({100 * (ours[name] / theirs['mean'] - 1):+.2f}% vs llama.cpp)")
    print(f"  edgeval same top {100 * ours['same_top']:.2f}%; tested scored at {n / ours['seconds']:.1f} tok/s "
          f"(with full-vocabulary numpy on every row)")  # fmt: skip


if __name__ == "__main__":
    main()
