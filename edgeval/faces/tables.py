"""One table layout, several printers: a table is laid out once — its columns and rows of cells — and printed by
rich on the terminal or as GitHub markdown in a report.

A column may belong to one face only (the terminal keeps to 80 columns; the report keeps everything), and a cell may
carry a shorter text and a style for the terminal. `comparison_layout` is compare's results table, the one table
both faces print."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from edgeval.core.text import markdown_text, printable
from edgeval.core.units import format_bytes, format_seconds, format_tokens

if TYPE_CHECKING:  # types only: the comparison layer loads llama.cpp, which `plan` and `models` never need
    from rich.table import Table

    from edgeval.comparison.verdict import Comparison, Row
    from edgeval.edges.results import ConfigResult

Face = Literal["terminal", "markdown"]
BOTH: frozenset[Face] = frozenset(("terminal", "markdown"))
TERMINAL: frozenset[Face] = frozenset(("terminal",))
MARKDOWN: frozenset[Face] = frozenset(("markdown",))


@dataclass(frozen=True)
class Column:
    name: str
    align: Literal["left", "right", "center"] = "left"
    faces: frozenset[Face] = BOTH
    short: str | None = None  # the terminal's header, where it differs


@dataclass(frozen=True)
class Cell:
    text: str
    short: str | None = None  # the terminal's text, where it differs
    style: str | None = None  # a rich style, on the terminal


@dataclass(frozen=True)
class Layout:
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    styles: tuple[str | None, ...] = ()  # each row's rich style, on the terminal

    @classmethod
    def of(
        cls, columns: Sequence[Column | str], rows: Iterable[Sequence[Cell | str]], styles: Sequence[str | None] = ()
    ) -> Layout:
        """A layout from plain names and texts (a `str` column is left-aligned for both faces)."""
        cols = tuple(c if isinstance(c, Column) else Column(c) for c in columns)
        cells = tuple(tuple(c if isinstance(c, Cell) else Cell(c) for c in row) for row in rows)
        assert all(len(row) == len(cols) for row in cells), "every row has a cell for every column"
        return cls(cols, cells, tuple(styles))

    def _shown(self, face: Face) -> list[int]:
        return [i for i, column in enumerate(self.columns) if face in column.faces]


def markdown(layout: Layout) -> list[str]:
    """The table as GitHub-flavoured markdown lines, every cell literal text (`markdown_text`: a `|`, a backtick or
    a control character in a name is shown, not obeyed)."""
    shown = layout._shown("markdown")
    lines = [
        "| " + " | ".join(layout.columns[i].name for i in shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    lines += ["| " + " | ".join(markdown_text(row[i].text) for i in shown) + " |" for row in layout.rows]
    return lines


def rich_table(
    layout: Layout, *, no_wrap: bool = False, title: str | None = None, title_justify: str = "center"
) -> Table:
    """The table for the terminal: the terminal's columns, short texts and styles (each cell a `Text`, so no markup
    is read, its control characters escaped by `printable`)."""
    from rich.table import Table
    from rich.text import Text

    shown = layout._shown("terminal")
    table = Table(title=Text(printable(title), style="table.title") if title else None, title_justify=title_justify)  # type: ignore[arg-type]
    for i in shown:
        column = layout.columns[i]
        table.add_column(column.short if column.short is not None else column.name, justify=column.align,
                         no_wrap=no_wrap)  # fmt: skip
    for n, row in enumerate(layout.rows):
        texts = [
            Text(printable(c.short if c.short is not None else c.text), style=c.style or "")
            for c in (row[i] for i in shown)
        ]
        table.add_row(*texts, style=layout.styles[n] if n < len(layout.styles) else None)
    return table


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def kv_text(res: ConfigResult) -> str:
    """`f16/f16`, or `f16/f16, window 2k` with a KV window."""
    return f"{res.kv_type_k}/{res.kv_type_v}" + (f", window {format_tokens(res.kv_window)}" if res.kv_window else "")


def answer_time_text(res: ConfigResult) -> str:
    """`0.4 s, 0.6 s, 1.2 s`: seconds per answer, median, 90th percentile and worst case (— where not measured)."""
    shown = (res.answer_s, res.answer_s_p90, res.answer_s_worst)
    return ", ".join("—" if x is None else format_seconds(x) for x in shown) if res.answer_s_worst is not None else "—"


def _standing(c: Comparison, r: Row, tied: set[str]) -> tuple[str, str, str | None]:
    """A row's standing in words, its mark on the terminal and the mark's style."""
    if r.key == c.recommended:
        return "recommended", "◆", "green"
    if r.key in tied:
        return "tied with the best", "=", None
    if r.status == "too_slow" and r.result.answer_s_worst is not None:
        return f"too slow (worst case {format_seconds(r.result.answer_s_worst)})", *_MARKS["too_slow"]
    behind = c.row(r.eliminated_by)
    status = f"dropped (behind {behind.label if behind else r.eliminated_by})" if r.eliminated_by else r.status
    return status, *_MARKS.get(r.status, ("", None))


def _comparison_cells(c: Comparison, r: Row, tied: set[str], kld_column: bool, time_column: bool) -> list[Cell]:
    res = r.result
    if r.status == "failed":
        accuracy = Cell(f"{res.status}: {res.message or ''}", short="failed", style="red")
    else:
        accuracy = Cell(f"{_pct(res.accuracy_maj)} ({_pct(res.ci95[0])}–{_pct(res.ci95[1])}, n={res.n_done})",
                        short=f"{100 * res.accuracy_maj:.0f}% {100 * res.ci95[0]:.0f}–{100 * res.ci95[1]:.0f}")  # fmt: skip
    status, mark, style = _standing(c, r, tied)
    source = {"measured": "", "calibrated": "~", "predicted": "?"}[r.memory_source]
    memory = format_bytes(r.memory_bytes)
    kld = [Cell(f"{r.kld:.3g}", short=f"{r.kld:.2g}") if r.kld is not None else Cell("")] if kld_column else []
    median = format_seconds(res.answer_s) if res.answer_s is not None else ""
    answer = [Cell(answer_time_text(res), short=median)] if time_column else []
    return [Cell(r.band), Cell(r.model), Cell(kv_text(res), short=res.kv_label), Cell(str(res.budget_tokens)),
            Cell(str(res.k)), Cell(f"{memory} {r.memory_source}", short=memory + source), accuracy,
            Cell(_pct(res.accuracy_avg)), Cell(_pct(res.forced_share)), *kld, *answer, Cell(str(res.n_done)), Cell(status),
            Cell("★" if r.pareto else ""), Cell(mark + ("★" if r.pareto else ""), style=style)]  # fmt: skip


_MARKS = {"eliminated": ("✗", "dim"), "too_slow": ("✗", "dim"), "failed": ("!", "red"), "running": ("…", None),
          "done": ("", None)}  # fmt: skip


def comparison_layout(c: Comparison, *, kld_column: bool, time_column: bool = True) -> Layout:
    """Compare's results: every configuration with its memory, accuracy (interval and n), seconds per answer and
    standing. The terminal shows model to n and a mark (◆ recommended, = tied, ✗ dropped, ★ frontier), the median
    seconds per answer where `time_column`; the report adds the footprint band, avg@k, the forced share, the 90th
    percentile and worst case of seconds per answer and the standing in words."""
    columns = [Column("band", faces=MARKDOWN), Column("model"), Column("KV"), Column("budget", "right"),
               Column("k", "right"), Column("memory", "right"),
               Column("maj@k (95% CI, n)", "right", short="maj@k 95% CI"), Column("avg@k", faces=MARKDOWN),
               Column("forced", faces=MARKDOWN), *([Column("KLD", "right")] if kld_column else []),
               *([Column("s/answer (median, p90, worst)", "right", short="s/answer")] if time_column else []),
               Column("n", "right", faces=TERMINAL), Column("status", faces=MARKDOWN),
               Column("Pareto", faces=MARKDOWN), Column("", faces=TERMINAL)]  # fmt: skip
    tied = set(c.tied)
    rows = [_comparison_cells(c, r, tied, kld_column, time_column) for r in c.rows]
    return Layout.of(columns, rows, ["dim" if r.status in ("eliminated", "too_slow") else None for r in c.rows])
