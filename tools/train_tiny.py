"""Train edgeval's tiny Qwen3 family on `arith` (development only: needs PyTorch, never a dependency of edgeval).

Each model is a Qwen3-architecture transformer — RMSNorm, NEOX rotary embeddings, grouped-query attention with
QK-norm, SwiGLU, tied embeddings — exactly what llama.cpp's qwen3 graph computes, trained on arith questions in
edgeval's own prompt format: a Qwen3 chat turn, digit-by-digit reasoning inside <think>…</think>, then the answer
as budget forcing would write it. Held-out: no training question is one of the built-in `arith` task's items.
The trained weights are written as F16 GGUF by edgeval's own writer (edgeval.llama.synth) into edgeval/family/.

Run: pip install torch==2.13.0 && python -m tools.train_tiny [--size s|m|l|all] [--steps N] [--check-only]

After training, each model is quantized by llama.cpp and its weights read back (dequantized by the gguf package)
into the PyTorch model, which reports per precision what fraction of the held-out questions it completes with
every reasoning token its top choice, and the mean probability of the whole reply at temperature 0.6 (which
predicts what `python -m benchmarks.family` then measures through llama.cpp, to a point or two).
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import torch
import torch.nn.functional as F
from gguf.quants import dequantize
from torch import nn

from benchmarks import family
from edgeval.core import prompts
from edgeval.core.quants import WeightQuant
from edgeval.edges import tasks
from edgeval.faces import demo
from edgeval.llama import engine, synth

FAMILY_DIR = Path(__file__).resolve().parent.parent / "edgeval" / "family"


# ---------------------------------------------------------------- the reasoning the models learn


def reasoning(a: int, op: str, b: int) -> str:
    """Digit-by-digit working for `a op b`, least significant digit first, with carries and borrows."""
    if op == "-" and a < b:
        return f"{a}-{b}=-({b}-{a})\n" + reasoning(b, "-", a)
    da, db = str(a)[::-1], str(b)[::-1]
    lines, carry = [], 0
    for i in range(len(da) if op == "*" else max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        if op == "*":
            s = x * b + carry
            lines.append(f"{x}*{b}" + (f"+{carry}" if carry else "") + f"={s}")
            carry = s // 10
        elif op == "+":
            s = x + y + carry
            lines.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}")
            carry = s // 10
        else:
            s = x - y - carry
            borrow = 1 if s < 0 else 0
            lines.append(f"{x}-{y}" + (f"-{carry}" if carry else "") + f"={s + 10 * borrow}" + (" b" if borrow else ""))
            carry = borrow
    if op in "+*" and carry:
        lines.append(f"c{carry}")
    return "\n".join(lines) + "\n"


def response(question: str, answer: str) -> str:
    """The assistant turn: reasoning, then the answer in the form budget forcing completes."""
    a, op, b = question.removeprefix("What is ").removesuffix("?").split()
    task = tasks.load_task("arith")
    return f"<think>\n{reasoning(int(a), op, int(b))}</think>\n\n{task.answer_prefix}{answer}}}$<|im_end|>"


def training_items(n: int, seed: int) -> list[tasks.Item]:
    """Arith questions from other seeds and difficulties 1–2, none equal to an evaluation item (seed 0)."""
    held_out = {i.question for d in (1, 2, 3) for i in tasks.arith_items(d, 0)}
    items: list[tasks.Item] = []
    s = seed
    while len(items) < n:
        s += 1
        for difficulty in (1, 2, 2, 2):
            items += [i for i in tasks.arith_items(difficulty, s) if i.question not in held_out]
    random.Random(seed).shuffle(items)
    return items[:n]


# ---------------------------------------------------------------- the model (what llama.cpp's qwen3 graph computes)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_neox(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding, NEOX layout (the two halves of each head rotate together), as llama.cpp does for qwen3."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d // 2, dtype=torch.float32) * 2 / d)
    angles = positions[:, None].float() * freqs[None, :]  # (T, d/2)
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Qwen3Tiny(nn.Module):
    """A Qwen3 decoder whose parameters are named and shaped as the GGUF tensors edgeval.llama.synth writes."""

    def __init__(self, spec: synth.SynthSpec) -> None:
        super().__init__()
        self.spec = spec
        shapes = synth.tensor_shapes(spec)
        self.params = nn.ParameterDict()
        for name, shape in shapes.items():
            init = synth.random_weights(spec, name, shape)
            self.params[name.replace(".", "__")] = nn.Parameter(torch.from_numpy(init.copy()))

    def w(self, name: str) -> torch.Tensor:
        """A parameter by its GGUF tensor name."""
        weight: torch.Tensor = self.params[name.replace(".", "__")]
        return weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        s = self.spec
        batch, length = tokens.shape
        positions = torch.arange(length)
        x = self.w("token_embd.weight")[tokens]
        mask = torch.full((length, length), float("-inf")).triu(1)
        for i in range(s.n_layer):
            p = f"blk.{i}."
            h = rms_norm(x, self.w(p + "attn_norm.weight"), s.rms_eps)
            q = (h @ self.w(p + "attn_q.weight").T).view(batch, length, s.n_head, s.head_dim)
            k = (h @ self.w(p + "attn_k.weight").T).view(batch, length, s.n_head_kv, s.head_dim)
            v = (h @ self.w(p + "attn_v.weight").T).view(batch, length, s.n_head_kv, s.head_dim)
            q = rope_neox(rms_norm(q, self.w(p + "attn_q_norm.weight"), s.rms_eps), positions, s.rope_theta)
            k = rope_neox(rms_norm(k, self.w(p + "attn_k_norm.weight"), s.rms_eps), positions, s.rope_theta)
            group = s.n_head // s.n_head_kv
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(s.head_dim) + mask
            attn = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(batch, length, -1)
            x = x + attn @ self.w(p + "attn_output.weight").T
            h = rms_norm(x, self.w(p + "ffn_norm.weight"), s.rms_eps)
            gate, up = h @ self.w(p + "ffn_gate.weight").T, h @ self.w(p + "ffn_up.weight").T
            x = x + (F.silu(gate) * up) @ self.w(p + "ffn_down.weight").T
        x = rms_norm(x, self.w("output_norm.weight"), s.rms_eps)
        return x @ self.w("token_embd.weight").T

    def gguf_weights(self) -> dict[str, np.ndarray]:
        """Parameters by GGUF tensor name."""
        return {name.replace("__", "."): p.detach().numpy().astype(np.float32) for name, p in self.params.items()}


# ---------------------------------------------------------------- data and training


def encode(vocab: engine.Model, items: list[tasks.Item], instruction: str) -> list[tuple[list[int], int]]:
    """(tokens of prompt + response, prompt length) per item, through llama.cpp's own tokenizer."""
    out = []
    for item in items:
        prompt = vocab.tokenize(prompts.chat_prompt(item.question, instruction, thinking=True))
        reply = vocab.tokenize(response(item.question, item.answer))
        out.append((prompt + reply, len(prompt)))
    return out


