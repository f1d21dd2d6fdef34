"""Parity with llama-server: a configuration measured by `edgeval run`, exported with `edgeval export`, and run by
llama-server built from the installed llama-cpp-python's own sources — the same texts, the same accuracy?

For each budget (by default one that forces nearly every sample and one that no sample reaches) and each sampling
(greedy, k = 1; and sampled as Qwen recommends, k votes, the run's seed), on the trained family:
`sweep.run` (what `edgeval run` does, `--parallel 1`) answers the questions into a fresh store; `export` turns the
configuration into llama-server's command line and `/completion` request; the server is started with that command
(127.0.0.1, a free port; stopped at the end), every stored question is sent with the exported request and the
question's own seed, and each of its samples is compared with the stored one. Printed per row: the share of samples
whose text is identical, the share forced, accuracy (maj@k) through edgeval and through the server with their
paired difference (n questions, a 95% interval: `racing.difference`), and the median seconds per request as the
server took it (its own `timings`, prompt + decode; and the client's wall) beside edgeval's derived `answer_s`.
The first differing sample of a row is shown, at the first character that differs.

Build llama-server once (about 25 minutes on 2 cores), in the llama-cpp-python sdist's folder:
    cmake -S vendor/llama.cpp -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
    cmake --build build -j2 --target llama-server

Run: python -m benchmarks.server_parity --server PATH [--model edgeval-tiny-m] [--budgets 8,64] [--k 4]
                                        [--questions 100] [--message ''] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import llama_server
from edgeval.core import grading, prompts, racing, vote
from edgeval.edges import server, tasks
from edgeval.edges.store import Store
from edgeval.faces import demo
from edgeval.running import ask, export, sweep

GREEDY = prompts.Sampling(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0)


def measure(binary: Path, model: Path, budget: int, k: int, sampling: prompts.Sampling | None, args: argparse.Namespace,
            folder: Path) -> dict[str, object]:  # fmt: skip
    """One row: edgeval's run, then the same questions through llama-server started as exported."""
    spec = sweep.RunSpec(
        model_path=model, model_label=model.stem, task="arith", budget_tokens=budget, k=k, limit=args.questions,
        sampling=sampling, seed=args.seed, threads=args.threads, repack=False, parallel=1, budget_message=args.message,
    )  # fmt: skip
    db = folder / f"parity-{budget}-{k}.db"
    with Store(db) as store:
        result = sweep.run(spec, store)
        if not result.n_done:
            raise SystemExit(f"edgeval's run answered nothing: {result.status} {result.message}")
        d = export.deployment(store, export.Selection(config_id=result.config_id))
        stored = store.samples(result.config_id)
        answer_s = sweep_answer_s(store, result.config_id)
    items = tasks.load_task("arith").items
    port = llama_server.free_port()
    by_item: dict[int, list[ask.Sample]] = {}
    server_s: list[float] = []
    wall_s: list[float] = []
    argv = export.server_argv(d, port=port)[1:]
    with llama_server.running(binary, argv, port, folder / f"server-{budget}-{k}.log") as url:
        for index in sorted({s.item_index for s in stored}):
            item = items[index]
            body = export.request(d, d.prompt(item.question), export.question_seed(d.seed, item.id))
            t0 = time.perf_counter()
            answer = server.post_json(url + export.ENDPOINT, body, timeout=600)
            wall_s.append(time.perf_counter() - t0)
            results = answer if isinstance(answer, list) else [answer]
            server_s.append(max(_timing(r) for r in results))
            by_item[index] = ask.samples_of(d, answer, d.kind)
    return _compare(stored, by_item, items, d, answer_s, server_s, wall_s)


def sweep_answer_s(store: Store, config_id: int) -> float | None:
    from edgeval.edges.results import summarize

    return summarize(store.config(config_id), store.samples(config_id)).answer_s


def _timing(result: object) -> float:
    """The server's own seconds for a completion: its prompt read and its decode (`timings`, in ms)."""
    timings = result.get("timings", {}) if isinstance(result, dict) else {}
    return (float(timings.get("prompt_ms", 0.0)) + float(timings.get("predicted_ms", 0.0))) / 1000


