"""Markdown reports with plots of accuracy against memory and against seconds per answer, rendered from stored
results only.

The same stored results always give the same bytes: rows are sorted, the date is the newest result's, and the
plot is written without a timestamp or software tag. Items of private tasks (GPQA) never appear: a report holds
configurations and scores, not questions.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeval.comparison.verdict import OUT, Comparison, Row, pareto
from edgeval.core.text import markdown_text, printable
from edgeval.core.units import format_bytes, format_tokens
from edgeval.edges.store import Store
from edgeval.faces import tables


@dataclass(frozen=True)
class Written:
    """Files a report wrote."""

    markdown: Path
    plot: Path | None
    kld_plot: Path | None = None
    time_plot: Path | None = None


def report_name(task: str, budget: int | None) -> str:
    """`arith-1GB`: a file-system-safe name from the task and budget."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(task).stem if task.endswith(".jsonl") else task).strip("-")
    return f"{stem}-{budget / 1e9:g}GB" if budget else stem


def _plotted(name: str) -> str:
    """A name as matplotlib draws it literally: control characters escaped, `$` not starting mathtext."""
    return printable(name).replace("$", r"\$")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return tables.markdown(tables.Layout.of(header, rows))


def _provenance(store: Store, comparison: Comparison) -> tuple[list[str], str]:
    ids = [r.result.config_id for r in comparison.rows]
    if not ids:
        return [], "no results"
    marks = ",".join("?" * len(ids))
    configs = store.db.execute(f"SELECT * FROM configs WHERE id IN ({marks}) ORDER BY id", ids).fetchall()
    run_ids = sorted({c["run_id"] for c in configs if c["run_id"] is not None})
    runs = store.db.execute(
        f"SELECT * FROM runs WHERE id IN ({','.join('?' * len(run_ids))}) ORDER BY id", run_ids
    ).fetchall()
    date = max(str(c["updated_at"]) for c in configs)
    lines: list[str] = []
    seen = set()
    rows = []
    for run in runs:
        hardware = json.loads(run["hardware"])
        key = (
            hardware.get("cpu"),
            run["backend"],
            run["edgeval_version"],
            run["llama_cpp_python"],
            run["llama_cpp_build"],
        )
        if key in seen:
            continue
        seen.add(key)
        ram = hardware.get("ram_bytes")
        machine = f"{hardware.get('cpu')} ({hardware.get('cores')} cores, {format_bytes(ram) if ram else '?'} RAM)"
        rows.append([machine, str(run["backend"]), str(run["edgeval_version"]), str(run["llama_cpp_python"]),
                     str(run["llama_cpp_build"])])  # fmt: skip
    lines += _table(["hardware", "backend", "edgeval", "llama-cpp-python", "llama.cpp build"], rows)
    seeds = sorted({int(c["seed"]) for c in configs})
    lines += ["", f"Seed{'s' if len(seeds) > 1 else ''}: {', '.join(map(str, seeds))}. "
              f"Sampling: {configs[0]['sampling']}. Thinking: {'on' if configs[0]['thinking'] else 'off'}."]  # fmt: skip
    models = sorted({(str(c["model"]), str(c["model_sha256"]), Path(str(c["model_path"])).name) for c in configs})
    lines += ["", *_table(["model", "file", "sha256"], [[m, f, f"{h[:16]}…"] for m, h, f in models])]
    return lines, date


def _grid(comparison: Comparison) -> list[str]:
    rows = comparison.rows
    quants = sorted({r.weight_quant for r in rows})
    kv = sorted({tables.kv_text(r.result) for r in rows})
    budgets = sorted({r.result.budget_tokens for r in rows})
    ks = sorted({r.result.k for r in rows})
    models = sorted({r.model.split(":")[0] for r in rows})
    n_items = sorted({r.result.n_items for r in rows})
    return [
        f"- models: {markdown_text(', '.join(models))}",
        f"- weight quantizations: {', '.join(quants)}",
        f"- KV cache (K/V): {', '.join(kv)}",
        f"- token budgets: {', '.join(map(str, budgets))}",
        f"- votes k: {', '.join(map(str, ks))}",
        f"- questions per configuration: {', '.join(map(str, n_items))}",
        f"- configurations: {len(rows)}",
    ]