def batches(
    data: list[tuple[list[int], int]], size: int, rng: random.Random, pad: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        chosen = rng.sample(data, size)
        length = max(len(t) for t, _ in chosen)
        tokens = torch.full((size, length), pad, dtype=torch.long)
        target_mask = torch.zeros((size, length), dtype=torch.bool)
        for row, (seq, prompt_len) in enumerate(chosen):
            tokens[row, : len(seq)] = torch.tensor(seq)
            target_mask[row, prompt_len : len(seq)] = True  # predict the response (positions shifted below)
        yield tokens, target_mask


SIZES = {
    "s": synth.SynthSpec(name="edgeval-tiny-s", n_layer=1, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=256, n_vocab=1024, n_ctx_train=2048, seed=11),
    "m": synth.SynthSpec(name="edgeval-tiny-m", n_layer=2, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=512, n_vocab=1024, n_ctx_train=2048, seed=12),
    "l": synth.SynthSpec(name="edgeval-tiny-l", n_layer=3, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=768, n_vocab=1024, n_ctx_train=2048, seed=13),
}  # fmt: skip


STEPS = {"s": 800, "m": 2000, "l": 1800}


def train(spec: synth.SynthSpec, steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> Qwen3Tiny:
    """Train one size; prints the loss as it goes. Deterministic from `seed`."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vocab_file = synth.build(replace(spec, name=spec.name + "-vocab"), WeightQuant.F16, Path("/tmp/edgeval-vocab"))
    task = tasks.load_task("arith")
    with engine.Model(vocab_file, engine.LoadOptions(vocab_only=True)) as vocab:
        data = encode(vocab, training_items(40_000, seed), task.instruction)
        pad = vocab.tokenize("<|endoftext|>")[0]
    model = Qwen3Tiny(spec)
    with torch.no_grad():  # fan-in initialisation: matrices N(0, 1/n_embd) rather than synth's N(0, 0.02²)
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.mul_(1 / math.sqrt(spec.n_embd) / synth.INIT_STD)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(steps // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))
    )
    start = time.time()
    for step, (tokens, mask) in zip(range(steps), batches(data, batch_size, rng, pad), strict=False):
        logits = model(tokens[:, :-1])
        targets = tokens[:, 1:]
        keep = mask[:, 1:]
        loss = F.cross_entropy(logits[keep], targets[keep])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"{spec.name} step {step:5d} loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    return model


# ---------------------------------------------------------------- what quantization costs each model


def load_gguf(model: Qwen3Tiny, path: Path) -> None:
    """Copy a GGUF file's weights (dequantized if quantized) into `model`."""
    with torch.no_grad():
        for tensor in gguf.GGUFReader(path).tensors:
            shape = tuple(int(d) for d in reversed(tensor.shape))
            values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(shape)
            model.w(tensor.name).copy_(torch.from_numpy(values))


def replies(model: Qwen3Tiny, data: list[tuple[list[int], int]], temperature: float = 0.6) -> tuple[float, float]:
    """(share of replies whose every token is the top choice, mean probability of the reply at `temperature`)."""
    greedy, probability = 0, 0.0
    with torch.no_grad():
        for tokens, prompt_len in data:
            sequence = torch.tensor([tokens])
            logits = model(sequence[:, :-1])[0, prompt_len - 1 :]
            targets = sequence[0, prompt_len:]
            greedy += int(bool((logits.argmax(-1) == targets).all()))
            log_p = F.log_softmax(logits / temperature, -1).gather(1, targets[:, None]).sum()
            probability += math.exp(log_p.item())
    return greedy / len(data), probability / len(data)


def check(spec: synth.SynthSpec, path: Path, questions: int = 200) -> None:
    """Print what each precision does to the model at `path` on the first held-out `arith` questions."""
    task = tasks.load_task("arith")
    with engine.Model(path, engine.LoadOptions(vocab_only=True)) as vocab:
        data = encode(vocab, list(task.items[:questions]), task.instruction)
    model = Qwen3Tiny(spec)
    cells = []
    with tempfile.TemporaryDirectory() as folder:
        for quant in family.QUANTS:  # the precisions the benchmark measures
            load_gguf(model, path if quant is WeightQuant.F16 else demo.quantized(path, quant, Path(folder)))
            greedy, sampled = replies(model, data)
            cells.append(f"{quant.value} {100 * greedy:.1f}% / {100 * sampled:.1f}%")
    print(f"{spec.name} (greedy / at 0.6): " + " | ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="all", choices=[*SIZES, "all"])
    parser.add_argument(
        "--steps", type=int, default=0, help="training steps (default: 800 / 2,000 / 1,800 for s / m / l)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check-only", action="store_true", help="check the shipped files; train nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # subnormal floats slow CPU training tenfold
    FAMILY_DIR.mkdir(parents=True, exist_ok=True)
    for key in SIZES if args.size == "all" else [args.size]:
        spec = SIZES[key]
        path = FAMILY_DIR / f"{spec.name}.gguf"
        if not args.check_only:
            model = train(spec, args.steps or STEPS[key])
            synth.write_gguf(spec, path, dtype=WeightQuant.F16, weights=model.gguf_weights())
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        check(spec, path)


if __name__ == "__main__":
    main()
