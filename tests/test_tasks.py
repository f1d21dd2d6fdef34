"""The task registry: Hub datasets through huggingface_hub (served locally), built-in arith, JSONL files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from edgeval.core.grading import AnswerKind
from edgeval.edges import tasks

from .hub_server import ALLOWED_TOKEN, FakeHub


def test_arith_is_deterministic_from_its_seed_with_a_difficulty_knob() -> None:
    a, b = tasks.load_task("arith"), tasks.load_task("arith")
    assert a.items == b.items and a.fingerprint == b.fingerprint
    other_seed = tasks.load_task("arith:2:1")
    assert other_seed.items != a.items and other_seed.fingerprint != a.fingerprint
    hard = tasks.load_task("arith:4")
    assert max(len(str(abs(int(i.answer)))) for i in hard.items) > max(len(str(abs(int(i.answer)))) for i in a.items)
    for item in a.items[:50]:
        x, op, y = item.question.removeprefix("What is ").removesuffix("?").split()
        assert int(item.answer) == {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[op]
    assert [i.id for i in a.take(3)] == [i.id for i in a.items[:3]]


def test_unknown_tasks_and_bad_arith_specs() -> None:
    with pytest.raises(tasks.TaskError, match=r"unknown task 'aime24'.*aime25"):
        tasks.load_task("aime24")
    with pytest.raises(tasks.TaskError, match="arith:DIFFICULTY"):
        tasks.load_task("arith:hard")
    with pytest.raises(tasks.TaskError, match="out of range"):
        tasks.load_task("arith:12")


def test_jsonl_tasks_and_malformed_lines(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    good.write_text('{"question": "2+2?", "answer": "4", "id": "q1"}\n\n{"question": "3+3?", "answer": "6"}\n')
    task = tasks.load_task(str(good))
    assert task.name == "mine" and task.kind is AnswerKind.NUMBER
    assert [i.id for i in task.items] == ["q1", "3"]
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"question": "Pick", "answer": "B", "choices": ["x", "y"]}) + "\n")
    choice = tasks.load_task(str(mc))
    assert choice.kind is AnswerKind.CHOICE and "(B) y" in choice.items[0].question
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n')
    with pytest.raises(tasks.TaskError, match="line 2"):
        tasks.load_task(str(bad))
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "a"}\n')
    with pytest.raises(tasks.TaskError, match="line 1: needs `question` and `answer`"):
        tasks.load_task(str(missing))


def test_aime25_and_math500_come_through_the_hub(fake_hub: FakeHub) -> None:
    fake_hub.add(
        "datasets/opencompass/AIME2025",
        "aime2025-I.jsonl",
        b'{"question": "Find x.", "answer": "70"}\n{"question": "Find y.", "answer": "588"}\n',
    )
    fake_hub.add("datasets/opencompass/AIME2025", "aime2025-II.jsonl", b'{"question": "Find z.", "answer": "16"}\n')
    fake_hub.add("datasets/HuggingFaceH4/MATH-500", "test.jsonl",
                 b'{"problem": "Half of 1?", "solution": "...", "answer": "\\\\frac{1}{2}", "unique_id": "test/a.json"}\n')  # fmt: skip
    aime = tasks.load_task("aime25")
    assert [i.id for i in aime.items] == ["aime2025-I-1", "aime2025-I-2", "aime2025-II-1"]
    assert aime.kind is AnswerKind.INTEGER and aime.items[1].answer == "588"
    math = tasks.load_task("math500")
    assert math.items[0].id == "test/a.json" and math.items[0].answer == "\\frac{1}{2}"
    cached = len(fake_hub.requests)
    tasks.load_task("aime25")
    assert not [r for r in fake_hub.requests[cached:] if r.path.startswith("/cdn/")]  # served from the cache


def _gpqa_csv(rows: int) -> bytes:
    out = io.StringIO()
    out.write("Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Record ID\n")
    for i in range(rows):
        out.write(f"Secret question {i}?,right{i},wrong{i}a,wrong{i}b,wrong{i}c,rec{i:03d}\n")
    return out.getvalue().encode()


def test_gpqa_is_gated_shuffled_by_id_and_private(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub.add("datasets/Idavidrein/gpqa", "gpqa_diamond.csv", _gpqa_csv(12))
    fake_hub.gated.add("datasets/Idavidrein/gpqa")
    with pytest.raises(Exception, match="gated"):
        tasks.load_task("gpqa-diamond")
    monkeypatch.setenv("HF_TOKEN", ALLOWED_TOKEN)
    task = tasks.load_task("gpqa-diamond")
    assert task.private and task.kind is AnswerKind.CHOICE and len(task.items) == 12
    letters = {item.answer for item in task.items}
    assert len(letters) > 1  # the right answer is not always in the same place
    for item in task.items:
        assert item.choices["ABCD".index(item.answer)] == f"right{int(item.id[3:])}"
    # The order depends on the question's id, not on where it sits in the file.
    header, *lines = _gpqa_csv(12).decode().splitlines()
    fake_hub.add("datasets/Idavidrein/gpqa", "gpqa_diamond.csv", "\n".join([header, *lines[::-1]]).encode() + b"\n")
    reordered = tasks.load_task("gpqa-diamond")
    assert [i.id for i in reordered.items] == [i.id for i in task.items][::-1]
    assert {i.id: i.choices for i in reordered.items} == {i.id: i.choices for i in task.items}


def test_gsm8k_reads_the_parquet_split(fake_hub: FakeHub) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {"question": ["Tom has 3 apples...", "A shop sells..."], "answer": ["...\n#### 7", "x\n#### 1,250"]}
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    fake_hub.add("datasets/openai/gsm8k", "main/test-00000-of-00001.parquet", sink.getvalue())
    task = tasks.load_task("gsm8k")
    assert [i.answer for i in task.items] == ["7", "1,250"]
    assert task.kind is AnswerKind.NUMBER


def test_offline_task_without_cache_names_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="HF_HUB_OFFLINE"):
        tasks.load_task("math500")


def test_a_task_file_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    utf16 = tmp_path / "bin.jsonl"
    utf16.write_bytes(b'\xff\xfe{"question": "x"}\n')
    with pytest.raises(tasks.TaskError, match=r"bin\.jsonl line 1: not UTF-8.*must be UTF-8 JSONL") as caught:
        tasks.load_task(str(utf16))
    assert "UTF-16" in caught.value.hint
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"question": "2+2?", "answer": "4"}\r\n\n{"question": "caf\xe9?", "answer": "1"}\n')
    with pytest.raises(tasks.TaskError, match=r"latin1\.jsonl line 3: not UTF-8 \(byte 0xe9 at column 18\)"):
        tasks.load_task(str(latin1))
    # A UTF-8 byte order mark, CRLF line ends and a line separator inside a string are all still UTF-8 JSONL.
    fine = tmp_path / "fine.jsonl"
    fine.write_bytes(
        b'\xef\xbb\xbf{"question": "a\xe2\x80\xa8b?", "answer": "4"}\r\n{"question": "c?", "answer": "5"}\r\n'
    )
    task = tasks.load_task(str(fine))
    assert [(i.id, i.question, i.answer) for i in task.items] == [("1", "a\u2028b?", "4"), ("2", "c?", "5")]


def test_the_cli_reports_a_non_utf8_task_file_in_one_line_with_exit_1(tmp_path: Path) -> None:
    """`run` reads the task before loading the model, so this needs no llama.cpp model load."""
    from click.testing import CliRunner

    from edgeval.faces.cli import cli

    bad = tmp_path / "bin.jsonl"
    bad.write_bytes(b'\xff\xfe{"question": "x"}\n')
    model = Path(__file__).resolve().parents[1] / "edgeval" / "family" / "edgeval-tiny-s.gguf"
    args = ["run", str(model), "--task", str(bad), "--no-repack", "--db", str(tmp_path / "r.db")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in lines[0]
    assert f"{bad} line 1: not UTF-8" in lines[0] and "UTF-8 JSONL" in lines[0]


def test_jsonl_empty_questions_and_duplicate_ids_are_errors_naming_the_line(tmp_path: Path) -> None:
    def task_file(*records: dict[str, object]) -> str:
        path = tmp_path / "t.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return str(path)

    for empty in ("", "   \n", None):
        with pytest.raises(tasks.TaskError, match=r"t\.jsonl line 2: the question is empty"):
            tasks.load_task(task_file({"question": "1+1?", "answer": "2"}, {"question": empty, "answer": "3"}))
    same_id = task_file(
        {"id": "a", "question": "1+1?", "answer": "2"},
        {"id": "b", "question": "2+2?", "answer": "4"},
        {"id": "a", "question": "3+3?", "answer": "6"},
    )
    with pytest.raises(tasks.TaskError, match=r"t\.jsonl line 3: id 'a' is already line 1's") as caught:
        tasks.load_task(same_id)
    assert "own `id`" in caught.value.hint
    # A record without an id takes its line number, which may collide with an id given elsewhere (1 and "1" too).
    with pytest.raises(tasks.TaskError, match=r"line 2: id '1' is already line 1's"):
        tasks.load_task(
            task_file({"id": 1, "question": "1+1?", "answer": "2"}, {"id": "1", "question": "x", "answer": "1"})
        )
    with pytest.raises(tasks.TaskError, match=r"line 2: id '2' \(a record without `id` takes its line number\)"):
        tasks.load_task(task_file({"id": 2, "question": "1+1?", "answer": "2"}, {"question": "x", "answer": "1"}))
    # The same question twice without ids is two items, told apart by their lines.
    twice = tasks.load_task(task_file({"question": "1+1?", "answer": "2"}, {"question": "1+1?", "answer": "2"}))
    assert [i.id for i in twice.items] == ["1", "2"]
