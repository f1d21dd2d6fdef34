"""Prompts: the model's own chat template (rendered with jinja2), thinking on or off, and Qwen's sampling advice.

Every GGUF carries its chat template (`tokenizer.chat_template`); edgeval renders it as transformers and
llama-cpp-python do — a sandboxed jinja2 environment with `trim_blocks`/`lstrip_blocks`, the `loopcontrols`
extension, a `tojson` filter that keeps non-ASCII text, `raise_exception` and `strftime_now` — passing
`enable_thinking`. Qwen3's template needs `namespace`, slicing and string methods, all in jinja2's sandbox. A file
without a template gets the built-in Qwen3 format, and the run says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources

from edgeval.core import rendering
from edgeval.core.rendering import TemplateError, render

__all__ = ["TemplateError", "render"]  # (rendering's: a template's parts in the helper process)


@dataclass(frozen=True)
class Sampling:
    """A sampler chain: a presence penalty (llama.cpp's penalties sampler over the last 64 tokens, prompt included,
    as llama-server runs it; 0: off), top-k, top-p, min-p, temperature, then a seeded draw (greedy at temperature
    0)."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    min_p: float = 0.0
    presence_penalty: float = 0.0

    def fields(self) -> dict[str, float]:
        """The settings as stored and keyed: a presence penalty only when on, so configurations from before it
        existed keep their keys."""
        out = dataclasses.asdict(self)
        if not self.presence_penalty:
            del out["presence_penalty"]
        return out


# llama.cpp's penalties sampler looks back this many tokens (common_params_sampling.penalty_last_n's default).
PENALTY_LAST_N = 64


# Qwen3 model cards: thinking mode never greedy (it loops); non-thinking slightly hotter but narrower.
THINKING_SAMPLING = Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
NON_THINKING_SAMPLING = Sampling(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
END_OF_TURN = "<|im_end|>"
BUILT_IN = "built-in Qwen3 format (the file has no chat template)"
FROM_FILE = "the file's chat template"


def recommended_sampling(thinking: bool) -> Sampling:
    """Qwen's recommended sampler settings for the mode."""
    return THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING


def chat_prompt(question: str, instruction: str = "", *, thinking: bool = True) -> str:
    """One user turn and the start of the assistant's in Qwen3's chat format (the built-in fallback).

    With thinking off, Qwen3's template pre-fills an empty reasoning block, so the model answers at once.
    """
    user = f"{question}\n\n{instruction}" if instruction else question
    prompt = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    if not thinking:
        prompt += f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"
    return prompt


def qwen3_template() -> str:
    """The chat template Qwen3's official files carry (kept as data: tiny models and tests carry the real one)."""
    return resources.files("edgeval").joinpath("templates/qwen3.jinja").read_text(encoding="utf-8")


@dataclass(frozen=True)
class ChatFormat:
    """How a model file wants its prompts: its own template, or (None) the built-in Qwen3 format."""

    template: str | None = None
    bos_token: str = ""
    eos_token: str = ""

    @property
    def source(self) -> str:
        """Where the prompt format comes from, for provenance."""
        return FROM_FILE if self.template else BUILT_IN

    def prompt(self, question: str, instruction: str = "", *, thinking: bool = True) -> str:
        """One user turn and the start of the assistant's (a template's rendered under limits: `rendering`)."""
        if not self.template:
            return chat_prompt(question, instruction, thinking=thinking)
        user = f"{question}\n\n{instruction}" if instruction else question
        return rendering.prompt(self.template, user, thinking=thinking, bos=self.bos_token, eos=self.eos_token)

    def opens_reasoning(self, thinking: bool = True) -> bool:
        """Whether the prompt itself opens the reasoning block (Qwen3-2507 Thinking: `<think>` is pre-filled)."""
        tail = self.prompt("", thinking=thinking).rsplit(END_OF_TURN, 1)[-1]
        return tail.rfind(THINK_OPEN) > tail.rfind(THINK_CLOSE)


def forced_answer(answer_prefix: str) -> str:
    """What edgeval's own budget forcing (stores before `FORCING`) appended to a sample still reasoning at its
    budget: close the reasoning, start the answer. Kept for scoring (`kld`) and the family's training data."""
    return f"\n{THINK_CLOSE}\n\n{answer_prefix}"


# The stop-thinking instruction the Qwen3 technical report (section 4.3, "Thinking Budget") inserts when the thinking
# reaches its budget: "Considering the limited time by the user, I have to give the solution based on the thinking
# directly now.\n</think>.\n\n". llama.cpp forces a message and then the end tag, so the message is the words and
# their newline; what the report writes after the tag the model writes itself.
BUDGET_MESSAGE = (
    "Considering the limited time by the user, I have to give the solution based on the thinking directly now.\n"
)
# How the thinking budget is counted and forced: llama.cpp's reasoning-budget sampler (`llama-server
# --reasoning-budget`). Part of every configuration's key; stores written before it kept edgeval's own forcing (a
# `</think>` and the task's answer prefix at the budget, the budget capping everything a sample wrote) under keys
# without it, so the two never mix.
FORCING = "llama.cpp-reasoning-budget"
TURN_START = "<|im_start|>"