def _results(comparison: Comparison) -> list[str]:
    timed = any(r.result.answer_s_worst is not None for r in comparison.rows)
    kld = any(r.kld is not None for r in comparison.rows)
    return tables.markdown(tables.comparison_layout(comparison, kld_column=kld, time_column=timed))


def _short(comparison: Comparison, key: str | None) -> str:
    row = comparison.row(key)
    return row.label if row else str(key)


def _statements(comparison: Comparison) -> list[str]:
    """The paired differences behind the recommendation, each with its simultaneous interval."""
    rows = []
    for s in comparison.statements:
        d = s.difference
        rows.append([_short(comparison, s.a), _short(comparison, s.b), s.about, f"{100 * d.mean:+.1f}",
                     f"{100 * d.low:+.1f} to {100 * d.high:+.1f}", str(d.n),
                     "yes" if d.decided else "no"])  # fmt: skip
    return _table(["a", "b", "about", "a − b (points)", "interval", "n", "decided"], rows)


def _nodes(comparison: Comparison) -> list[str]:
    """The Ray nodes that answered, each with its hardware, backend and versions, and how many questions."""
    answered: dict[int, int] = {}
    facts = {}
    for n in comparison.nodes:
        answered[n.node_id] = answered.get(n.node_id, 0) + n.items
        facts[n.node_id] = n.node
    rows = []
    for node_id in sorted(facts):
        node, hw = facts[node_id], facts[node_id].hardware
        ram = hw.get("ram_bytes")
        machine = f"{node.cpu} ({hw.get('cores')} cores, {format_bytes(int(str(ram))) if ram else '?'} RAM)"
        rows.append([node.hostname, node.ip or "—", machine, node.backend, node.edgeval_version, node.llama_cpp_python,
                     node.llama_cpp_build, f"{answered[node_id]:,}"])  # fmt: skip
    return _table(["node", "address", "hardware", "backend", "edgeval", "llama-cpp-python", "llama.cpp build",
                   "questions answered"], rows)  # fmt: skip


def _node_speed(comparison: Comparison) -> list[str]:
    """Speed and peak memory per configuration and node: each node's own figures, never averaged across them."""
    labels = {r.result.config_id: r for r in comparison.rows}
    rows = []
    for n in sorted(comparison.nodes, key=lambda n: (labels[n.config_id].memory_bytes, n.config_id, n.node_id)):
        res = labels[n.config_id].result
        rows.append([labels[n.config_id].model, tables.kv_text(res), str(res.budget_tokens), n.node.hostname, str(n.items),
                     format_bytes(n.peak_rss_bytes) if n.peak_rss_bytes else "—",
                     f"{n.prompt_tokens_per_s:.0f}" if n.prompt_tokens_per_s else "—",
                     f"{n.decode_tokens_per_s:.1f}" if n.decode_tokens_per_s else "—",
                     f"{1000 * n.ttft_s:.0f} ms" if n.ttft_s is not None else "—",
                     f"{n.load_s:.2f} s" if n.load_s is not None else "—", n.repack_mode or "—",
                     str(n.parallel) if n.parallel else "—"])  # fmt: skip
    return _table(["model", "KV", "budget", "node", "questions", "peak RSS", "prompt tok/s",
                   "decode tok/s (all sequences)", "first token", "load", "repacking", "in flight"], rows)  # fmt: skip


