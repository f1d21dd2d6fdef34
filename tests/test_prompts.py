"""Prompts from the model's own chat template: Qwen3's gives today's tokens; another template is followed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeval.core import prompts
from edgeval.core.quants import WeightQuant
from edgeval.edges import gguf_info, tasks
from edgeval.edges.store import Store
from edgeval.llama import engine, synth
from edgeval.running import sweep

QUESTIONS = [
    ("What is 2 + 2?", tasks.MATH_INSTRUCTION),
    ("Ünïcode — naïve café, 数学, and a $\\frac{1}{2}$ fraction?", ""),
    ("Line one\nline two\n\n  indented <tag> & 'quotes' \"too\"", "Put the answer within \\boxed{}."),
]

# A different format a fine-tune might carry (Alpaca-like), using loopcontrols and tojson like real templates do.
ALPACA = (
    "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
    "### {{ m.role | capitalize }}:\n{{ m.content }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)
# Qwen3-2507 Thinking opens the reasoning in the prompt whatever enable_thinking says; Instruct never thinks.
THINKING_2507 = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
INSTRUCT_2507 = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize(("question", "instruction"), QUESTIONS)
def test_qwen3_template_renders_the_built_in_format(question: str, instruction: str, thinking: bool) -> None:
    chat = prompts.ChatFormat(prompts.qwen3_template())
    assert chat.prompt(question, instruction, thinking=thinking) == prompts.chat_prompt(
        question, instruction, thinking=thinking
    )


def test_a_file_without_a_template_gets_the_built_in_format_and_says_so() -> None:
    assert prompts.ChatFormat(None).prompt("q", thinking=False) == prompts.chat_prompt("q", thinking=False)
    assert prompts.ChatFormat(None).source == prompts.BUILT_IN
    assert prompts.ChatFormat(prompts.qwen3_template()).source == prompts.FROM_FILE


def test_templates_get_loopcontrols_tojson_and_raise_exception() -> None:
    assert prompts.ChatFormat(ALPACA).prompt("Hi") == "### User:\nHi\n\n### Response:\n"
    shown = prompts.render("{{ messages | tojson }}", [{"role": "user", "content": "café <b>"}])
    assert json.loads(shown) == [{"role": "user", "content": "café <b>"}] and "café <b>" in shown
    with pytest.raises(prompts.TemplateError, match="only user turns"):
        prompts.render("{{ raise_exception('only user turns') }}", [{"role": "user", "content": "x"}])
    with pytest.raises(prompts.TemplateError, match="does not parse"):
        prompts.render("{% for %}", [])


def test_the_sandbox_refuses_unsafe_attribute_access() -> None:
    with pytest.raises(prompts.TemplateError):
        prompts.render("{{ ''.__class__.__mro__[1].__subclasses__() }}", [])


def test_which_templates_open_the_reasoning_themselves() -> None:
    assert prompts.ChatFormat(THINKING_2507).opens_reasoning(thinking=False)
    assert not prompts.ChatFormat(INSTRUCT_2507).opens_reasoning(thinking=True)
    assert not prompts.ChatFormat(prompts.qwen3_template()).opens_reasoning(thinking=True)
    assert not prompts.ChatFormat(prompts.qwen3_template()).opens_reasoning(thinking=False)


def test_a_qwen3_file_gives_the_same_tokens_as_the_built_in_format(tiny_models: dict[WeightQuant, Path]) -> None:
    path = tiny_models[WeightQuant.Q8_0]
    header = gguf_info.read_local(path)
    assert header.chat_template == prompts.qwen3_template()
    chat = prompts.ChatFormat(header.chat_template)
    with engine.Model(path, engine.LoadOptions(vocab_only=True)) as vocab:
        for question, instruction in QUESTIONS:
            for thinking in (True, False):
                built_in = vocab.tokenize(prompts.chat_prompt(question, instruction, thinking=thinking))
                assert vocab.tokenize(chat.prompt(question, instruction, thinking=thinking)) == built_in


def test_a_run_follows_the_files_own_template(tmp_path: Path) -> None:
    """Same weights, two templates: the prompt lengths llama.cpp saw differ as the templates do."""
    task = tmp_path / "quiz.jsonl"
    task.write_text(json.dumps({"question": "What is 12 + 30?", "answer": "42"}) + "\n")
    base = synth.SynthSpec(name="templated", n_layer=1, n_ff=256)
    seen: dict[str, tuple[int, str]] = {}
    for label, template in [("alpaca", ALPACA), ("none", "")]:
        model = synth.build(synth.SynthSpec(**{**base.__dict__, "chat_template": template}), WeightQuant.Q8_0,
                            tmp_path / "models")  # fmt: skip
        spec = sweep.RunSpec(model, label, str(task), budget_tokens=4, limit=1)
        with Store(tmp_path / f"{label}.db") as store:
            sweep.run(spec, store)
            row = store.config(1)
            seen[label] = (store.samples(1)[0].prompt_tokens, row["prompt_format"])
        chat = prompts.ChatFormat(template or None)
        with engine.Model(model, engine.LoadOptions(vocab_only=True)) as vocab:
            expected = len(vocab.tokenize(chat.prompt("What is 12 + 30?", tasks.MATH_INSTRUCTION)))
        assert seen[label][0] == expected
    assert seen["alpaca"][1] == prompts.FROM_FILE and seen["none"][1] == prompts.BUILT_IN
    assert seen["alpaca"][0] != seen["none"][0]
