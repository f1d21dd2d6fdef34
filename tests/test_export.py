"""`edgeval export` and `edgeval ask`: a measured configuration handed to llama-server (and Ollama) as measured, and
one question voted through a server — real runs on the trained family, a fake server, and the real llama-server
where one is built (EDGEVAL_LLAMA_SERVER, or llama-server on PATH)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from edgeval.core.grading import AnswerKind
from edgeval.edges import server as server_mod
from edgeval.edges import tasks
from edgeval.edges.server import ServerError, post_json
from edgeval.edges.store import Store
from edgeval.faces import demo
from edgeval.faces.cli import cli
from edgeval.running import ask, export

from .conftest import write_catalog

MODEL = next(p for p in demo.family_sources() if p.stem == "edgeval-tiny-m")


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _run(db: Path, *extra: str) -> None:
    code, out = _cli("run", str(MODEL), "--task", "arith", "--no-repack", "--db", str(db), "--json", *extra)
    assert code == 0, out


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with two real runs of the family: thinking with 4 sampled votes and q8_0 K, then thinking off."""
    folder = tmp_path_factory.mktemp("export")
    db = folder / "e.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEVAL_HOME", str(folder / "home"))
        _run(db, "--limit", "3", "--k", "4", "--budget-tokens", "48", "--kv-k", "q8_0", "--kv-v", "f16",
             "--temperature", "0.5", "--top-p", "0.9", "--top-k", "10", "--min-p", "0.05", "--seed", "7",
             "--threads", "2")  # fmt: skip
        _run(db, "--limit", "2", "--budget-tokens", "24", "--no-thinking", "--temperature", "0")
        yield db


def _export(db: Path, *args: str) -> dict[str, object]:
    code, out = _cli("export", "--db", str(db), "--json", *args)
    assert code == 0, out
    data: dict[str, object] = json.loads(out)
    return data


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_export_maps_every_stored_setting_to_the_server_and_the_request(measured: Path) -> None:
    with Store(measured) as store:
        row = store.configs("thinking = 1")[0]
    data = _export(measured, str(row["id"]))
    argv, body = data["argv"], data["request"]
    assert isinstance(argv, list) and isinstance(body, dict)
    assert argv[0] == "llama-server" and _flag(argv, "-m") == str(MODEL)
    assert (_flag(argv, "-ctk"), _flag(argv, "-ctv"), _flag(argv, "-fa")) == ("q8_0", "f16", "on")
    assert _flag(argv, "--parallel") == "4" and body["n_cmpl"] == 4  # a slot per vote: n_cmpl ≤ n_parallel
    assert "--kv-unified" in argv and int(_flag(argv, "-c")) >= int(row["kv_cells"])
    assert _flag(argv, "--reasoning") == "on" and _flag(argv, "--reasoning-budget") == "48"
    assert _flag(argv, "--reasoning-budget-message") == export.DEFAULT_BUDGET_MESSAGE
    assert (_flag(argv, "-t"), _flag(argv, "-ngl"), argv[-1]) == ("2", "0", "--no-repack")
    assert _flag(argv, "--host") == "127.0.0.1"
    assert (body["temperature"], body["top_p"], body["top_k"], body["min_p"]) == (0.5, 0.9, 10, 0.05)
    assert body["samplers"] == ["top_k", "top_p", "min_p", "temperature"]
    assert body["seed"] == export.question_seed(7, "QUESTION")
    assert body["reasoning_budget_tokens"] == 48 and body["reasoning_budget_message"] == export.DEFAULT_BUDGET_MESSAGE
    assert body["reasoning_budget_start_tag"] == "<think>" and body["reasoning_budget_end_tags"] == ["</think>"]
    start, forced = export.tag_tokens(MODEL, export.DEFAULT_BUDGET_MESSAGE)
    assert body["n_predict"] == 48 + start + forced + export.ANSWER_TOKENS
    assert str(body["prompt"]).endswith("<|im_start|>assistant\n") and "QUESTION" in str(body["prompt"])
    assert data["endpoint"] == "/completion" and data["config_id"] == row["id"] and data["votes"] == 4
    # fewer votes of the same samples: n_cmpl and the slots follow
    fewer = _export(measured, f"{row['id']}:2")
    assert fewer["request"]["n_cmpl"] == 2 and _flag(fewer["argv"], "--parallel") == "2"  # type: ignore[index, arg-type]


