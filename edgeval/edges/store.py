"""The results store: one SQLite file (its schema: `migrations`) and the queries edgeval needs.

Every finished question (its k samples) is committed in one transaction, so a killed run loses at most the
question in flight and a rerun skips what is stored: (configuration, item, sample) is a primary key.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeval.core.errors import DiskFullError, EdgevalError
from edgeval.core.paths import cache_dir, edgeval_home
from edgeval.edges.migrations import MIGRATIONS as MIGRATIONS
from edgeval.edges.migrations import kind_of, statements


class StoreError(EdgevalError):
    """The results database cannot be opened or is not edgeval's."""

    hint = "check the --db path, or move the file aside to start a fresh store"


# How long a process waits for another's write to finish before giving up (writes are short: one question).
BUSY_TIMEOUT_S = 60


def _operational(path: Path, exc: sqlite3.OperationalError) -> EdgevalError:
    """SQLite's operational failures in words: a full disk, a store another process holds too long, the rest."""
    text = str(exc)
    if "disk is full" in text:
        return DiskFullError(path)
    if "locked" in text or "busy" in text:
        return StoreError(
            f"{path}: another edgeval process held the store for over {BUSY_TIMEOUT_S} s",
            hint="try again when it finishes",
        )
    return StoreError(f"{path}: {text}")


def _refuse(path: Path, *, create: bool) -> None:
    """Refuse, before writing a byte, a file that must not be opened as the store: another program's SQLite file
    (its tables, `user_version` and journal mode are left as they are) and, where the command only reads
    (`create` false), a file that holds no store. A store is made only in a new or empty file."""
    empty = not path.exists() or (path.is_file() and path.stat().st_size == 0)
    if not empty:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)) as db:
            kind, names = kind_of(db)
        if kind == "foreign":
            shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
            raise StoreError(f"{path} is not an edgeval results store (another program's SQLite file: {shown})",
                             hint="name another file with --db; edgeval leaves this one as it is")  # fmt: skip
        empty = kind == "empty"
    if empty and not create:
        raise StoreError(f"{path}: no results are stored here",
                         hint="run `edgeval compare` or `edgeval run` first, or name the store with --db")  # fmt: skip


def default_db_path() -> Path:
    """EDGEVAL_HOME/edgeval.db."""
    return edgeval_home() / "edgeval.db"


@dataclass(frozen=True)
class SampleRow:
    """One stored sample."""

    item_index: int
    item_id: str
    sample_index: int
    reference: str
    text: str
    answer: str | None
    correct: bool
    tokens: int
    forced: bool
    finish: str
    prompt_tokens: int
    evicted: int = 0  # own tokens the sample evicted from the KV cache (a KV window)


@dataclass(frozen=True)
class ItemTiming:
    """How long one question's prompt and generation took."""

    item_index: int
    prompt_tokens: int
    prompt_s: float
    generated_tokens: int
    decode_s: float
    ttft_s: float


@dataclass(frozen=True)
class Claim:
    """A process running a configuration: pid and host, the process's start time, and its last heartbeat."""

    pid: int
    host: str
    started: float
    heartbeat: float


@dataclass(frozen=True)
class Node:
    """A machine that produced results: host, hardware, backend and versions (and its Ray node id and address)."""

    hostname: str
    cpu: str
    backend: str
    edgeval_version: str
    llama_cpp_python: str
    llama_cpp_build: str
    hardware: dict[str, object]
    ray_node_id: str | None = None
    ip: str | None = None

    @property
    def label(self) -> str:
        """`host-a (Intel Xeon, cpu)`."""
        return f"{self.hostname} ({self.cpu}, {self.backend})"


