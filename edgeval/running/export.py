"""`edgeval export`: a stored configuration as llama-server runs it — the server's command line and the request that
reproduces the measured samples — and as an Ollama Modelfile, with what Ollama cannot reproduce said plainly.

Every flag is llama-server's own spelling in the llama.cpp that llama-cpp-python vendors (`common/arg.cpp`). The
request goes to `/completion` with the prompt rendered as edgeval renders it (the model's own chat template), so the
server reads the very tokens a run read; the reasoning budget, which llama-server sets up from the chat template
only on its chat endpoint, is spelled out in the request (its start and end tags and message), and the sampler chain
is edgeval's own, in its order (`sampler.sampler_chain`). One request with `n_cmpl` = k gives a question's k
votes, seeded s, s + 1, … (llama-server seeds a request's children so: `server-task.h`, `add_child`).
"""

from __future__ import annotations

import json
import shlex
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from edgeval.core import prompts
from edgeval.core.errors import EdgevalError
from edgeval.core.grading import AnswerKind
from edgeval.edges import catalog as catalog_mod
from edgeval.edges import gguf_info
from edgeval.edges.store import Store
from edgeval.edges.tasks import CHOICE_INSTRUCTION, MATH_INSTRUCTION
from edgeval.running.configuration import ANSWER_TOKENS as ANSWER_TOKENS
from edgeval.running.worker import question_seed as question_seed  # a question's first vote's seed

FORCING = prompts.FORCING  # configs.forcing of rows forced as llama-server forces (migration M14)
DEFAULT_BUDGET_MESSAGE = prompts.BUDGET_MESSAGE  # the stop-thinking instruction of the Qwen3 technical report
ENDPOINT = "/completion"
SAMPLERS = ("top_k", "top_p", "min_p", "temperature")  # edgeval's chain, in its order, before the seeded draw
OLLAMA_KV_TYPES = ("f16", "q8_0", "q4_0")  # what OLLAMA_KV_CACHE_TYPE takes (one type for K and V)


class SelectionError(EdgevalError):
    """No stored configuration matches what `export` or `ask` was asked for."""

    hint = "run `edgeval run` or `edgeval compare` first, or name a configuration id (`edgeval compare --json` rows)"


@dataclass(frozen=True)
class Selection:
    """Which stored configuration: an id (with the votes to use, as compare's `ID:VOTES` row keys), or filters.
    Nothing given: the latest compare's recommendation, else the configuration measured last."""

    config_id: int | None = None
    votes: int | None = None
    model: str | None = None
    task: str | None = None
    kv: str | None = None
    budget: int | None = None

    @classmethod
    def parse(cls, text: str | None, **filters: object) -> Selection:
        """`12` or `12:4` (configuration 12 with 4 of its votes), plus filters (model, task, kv, budget, votes)."""
        config_id = votes = None
        if text:
            head, _, tail = text.partition(":")
            if not head.isdigit() or (tail and not tail.isdigit()):
                raise SelectionError(f"'{text}' is not a configuration id (12) or id and votes (12:4)")
            config_id, votes = int(head), int(tail) if tail else None
        given = {k: v for k, v in filters.items() if v is not None}
        return cls(config_id, votes if votes is not None else given.pop("votes", None), **given)  # type: ignore[arg-type]

    @property
    def filtered(self) -> bool:
        return any(v is not None for v in (self.model, self.task, self.kv, self.budget, self.votes))


@dataclass(frozen=True)
class Deployment:
    """A stored configuration, as a server must run it to answer as it was measured."""

    config_id: int
    votes: int
    chosen_by: str  # "recommendation" (the latest compare's), "latest" (measured last) or "selection"
    model: str
    model_path: Path
    hub: tuple[str, str] | None  # (repo, file) of a catalog file: `-hf repo --hf-file file`
    task: str
    kind: AnswerKind
    thinking: bool
    opens_reasoning: bool  # the prompt itself opens the reasoning (Qwen3-2507 Thinking)
    kv_type_k: str
    kv_type_v: str
    budget: int
    sampling: prompts.Sampling
    seed: int
    kv_cells: int
    longest_prompt: int
    kv_window: int
    repack: str | None  # all, cpu_repack, off (None: not recorded)
    gpu_layers: int | None
    cpu_moe: int
    threads: int | None
    forcing: str | None  # FORCING, or None for the earlier forcing's rows
    budget_message: str
    start_tokens: int  # tokens of `<think>`
    forced_tokens: int  # tokens of the message and `</think>`, forced one a step at the budget
    answer_tokens: int = ANSWER_TOKENS
    chat_template: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def reasons(self) -> bool:
        """Whether samples reason (and a budget forces)."""
        return self.thinking or self.opens_reasoning

    @property
    def n_predict(self) -> int:
        """What one sample may write, forced tokens included: the budget after `<think>`, the start tag, the
        forced message and end tag, and the answer's room; without reasoning, the budget."""
        if not self.reasons:
            return self.budget
        return self.budget + self.start_tokens + self.forced_tokens + self.answer_tokens

    @property
    def context(self) -> int:
        """KV cells of one question's unified cache: the prompt once, each vote's n_predict (as measured: at least
        the cells the run's context held)."""
        return max(self.kv_cells, self.longest_prompt + self.votes * self.n_predict)

    @property
    def chat(self) -> prompts.ChatFormat:
        return prompts.ChatFormat(self.chat_template)

    def instruction(self) -> str:
        """The task's instruction (every built-in and file task uses one of two)."""
        return CHOICE_INSTRUCTION if self.kind is AnswerKind.CHOICE else MATH_INSTRUCTION

    def prompt(self, question: str, instruction: str | None = None) -> str:
        """A question as the run prompted it."""
        return self.chat.prompt(question, self.instruction() if instruction is None else instruction,
                                thinking=self.thinking)  # fmt: skip


