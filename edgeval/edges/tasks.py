"""The task registry: datasets from the Hub (cached through huggingface_hub), built-in `arith`, and JSONL files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeval.core import prompts
from edgeval.core.errors import EdgevalError
from edgeval.core.grading import AnswerKind
from edgeval.edges import hub

CHOICE_LETTERS = "ABCDEFGHIJ"
DEFAULT_TASK = "math500"  # what `compare` (and `kld`, without stored samples) evaluates unless told


class TaskError(EdgevalError):
    """An unknown task, or a task file that cannot be read."""

    hint = "run `edgeval run --help` for the task names, or give a JSONL file"


@dataclass(frozen=True)
class Item:
    """One question: its stable id, text (choices included), and reference answer."""

    id: str
    question: str
    answer: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """A named set of questions and how to prompt for and grade them."""

    name: str
    kind: AnswerKind
    instruction: str
    answer_prefix: str  # what budget forcing writes after closing the reasoning
    items: tuple[Item, ...]
    private: bool = False  # items must never be printed, reported or logged (GPQA's terms)
    source: str = ""
    params: dict[str, object] = field(default_factory=dict)

    def take(self, limit: int | None) -> tuple[Item, ...]:
        """The first `limit` items in the task's fixed order (all when None)."""
        return self.items if limit is None else self.items[:limit]

    @property
    def fingerprint(self) -> str:
        """A hash of the task's items and grading: results of different task contents never mix."""
        digest = hashlib.sha256(f"{self.name}|{self.kind.value}|{self.instruction}".encode())
        for item in self.items:
            digest.update(f"{item.id}\x00{item.question}\x00{item.answer}\x00{item.choices}".encode())
        return digest.hexdigest()[:16]


MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = (
    "Please reason step by step, and put the letter of your final answer within \\boxed{}, e.g. \\boxed{A}."
)
BOXED = "The final answer is $\\boxed{"


def _dataset_file(repo: str, filename: str) -> Path:
    """A dataset file through huggingface_hub's cache (downloaded once; HF_HUB_OFFLINE reads the cache)."""
    return hub.download_dataset_file(repo, filename)


def _utf8_text(path: Path, source: str) -> str:
    """The file's text; bytes that are not UTF-8 are an error naming the line they are on (a leading UTF-8 byte
    order mark is allowed)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise TaskError(
            f"{source} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
            "a task file must be UTF-8 JSONL",
            hint="it looks like UTF-16: save it as UTF-8" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else
            "save the file as UTF-8",
        ) from None  # fmt: skip


def _jsonl_lines(path: Path, source: str) -> list[tuple[int, dict[str, object]]]:
    """(line number, object) for every non-blank line; a malformed line is an error naming it."""
    rows = []
    # Lines end at "\n" alone (JSONL's rule): U+2028 and the like are valid inside JSON strings.
    for number, line in enumerate(_utf8_text(path, source).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{source} line {number}: not valid JSON ({exc.msg})", hint="fix that line") from None
        except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, arrays nested past Python's
            what = str(exc).split(";")[0] if isinstance(exc, ValueError) else "nested too deep"
            raise TaskError(f"{source} line {number}: not usable JSON ({what})", hint="fix that line") from None
        if not isinstance(row, dict):
            raise TaskError(f"{source} line {number}: expected a JSON object", hint="fix that line")
        rows.append((number, row))
    return rows


def _jsonl(path: Path, source: str) -> list[dict[str, object]]:
    return [row for _, row in _jsonl_lines(path, source)]


def load_aime25() -> Task:
    """AIME 2025 (opencompass/AIME2025): 30 integer answers 0–999, parts I then II."""
    items = []
    for part in ("I", "II"):
        for i, row in enumerate(_jsonl(_dataset_file("opencompass/AIME2025", f"aime2025-{part}.jsonl"), part)):
            items.append(Item(f"aime2025-{part}-{i + 1}", str(row["question"]), str(row["answer"])))
    return Task("aime25", AnswerKind.INTEGER, MATH_INSTRUCTION, BOXED, tuple(items), source="opencompass/AIME2025")


def load_math500() -> Task:
    """MATH-500 (HuggingFaceH4/MATH-500): LaTeX answers."""
    rows = _jsonl(_dataset_file("HuggingFaceH4/MATH-500", "test.jsonl"), "MATH-500")
    items = tuple(Item(str(r.get("unique_id", i)), str(r["problem"]), str(r["answer"])) for i, r in enumerate(rows))
    return Task("math500", AnswerKind.MATH, MATH_INSTRUCTION, BOXED, items, source="HuggingFaceH4/MATH-500")


def _shuffled_choices(record_id: str, correct: str, wrong: list[str]) -> tuple[tuple[str, ...], str]:
    """Choices in an order fixed by the question's own id (not its position in the file), and the right letter."""
    order = [correct, *wrong]
    random.Random(int(hashlib.sha256(record_id.encode()).hexdigest()[:16], 16)).shuffle(order)
    return tuple(order), CHOICE_LETTERS[order.index(correct)]


