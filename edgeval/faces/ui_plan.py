"""`plan`'s tables where generations meet: the largest model per generation and precision, and the arithmetic that
decides what a budget buys each generation — KV per 1,000 tokens, recurrent state per vote, the longest budget
and the most votes its largest model leaves room for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.markup import escape
from rich.table import Table

from edgeval.core.text import printable
from edgeval.core.units import format_bytes, format_tokens

if TYPE_CHECKING:
    from edgeval.comparison.plan import Config, Plan


def _table(title: str) -> Table:
    """As plan's main table: no vertical rules, so the numbers keep their room at 80 columns."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)


def summary_table(result: Plan) -> Table:
    """The largest model per weight precision — per generation and precision when several generations fit, with
    each hybrid's recurrent state per vote."""
    mixed = result.mixed
    hybrid = any(c.ref.model.arch.hybrid for c in result.fits)
    per = "generation and weight precision" if mixed else "weight precision"
    table = _table(f"Largest model per {per} within {format_bytes(result.budget_bytes)}")
    names = [n for n in ("generation", "bits", "model", "weights", "state/vote", "ctx × k", "total")
             if (n != "generation" or mixed) and (n != "state/vote" or hybrid)]  # fmt: skip
    for name in names:
        table.add_column(name, justify="right" if name in ("weights", "state/vote", "total") else "left",
                         no_wrap=name != "model", overflow="fold")  # fmt: skip
    generations = sorted({c.ref.model.generation for c in result.fits}) if mixed else [None]
    for generation in generations:
        best = result.largest_per_precision(generation)
        for i, (bits, c) in enumerate(best.items()):
            cells = _summary_cells(c, bits, first=i == 0)
            table.add_row(*(cells[n] for n in names), end_section=i == len(best) - 1)
    return table


def _summary_cells(c: Config, bits: int, *, first: bool) -> dict[str, str]:
    state = c.ref.model.arch.state_bytes_per_seq
    return {
        "generation": c.ref.model.generation if first else "", "bits": str(bits),
        "model": escape(printable(c.ref.label)), "weights": format_bytes(c.footprint.weight_bytes),
        "state/vote": format_bytes(state) if state else "—", "ctx × k": f"{c.ctx} × {c.k}",
        "total": format_bytes(c.footprint.total_bytes),
    }  # fmt: skip


def side_by_side_table(result: Plan) -> Table | None:
    """Each generation's largest fitting model and what its arithmetic buys in the budget (None: no hybrid was
    considered)."""
    if not result.generations:
        return None
    first = result.generations[0]
    table = _table(f"Generations side by side within {format_bytes(result.budget_bytes)}")
    table.caption = (
        f"KV/1k: KV cache per 1,000 tokens at {first.kv_type.value}. max budget: the most tokens one vote may write "
        f"(no KV window, up to the native context). max k: the most votes of {format_tokens(first.votes_budget)} "
        "tokens each after the prompt."
    )
    table.caption_justify = "left"
    names = ("generation", "largest model", "weights", "KV/1k", "state/vote", "max budget", "max k")
    for name in names:
        table.add_column(name, justify="left" if name in ("generation", "largest model") else "right",
                         no_wrap=name != "largest model", overflow="fold")  # fmt: skip
    for row in result.generations:
        table.add_row(
            row.generation, escape(printable(row.ref.label)), format_bytes(row.ref.weight_bytes), format_bytes(row.kv_per_1k),
            format_bytes(row.state_per_vote) if row.state_per_vote else "—", f"{row.longest_budget:,}",
            str(row.most_votes),
        )  # fmt: skip
    return table
