"""The deployment shape's decode steps, probed on a context: several sequences at several depths
(`answer_time.Speed` fits a line through them)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import llama_cpp
import numpy as np

from edgeval.core.prompts import Sampling
from edgeval.llama.generation import fill_batch
from edgeval.llama.sampler import sampler_chain

if TYPE_CHECKING:
    from edgeval.llama.engine import Context


def speed_probe(
    ctx: Context, prompt: Sequence[int], widths: Sequence[int], depths: Sequence[int], sampling: Sampling, *,
    steps: int = 4,
) -> dict[int, list[tuple[int, float]]]:  # fmt: skip
    """The deployment shape's decode steps: the prompt read on one sequence, then for each depth (cells already in
    the cache, reached by filling that sequence) and each width, `steps` decode steps of that many sequences
    sharing those cells, each row's token sampled by the run's chain (one warm-up step first). Returns width ->
    [(depth, median seconds per step)]; the cache is left empty.

    Sequence 0 never rolls back (a hybrid's recurrent state cannot be cut at a position): each width's steps go
    on from where the last left it, its copies are dropped whole, so a width's depth is its first step's."""
    memory_ = ctx._memory
    room = ctx.n_ctx - (len(widths) + max(widths)) * (steps + 1) - 1
    depths = sorted({min(d, room) for d in depths if min(d, room) >= len(prompt)})
    vocab = ctx.model.n_vocab
    llama_cpp.llama_memory_clear(memory_, True)
    batch = llama_cpp.llama_batch_init(max(ctx.options.n_batch, max(widths)), 0, 1)
    chain = sampler_chain(sampling, 1, vocab)
    try:
        ctx._decode_prompt(prompt, batch)
        filled = len(prompt)
        out: dict[int, list[tuple[int, float]]] = {w: [] for w in widths}
        for depth in depths:
            while filled < depth:  # filler tokens on sequence 0, in chunks no longer than the prompt's (a longer
                # chunk would touch more of the compute buffer than the run itself does)
                n = min(depth - filled, len(prompt), ctx.options.n_batch)
                fill_batch(batch, [((p * 7919 + 11) % vocab, p, 0, False) for p in range(filled, filled + n)])
                ctx._decode(batch)
                filled += n
            for width in widths:
                for seq in range(1, width):
                    llama_cpp.llama_memory_seq_cp(memory_, 0, seq, -1, -1)
                times = []
                for step in range(steps + 1):
                    pos = filled + step
                    fill_batch(batch, [((pos * 31 + s) % vocab, pos, s, True) for s in range(width)])
                    t0 = time.perf_counter()
                    ctx._decode(batch)
                    for row in range(width):
                        llama_cpp.llama_sampler_sample(chain, ctx._ptr, row)
                    times.append(time.perf_counter() - t0)
                out[width].append((filled, float(np.median(times[1:]))))  # the first step warms up
                filled += steps + 1
                for seq in range(1, width):
                    llama_cpp.llama_memory_seq_rm(memory_, seq, -1, -1)
        return out
    finally:
        llama_cpp.llama_sampler_free(chain)
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_memory_clear(memory_, True)