def _speed(comparison: Comparison) -> list[str]:
    if comparison.nodes:
        return _node_speed(comparison)
    rows = []
    seen = set()
    for r in comparison.rows:
        res = r.result
        if res.status == "failed" or res.config_id in seen:
            continue
        seen.add(res.config_id)
        rows.append([r.model, tables.kv_text(res), str(res.budget_tokens),
                     f"{res.prompt_tokens_per_s:.0f}" if res.prompt_tokens_per_s else "—",
                     f"{res.decode_tokens_per_s:.1f}" if res.decode_tokens_per_s else "—",
                     f"{1000 * res.ttft_s:.0f} ms" if res.ttft_s is not None else "—",
                     f"{res.load_s:.2f} s" if res.load_s is not None else "—"])  # fmt: skip
    return _table(["model", "KV", "budget", "prompt tok/s", "decode tok/s (all sequences)", "first token", "load"],
                  rows)  # fmt: skip


def plot(comparison: Comparison, path: Path) -> Path | None:
    """Total memory (log scale) against accuracy, in the style of the study's figure, with the memory-accuracy
    frontier; None when nothing finished."""
    done = [r for r in comparison.rows if r.status not in OUT and r.result.n_done > 0]
    on = set(comparison.memory_frontier)
    return _scatter(comparison, done, [r for r in done if r.key in on], path, lambda r: r.memory_bytes / 1e9,
                    "total memory (GB, log scale)", "accuracy against memory")  # fmt: skip


def time_plot(comparison: Comparison, path: Path) -> Path | None:
    """Median seconds per answer (log scale) against accuracy, with its frontier: the configurations no other one
    beats by being both faster and more accurate; None when no finished configuration measured its speed."""
    done = [r for r in comparison.rows if r.status not in OUT and r.result.n_done > 0 and r.result.answer_s]
    marks = pareto([(r.result.answer_s or 0.0, r.result.accuracy_maj) for r in done])
    frontier = sorted((r for r, m in zip(done, marks, strict=True) if m), key=lambda r: r.result.answer_s or 0.0)
    return _scatter(comparison, done, frontier, path, lambda r: r.result.answer_s or 0.0,
                    "seconds per answer (median over the questions answered, log scale)",
                    "accuracy against seconds per answer")  # fmt: skip


