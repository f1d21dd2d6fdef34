"""Chat templates rendered under limits: a deadline, a memory cap and an output cap, in a helper process, once per
template; a template past a limit fails its configuration in one line and a comparison goes on without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeval.core import prompts, rendering
from edgeval.faces import demo

from . import ggufcraft
from .conftest import write_catalog

REPO = Path(__file__).resolve().parents[1]
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ messages[0].content }}"
USER = "{{ messages[0].content }}"


@pytest.mark.parametrize(
    ("template", "fault"),
    [
        ("{{ ('x' * 300000000)[:10] }}" + USER, "needed more than 256 MiB"),
        ("{{ 'x' * 100000000000 }}" + USER, "needed more than 256 MiB"),
        ("{% for i in range(90000) %}{{ 'abcdefghijklmnop' }}{% endfor %}" + USER, "wrote more than 1,048,576"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}" + USER, "recurses without end"),
        ("{% if false %}x{% endif %}", "renders nothing"),
        ("<|im_start|>assistant\n", "leaves the question out"),
        ("{{ (10 ** 5000)|string }}" + USER, "ValueError: Exceeds the limit"),
    ],
)
def test_a_template_past_a_limit_is_named_in_one_line(template: str, fault: str) -> None:
    started = time.monotonic()
    with pytest.raises(prompts.TemplateError, match=fault) as caught:
        prompts.ChatFormat(template).prompt("What is 2 + 2?")
    assert "\n" not in caught.value.message and time.monotonic() - started < rendering.DEADLINE_S + 5


def test_a_template_that_never_ends_is_stopped_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendering, "DEADLINE_S", 1.0)
    started = time.monotonic()
    with pytest.raises(prompts.TemplateError, match="took longer than 1 s"):
        prompts.ChatFormat(LOOP + " ").prompt("q")
    assert time.monotonic() - started < 10
    # The helper is started again for the next template, and a broken template fails at once the second time.
    assert prompts.ChatFormat(prompts.qwen3_template()).prompt("q") == prompts.chat_prompt("q")
    started = time.monotonic()
    with pytest.raises(prompts.TemplateError, match="took longer"):
        prompts.ChatFormat(LOOP + " ").prompt("another question")
    assert time.monotonic() - started < 0.5


TRIM = "{% for m in messages %}<s>[{{ m.role }}] {{ m.content | trim }}</s>{% endfor %}[assistant]"
JSON = "{{ messages | tojson }}<|assistant|>"  # the question escaped: rendered per question, under the limits
questions = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


@settings(max_examples=40, deadline=None)
@given(questions, st.booleans())
def test_a_question_in_the_frame_is_what_rendering_it_gives(question: str, thinking: bool) -> None:
    for template in (prompts.qwen3_template(), TRIM, JSON):
        expected = prompts.render(template, [{"role": "user", "content": question}], enable_thinking=thinking)
        assert prompts.ChatFormat(template).prompt(question, thinking=thinking) == expected


def test_a_template_is_rendered_once_not_once_per_question() -> None:
    chat = prompts.ChatFormat(prompts.qwen3_template().replace("<|im_end|>", "<|im_end|>", 1) + "\n")
    before = rendering._frame.cache_info().misses
    started = time.monotonic()
    for i in range(2000):
        chat.prompt(f"question {i}", "instruction")
    assert rendering._frame.cache_info().misses == before + 1 and time.monotonic() - started < 1.0


def test_a_compare_with_a_template_that_never_ends_ranks_the_good_model_in_time(tmp_path: Path) -> None:
    """Acceptance: one model's template loops forever; the comparison finishes within --time, that model failed in
    one line, the other ranked."""
    sources = {s.stem: s for s in demo.family_sources()}
    bad = ggufcraft.load(sources["edgeval-tiny-s"])
    bad = bad.with_kv("tokenizer.chat_template", ggufcraft.Value(ggufcraft.STRING, LOOP))
    looping = ggufcraft.write(bad, tmp_path / "looping.gguf")
    entries = {
        "looping": {"params": 1, "files": [{"quant": "F16", "path": str(looping)}]},
        "good": {"params": 1, "files": [{"quant": "F16", "path": str(sources["edgeval-tiny-s"])}]},
    }
    catalog = write_catalog(tmp_path / "c.toml", entries)
    args = ["compare", "--budget", "1GB", "--task", "arith", "--models", "looping,good", "--kv", "f16",
            "--budget-tokens", "16", "--k", "1", "--no-repack", "--catalog", str(catalog), "--db",
            str(tmp_path / "c.db"), "--time", "40s", "--limit", "8", "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGEVAL_HOME": str(tmp_path / "home")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "edgeval", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 40 + 30
    (data,) = json.loads(done.stdout)
    (failure,) = data["failures"]
    assert failure.startswith("looping") and "took longer than" in failure and "\n" not in failure
    assert {r["model"] for r in data["rows"]} == {"good:F16"} and data["recommended"]["model"] == "good:F16"
