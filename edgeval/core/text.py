"""Text from files and models, made safe to show: the one place that decides how a string a stranger wrote — a GGUF
header's name, a catalog entry, a task's question, a model's answer — reaches a terminal or a report.

A terminal obeys control characters: ESC starts sequences that clear the screen, retitle the window or recolour
what follows, and C1 codes and bidirectional overrides do the like. `printable` writes each as its Python escape
(`\\x1b`, `\\u202e`), so the text is shown, never obeyed. `markdown_text` also escapes what Markdown would read as
syntax (a `|` that ends a table cell, a `*` or backtick that starts emphasis or code). rich markup is the terminal
face's own concern (`faces.ui.shown`). `--json` needs none of this: JSON escapes control characters itself.
"""

from __future__ import annotations

import re

# Every C0 and C1 control character and DEL, the line and paragraph separators, and the bidirectional embeddings,
# overrides and isolates (the "trojan source" characters); `lines` keeps a newline and a tab.
_OTHERS = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_OTHERS}]")
_UNSAFE_KEEPING_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHERS}]")

# What Markdown reads as syntax inside a line: a table cell's end, emphasis, code, links, images, HTML, entities,
# strike-through. An underscore inside a word (`Q4_K_M`) is no emphasis and is left as it is.
_MARKDOWN = re.compile(r"[\\`*\[\]<>|~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def printable(value: object, *, lines: bool = False) -> str:
    """`value` as text a terminal shows and never obeys: each control character written as its escape (`\\x1b`,
    `\\r`, `\\u202e`); with `lines`, newlines and tabs are kept (a model's answer, a template)."""
    return (_UNSAFE_KEEPING_LINES if lines else _UNSAFE).sub(_escape, str(value))


def markdown_text(value: object) -> str:
    """`value` as literal text on one line of Markdown (a table cell, a list item, a heading): control characters
    escaped as `printable` does, Markdown's syntax characters backslash-escaped."""
    return _MARKDOWN.sub(lambda m: "\\" + m.group(), printable(value))