def _scatter(
    comparison: Comparison, done: Sequence[Row], frontier: Sequence[Row], path: Path, x: Callable[[Row], float],
    xlabel: str, title: str,
) -> Path | None:  # fmt: skip
    """Accuracy (with its 95% interval) against `x` on a log scale: colour the model size, marker the weight
    precision, size the token budget; the tied set ringed, the dropped faded, the frontier a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    if not done:
        return None
    sizes = sorted({r.params for r in done})
    colours = plt.get_cmap("viridis")
    budgets = sorted({r.result.budget_tokens for r in done})
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for r in done:
        colour = colours(sizes.index(r.params) / max(len(sizes) - 1, 1))
        size = 30 + 90 * budgets.index(r.result.budget_tokens) / max(len(budgets) - 1, 1)
        accuracy, (low, high) = 100 * r.result.accuracy_maj, r.result.ci95
        faded = 0.25 if r.status == "eliminated" else 0.8
        ax.errorbar(x(r), accuracy, yerr=[[accuracy - 100 * low], [100 * high - accuracy]],
                    color=colour, alpha=faded * 0.6, linewidth=0.8, capsize=2, zorder=1)  # fmt: skip
        edge, width = _GENERATION_EDGES.get(r.generation, ("black", 0.4))
        ax.scatter(x(r), accuracy, s=size, color=colour, marker=_MARKERS.get(r.bits, "o"), alpha=faded,
                   edgecolors=edge, linewidths=width, zorder=2)  # fmt: skip
    tied = [r for r in done if r.key in comparison.tied]
    if tied:
        ax.scatter([x(r) for r in tied], [100 * r.result.accuracy_maj for r in tied], s=260,
                   facecolors="none", edgecolors="darkorange", linewidths=1.4, zorder=3)  # fmt: skip
    if frontier:
        xs, ys = [x(r) for r in frontier], [100 * r.result.accuracy_maj for r in frontier]
        ax.step(xs, ys, where="post", color="crimson", linewidth=1.2, label="Pareto frontier")
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="crimson", linewidths=1.2)
    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    if max(map(x, done)) < 10 * min(map(x, done)):  # within a decade the minor ticks are the only labels
        ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_ylim(-3, 103)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"maj@k accuracy on {_plotted(comparison.task)} (%)")
    ax.set_title(f"{_plotted(comparison.task)}: {title}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=_legend(done, sizes, colours, bool(frontier), bool(tied)), fontsize=8, loc="best",
              title="marker size: token budget", title_fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


_MARKERS = {16: "s", 8: "o", 6: "P", 5: "p", 4: "^", 3: "v", 2: "X", 32: "D"}  # weight bits -> marker
# The generations apart: the hybrid's markers ringed in a thick magenta edge (colour and shape keep size and bits).
_GENERATION_EDGES = {"qwen3.5": ("magenta", 1.8)}
_GENERATION_NAMES = {"qwen3": "Qwen3 (transformer)", "qwen3.5": "Qwen3.5/3.6 (hybrid)"}


def _legend(done: Sequence[Row], sizes: Sequence[int], colours: Any, frontier: bool, tied: bool) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours(i / max(len(sizes) - 1, 1)), marker="o", linestyle="",
                      label=f"{p / 1e9:.3g}B params" if p >= 1e8 else f"{p / 1e6:.3g}M params")
               for i, p in enumerate(sizes)]  # fmt: skip
    handles += [Line2D([], [], color="grey", marker=_MARKERS.get(b, "o"), linestyle="", label=f"{b}-bit")
                for b in sorted({r.bits for r in done}, reverse=True)]  # fmt: skip
    generations = sorted({r.generation for r in done})
    if generations != ["qwen3"]:  # several, or one that is not the study's
        for g in generations:
            edge, width = _GENERATION_EDGES.get(g, ("black", 0.4))
            handles.append(Line2D([], [], color="lightgrey", marker="o", markeredgecolor=edge, markeredgewidth=width,
                                  linestyle="", label=_GENERATION_NAMES.get(g, g)))  # fmt: skip
    if frontier:
        handles.append(Line2D([], [], color="crimson", label="Pareto frontier"))
    if tied:
        handles.append(Line2D([], [], color="darkorange", marker="o", markerfacecolor="none", linestyle="",
                              label="tied with the best"))  # fmt: skip
    return handles


def _kld_label(run: sqlite3.Row) -> str:
    """`tiny-s:Q2_K, KV q8_0/q8_0, window 32`: a KLD run's tested configuration (and what the reference kept, when
    not the default)."""
    from edgeval.core import kld

    window = f", window {format_tokens(int(run['kv_window']))}" if run["kv_window"] else ""
    kept = (int(run["top_k"]), int(run["max_k"]))
    note = "" if kept == (kld.TOP_K, kld.MAX_K) else f", kept {kept[0]}" + (f"–{kept[1]}" if kept[1] > kept[0] else "")
    return f"{run['tested_model']}, KV {run['kv_type_k']}/{run['kv_type_v']}{window}{note}"


def _nats(x: float) -> str:
    """A divergence with three significant digits (they span orders of magnitude)."""
    return f"{x:.3g}"


def _kld_section(runs: Sequence[sqlite3.Row], plot_file: str | None) -> list[str]:
    """Every stored `edgeval kld` run of the task: its figures, then by position, then the plot."""
    if not runs:
        return []
    rows = []
    for run in runs:
        ci = f" ({_nats(run['kld_ci_low'])}–{_nats(run['kld_ci_high'])})" if run["kld_ci_low"] is not None else ""
        speed = f"{run['tested_tokens_per_s']:.0f}" if run["tested_tokens_per_s"] else "—"
        rows.append([_kld_label(run), str(run["reference_model"]), str(run["n_traces"]), f"{run['tokens']:,}",
                     f"{_nats(run['mean_kld'])}{ci}", _nats(run["median_kld"]), _nats(run["p99_kld"]),
                     _pct(run["top1_agreement"]), f"{run['rest_mass']:.2g}", speed])  # fmt: skip
    lines = ["", "## KL divergence from a reference", "",
             "`edgeval kld`: each tested configuration teacher-forced on the reference configuration's own stored "
             "traces; KL(reference ‖ tested) per token in nats over the reference's most likely tokens (64, or up to "
             "1,024 where 64 leave over 0.1% of its probability outside) and the rest's mass — a lower bound, as "
             "tight as the mean mass left out is small — its 95% interval over traces, and how often the most "
             "likely token agrees.", "",
             *_table(["tested", "reference", "traces", "tokens", "mean KLD (95% CI)", "median", "p99", "top-1",
                      "mass left out", "scored tok/s"], rows), "", "By position in the trace (mean KLD, top-1 agreement):", ""]  # fmt: skip
    buckets = {run["id"]: json.loads(run["by_position"]) for run in runs}
    labels = list(dict.fromkeys(b["label"] for run in runs for b in buckets[run["id"]]))
    table = []
    for run in runs:
        mine = {b["label"]: b for b in buckets[run["id"]]}
        table.append([_kld_label(run), *(f"{_nats(mine[x]['mean_kld'])}, {_pct(mine[x]['top1_agreement'])}"
                                         if x in mine and mine[x]["tokens"] else "—" for x in labels)])  # fmt: skip
    lines += _table(["tested", *labels], table)
    if plot_file:
        lines += ["", f"![KL divergence against position in the trace]({plot_file})"]
    return lines


def kld_plot(runs: Sequence[sqlite3.Row], path: Path) -> Path | None:
    """Mean KLD against position in the trace, one line per stored KLD run; None when there is none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ticks: dict[float, str] = {}
    for run in runs:
        buckets = [b for b in json.loads(run["by_position"]) if b["tokens"]]
        xs = [(b["start"] + b["end"]) / 2 for b in buckets]
        ticks.update({x: b["label"] for x, b in zip(xs, buckets, strict=True)})
        ys = [b["mean_kld"] for b in buckets]
        line = ax.plot(xs, ys, marker="o", linewidth=1.2, label=_plotted(_kld_label(run)))[0]
        lows = [b["kld_ci95"][0] if b["kld_ci95"] else b["mean_kld"] for b in buckets]
        highs = [b["kld_ci95"][1] if b["kld_ci95"] else b["mean_kld"] for b in buckets]
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.08, linewidth=0)
    ax.set_xscale("log", base=2)
    # Quantizations give thousandths of a nat, a short window whole nats: linear near zero, logarithmic above.
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylim(bottom=0)
    ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("position in the trace (tokens; buckets on a log scale)")
    ax.set_ylabel("mean KL divergence (nats per token, symlog)")
    ax.set_title("KL divergence from the reference, by depth into the reasoning")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best", title="bands: 95% interval over traces", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def render(
    store: Store, comparison: Comparison, plot_file: str | None, kld_plot_file: str | None = None,
    time_plot_file: str | None = None,
) -> str:  # fmt: skip
    """The report's markdown text."""
    provenance, date = _provenance(store, comparison)
    task = markdown_text(comparison.task)  # a task file's name; every name below is escaped the same way
    mixed = any(r.generation != "qwen3" for r in comparison.rows)
    lines = [f"# edgeval report: {task}" + (f" within {comparison.budget_bytes / 1e9:g} GB" if comparison.budget_bytes else ""),
             "", f"Results as of {date}, from {len(comparison.rows)} configurations. Every figure below was "
             "measured on the machine named here. Memory is `measured` (the peak resident set of the configuration's "
             "own run), `calibrated` (the prediction for this budget and vote count, corrected by how far the run "
             "that produced its samples was from its own prediction) or `predicted`.", "", "## Provenance", "",
             *provenance, "", "## Grid", "", *_grid(comparison), "", "## Recommendation", ""]  # fmt: skip
    lines += [f"- {markdown_text(line)}" for line in comparison.recommendation]
    lines += ["", "## Results at equal footprint", "",
              "Rows are grouped into footprint bands; ★ marks the Pareto frontier of the point estimates (no other "
              "row needs no more memory, answers no slower — median seconds per answer, where measured — and is at "
              "least as accurate, one of them strictly); n is the questions each configuration answered. Seconds per "
              "answer: how long one request takes deployed as measured (its prompt read, its k votes decoded "
              "together), derived from each question's token counts and the speed its run measured — the median "
              "and 90th percentile over the questions answered, and the worst case the budget allows.", "",
              *_results(comparison), "", "## Paired comparisons", "",
              f"Every configuration answered the same questions in the same order with the same seeds, so each "
              f"statement is a paired difference over the questions both answered. Its interval is an anytime-valid "
              f"confidence sequence taken at {comparison.alpha:.2g} (5% over the other configurations): the best is "
              "wrongly dropped, or wrongly left out of the tied set, with probability at most 5%, however often the "
              "race looked (see the README).", "", *_statements(comparison)]  # fmt: skip
    frontier = comparison.frontier
    lines += ["", "## Pareto frontier", ""]
    lines += [f"{i}. {markdown_text(r.model)}, KV {tables.kv_text(r.result)}, budget {r.result.budget_tokens}, "
              f"k={r.result.k}: {_pct(r.result.accuracy_maj)} at {format_bytes(r.memory_bytes)}"
              for i, r in enumerate(frontier, start=1)] or ["(no finished configuration)"]  # fmt: skip
    if plot_file:
        lines += ["", "## Memory against accuracy", "", f"![{task}: accuracy against memory]({plot_file})",
                  "", "Colour: model size; marker: weight precision; marker size: token budget; bars: 95% interval "
                  "of each accuracy; orange rings: tied with the best; faded: dropped; memory on a log scale."
                  + (" A magenta edge: the hybrid generation (Qwen3.5/3.6)." if mixed else "")]  # fmt: skip
    if time_plot_file:
        lines += ["", "## Seconds per answer against accuracy", "",
                  f"![{task}: accuracy against seconds per answer]({time_plot_file})", "",
                  "The median seconds one answer takes on this machine, deployed as measured; the line joins the "
                  "configurations that no other one beats by being both faster and more accurate. Markers and bars "
                  "as above; seconds on a log scale."]  # fmt: skip
    lines += _kld_section(store.kld_runs(comparison.task), kld_plot_file)
    if comparison.nodes:
        lines += ["", "## Nodes", "", "The Ray nodes that answered these questions. Accuracy pools their samples (a "
                  "sample depends on the seed and the question, not the node); speed and memory below are each "
                  "node's own.", "", *_nodes(comparison)]  # fmt: skip
    lines += ["", "## Speed", "", *_speed(comparison), ""]
    return "\n".join(lines)


def write(store: Store, comparison: Comparison, out: Path, name: str | None = None) -> Written:
    """Write `out/<name>.md` and its plot `out/<name>.png`."""
    out.mkdir(parents=True, exist_ok=True)
    stem = name or report_name(comparison.task, comparison.budget_bytes or None)
    image = plot(comparison, out / f"{stem}.png")
    kld_image = kld_plot(store.kld_runs(comparison.task), out / f"{stem}-kld.png")
    time_image = time_plot(comparison, out / f"{stem}-time.png")
    markdown = out / f"{stem}.md"
    text = render(store, comparison, image.name if image else None, kld_image.name if kld_image else None,
                  time_image.name if time_image else None)  # fmt: skip
    markdown.write_text(text, encoding="utf-8")
    return Written(markdown, image, kld_image, time_image)