def test_thinking_off_has_no_budget_forcing_and_says_so_to_the_server(measured: Path) -> None:
    data = _export(measured, "--budget-tokens", "24")
    argv, body = data["argv"], data["request"]
    assert isinstance(argv, list) and isinstance(body, dict)
    assert _flag(argv, "--reasoning") == "off" and "--reasoning-budget" not in argv
    assert body["n_predict"] == 24 and "reasoning_budget_tokens" not in body and body["temperature"] == 0.0


def test_a_row_of_the_earlier_forcing_exports_with_a_plain_warning(measured: Path) -> None:
    with Store(measured) as store:
        row = store.configs("thinking = 1")[0]
    data = _export(measured, str(row["id"]))
    columns = row.keys()
    new_forcing = "forcing" in columns and row["forcing"] == export.FORCING
    assert bool(data["warnings"]) is not new_forcing
    code, out = _cli("export", "--db", str(measured), str(row["id"]))
    assert code == 0 and "llama-server -m" in out and ("note: " in out) is not new_forcing


def test_ollama_modelfile_and_what_it_cannot_reproduce(measured: Path) -> None:
    with Store(measured) as store:
        row = store.configs("thinking = 1")[0]
    data = _export(measured, str(row["id"]), "--format", "ollama")
    text = str(data["modelfile"])
    assert text.startswith(f"FROM {MODEL}\n")
    for line in ("PARAMETER temperature 0.5", "PARAMETER top_p 0.9", "PARAMETER top_k 10", "PARAMETER min_p 0.05",
                 "PARAMETER seed 7", "PARAMETER num_thread 2"):  # fmt: skip
        assert line in text
    assert data["environment"] == {"OLLAMA_FLASH_ATTENTION": "1"}  # q8_0 K with f16 V: no single type
    cannot = " ".join(data["cannot"])  # type: ignore[arg-type]
    for what in ("thinking budget", "4 votes", "KV cache types q8_0/f16", "sampler chain"):
        assert what in cannot


def test_default_is_the_latest_compare_pick_else_the_latest_measured(measured: Path, tmp_path: Path) -> None:
    assert _export(measured)["chosen_by"] == "latest"
    with Store(measured) as store:
        assert _export(measured)["config_id"] == store.latest_measured()["id"]  # type: ignore[index]
    catalog = write_catalog(tmp_path / "family.toml", {MODEL.stem: {"params": 1, "files": [
        {"quant": "F16", "path": str(MODEL)}]}})  # fmt: skip
    db = tmp_path / "c.db"
    code, out = _cli("compare", "--budget", "1GB", "--task", "arith", "--exhaustive", "--limit", "3", "--models",
                     MODEL.stem, "--kv", "f16", "--budget-tokens", "16", "--k", "1,2", "--no-repack", "--catalog",
                     str(catalog), "--db", str(db), "--json")  # fmt: skip
    assert code == 0, out
    picked = json.loads(out)[0]["recommended"]
    _run(db, "--limit", "1", "--budget-tokens", "8")  # measured after the compare: not its pick
    data = _export(db)
    assert data["chosen_by"] == "recommendation"
    assert (data["config_id"], data["votes"]) == (picked["config_id"], picked["k"])


def test_bad_selections_are_one_line_errors(measured: Path, tmp_path: Path) -> None:
    for args, code in ((["999"], 1), (["--kv", "q4_0"], 1), (["--k", "9"], 1), (["abc"], 2), (["1:x"], 2)):
        got, out = _cli("export", "--db", str(measured), *args)
        assert got == code, (args, out)
        assert "Traceback" not in out and out.strip().splitlines()[-1].startswith("Error")
    got, out = _cli("export", "--db", str(tmp_path / "empty.db"))
    assert got == 1 and len(out.strip().splitlines()) == 1 and "no results are stored here" in out
    assert not (tmp_path / "empty.db").exists()  # a command that only reads makes no store


# ---------------------------------------------------------------- voting, without a server


def test_tally_votes_as_edgeval_votes() -> None:
    assert ask.tally(["4", "4", "5", None], 1) == ("4", {"4": 2, "5": 1}, ())
    assert ask.tally([None, None], 1) == (None, {}, ())
    answer, votes, tied = ask.tally(["5", "4"], 3)
    assert tied == ("4", "5") and answer in tied and votes == {"4": 1, "5": 1}
    assert {ask.tally(["5", "4"], seed)[0] for seed in range(40)} == {"4", "5"}  # a draw, not the first sample
    assert ask.tally(["5", "4"], 3) == ask.tally(["5", "4"], 3)  # the same question draws the same


