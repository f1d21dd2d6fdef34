"""A model's chat template rendered under limits: in a helper process (`bounded`), within a deadline, a memory cap
and a cap on its output, once per template and mode rather than once per question.

A chat template comes from whoever published the GGUF: jinja's sandbox stops it reading what it must not, but not
from looping (`range()` is capped, nesting is not), allocating gigabytes or computing `10 ** 10**7` in C. So the
template is rendered in a child process with the question replaced by a placeholder; the result (the frame) is
checked against two probe questions, and each real question is then put in the frame's place in this process — the
cost per question is a string replacement. A template that transforms the question beyond trimming it is rendered
per question in the child, under the same limits. A template past a limit, or one that leaves the question out,
raises `TemplateError` naming its fault (a configuration fails in one line; a comparison goes on without it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from edgeval.core import bounded
from edgeval.core.errors import EdgevalError


class TemplateError(EdgevalError):
    """A model's chat template that cannot be rendered."""

    hint = "the GGUF's tokenizer.chat_template is broken; fix it with gguf's editor, or use another file"


DEADLINE_S = 5.0  # a real template renders a prompt in milliseconds
MEMORY_CAP = 256 << 20  # bytes of address space a render may add to the child (real templates need kilobytes)
OUTPUT_CAP = 1 << 20  # characters a template may write around the question (real ones write a few thousand)
PLACEHOLDER = "\ue000edgeval-question\ue001"  # private-use characters: never in a task's text
# What the frame must reproduce with the question in the placeholder's place: spaces and lines at both ends, markup,
# quotes, braces and non-ASCII text.
PROBES = (" \n Probe <1> & 'two' \"three\" {{ x }} ü — 数\n\n", "p")
EXACT, TRIMMED, EACH = "exact", "trimmed", "each"  # the question as it is, stripped (jinja's `trim`), or rendered


@dataclass(frozen=True)
class Frame:
    """A template's prompt around the placeholder, and how a question takes the placeholder's place."""

    text: str
    mode: str

    def fill(self, user: str) -> str:
        return self.text.replace(PLACEHOLDER, user.strip() if self.mode == TRIMMED else user)


@functools.cache
def _helper() -> bounded.Helper:
    return bounded.Helper("edgeval.core.rendering")


def warm() -> None:
    """Start the rendering helper now (a worker waiting for its work), not at the first prompt."""
    _helper().start()


def warm_soon() -> None:
    """Start the rendering helper from a thread of its own: the caller goes on meanwhile, and its first prompt
    waits for the start where it is not done yet (the helper's lock)."""
    helper = _helper()  # made here, once: never by two threads at a time

    def start() -> None:
        with contextlib.suppress(Exception):  # started again at the first prompt, which tells what failed
            helper.start()

    threading.Thread(target=start, name="edgeval-template-helper", daemon=True).start()


def _ask(request: dict[str, Any]) -> dict[str, Any]:
    reply = _helper().ask(request, DEADLINE_S)
    if reply == bounded.LATE:
        raise TemplateError(f"the chat template took longer than {DEADLINE_S:g} s to render one prompt")
    if isinstance(reply, str) or reply.get("error") == "memory":
        raise TemplateError(f"the chat template needed more than {MEMORY_CAP >> 20} MiB to render one prompt")
    if "error" in reply:
        raise TemplateError(str(reply["error"]))
    return reply


@functools.lru_cache(maxsize=32)
def _frame(template: str, thinking: bool, bos: str, eos: str) -> Frame | TemplateError:
    try:
        reply = _ask({"template": template, "thinking": thinking, "bos": bos, "eos": eos})
    except TemplateError as exc:
        return exc  # kept: a broken template fails at once the next time, not after the deadline again
    return Frame(reply["frame"], reply["mode"])


def prompt(template: str, user: str, *, thinking: bool, bos: str = "", eos: str = "") -> str:
    """One user turn (`user`) and the start of the assistant's, through `template`, under the limits."""
    frame = _frame(template, thinking, bos, eos)
    if isinstance(frame, TemplateError):
        raise TemplateError(frame.message)
    if frame.mode != EACH:
        return frame.fill(user)
    request = {"template": template, "thinking": thinking, "bos": bos, "eos": eos, "content": user}
    return str(_ask(request)["text"])


# ---------------------------------------------------------------- the child


def _raise(message: str) -> None:
    raise TemplateError(f"the chat template refused the conversation: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kwargs: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kwargs)


@functools.lru_cache(maxsize=16)
def _compiled(template: str) -> Any:
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"the chat template does not parse (line {exc.lineno}: {exc.message})") from None


def render(
    template: str,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
    enable_thinking: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    cap: int | None = None,
) -> str:
    """A conversation through a jinja chat template, as transformers' apply_chat_template renders it; with `cap`,
    stopped once it writes more than that many characters (the child's renders)."""
    from jinja2 import TemplateError as JinjaError

    variables = {
        "messages": messages, "add_generation_prompt": add_generation_prompt, "enable_thinking": enable_thinking,
        "bos_token": bos_token, "eos_token": eos_token, "tools": None,
    }  # fmt: skip
    parts, written = [], 0
    try:
        for part in _compiled(template).generate(**variables):
            written += len(part)
            if cap is not None and written > cap:
                raise TemplateError(f"the chat template wrote more than {cap:,} characters for one prompt")
            parts.append(part)
    except JinjaError as exc:
        raise TemplateError(f"the chat template failed to render ({exc})") from None
    return "".join(parts)


def _render(request: dict[str, Any], content: str, cap: int) -> str:
    """The template with one user turn holding `content`, under the output cap."""
    return render(request["template"], [{"role": "user", "content": content}], enable_thinking=request["thinking"],
                  bos_token=request["bos"], eos_token=request["eos"], cap=cap)  # fmt: skip


def _frame_of(request: dict[str, Any]) -> dict[str, Any]:
    frame = _render(request, PLACEHOLDER, OUTPUT_CAP)
    if PLACEHOLDER not in frame:
        what = "renders nothing" if not frame.strip() else "leaves the question out of the prompt"
        raise TemplateError(f"the chat template {what}")
    rendered = [_render(request, probe, OUTPUT_CAP + 4 * len(probe)) for probe in PROBES]
    for mode in (EXACT, TRIMMED):
        if all(Frame(frame, mode).fill(p) == out for p, out in zip(PROBES, rendered, strict=True)):
            return {"frame": frame, "mode": mode}
    return {"frame": frame, "mode": EACH}


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    try:
        if "content" in request:
            content = request["content"]
            return {"text": _render(request, content, OUTPUT_CAP + 4 * len(content))}
        return _frame_of(request)
    except TemplateError as exc:
        return {"error": exc.message}
    except RecursionError:
        return {"error": "the chat template recurses without end"}
    except MemoryError:
        raise
    except Exception as exc:  # the template's own fault (e.g. a number too large to print): named, not raised
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return {"error": f"the chat template failed to render ({type(exc).__name__}: {first})"}


def serve() -> None:
    """The child: jinja2 imported once, then one render per request under the memory cap."""
    import jinja2.sandbox  # noqa: F401  (imported before the cap: what the child holds then is not a render's)

    bounded.serve(_handle, MEMORY_CAP)
