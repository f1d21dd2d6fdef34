"""`edgeval demo`: a comparison with no downloads — a family of tiny Qwen3-architecture models built here, the
built-in `arith` task, and a report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeval import compare, synth
from edgeval.paths import edgeval_home
from edgeval.quants import KVType, WeightQuant

# Three sizes at three precisions: enough to see memory traded between weights, tokens and votes.
FAMILY = (
    synth.SynthSpec(name="edgeval-tiny-s", n_layer=2, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=512),
    synth.SynthSpec(name="edgeval-tiny-m", n_layer=4, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=768),
    synth.SynthSpec(name="edgeval-tiny-l", n_layer=6, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=1024),
)
QUANTS = (WeightQuant.F16, WeightQuant.Q8_0, WeightQuant.Q4_K_M)
PROMPT_TOKENS = 64  # arith prompts are about 50 tokens with this tokenizer
BUDGETS = (32, 128)
BUDGET_BYTES = 1_000_000_000


@dataclass(frozen=True)
class DemoSetup:
    """Where the demo's models, catalog and results live."""

    folder: Path
    catalog: Path
    db: Path


def build_family(folder: Path | None = None, threads: int | None = None) -> DemoSetup:
    """Build (or reuse) the family and write a catalog naming each model file."""
    folder = folder or edgeval_home() / "demo"
    models = folder / "models"
    lines = ["# Written by `edgeval demo`: tiny Qwen3-architecture models built on this machine.", ""]
    for spec in FAMILY:
        lines += [f'[models."{spec.name}"]', f'title = "{spec.name}"', f"params = {spec.n_params}", ""]
        for quant in QUANTS:
            path = synth.build(spec, quant, models, threads=threads)
            lines += [f'[[models."{spec.name}".files]]', f'quant = "{quant.value}"', f'path = "{path}"', ""]
    catalog = folder / "models.toml"
    catalog.write_text("\n".join(lines), encoding="utf-8")
    return DemoSetup(folder, catalog, folder / "demo.db")


def request(setup: DemoSetup, *, limit: int = 20, repack: bool = False) -> compare.Request:
    """The demo's comparison: every family member × two KV types × two budgets × k of 1 and 4 on arith."""
    return compare.Request(
        budget_bytes=BUDGET_BYTES, tasks=("arith",), models=tuple(s.name for s in FAMILY),
        kv=(KVType.F16, KVType.Q8_0), ctx=tuple(PROMPT_TOKENS + b for b in BUDGETS), k=(1, 4), limit=limit,
        catalogs=(setup.catalog,), prompt_tokens=PROMPT_TOKENS, repack=repack,
    )  # fmt: skip