def format_choices(question: str, choices: tuple[str, ...]) -> str:
    """A question followed by its lettered choices."""
    lines = [question.strip(), ""] + [f"({CHOICE_LETTERS[i]}) {c.strip()}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def load_gpqa_diamond() -> Task:
    """GPQA-Diamond (Idavidrein/gpqa, gated): 198 four-way multiple-choice questions; never printed."""
    path = _dataset_file("Idavidrein/gpqa", "gpqa_diamond.csv")
    items = []
    for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
        record = row.get("Record ID") or hashlib.sha256(row["Question"].encode()).hexdigest()[:12]
        wrong = [row[f"Incorrect Answer {i}"] for i in (1, 2, 3)]
        choices, letter = _shuffled_choices(record, row["Correct Answer"], wrong)
        items.append(Item(record, format_choices(row["Question"], choices), letter, choices))
    return Task(
        "gpqa-diamond", AnswerKind.CHOICE, CHOICE_INSTRUCTION, "The answer is $\\boxed{", tuple(items),
        private=True, source="Idavidrein/gpqa",
    )  # fmt: skip


def load_gsm8k() -> Task:
    """GSM8K test split (openai/gsm8k, parquet): answers after `####`."""
    path = _dataset_file("openai/gsm8k", "main/test-00000-of-00001.parquet")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TaskError(
            "gsm8k is stored as parquet, which needs pyarrow", hint="pip install 'edgeval[gsm8k]'"
        ) from None
    table = pq.read_table(path).to_pylist()
    items = tuple(
        Item(f"gsm8k-{i}", str(r["question"]), str(r["answer"]).rsplit("####", 1)[-1].strip())
        for i, r in enumerate(table)
    )
    return Task("gsm8k", AnswerKind.NUMBER, MATH_INSTRUCTION, BOXED, items, source="openai/gsm8k")


def arith_items(difficulty: int = 2, seed: int = 0, count: int = 200) -> tuple[Item, ...]:
    """Arithmetic questions from a seed: +, − and × on `difficulty`-digit operands (× by a single digit)."""
    if not 1 <= difficulty <= 9:
        raise TaskError(f"arith difficulty {difficulty} is out of range", hint="use arith:1 … arith:9")
    rng = random.Random(f"arith:{difficulty}:{seed}")
    low = 10 ** (difficulty - 1) if difficulty > 1 else 0
    items = []
    for i in range(count):
        op = rng.choice("+-*")
        a = rng.randint(low, 10**difficulty - 1)
        b = rng.randint(0, 9) if op == "*" else rng.randint(low, 10**difficulty - 1)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        items.append(Item(f"arith-d{difficulty}-s{seed}-{i}", f"What is {a} {op} {b}?", str(value)))
    return tuple(items)


def load_arith(difficulty: int = 2, seed: int = 0) -> Task:
    """Built-in, offline arithmetic (difficulty = digits per operand)."""
    return Task(
        "arith" if (difficulty, seed) == (2, 0) else f"arith:{difficulty}:{seed}",
        AnswerKind.NUMBER, MATH_INSTRUCTION, BOXED, arith_items(difficulty, seed),
        source="built-in", params={"difficulty": difficulty, "seed": seed},
    )  # fmt: skip


def load_jsonl(path: Path) -> Task:
    """A user task: one JSON object per line with `question`, `answer`, optional `choices` and `id`. A record without
    an `id` is given its line number (counting blank lines); ids must be unique and questions not empty."""
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist", hint="check the path")
    items = []
    rows = _jsonl_lines(path, str(path))
    has_choices = any("choices" in r for _, r in rows)
    lines_of: dict[str, int] = {}
    for number, row in rows:
        question, answer, choices, item_id = _checked(path, number, row)
        if item_id in lines_of:
            given = "" if "id" in row else " (a record without `id` takes its line number)"
            raise TaskError(
                f"{path} line {number}: id '{item_id}'{given} is already line {lines_of[item_id]}'s",
                hint="give each record its own `id`",
            )
        lines_of[item_id] = number
        items.append(Item(item_id, format_choices(question, choices) if choices else question, answer, choices))
    kind = AnswerKind.CHOICE if has_choices else _guess_kind([i.answer for i in items])
    instruction = CHOICE_INSTRUCTION if has_choices else MATH_INSTRUCTION
    return Task(path.stem, kind, instruction, BOXED, tuple(items), source=str(path))


def _checked(path: Path, number: int, row: dict[str, object]) -> tuple[str, str, tuple[str, ...], str]:
    """A record's question, answer, choices and id, each of the type it must be, or an error naming the line."""

    def bad(what: str) -> TaskError:
        return TaskError(f"{path} line {number}: {what}", hint="fix that line")

    if "question" not in row or "answer" not in row:
        raise bad("needs `question` and `answer`")
    question, answer, choices = row["question"], row["answer"], row.get("choices", [])
    if question is None or (isinstance(question, str) and not question.strip()):
        raise bad("the question is empty")
    if not isinstance(question, str):
        raise bad(f"the question is {_json_kind(question)}, not text")
    if not _scalar(answer) or (isinstance(answer, str) and not answer.strip()):
        raise bad(f"the answer is {_json_kind(answer)}, not text or a number")
    listed = choices if isinstance(choices, list) else []
    if "choices" in row and (len(listed) < 2 or not all(map(_scalar, listed))):
        raise bad(f"`choices` is {_json_kind(choices)}, not a list of two or more texts")
    item_id = row.get("id", number)
    if not _scalar(item_id):
        raise bad(f"the id is {_json_kind(item_id)}, not text or a number")
    return question, str(answer), tuple(str(c) for c in listed), str(item_id)


def _scalar(value: object) -> bool:
    """Text or a finite number (not a boolean): what an answer, a choice or an id may be."""
    if isinstance(value, bool):
        return False
    return isinstance(value, str | int) or (isinstance(value, float) and math.isfinite(value))


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list | dict):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    return "an empty text" if value == "" else (f"the number {value}" if not isinstance(value, str) else "text")