def _compare(stored: list, by_item: dict[int, list[ask.Sample]], items: tuple[tasks.Item, ...],  # type: ignore[type-arg]
             d: export.Deployment, answer_s: float | None, server_s: list[float],
             wall_s: list[float]) -> dict[str, object]:  # fmt: skip
    same = total = forced = 0
    first_diff = ""
    ours: dict[int, list[tuple[str | None, bool]]] = {}
    for s in stored:
        ours.setdefault(s.item_index, []).append((s.answer, bool(s.correct)))
        theirs = by_item[s.item_index][s.sample_index]
        total += 1
        forced += bool(s.forced)
        if theirs.text == s.text:
            same += 1
        elif not first_diff:
            at = next((i for i, (a, b) in enumerate(zip(s.text, theirs.text, strict=False)) if a != b),
                      min(len(s.text), len(theirs.text)))  # fmt: skip
            first_diff = (f"question {s.item_index} sample {s.sample_index} at char {at}: edgeval "
                          f"{s.text[max(0, at - 20):at + 30]!r} / server {theirs.text[max(0, at - 20):at + 30]!r}")  # fmt: skip

    def maj(pairs: list[tuple[str | None, bool]]) -> float:
        return vote.majority_score([a for a, _ in pairs], [c for _, c in pairs])

    edgeval_acc = {i: maj(p) for i, p in ours.items()}
    server_acc = {}
    for i, samples in by_item.items():
        reference = items[i].answer
        server_acc[i] = maj([(s.answer, grading.judge(d.kind, s.text, reference).correct) for s in samples])
    diff = racing.difference(server_acc, edgeval_acc, 0.05)
    return {
        "identical": same / total, "n_samples": total, "forced": forced / total,
        "edgeval_acc": statistics.fmean(edgeval_acc.values()), "server_acc": statistics.fmean(server_acc.values()),
        "diff": diff, "answer_s": answer_s, "server_s": statistics.median(server_s), "wall_s": statistics.median(wall_s),
        "first_diff": first_diff,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", type=Path, required=True, help="the llama-server binary")
    parser.add_argument("--model", default="edgeval-tiny-m", help="a model of the trained family")
    parser.add_argument("--budgets", default="8,64", help="thinking budgets (one that forces, one never reached)")
    parser.add_argument("--k", type=int, default=4, help="votes of the sampled rows")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--message", default="", help="the budget message ('' : the end tag alone, the family's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = next((p for p in demo.family_sources() if p.stem == args.model), None)
    if model is None:
        raise SystemExit(f"no family model {args.model!r}: {[p.stem for p in demo.family_sources()]}")
    print(f"{model.name}, arith, {args.questions} questions, message {args.message!r}, {args.threads} threads, "
          f"llama-server {args.server}")  # fmt: skip
    print("| budget | sampling | samples | identical | forced | maj edgeval | maj server | server − edgeval (95%) "
          "| s/answer edgeval (derived) | server (timings) | server (wall) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in (int(b) for b in args.budgets.split(",")):
            for label, k, sampling in (("greedy", 1, GREEDY), (f"sampled k={args.k}", args.k, None)):
                r = measure(args.server, model, budget, k, sampling, args, Path(tmp))
                diff = r["diff"]
                assert isinstance(diff, racing.Difference)
                answer_s = r["answer_s"]
                print(f"| {budget} | {label} | {r['n_samples']} | {r['identical']:.1%} | {r['forced']:.0%} "
                      f"| {r['edgeval_acc']:.1%} | {r['server_acc']:.1%} "
                      f"| {diff.mean * 100:+.1f} ({diff.low * 100:+.1f} to {diff.high * 100:+.1f}), n = {diff.n} "
                      f"| {f'{answer_s * 1000:.1f} ms' if isinstance(answer_s, float) else '—'} "
                      f"| {float(str(r['server_s'])) * 1000:.1f} ms | {float(str(r['wall_s'])) * 1000:.1f} ms |")  # fmt: skip
                if r["first_diff"]:
                    notes.append(f"budget {budget}, {label}: {r['first_diff']}")
    for note in notes:
        print("first difference —", note)


if __name__ == "__main__":
    main()