@dataclass(frozen=True)
class NodeRun:
    """What one node measured of one configuration: its peak memory, speed and how many questions it answered."""

    config_id: int
    node_id: int
    node: Node
    items: int
    peak_rss_bytes: int | None
    peak_vram_bytes: int | None
    load_s: float | None
    wall_s: float
    prompt_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    ttft_s: float | None
    repack_mode: str | None = None  # how the node loaded the weights (its own probe's mode, or the request's)
    parallel: int | None = None  # questions it kept in flight


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Store:
    """A connection to the results database, migrated on open; created where `create` (the commands that store
    results), and only in a new or empty file: another program's SQLite file is refused untouched."""

    def __init__(self, path: Path | None = None, *, create: bool = True) -> None:
        self.path = path or default_db_path()
        try:
            _refuse(self.path, create=create)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            self._wal()
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.OperationalError as exc:
            raise _operational(self.path, exc) from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite database ({exc})") from None

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wal(self) -> None:
        """Write-ahead logging, so readers never wait for writers. Switching a fresh file can answer "locked"
        without waiting while another process switches it too: try again until the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        """Bring the schema up to date. The version is read under the write lock, so of several processes opening
        a fresh store at once, one applies each migration and the others find it applied."""
        if int(self.db.execute("PRAGMA user_version").fetchone()[0]) == len(MIGRATIONS):
            return  # the common case, without taking the write lock
        with self.transaction() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} was written by a newer edgeval (schema {version})", hint="upgrade edgeval"
                )
            for script in MIGRATIONS[version:]:
                for statement in statements(script):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error); waits up to BUSY_TIMEOUT_S for another writer."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _operational(self.path, exc) from None
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise _operational(self.path, exc) from None
            raise

    # ---------------------------------------------------------------- runs and configurations

    def add_run(self, provenance: dict[str, object], command: str) -> int:
        """Record an invocation and where it ran."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (started_at, edgeval_version, llama_cpp_python, llama_cpp_build, backend, hardware,"
                " command) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), provenance["edgeval"], provenance["llama_cpp_python"], provenance.get("llama_cpp_build"),
                 provenance["backend"], json.dumps(provenance.get("hardware", {})), command),
            )  # fmt: skip
            return int(cur.lastrowid or 0)

    def upsert_config(self, key: str, fields: dict[str, object]) -> int:
        """The configuration's id, inserting it the first time its key is seen (by any process)."""
        row = self.db.execute("SELECT id FROM configs WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return int(row["id"])
        names = ["key", *fields, "created_at", "updated_at"]
        values = [key, *fields.values(), _now(), _now()]
        with self.transaction() as db:
            db.execute(
                f"INSERT OR IGNORE INTO configs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values
            )
            return int(db.execute("SELECT id FROM configs WHERE key = ?", (key,)).fetchone()["id"])

    def update_config(self, config_id: int, **fields: object) -> None:
        """Set status, message, measurements… on a configuration."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as db:
            db.execute(
                f"UPDATE configs SET {assignments}, updated_at = ? WHERE id = ?", [*fields.values(), _now(), config_id]
            )

    def config(self, config_id: int) -> sqlite3.Row:
        """One configuration row."""
        row = self.db.execute("SELECT * FROM configs WHERE id = ?", (config_id,)).fetchone()
        if row is None:
            raise StoreError(f"no configuration {config_id} in {self.path}")
        return row  # type: ignore[no-any-return]

    def configs(self, where: str = "1", params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Configuration rows matching a SQL condition."""
        return list(self.db.execute(f"SELECT * FROM configs WHERE {where} ORDER BY id", params))

    def plain_configs(self, model_sha256: str, task_fingerprint: str, *, thinking: bool) -> list[sqlite3.Row]:
        """A model file's configurations on a task with an f16 KV cache and no window (a KL reference's traces)."""
        return self.configs(
            "model_sha256 = ? AND task_fingerprint = ? AND kv_type_k = 'f16' AND kv_type_v = 'f16' AND kv_window = 0"
            " AND thinking = ?",
            (model_sha256, task_fingerprint, int(thinking)),
        )

    def most_sampled_task(self, model_sha256: str) -> str | None:
        """The task a model file has the most stored samples of (None: none)."""
        row = self.db.execute(
            "SELECT c.task FROM samples s JOIN configs c ON c.id = s.config_id WHERE c.model_sha256 = ?"
            " GROUP BY c.task ORDER BY COUNT(*) DESC, c.task LIMIT 1",
            (model_sha256,),
        ).fetchone()
        return None if row is None else str(row["task"])

    def add_recommendation(self, task: str, budget_bytes: int, config_id: int, votes: int, command: str) -> None:
        """Record a `compare`'s recommendation: a configuration and the votes it recommends."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO recommendations (created_at, task, budget_bytes, config_id, votes, command)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (_now(), task, budget_bytes, config_id, votes, command),
            )

    def latest_recommendation(self) -> sqlite3.Row | None:
        """The last recommendation a `compare` recorded (None: none yet)."""
        row = self.db.execute("SELECT * FROM recommendations ORDER BY id DESC LIMIT 1").fetchone()
        return row  # type: ignore[no-any-return]

    def latest_measured(self, where: str = "1", params: Sequence[object] = ()) -> sqlite3.Row | None:
        """Of the configurations matching a SQL condition that have samples, the one measured last."""
        row = self.db.execute(
            f"SELECT * FROM configs WHERE ({where}) AND id IN (SELECT DISTINCT config_id FROM samples)"
            " ORDER BY updated_at DESC, id DESC LIMIT 1",
            params,
        ).fetchone()
        return row  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- claims: one process per configuration

    def claim(self, config_id: int, me: Claim, alive: Callable[[Claim], bool]) -> Claim | None:
        """Claim the configuration for `me`; None when claimed, else the live claim another process holds.
        A claim whose holder `alive` says is gone is taken over."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT claim_pid, claim_host, claim_started, claim_heartbeat FROM configs WHERE id = ?", (config_id,)
            ).fetchone()
            if row is not None and row["claim_pid"] is not None:
                holder = Claim(row["claim_pid"], row["claim_host"], row["claim_started"], row["claim_heartbeat"])
                if (holder.pid, holder.host) != (me.pid, me.host) and alive(holder):
                    return holder
            db.execute(
                "UPDATE configs SET claim_pid = ?, claim_host = ?, claim_started = ?, claim_heartbeat = ? WHERE id = ?",
                (me.pid, me.host, me.started, me.heartbeat, config_id),
            )
        return None

    def heartbeat(self, config_id: int, me: Claim, at: float) -> None:
        """Say that `me` still runs the configuration."""
        with self.transaction() as db:
            db.execute(
                "UPDATE configs SET claim_heartbeat = ? WHERE id = ? AND claim_pid = ? AND claim_host = ?",
                (at, config_id, me.pid, me.host),
            )

    def release(self, config_id: int, me: Claim) -> None:
        """Give up `me`'s claim (a claim another process took over is left alone)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE configs SET claim_pid = NULL, claim_host = NULL, claim_started = NULL, claim_heartbeat = NULL"
                " WHERE id = ? AND claim_pid = ? AND claim_host = ?",
                (config_id, me.pid, me.host),
            )

    # ---------------------------------------------------------------- samples

    def add_item(self, config_id: int, samples: Sequence[SampleRow], timing: ItemTiming) -> None:
        """Store one finished question — all its samples and its timing — in one transaction."""
        with self.transaction() as db:
            self._insert_item(db, config_id, samples, timing)

    @staticmethod
    def _insert_item(
        db: sqlite3.Connection,
        config_id: int,
        samples: Sequence[SampleRow],
        timing: ItemTiming,
        node_id: int | None = None,
    ) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO samples (config_id, item_index, item_id, sample_index, reference, text, answer,"
            " correct, tokens, forced, finish, prompt_tokens, evicted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(config_id, s.item_index, s.item_id, s.sample_index, s.reference, s.text, s.answer, int(s.correct),
              s.tokens, int(s.forced), s.finish, s.prompt_tokens, s.evicted) for s in samples],
        )  # fmt: skip
        t = asdict(timing)
        db.execute(
            "INSERT OR IGNORE INTO item_timings (config_id, item_index, prompt_tokens, prompt_s, generated_tokens,"
            " decode_s, ttft_s, node_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (config_id, t["item_index"], t["prompt_tokens"], t["prompt_s"], t["generated_tokens"], t["decode_s"],
             t["ttft_s"], node_id),
        )  # fmt: skip

    def add_items(
        self, samples: Mapping[int, Sequence[SampleRow]], timing: ItemTiming, node_id: int | None = None
    ) -> None:
        """Store one question answered for several configurations at once (the rungs of a budget ladder), in one
        transaction: a killed run keeps every rung of a question or none. A question already stored is left as it
        is (a retried task's copy adds nothing); `node_id` names the cluster node that answered it."""
        with self.transaction() as db:
            for config_id, rows in samples.items():
                self._insert_item(db, config_id, rows, timing, node_id)

    def raise_items(self, config_id: int, n_items: int) -> None:
        """Ask a configuration for at least n_items questions (a later run may add questions, never drop them)."""
        with self.transaction() as db:
            db.execute("UPDATE configs SET n_items = MAX(n_items, ?) WHERE id = ?", (n_items, config_id))

    def done_items(self, config_id: int, k: int) -> set[int]:
        """Item indexes whose k samples are all stored."""
        rows = self.db.execute(
            "SELECT item_index FROM samples WHERE config_id = ? GROUP BY item_index HAVING COUNT(*) >= ?",
            (config_id, k),
        )
        return {int(r[0]) for r in rows}

    def sample_count(self, config_id: int) -> int:
        """How many samples a configuration has stored."""
        return int(self.db.execute("SELECT COUNT(*) FROM samples WHERE config_id = ?", (config_id,)).fetchone()[0])

    def samples(self, config_id: int) -> list[SampleRow]:
        """Every stored sample of a configuration, by item then sample."""
        rows = self.db.execute(
            "SELECT * FROM samples WHERE config_id = ? ORDER BY item_index, sample_index", (config_id,)
        )
        return [
            SampleRow(r["item_index"], r["item_id"], r["sample_index"], r["reference"], r["text"], r["answer"],
                      bool(r["correct"]), r["tokens"], bool(r["forced"]), r["finish"], r["prompt_tokens"], r["evicted"])
            for r in rows
        ]  # fmt: skip

    def set_verdicts(self, config_id: int, verdicts: Sequence[tuple[int, int, str | None, bool]]) -> None:
        """Overwrite the answer and correctness of samples, given as (item index, sample index, answer, correct)."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE samples SET answer = ?, correct = ? WHERE config_id = ? AND item_index = ? AND sample_index = ?",
                [(answer, int(correct), config_id, item, sample) for item, sample, answer, correct in verdicts],
            )

    def timings(self, config_id: int) -> list[ItemTiming]:
        """Per-question timings of a configuration."""
        rows = self.db.execute("SELECT * FROM item_timings WHERE config_id = ? ORDER BY item_index", (config_id,))
        return [
            ItemTiming(r["item_index"], r["prompt_tokens"], r["prompt_s"], r["generated_tokens"], r["decode_s"],
                       r["ttft_s"])
            for r in rows
        ]  # fmt: skip

    def timings_by_node(self, config_id: int) -> dict[int | None, list[ItemTiming]]:
        """Per-question timings of a configuration, by the node that answered (None: the store's own machine)."""
        rows = self.db.execute("SELECT * FROM item_timings WHERE config_id = ? ORDER BY item_index", (config_id,))
        out: dict[int | None, list[ItemTiming]] = {}
        for r in rows:
            timing = ItemTiming(r["item_index"], r["prompt_tokens"], r["prompt_s"], r["generated_tokens"],
                                r["decode_s"], r["ttft_s"])  # fmt: skip
            out.setdefault(r["node_id"], []).append(timing)
        return out

    # ---------------------------------------------------------------- cluster nodes

    def add_node(self, node: Node) -> int:
        """The node's id, inserting it the first time its facts are seen (its Ray id and address are updated)."""
        key = (node.hostname, node.cpu, node.backend, node.edgeval_version, node.llama_cpp_python,
               node.llama_cpp_build)  # fmt: skip
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO nodes (hostname, cpu, backend, edgeval_version, llama_cpp_python,"
                " llama_cpp_build, hardware) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, json.dumps(node.hardware, sort_keys=True)),
            )
            row = db.execute(
                "SELECT id FROM nodes WHERE hostname = ? AND cpu = ? AND backend = ? AND edgeval_version = ?"
                " AND llama_cpp_python = ? AND llama_cpp_build = ?",
                key,
            ).fetchone()
            db.execute(
                "UPDATE nodes SET ray_node_id = ?, ip = ?, hardware = ? WHERE id = ?",
                (node.ray_node_id, node.ip, json.dumps(node.hardware, sort_keys=True), row["id"]),
            )
            return int(row["id"])

    def node(self, node_id: int) -> Node:
        """One node's facts."""
        r = self.db.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if r is None:
            raise StoreError(f"no node {node_id} in {self.path}")
        return Node(r["hostname"], r["cpu"], r["backend"], r["edgeval_version"], r["llama_cpp_python"],
                    r["llama_cpp_build"], json.loads(r["hardware"]), r["ray_node_id"], r["ip"])  # fmt: skip

    def record_node_run(
        self, config_id: int, node_id: int, *, peak_rss: tuple[int | None, int | None, int | None],
        peak_vram_bytes: int | None, load_s: float | None, wall_s: float, repack_mode: str | None = None,
        parallel: int | None = None,
    ) -> None:  # fmt: skip
        """Add one finished task's measurements to what a node measured of a configuration: the peak stays the
        highest the node saw (total, with its anonymous and file-backed parts at that peak), wall time adds up; the
        repacking mode and width are the latest task's."""
        total, anon, file = peak_rss
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO node_runs (config_id, node_id) VALUES (?, ?)", (config_id, node_id))
            db.execute("UPDATE node_runs SET repack_mode = COALESCE(?, repack_mode), parallel = COALESCE(?, parallel)"
                       " WHERE config_id = ? AND node_id = ?", (repack_mode, parallel, config_id, node_id))  # fmt: skip
            db.execute(
                "UPDATE node_runs SET units = units + 1, wall_s = wall_s + ?, load_s = COALESCE(?, load_s),"
                " peak_vram_bytes = MAX(COALESCE(peak_vram_bytes, 0), COALESCE(?, 0)) WHERE config_id = ? AND node_id = ?",
                (wall_s, load_s, peak_vram_bytes, config_id, node_id),
            )
            db.execute(
                "UPDATE node_runs SET peak_rss_bytes = ?, peak_rss_anon_bytes = ?, peak_rss_file_bytes = ?"
                " WHERE config_id = ? AND node_id = ? AND COALESCE(peak_rss_bytes, 0) < COALESCE(?, 0)",
                (total, anon, file, config_id, node_id, total),
            )

    def node_runs(self, config_id: int, speed: Callable[[list[ItemTiming]], tuple[float | None, ...]]) -> list[NodeRun]:
        """What each node measured of a configuration (speed from the questions it answered, by `speed`)."""
        timings = self.timings_by_node(config_id)
        out = []
        for r in self.db.execute("SELECT * FROM node_runs WHERE config_id = ? ORDER BY node_id", (config_id,)):
            own = timings.get(int(r["node_id"]), [])
            prompt_tps, decode_tps, ttft = speed(own)
            vram = r["peak_vram_bytes"] or None
            out.append(NodeRun(config_id, int(r["node_id"]), self.node(int(r["node_id"])), len(own),
                               r["peak_rss_bytes"], vram, r["load_s"], r["wall_s"], prompt_tps, decode_tps, ttft,
                               r["repack_mode"], r["parallel"]))  # fmt: skip
        return out

    # ---------------------------------------------------------------- model file hashes

    def file_sha256(self, path: Path, compute: Callable[[Path], str]) -> str:
        """A model file's sha256, computed once per (path, size, mtime) on this machine: a store that has not seen
        the file takes what another store here computed (a 5 GB file hashes in seconds)."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        row = self.db.execute(_HASH_OF, key).fetchone()
        if row is not None:
            return str(row[0])
        digest = _machine_hash(key)
        if digest is None:
            digest = compute(path)
            _remember_machine_hash(key, digest)
        with self.transaction() as db:
            db.execute(_RECORD_HASH, (*key, digest))
        return digest

    # ---------------------------------------------------------------- KL divergence (`edgeval kld`)

    def upsert_kld(self, key: str, fields: dict[str, object]) -> int:
        """The KLD run's id, inserting it the first time its key is seen."""
        row = self.db.execute("SELECT id FROM kld WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return int(row["id"])
        names = ["key", *fields, "created_at", "updated_at"]
        with self.transaction() as db:
            db.execute(
                f"INSERT OR IGNORE INTO kld ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [key, *fields.values(), _now(), _now()],
            )
            return int(db.execute("SELECT id FROM kld WHERE key = ?", (key,)).fetchone()["id"])

    def update_kld(self, kld_id: int, **fields: object) -> None:
        """Set a KLD run's status, summary, speed."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE kld SET {assignments}, updated_at = ? WHERE id = ?", [*fields.values(), _now(), kld_id])

    def kld(self, kld_id: int) -> sqlite3.Row:
        """One KLD run."""
        row = self.db.execute("SELECT * FROM kld WHERE id = ?", (kld_id,)).fetchone()
        if row is None:
            raise StoreError(f"no KLD run {kld_id} in {self.path}")
        return row  # type: ignore[no-any-return]

    def kld_runs(self, task: str | None = None) -> list[sqlite3.Row]:
        """Every finished KLD run (of one task when given), oldest first."""
        query = "SELECT * FROM kld WHERE status = 'done'" + (" AND task = ?" if task is not None else "")
        return list(self.db.execute(query + " ORDER BY id", () if task is None else (task,)))

    def add_kld_trace(self, kld_id: int, item_index: int, tokens: int, kld: bytes, agree: bytes, rest: bytes) -> None:
        """Store one trace's per-position values (one transaction)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO kld_traces (kld_id, item_index, tokens, kld, agree, rest) VALUES (?, ?, ?, ?, ?, ?)",
                (kld_id, item_index, tokens, kld, agree, rest),
            )

    def kld_traces(self, kld_id: int) -> list[sqlite3.Row]:
        """A KLD run's stored traces, by item."""
        return list(self.db.execute("SELECT * FROM kld_traces WHERE kld_id = ? ORDER BY item_index", (kld_id,)))

    def kld_means(self) -> dict[tuple[str, str, str, int], float]:
        """The latest finished mean KLD of each tested configuration, by (file sha256, K type, V type, KV window)."""
        return {
            (str(r["tested_sha256"]), str(r["kv_type_k"]), str(r["kv_type_v"]), int(r["kv_window"])): float(
                r["mean_kld"]
            )
            for r in self.kld_runs()
        }


# A file's hash record, in a store and in the machine-wide record every store here shares (the same table)
_HASH_OF = "SELECT sha256 FROM file_hashes WHERE path=? AND size=? AND mtime_ns=?"
_RECORD_HASH = "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)"


@contextmanager
def _machine_hashes() -> Iterator[sqlite3.Connection]:
    """The machine-wide record of model-file hashes (path, size, mtime_ns -> sha256), committed on leaving."""
    with closing(sqlite3.connect(cache_dir("hashes") / "sha256.db", timeout=30)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS file_hashes (path TEXT NOT NULL, size INTEGER NOT NULL, "
                   "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (path, size, mtime_ns))")  # fmt: skip
        yield db


def _machine_hash(key: tuple[str, int, int]) -> str | None:
    """What another store on this machine computed for the file; None where nothing is recorded, or the record
    cannot be read (a read-only home, a damaged file)."""
    try:
        with _machine_hashes() as db:
            row = db.execute(_HASH_OF, key).fetchone()
    except (sqlite3.Error, OSError):
        return None
    return None if row is None else str(row[0])


def _remember_machine_hash(key: tuple[str, int, int], digest: str) -> None:
    """Record the file's hash for every store on this machine (skipped where the record cannot be written)."""
    try:
        with _machine_hashes() as db:
            db.execute(_RECORD_HASH, (*key, digest))
    except (sqlite3.Error, OSError):
        pass
