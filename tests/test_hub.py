"""Downloads and remote header reads through huggingface_hub, against a Hub-protocol server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeval.core.quants import WeightQuant
from edgeval.edges import gguf_info
from edgeval.faces.cli import cli
from edgeval.llama import synth

from .conftest import write_catalog
from .hub_server import ALLOWED_TOKEN, FakeHub

REPO = "Qwen/Qwen3-Served-GGUF"
FILE = "Qwen3-Served-Q8_0.gguf"
SERVED = synth.SynthSpec(name="served", n_layer=4, n_embd=512, n_head=8, n_head_kv=4, head_dim=64, n_ff=1536,
                         n_vocab=2048)  # fmt: skip


@pytest.fixture(scope="session")
def served_model(model_dir: Path) -> Path:
    """A ~15 MB Q8_0 model: big enough that reading only its header is visible."""
    return synth.build(SERVED, WeightQuant.Q8_0, model_dir, threads=2)


def _catalog(tmp_path: Path, *, repo: str = REPO, file: str = FILE, **extra: object) -> Path:
    entry = {"quant": "Q8_0", "repo": repo, "file": file, **extra}
    return write_catalog(
        tmp_path / "catalog.toml",
        {"served": {"params": SERVED.n_params, "n_layer": SERVED.n_layer, "n_embd": SERVED.n_embd,
                    "n_head": SERVED.n_head, "n_head_kv": SERVED.n_head_kv, "head_dim": SERVED.head_dim,
                    "n_ff": SERVED.n_ff, "n_vocab": SERVED.n_vocab, "n_ctx_train": SERVED.n_ctx_train,
                    "tied_embeddings": True, "files": [entry]}},
    )  # fmt: skip


def _cdn_gets(hub: FakeHub) -> list[str | None]:
    return [r.range for r in hub.requests if r.method == "GET" and r.path.startswith("/cdn/")]


def test_pull_downloads_into_the_hf_cache_checks_and_is_idempotent(
    fake_hub: FakeHub, served_model: Path, tmp_path: Path
) -> None:
    data = served_model.read_bytes()
    sha = fake_hub.add(REPO, FILE, data)
    catalog = _catalog(tmp_path, size=len(data), sha256=sha)
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    cached = tmp_path / "hf-home" / "hub" / "models--Qwen--Qwen3-Served-GGUF" / "snapshots"
    (path,) = cached.rglob(FILE)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    models = json.loads(CliRunner().invoke(cli, ["models", "--json", "--catalog", str(catalog)]).output)
    assert next(m for m in models if m["model"] == "served:Q8_0")["downloaded"] is True
    before = len(_cdn_gets(fake_hub))
    assert CliRunner().invoke(cli, ["pull", "served", "--catalog", str(catalog)]).exit_code == 0
    assert len(_cdn_gets(fake_hub)) == before  # nothing fetched again


def test_inspect_reads_a_remote_header_without_downloading(
    fake_hub: FakeHub, served_model: Path, tmp_path: Path
) -> None:
    data = served_model.read_bytes()
    fake_hub.add(REPO, FILE, data)
    result = CliRunner().invoke(cli, ["inspect", "served:Q8_0", "--json", "--catalog", str(_catalog(tmp_path))])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    local = gguf_info.read_local(served_model)
    assert facts["n_layer"] == SERVED.n_layer and facts["weight_bytes"] == local.weight_bytes
    assert facts["file_size"] == len(data)
    ranges = _cdn_gets(fake_hub)
    assert ranges and all(r is not None for r in ranges)
    fetched = sum(int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1 for r in ranges if r)
    assert fetched < len(data) / 5
    assert not list((tmp_path / "hf-home").rglob(FILE))


def test_an_interrupted_download_resumes_where_it_stopped(
    fake_hub: FakeHub, served_model: Path, tmp_path: Path
) -> None:
    data = served_model.read_bytes()
    sha = fake_hub.add(REPO, FILE, data)
    catalog = _catalog(tmp_path, size=len(data), sha256=sha)
    fake_hub.chunk_delay_s = 0.03
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen(
        [sys.executable, "-m", "edgeval", "pull", "served:Q8_0", "--catalog", str(catalog)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    blobs = tmp_path / "hf-home" / "hub" / "models--Qwen--Qwen3-Served-GGUF" / "blobs"
    deadline = time.monotonic() + 60
    partial = 0
    while time.monotonic() < deadline and partial < 2_000_000:
        time.sleep(0.05)
        partial = sum(p.stat().st_size for p in blobs.glob("*.incomplete")) if blobs.exists() else 0
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 2_000_000 <= partial < len(data), "the download was interrupted mid-file"
    fake_hub.chunk_delay_s = 0.0
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    resumed = [r for r in _cdn_gets(fake_hub) if r and not r.startswith("bytes=0-")]
    assert resumed and int(resumed[-1].split("=")[1].split("-")[0]) >= 2_000_000
    (path,) = (tmp_path / "hf-home").rglob(FILE)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


def test_gated_repo_needs_a_token(
    fake_hub: FakeHub, served_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add(REPO, FILE, served_model.read_bytes())
    fake_hub.gated.add(REPO)
    catalog = _catalog(tmp_path)
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(catalog)])
    assert result.exit_code == 1
    assert "gated" in result.output and "HF_TOKEN" in result.output
    monkeypatch.setenv("HF_TOKEN", ALLOWED_TOKEN)
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    assert ALLOWED_TOKEN not in result.output
    assert any(r.authorized for r in fake_hub.requests)


@pytest.mark.parametrize(
    ("repo", "file", "message"),
    [("Qwen/No-Such-Repo", FILE, "not found on the Hub"), (REPO, "Qwen3-Served-Q9_9.gguf", "has no file")],
)
def test_missing_repo_or_file(
    repo: str, file: str, message: str, fake_hub: FakeHub, served_model: Path, tmp_path: Path
) -> None:
    fake_hub.add(REPO, FILE, served_model.read_bytes())
    for command in ("pull", "inspect"):
        result = CliRunner().invoke(
            cli, [command, "served:Q8_0", "--catalog", str(_catalog(tmp_path, repo=repo, file=file))]
        )
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output


def test_offline_and_not_cached(
    fake_hub: FakeHub, served_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add(REPO, FILE, served_model.read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(_catalog(tmp_path))])
    assert result.exit_code == 1
    assert "HF_HUB_OFFLINE" in result.output and "edgeval demo" in result.output
    assert not [r for r in fake_hub.requests if "/resolve/" in r.path]


def test_not_enough_disk_is_refused_before_downloading(fake_hub: FakeHub, served_model: Path, tmp_path: Path) -> None:
    fake_hub.add(REPO, FILE, served_model.read_bytes())
    catalog = _catalog(tmp_path, size=10**18)  # the catalog says an exabyte
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(catalog)])
    assert result.exit_code == 1
    assert "free" in result.output and "HF_HOME" in result.output
    assert not _cdn_gets(fake_hub)


def test_checksum_and_format_are_checked_after_download(fake_hub: FakeHub, served_model: Path, tmp_path: Path) -> None:
    fake_hub.add(REPO, FILE, served_model.read_bytes())
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(_catalog(tmp_path, sha256="0" * 64))])
    assert result.exit_code == 1 and "sha256" in result.output
    fake_hub.add(REPO, "Broken-Q8_0.gguf", b"<html>an error page</html>")
    result = CliRunner().invoke(
        cli, ["pull", "served:Q8_0", "--catalog", str(_catalog(tmp_path, file="Broken-Q8_0.gguf"))]
    )
    assert result.exit_code == 1 and "not a GGUF" in result.output


def test_unreachable_hub_names_the_way_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(_catalog(tmp_path, size=1000))])
    assert result.exit_code == 1
    assert "cannot reach" in result.output and "HF_HUB_OFFLINE" in result.output


def test_a_file_that_fails_its_check_is_never_evaluated(fake_hub: FakeHub, served_model: Path, tmp_path: Path) -> None:
    good = served_model.read_bytes()
    other = bytearray(good)
    other[-1] ^= 0xFF  # the same model but one byte: a readable GGUF whose sha256 is not the catalog's
    fake_hub.add(REPO, FILE, bytes(other))
    catalog = _catalog(tmp_path, size=len(good), sha256=hashlib.sha256(good).hexdigest())
    db = tmp_path / "r.db"
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(catalog)])
    assert result.exit_code == 1 and "sha256" in result.output and "removed" in result.output, result.output
    assert not [p for p in (tmp_path / "hf-home").rglob("*") if p.is_file() and p.stat().st_size == len(good)]
    run = ["run", "served:Q8_0", "--task", "arith", "--limit", "1", "--budget-tokens", "4", "--no-repack",
           "--db", str(db), "--catalog", str(catalog)]  # fmt: skip
    result = CliRunner().invoke(cli, run)  # downloads it again, and refuses it again
    assert result.exit_code == 1 and "sha256" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    # A copy that reached the cache another way (an older edgeval, `hf download`) is checked before first use.
    from huggingface_hub import hf_hub_download

    planted = Path(hf_hub_download(REPO, FILE, cache_dir=tmp_path / "hf-home" / "hub", endpoint=fake_hub.url))
    result = CliRunner().invoke(cli, run)
    assert result.exit_code == 1 and "sha256" in result.output, result.output
    assert not planted.exists()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM configs").fetchone()[0] == 0
        assert con.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0


def test_pull_of_a_file_without_a_published_sha256_records_the_one_it_computed_and_says_it_is_unchecked(
    fake_hub: FakeHub, served_model: Path, tmp_path: Path
) -> None:
    data = served_model.read_bytes()
    sha = fake_hub.add(REPO, FILE, data)
    unlisted = _catalog(tmp_path, size=len(data))  # as models.toml lists the Qwen3-30B-A3B and 2507 files
    db = tmp_path / "results.db"
    result = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(unlisted), "--db", str(db)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"† {FILE}: not checked, the catalog has no published sha256" in said
    assert f"sha256 {sha} (computed and recorded)" in said
    (path,) = (tmp_path / "hf-home" / "hub").rglob(f"snapshots/*/{FILE}")
    with sqlite3.connect(db) as con:
        recorded = con.execute("SELECT path, size, sha256 FROM file_hashes").fetchall()
    assert recorded == [(str(path.resolve()), len(data), sha)]
    # A file the catalog has a sha256 for is checked against it and says nothing more.
    listed = _catalog(tmp_path, size=len(data), sha256=sha)
    again = CliRunner().invoke(cli, ["pull", "served:Q8_0", "--catalog", str(listed), "--db", str(db)])
    assert again.exit_code == 0 and "not checked" not in again.output and "†" not in again.output, again.output