def _guess_kind(answers: list[str]) -> AnswerKind:
    from edgeval.core.grading import normalize

    return AnswerKind.NUMBER if all(normalize(a, AnswerKind.NUMBER) is not None for a in answers) else AnswerKind.MATH


REGISTRY: dict[str, Callable[[], Task]] = {
    "aime25": load_aime25,
    "math500": load_math500,
    "gpqa-diamond": load_gpqa_diamond,
    "gsm8k": load_gsm8k,
    "arith": load_arith,
}


def load_task(name: str) -> Task:
    """A task by name (aime25, math500, gpqa-diamond, gsm8k, arith, arith:DIFFICULTY[:SEED]) or a .jsonl path."""
    if name.endswith(".jsonl") or Path(name).is_file():
        return load_jsonl(Path(name).expanduser())
    if name.startswith("arith:"):
        parts = name.split(":")[1:]
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise TaskError(f"'{name}' is not arith:DIFFICULTY[:SEED]", hint="e.g. arith:3 or arith:3:7") from None
        return load_arith(*numbers[:2])
    loader = REGISTRY.get(name)
    if loader is None:
        import difflib

        close = difflib.get_close_matches(name, list(REGISTRY), n=2)
        near = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise TaskError(f"unknown task '{name}'{near}; known: {', '.join(REGISTRY)}, or a .jsonl file")
    return loader()


def prompt_text(chat: prompts.ChatFormat, task: Task, item: Item, thinking: bool) -> str:
    """A question as the model is prompted with it (its chat template, the task's instruction)."""
    return chat.prompt(item.question, task.instruction, thinking=thinking)