def test_samples_are_read_in_vote_order_and_stored_as_the_store_keeps_them(measured: Path) -> None:
    with Store(measured) as store:
        d = export.deployment(store, export.Selection(model="edgeval-tiny-m:F16", budget=48))
    answer = [{"index": 1, "content": "x</think>\n\nThe answer is $\\boxed{7}$", "stop_type": "eos"},
              {"index": 0, "content": "still thinking 3", "stop_type": "limit"}]  # fmt: skip
    samples = ask.samples_of(d, answer, AnswerKind.NUMBER)
    assert [s.finish for s in samples] == ["length", "stop"] and samples[1].answer == "7"
    opened = ask.samples_of(replace(d, opens_reasoning=True), {"content": "3 + 4</think>\n\n7"}, AnswerKind.NUMBER)
    assert opened[0].text == "<think>\n3 + 4</think>\n\n7" and opened[0].answer == "7"


class _Fake(BaseHTTPRequestHandler):
    """A stand-in llama-server: answers /completion with canned votes and keeps what it was sent."""

    sent: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Fake.sent.append(body)
        if self.path != "/completion":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "File Not Found"}}')
            return
        texts = ["\\boxed{12}", "so 12", "13", "no idea"][: int(body["n_cmpl"])]
        out = json.dumps([{"index": i, "content": t, "stop_type": "eos"} for i, t in enumerate(texts)]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), _Fake)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Fake.sent = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_ask_sends_the_exported_request_and_prints_the_vote(measured: Path, fake_server: str) -> None:
    with Store(measured) as store:
        row = store.configs("thinking = 1")[0]
    code, out = _cli("ask", "--server", fake_server, "--db", str(measured), "--config", str(row["id"]), "--json",
                     "What is 5 + 7?")  # fmt: skip
    assert code == 0, out
    data = json.loads(out)
    assert data["answer"] == "12" and data["votes"] == {"12": 2, "13": 1} and data["seconds"] > 0
    assert [s["answer"] for s in data["samples"]] == ["12", "12", "13", None]
    sent = _Fake.sent[-1]
    assert sent["n_cmpl"] == 4 and "What is 5 + 7?" in str(sent["prompt"])
    assert sent["seed"] == export.question_seed(7, "What is 5 + 7?")
    code, out = _cli("ask", "--server", fake_server, "--db", str(measured), "--config", str(row["id"]), "5 + 7?")
    assert code == 0 and "12" in out.splitlines() and "12: 2, 13: 1 of 4 (1 gave no answer)" in out


def test_ask_failures_are_one_line(measured: Path, fake_server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    code, out = _cli("ask", "--server", f"127.0.0.1:{closed}", "--db", str(measured), "2 + 2?")
    assert code == 1 and len(out.strip().splitlines()) == 1 and "cannot reach llama-server" in out
    with pytest.raises(ServerError, match="HTTP 404: File Not Found"):
        post_json(fake_server + "/nowhere", {}, timeout=5)


# ---------------------------------------------------------------- the real llama-server


def _llama_server() -> str | None:
    return os.environ.get("EDGEVAL_LLAMA_SERVER") or shutil.which("llama-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(_llama_server() is None, reason="no llama-server built (EDGEVAL_LLAMA_SERVER or PATH)")
def test_llama_server_started_as_exported_answers_with_the_stored_greedy_texts(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _run(db, "--limit", "8", "--budget-tokens", "64", "--temperature", "0", "--parallel", "1")  # a budget never reached
    port = _free_port()
    data = _export(db, "--port", str(port))
    argv = [str(_llama_server()), *data["argv"][1:]]  # type: ignore[index]
    with Store(db) as store:
        d = export.deployment(store, export.Selection())
        stored = store.samples(d.config_id)
    assert not any(s.forced for s in stored)
    items = tasks.load_task("arith").items
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            server_mod.wait_ready(f"http://127.0.0.1:{port}", lambda: server.poll() is None)
            texts = [ask.samples_of(d, _complete(port, d, items[s.item_index]), d.kind)[0].text for s in stored]
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert texts == [s.text for s in stored]


def _complete(port: int, d: export.Deployment, item: tasks.Item) -> object:
    body = export.request(d, d.prompt(item.question), export.question_seed(d.seed, item.id))
    return post_json(f"http://127.0.0.1:{port}/completion", body, timeout=60)
