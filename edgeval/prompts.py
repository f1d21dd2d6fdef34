"""Qwen3's chat format, thinking on or off, and the sampling Qwen recommends for each mode."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """A sampler chain: top-k, top-p, min-p, temperature, then a seeded draw (greedy at temperature 0)."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    min_p: float = 0.0


# Qwen3 model cards: thinking mode never greedy (it loops); non-thinking slightly hotter but narrower.
THINKING_SAMPLING = Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
NON_THINKING_SAMPLING = Sampling(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
END_OF_TURN = "<|im_end|>"


def recommended_sampling(thinking: bool) -> Sampling:
    """Qwen's recommended sampler settings for the mode."""
    return THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING


def chat_prompt(question: str, instruction: str = "", *, thinking: bool = True) -> str:
    """One user turn and the start of the assistant's, as Qwen3's chat template renders them.

    With thinking off, the template pre-fills an empty reasoning block, so the model answers at once.
    """
    user = f"{question}\n\n{instruction}" if instruction else question
    prompt = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    if not thinking:
        prompt += f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"
    return prompt


def forced_answer(answer_prefix: str) -> str:
    """What budget forcing appends to a sample still reasoning at its budget: close the reasoning, start the answer."""
    return f"\n{THINK_CLOSE}\n\n{answer_prefix}"
