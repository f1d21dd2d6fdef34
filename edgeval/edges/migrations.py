"""The store's schema: numbered migrations, applied in order on open (SQLite's `user_version` counts the ones
applied). A migration is never edited once released; a change of schema is a new one at the end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

M1_INITIAL = """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            edgeval_version TEXT NOT NULL,
            llama_cpp_python TEXT NOT NULL,
            llama_cpp_build TEXT,
            backend TEXT NOT NULL,
            hardware TEXT NOT NULL,      -- JSON: cpu, cores, ram, gpus
            command TEXT NOT NULL
        );
        CREATE TABLE configs (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,    -- hash of everything that decides the samples
            run_id INTEGER REFERENCES runs(id),
            model TEXT NOT NULL,
            model_path TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            weight_quant TEXT NOT NULL,
            params INTEGER NOT NULL,
            task TEXT NOT NULL,
            task_fingerprint TEXT NOT NULL,
            kv_type_k TEXT NOT NULL,
            kv_type_v TEXT NOT NULL,
            ctx INTEGER NOT NULL,
            budget_tokens INTEGER NOT NULL,
            k INTEGER NOT NULL,
            thinking INTEGER NOT NULL,
            sampling TEXT NOT NULL,      -- JSON
            seed INTEGER NOT NULL,
            n_items INTEGER NOT NULL,
            kv_cells INTEGER NOT NULL,
            predicted_bytes INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',  -- pending, running, done, failed, crashed, killed
            message TEXT,
            log_tail TEXT,
            peak_rss_bytes INTEGER,
            peak_vram_bytes INTEGER,
            load_s REAL,
            prompt_tokens_per_s REAL,
            decode_tokens_per_s REAL,
            ttft_s REAL,
            wall_s REAL,
            backend TEXT,
            llama_cpp_build TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE samples (
            config_id INTEGER NOT NULL REFERENCES configs(id),
            item_index INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            sample_index INTEGER NOT NULL,
            reference TEXT NOT NULL,
            text TEXT NOT NULL,
            answer TEXT,
            correct INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            forced INTEGER NOT NULL,
            finish TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            PRIMARY KEY (config_id, item_index, sample_index)
        );
        CREATE TABLE item_timings (
            config_id INTEGER NOT NULL REFERENCES configs(id),
            item_index INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            prompt_s REAL NOT NULL,
            generated_tokens INTEGER NOT NULL,
            decode_s REAL NOT NULL,
            ttft_s REAL NOT NULL,
            PRIMARY KEY (config_id, item_index)
        );
        CREATE TABLE file_hashes (
            path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
            PRIMARY KEY (path, size, mtime_ns)
        );
"""

M2_LADDER = """
        -- The rows one generation fills (every rung of a budget ladder), what that generation was predicted to
        -- take (its measured peak calibrates the rungs' predictions), and each rung's prediction for j ≤ k votes.
        ALTER TABLE configs ADD COLUMN arm TEXT;
        ALTER TABLE configs ADD COLUMN arm_predicted_bytes INTEGER;
        ALTER TABLE configs ADD COLUMN predicted_by_votes TEXT;  -- JSON {j: bytes}
        CREATE INDEX configs_arm ON configs(arm);
"""

# The peak RSS's anonymous and file-backed parts (Linux RssAnon/RssFile at the peak sample; NULL where the OS does
# not tell), and whether the run loaded with weight repacking (NULL for rows stored before this was recorded).
M3_RSS_PARTS = """
        ALTER TABLE configs ADD COLUMN peak_rss_anon_bytes INTEGER;
        ALTER TABLE configs ADD COLUMN peak_rss_file_bytes INTEGER;
        ALTER TABLE configs ADD COLUMN repack INTEGER;
"""

# Which process is running a configuration now: its pid and host, when that process started (a pid the system
# reused for another process is not the claimant) and the last time it said it was alive.
M4_CLAIMS = """
        ALTER TABLE configs ADD COLUMN claim_pid INTEGER;
        ALTER TABLE configs ADD COLUMN claim_host TEXT;
        ALTER TABLE configs ADD COLUMN claim_started REAL;
        ALTER TABLE configs ADD COLUMN claim_heartbeat REAL;
"""

M5_KV_WINDOW = """
        -- KV-cache eviction: a configuration's window (0: none; part of its key only when set), and the tokens
        -- each sample evicted from the cache.
        ALTER TABLE configs ADD COLUMN kv_window INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE samples ADD COLUMN evicted INTEGER NOT NULL DEFAULT 0;
"""

# How a configuration's answers are graded (grading.AnswerKind) and where its prompt format came from (the file's
# chat template or the built-in Qwen3 format); NULL for rows stored before they were recorded.
M6_GRADING_AND_PROMPTS = """
        ALTER TABLE configs ADD COLUMN answer_kind TEXT;
        ALTER TABLE configs ADD COLUMN prompt_format TEXT;
"""

# `edgeval kld`: a tested configuration's KL divergence from a reference, teacher-forced on the reference's own
# traces (the samples of `trace_config_id`). The row holds the identities, the summary and its by-position buckets
# (JSON); `kld_traces` holds each trace's per-position values (float32 KLD, uint8 top-1 agreement), committed one
# trace at a time, so a rerun resumes and the same command again computes nothing.
M7_KLD = """
        CREATE TABLE kld (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,    -- hash of what decides the values: both files, KV types, window, traces, K
            run_id INTEGER REFERENCES runs(id),
            reference_model TEXT NOT NULL,
            reference_path TEXT NOT NULL,
            reference_sha256 TEXT NOT NULL,
            trace_config_id INTEGER NOT NULL REFERENCES configs(id),
            tested_model TEXT NOT NULL,
            tested_path TEXT NOT NULL,
            tested_sha256 TEXT NOT NULL,
            tested_weight_quant TEXT NOT NULL,
            kv_type_k TEXT NOT NULL,
            kv_type_v TEXT NOT NULL,
            kv_window INTEGER NOT NULL,
            task TEXT NOT NULL,
            task_fingerprint TEXT NOT NULL,
            top_k INTEGER NOT NULL,      -- reference log-probabilities kept per position (at least)
            max_k INTEGER NOT NULL,      -- kept at most, where the top_k leave more than rest_target outside
            rest_target REAL NOT NULL,
            rest_mass REAL,              -- mean reference probability outside the kept tokens
            status TEXT NOT NULL DEFAULT 'pending',
            n_traces INTEGER,
            tokens INTEGER,
            mean_kld REAL,
            kld_ci_low REAL,
            kld_ci_high REAL,
            median_kld REAL,
            p99_kld REAL,
            top1_agreement REAL,
            by_position TEXT,            -- JSON: [{start, end, tokens, traces, mean_kld, kld_ci95, ...}]
            tested_tokens_per_s REAL,
            reference_tokens_per_s REAL,
            backend TEXT,
            llama_cpp_build TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE kld_traces (
            kld_id INTEGER NOT NULL REFERENCES kld(id),
            item_index INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            kld BLOB NOT NULL,           -- float32 per position
            agree BLOB NOT NULL,         -- uint8 per position: the top tokens agree
            rest BLOB NOT NULL,          -- float32 per position: the reference's probability outside its kept tokens
            PRIMARY KEY (kld_id, item_index)
        );
"""

# The machines of a Ray cluster that produced results (`compare --ray`): each node's hardware, backend and versions
# (one row per distinct set of facts; the Ray node id is the last one seen). Accuracy pools across nodes, but speed and
# memory are a node's own: each question's timing names the node that answered it (NULL: the store's own machine,
# as the run's provenance says), and each configuration keeps every node's peak memory and speed apart.
M8_NODES = """
        CREATE TABLE nodes (
            id INTEGER PRIMARY KEY,
            hostname TEXT NOT NULL,
            cpu TEXT NOT NULL,
            backend TEXT NOT NULL,
            edgeval_version TEXT NOT NULL,
            llama_cpp_python TEXT NOT NULL,
            llama_cpp_build TEXT NOT NULL,
            ray_node_id TEXT,
            ip TEXT,
            hardware TEXT NOT NULL,      -- JSON: cpu, cores, ram, platform, gpus (as runs.hardware)
            UNIQUE (hostname, cpu, backend, edgeval_version, llama_cpp_python, llama_cpp_build)
        );
        ALTER TABLE item_timings ADD COLUMN node_id INTEGER REFERENCES nodes(id);
        CREATE TABLE node_runs (
            config_id INTEGER NOT NULL REFERENCES configs(id),
            node_id INTEGER NOT NULL REFERENCES nodes(id),
            peak_rss_bytes INTEGER,
            peak_rss_anon_bytes INTEGER,
            peak_rss_file_bytes INTEGER,
            peak_vram_bytes INTEGER,
            load_s REAL,
            wall_s REAL NOT NULL DEFAULT 0,
            units INTEGER NOT NULL DEFAULT 0,  -- tasks of this configuration the node finished
            PRIMARY KEY (config_id, node_id)
        );
"""

# SQL scripts applied in order, all under one write lock; PRAGMA user_version records how many ran.
# Append, never edit.
# Which of llama.cpp's weight-repacking modes a run loaded with (`memory.RepackMode`: all, cpu_repack, off): `repack`
# says only whether any weight was repacked, and the memory and speed of CPU_REPACK only differ from AMX's.
M9_REPACK_MODE = """
        ALTER TABLE configs ADD COLUMN repack_mode TEXT;
"""

# Throughput runs (several questions in flight): how many, and the run's own peak and prediction, apart from the
# configuration's memory (peak_rss_bytes: one question's context, measured by a footprint pass).
M10_PARALLEL = """
        ALTER TABLE configs ADD COLUMN parallel INTEGER;
        ALTER TABLE configs ADD COLUMN throughput_peak_rss_bytes INTEGER;
        ALTER TABLE configs ADD COLUMN throughput_peak_vram_bytes INTEGER;
        ALTER TABLE configs ADD COLUMN throughput_predicted_bytes INTEGER;
"""

# `edgeval kld` scores in worker processes: each pass's peak memory beside its prediction, and why a run stopped
# (refused before loading, or a pass that failed, with its log's last lines).
M11_KLD_MEMORY = """
        ALTER TABLE kld ADD COLUMN reference_peak_rss_bytes INTEGER;
        ALTER TABLE kld ADD COLUMN reference_peak_vram_bytes INTEGER;
        ALTER TABLE kld ADD COLUMN reference_predicted_bytes INTEGER;
        ALTER TABLE kld ADD COLUMN tested_peak_rss_bytes INTEGER;
        ALTER TABLE kld ADD COLUMN tested_peak_vram_bytes INTEGER;
        ALTER TABLE kld ADD COLUMN tested_predicted_bytes INTEGER;
        ALTER TABLE kld ADD COLUMN message TEXT;
        ALTER TABLE kld ADD COLUMN log_tail TEXT;
"""

# What each Ray node ran a configuration with: its own repacking mode (its probe's, where the request left it open)
# and the questions it kept in flight.
M12_NODE_SETTINGS = """
        ALTER TABLE node_runs ADD COLUMN repack_mode TEXT;
        ALTER TABLE node_runs ADD COLUMN parallel INTEGER;
"""

# The deployment shape's speed a configuration's worker measured (`answer_time.Speed` JSON: seconds per answer are
# derived from it and each question's token counts; NULL: not measured).
M13_SPEED = """
        ALTER TABLE configs ADD COLUMN speed TEXT;
"""

# How a configuration's thinking budget was counted and forced (NULL: edgeval's own forcing, before llama.cpp's
# reasoning budget became the one semantics; such rows keep their results and never share a key with new ones), and
# the message forced before the end tag.
M14_FORCING = """
        ALTER TABLE configs ADD COLUMN forcing TEXT;
        ALTER TABLE configs ADD COLUMN budget_message TEXT;
"""

# What `edgeval export` needs to rebuild a measured deployment: each `compare`'s recommendation (the
# configuration and the votes it recommends, per task and budget; `export` takes the latest), and how a run loaded
# its model (threads, layers offloaded, expert layers kept on the CPU; NULL for rows stored before).
M15_DEPLOYMENT = """
        CREATE TABLE IF NOT EXISTS recommendations (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            task TEXT NOT NULL,
            budget_bytes INTEGER NOT NULL,
            config_id INTEGER NOT NULL REFERENCES configs(id),
            votes INTEGER NOT NULL,
            command TEXT NOT NULL
        );
        ALTER TABLE configs ADD COLUMN threads INTEGER;
        ALTER TABLE configs ADD COLUMN gpu_layers INTEGER;
        ALTER TABLE configs ADD COLUMN cpu_moe INTEGER;
"""

MIGRATIONS: list[str] = [
    M1_INITIAL,
    M2_LADDER,
    M3_RSS_PARTS,
    M4_CLAIMS,
    M5_KV_WINDOW,
    M6_GRADING_AND_PROMPTS,
    M7_KLD,
    M8_NODES,
    M9_REPACK_MODE,
    M10_PARALLEL,
    M11_KLD_MEMORY,
    M12_NODE_SETTINGS,
    M13_SPEED,
    M14_FORCING,
    M15_DEPLOYMENT,
]


# The tables of the first migration: every edgeval store has them, and a file without them is not one.
M1_TABLES = frozenset(("runs", "configs", "samples", "item_timings", "file_hashes"))


def kind_of(db: sqlite3.Connection) -> tuple[str, list[str]]:
    """What an open SQLite file holds, read without writing: "empty" (no schema at all: a store may be made in
    it), "edgeval" (a store of some schema version, migrated on open) or "foreign" (another program's), with its
    tables' names."""
    names = [str(r[0]) for r in db.execute("SELECT name FROM sqlite_master ORDER BY name")]
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if not names and version == 0:
        return "empty", names
    return ("edgeval" if set(names) >= M1_TABLES and version >= 1 else "foreign"), names


def statements(script: str) -> Iterator[str]:
    """The statements of a SQL script, one at a time (sqlite3 decides where each ends)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        yield pending