# ---------------------------------------------------------------- choosing the configuration


def _rows(store: Store, selection: Selection) -> list[sqlite3.Row]:
    where, params = ["1"], []
    for column, value in (("task", selection.task), ("budget_tokens", selection.budget)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if selection.kv is not None:
        k, _, v = selection.kv.lower().partition("/")
        where.append("kv_type_k = ? AND kv_type_v = ?")
        params += [k, v or k]
    if selection.votes is not None:
        where.append("k >= ?")
        params.append(selection.votes)
    rows = [r for r in store.configs(" AND ".join(where), params) if store.sample_count(int(r["id"]))]
    if selection.model is not None:
        wanted = selection.model.lower()
        rows = [r for r in rows if wanted in (str(r["model"]).lower(), str(r["model_path"]).lower())
                or str(r["model"]).lower().startswith(wanted + ":")]  # fmt: skip
    return rows


def choose(store: Store, selection: Selection) -> tuple[sqlite3.Row, int, str]:
    """The configuration row, the votes to use and how it was chosen."""
    if selection.config_id is not None:
        row = store.config(selection.config_id)
        if not store.sample_count(selection.config_id):
            raise SelectionError(f"configuration {selection.config_id} has no samples yet", hint="run it first")
        votes = selection.votes or int(row["k"])
        if not 1 <= votes <= int(row["k"]):
            raise SelectionError(f"configuration {selection.config_id} has {row['k']} votes, not {votes}")
        return row, votes, "selection"
    if selection.filtered:
        rows = _rows(store, selection)
        if not rows:
            raise SelectionError("no measured configuration matches the selection")
        row = max(rows, key=lambda r: (str(r["updated_at"]), int(r["id"])))
        return row, selection.votes or int(row["k"]), "selection"
    recommended = store.latest_recommendation()
    if recommended is not None:
        return store.config(int(recommended["config_id"])), int(recommended["votes"]), "recommendation"
    last = store.latest_measured()
    if last is None:
        raise SelectionError(f"no measured configuration in {store.path}")
    return last, int(last["k"]), "latest"


def _column(row: sqlite3.Row, name: str) -> object:
    """A column that older (or newer) stores may lack."""
    columns = row.keys()
    return row[name] if name in columns else None


def deployment(store: Store, selection: Selection, catalogs: tuple[Path, ...] = ()) -> Deployment:
    """The chosen configuration, read from the store and its model file (its chat template, its tags' tokens)."""
    row, votes, chosen_by = choose(store, selection)
    path = Path(str(row["model_path"]))
    info = gguf_info.read_local(path)
    chat = prompts.ChatFormat(info.chat_template)
    thinking = bool(row["thinking"])
    forcing = _column(row, "forcing")
    message = _column(row, "budget_message")
    message = DEFAULT_BUDGET_MESSAGE if message is None else str(message)
    start, forced = tag_tokens(path, message)
    longest = store.db.execute(
        "SELECT MAX(prompt_tokens) FROM samples WHERE config_id = ?", (int(row["id"]),)
    ).fetchone()[0]
    repack = _column(row, "repack_mode") or (None if row["repack"] is None else ("all" if row["repack"] else "off"))
    gpu_layers, cpu_moe, threads = (_column(row, n) for n in ("gpu_layers", "cpu_moe", "threads"))
    d = Deployment(
        config_id=int(row["id"]), votes=votes, chosen_by=chosen_by, model=str(row["model"]), model_path=path,
        hub=_hub_file(str(row["model"]), str(row["model_sha256"]), catalogs), task=str(row["task"]),
        kind=AnswerKind(row["answer_kind"] or "math"), thinking=thinking,
        opens_reasoning=chat.opens_reasoning(thinking), kv_type_k=str(row["kv_type_k"]),
        kv_type_v=str(row["kv_type_v"]), budget=int(row["budget_tokens"]),
        sampling=prompts.Sampling(**json.loads(row["sampling"])), seed=int(row["seed"]),
        kv_cells=int(row["kv_cells"]), longest_prompt=int(longest or 0), kv_window=int(row["kv_window"] or 0),
        repack=None if repack is None else str(repack), gpu_layers=None if gpu_layers is None else int(str(gpu_layers)),
        cpu_moe=int(str(cpu_moe or 0)), threads=None if threads is None else int(str(threads)),
        forcing=None if forcing is None else str(forcing), budget_message=message, start_tokens=start,
        forced_tokens=forced, chat_template=info.chat_template,
    )  # fmt: skip
    return _warned(d, str(row["backend"] or ""))


def _warned(d: Deployment, backend: str) -> Deployment:
    """What the server cannot run as measured, one sentence each."""
    from dataclasses import replace

    notes = []
    if d.forcing != FORCING and d.reasons:
        notes.append(
            "this configuration was measured with edgeval's earlier budget forcing (`</think>` and an answer prefix "
            "appended at the budget, the budget capping everything); llama-server's --reasoning-budget counts and "
            "forces differently, so its samples and accuracy may differ from the stored ones: measure it again with "
            "this edgeval to export it exactly"
        )
    if d.kv_window:
        notes.append(f"measured with a KV window of {d.kv_window} tokens: llama-server cannot evict a sample's old "
                     "tokens that way, so it keeps them all (more memory, other samples past the window)")  # fmt: skip
    if d.repack == "cpu_repack":
        notes.append("measured with CPU_REPACK layouts only (no AMX): llama-server has only --repack/--no-repack; "
                     "--repack lets it choose AMX where the CPU has it")  # fmt: skip
    if d.gpu_layers is None and backend not in ("", "cpu"):
        notes.append("the layers this run offloaded were not recorded (a store from before export): -ngl all assumed")
    return replace(d, warnings=tuple(notes))


def _hub_file(label: str, sha256: str, catalogs: tuple[Path, ...]) -> tuple[str, str] | None:
    """The catalog's Hub repo and file for a measured label, when the catalog knows that file (by its hash, when
    the catalog publishes one)."""
    try:
        refs = catalog_mod.Catalog.load(catalogs).resolve(label)
    except EdgevalError:
        return None
    if len(refs) != 1:
        return None
    file = refs[0].file
    if file.repo is None or not file.files or (file.sha256 and file.sha256 != sha256):
        return None
    return file.repo, file.files[0]


def tag_tokens(path: Path, message: str) -> tuple[int, int]:
    """Tokens of the start tag, and of the message and end tag as llama-server forces them (each tokenized alone,
    special tokens parsed: `server-schema.cpp`, reasoning_budget_message)."""
    from edgeval.llama import engine

    with engine.Model(path, engine.LoadOptions(vocab_only=True)) as model:
        forcing = engine.reasoning_budget(model, message=message, answer_tokens=ANSWER_TOKENS)
    return len(forcing.start), len(forcing.tokens)


# ---------------------------------------------------------------- llama-server


def server_argv(d: Deployment, *, port: int = 8080, hub: bool = False) -> list[str]:
    """The llama-server command line (flags as `common/arg.cpp` spells them)."""
    model = ["-hf", d.hub[0], "--hf-file", d.hub[1]] if hub and d.hub else ["-m", str(d.model_path)]
    argv = ["llama-server", *model, "--host", "127.0.0.1", "--port", str(port)]
    # One question's votes share its prompt's cells in one unified cache of the measured size, as edgeval runs it;
    # n_cmpl needs a slot per vote (server-schema.cpp: n_cmpl ≤ n_parallel).
    argv += ["-c", str(d.context), "--kv-unified", "--parallel", str(d.votes)]
    argv += ["-ctk", d.kv_type_k, "-ctv", d.kv_type_v, "-fa", "on"]
    argv += ["--reasoning", "on" if d.thinking else "off"]
    if d.reasons:
        argv += ["--reasoning-budget", str(d.budget), "--reasoning-budget-message", d.budget_message]
    argv += ["-ngl", "all" if d.gpu_layers is None or d.gpu_layers < 0 else str(d.gpu_layers)]
    if d.cpu_moe:
        argv += ["--cpu-moe"] if d.cpu_moe < 0 else ["--n-cpu-moe", str(d.cpu_moe)]
    if d.threads:
        argv += ["-t", str(d.threads)]
    if d.repack is not None:
        argv.append("--no-repack" if d.repack == "off" else "--repack")
    return argv


def request(d: Deployment, prompt: str, seed: int) -> dict[str, object]:
    """The `/completion` body that answers one prompt as the run did: k votes, the sampling, the budget."""
    s = d.sampling
    body: dict[str, object] = {
        "prompt": prompt, "n_cmpl": d.votes, "n_predict": d.n_predict, "seed": seed,
        "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p,
        "samplers": (["penalties"] if s.presence_penalty else []) + list(SAMPLERS), "cache_prompt": False,
        # What the prompt already holds of the answer (the template's generation prompt): the budget sampler reads
        # it first, so a template that opens the reasoning starts the count at once.
        "generation_prompt": prompt.rpartition(prompts.END_OF_TURN)[2].lstrip("\n"),
    }  # fmt: skip
    if s.presence_penalty:  # llama-server's penalties sampler: the last 64 tokens (its default), prompt included
        body |= {"presence_penalty": s.presence_penalty, "repeat_last_n": prompts.PENALTY_LAST_N}
    if d.reasons:
        body.update({
            "reasoning_budget_tokens": d.budget, "reasoning_budget_start_tag": prompts.THINK_OPEN,
            "reasoning_budget_end_tags": [prompts.THINK_CLOSE], "reasoning_budget_message": d.budget_message,
        })  # fmt: skip
    return body


def command_line(argv: list[str]) -> str:
    """The command as a shell line."""
    return shlex.join(argv)


# ---------------------------------------------------------------- Ollama


@dataclass(frozen=True)
class Modelfile:
    """An Ollama Modelfile, the environment its server needs, and what Ollama cannot reproduce."""

    text: str
    environment: dict[str, str]
    cannot: tuple[str, ...]


def modelfile(d: Deployment) -> Modelfile:
    """The configuration as Ollama can run it (the file's own chat template; no TEMPLATE needed for a GGUF with
    one), and the list of what it does not reproduce."""
    s = d.sampling
    lines = [f"FROM {d.model_path}"]
    lines += [f"PARAMETER {name} {value:g}" for name, value in
              (("temperature", s.temperature), ("top_p", s.top_p), ("top_k", s.top_k), ("min_p", s.min_p))]  # fmt: skip
    if s.presence_penalty:
        lines += [
            f"PARAMETER presence_penalty {s.presence_penalty:g}",
            f"PARAMETER repeat_last_n {prompts.PENALTY_LAST_N}",
        ]
    lines += [f"PARAMETER num_ctx {d.longest_prompt + d.n_predict}", f"PARAMETER num_predict {d.n_predict}",
              f"PARAMETER seed {d.seed}"]  # fmt: skip
    if d.threads:
        lines.append(f"PARAMETER num_thread {d.threads}")
    if d.gpu_layers is not None and d.gpu_layers >= 0:
        lines.append(f"PARAMETER num_gpu {d.gpu_layers}")
    env = {"OLLAMA_FLASH_ATTENTION": "1"}
    cannot = []
    if d.reasons:
        cannot.append(f"a thinking budget: Ollama has no reasoning-budget forcing, so a sample reasons until it stops "
                      f"or reaches num_predict ({d.n_predict}); budget {d.budget} is not enforced, and a sample cut "
                      "there has no answer")  # fmt: skip
    if d.votes > 1:
        cannot.append(f"{d.votes} votes: Ollama answers one completion per request and does not vote; send "
                      f"{d.votes} requests with seeds s, s + 1, … and vote yourself (`edgeval ask` does it against "
                      "llama-server)")  # fmt: skip
    if s.temperature > 0:
        cannot.append("the sampler chain: Ollama's sampler order and seeded draw are its own, so sampled texts "
                      "differ from llama.cpp's even with the same seed")  # fmt: skip
    if not d.thinking:
        cannot.append("thinking off: a Modelfile has no setting for it; ask with `think: false` in the API request "
                      "(or `ollama run --think=false`)")  # fmt: skip
    if d.kv_type_k == d.kv_type_v and d.kv_type_k in OLLAMA_KV_TYPES:
        env["OLLAMA_KV_CACHE_TYPE"] = d.kv_type_k
    else:
        cannot.append(f"the KV cache types {d.kv_type_k}/{d.kv_type_v}: OLLAMA_KV_CACHE_TYPE takes one type for K "
                      f"and V, one of {', '.join(OLLAMA_KV_TYPES)}")  # fmt: skip
    if d.kv_window:
        cannot.append(f"the KV window of {d.kv_window} tokens")
    if d.cpu_moe:
        cannot.append("expert weights kept on the CPU (--n-cpu-moe)")
    if d.repack == "off":
        cannot.append("weight repacking off (Ollama repacks where its llama.cpp does)")
    return Modelfile("\n".join(lines) + "\n", env, tuple(cannot))
