"""`edgeval demo`: a comparison with no downloads — edgeval's own tiny Qwen3-architecture family, trained on
`arith` and shipped in the package (F16), quantized here by llama.cpp — then a report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeval.comparison import compare
from edgeval.core.errors import EdgevalError
from edgeval.core.paths import edgeval_home
from edgeval.core.quants import KVType, WeightQuant
from edgeval.edges import gguf_info

FAMILY_DIR = Path(__file__).resolve().parents[1] / "family"
# Precisions from 16 bits down to 2: enough to see quantization cost the small models accuracy.
QUANTS = (WeightQuant.F16, WeightQuant.Q8_0, WeightQuant.Q4_K_M, WeightQuant.Q2_K)
PROMPT_TOKENS = 96  # arith prompts are about 75 tokens with the family's tokenizer
BUDGETS = (8, 48)  # shorter than the reasoning (answers forced), and enough for it
BUDGET_BYTES = 1_000_000_000
TIME_S = 75.0  # the race's time: with quantizing on first use, the demo stays under two minutes


@dataclass(frozen=True)
class DemoSetup:
    """Where the demo's models, catalog and results live."""

    folder: Path
    catalog: Path
    db: Path


def family_sources() -> list[Path]:
    """The shipped F16 models, smallest first."""
    sources = sorted(FAMILY_DIR.glob("edgeval-tiny-*.gguf"), key=lambda p: p.stat().st_size)
    if not sources:
        raise EdgevalError(
            f"the tiny model family is missing from {FAMILY_DIR}",
            hint="reinstall edgeval, or train it with `python -m tools.train_tiny` in a clone",
        )
    return sources


def build_family(folder: Path | None = None, threads: int | None = None) -> DemoSetup:
    """Quantize the shipped family (once) and write a catalog naming every file."""
    folder = folder or edgeval_home() / "demo"
    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `edgeval demo`: edgeval's tiny Qwen3-architecture family, trained on arith.", ""]
    for source in family_sources():
        header = gguf_info.read_local(source)
        name = source.stem
        lines += [f'[models."{name}"]', f'title = "{name}"', f"params = {header.n_params}", ""]
        for quant in QUANTS:
            path = source if quant is WeightQuant.F16 else quantized(source, quant, models, threads)
            lines += [f'[[models."{name}".files]]', f'quant = "{quant.value}"', f'path = "{path}"', ""]
    catalog = folder / "models.toml"
    catalog.write_text("\n".join(lines), encoding="utf-8")
    return DemoSetup(folder, catalog, folder / "demo.db")


def quantized(source: Path, quant: WeightQuant, folder: Path, threads: int | None = None) -> Path:
    """A quantization of a shipped model, made once by llama.cpp's quantizer and kept in `folder`."""
    from edgeval.llama import engine  # llama.cpp, only when a file is quantized

    stat = source.stat()
    target = folder / f"{source.stem}-{stat.st_size}-{int(stat.st_mtime)}-{quant.value}.gguf"
    if not target.exists():
        partial = target.with_name(target.name + ".tmp")
        engine.quantize(source, partial, quant, threads=threads)
        partial.replace(target)
    return target


def request(setup: DemoSetup, *, limit: int | None = None, time_s: float = TIME_S, seed: int = 0,
            repack: bool = False) -> compare.Request:  # fmt: skip
    """The demo's comparison: every family member at every precision, a ladder of two budgets, votes 1 and 4, on
    arith, raced within `time_s`."""
    names = tuple(p.stem for p in family_sources())
    return compare.Request(
        budget_bytes=BUDGET_BYTES, tasks=("arith",), models=names, kv=(KVType.F16,), budgets=BUDGETS, votes=(1, 4),
        limit=limit, time_s=time_s, seed=seed, catalogs=(setup.catalog,), prompt_tokens=PROMPT_TOKENS, repack=repack,
        parallel=1,  # the family's files decode a question in milliseconds: a throughput probe would cost more
        # The family never saw Qwen's stop-thinking message (64 tokens of its 1,024-token vocabulary, and it
        # answers after `</think>` by itself): llama-server's own default, the end tag alone (docs/family.md).
        budget_message="",
    )  # fmt: skip
