"""Work that may never return, in a helper process: a deadline and a memory cap that stop C-level work too.

Some work edgeval does runs code it does not control: sympy on a model's answer (a power tower turns into a bignum
computation holding the GIL), a chat template from a stranger's GGUF (nested loops, `'x' * 10**11`, `10 ** 10**7`).
Neither a thread nor a signal stops such work. So it runs in one long-lived child process per calling process, fed
JSON lines: the child says it is ready once its imports are done, then answers one request a line under an address-
space cap (where the platform enforces one); a request past its deadline kills the child (it is started again on
the next request). Safe from any thread.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

STARTUP_S = 30.0  # the child's imports (sympy takes about a second; a loaded machine more)
READY = "ready"
LATE = "late"  # what `ask` answers for a request past its deadline
DIED = "died"  # … and for a child that died (a C-level allocation failure under the cap, a crash)


class Helper:
    """One child process running `module.serve()`, and the lock that serializes requests to it."""

    def __init__(self, module: str, serve: str = "serve") -> None:
        self.command = f"from {module} import {serve}; {serve}()"
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str] | None:
        package_root = str(Path(__file__).resolve().parents[2])  # the directory holding edgeval/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(
            [sys.executable, "-c", self.command],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        if proc.stdout is None or _read_line(proc.stdout, STARTUP_S) != READY + "\n":
            proc.kill()
            proc.wait()
            return None
        return proc

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _running(self) -> subprocess.Popen[str] | None:
        """The child, started if it is not running (None: it could not start). The caller holds the lock."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        return self.proc

    def start(self) -> None:
        """Start the child now, if it is not running (its imports done before the first request needs it)."""
        with self.lock:
            self._running()

    def ask(self, request: dict[str, Any], deadline_s: float) -> dict[str, Any] | str:
        """The child's reply to `request`, or LATE (past `deadline_s`) or DIED; either way the child is gone."""
        with self.lock:
            proc = self._running()
            if proc is None or proc.stdin is None or proc.stdout is None:
                return DIED
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
            except OSError:
                self._stop()
                return DIED
            line = _read_line(proc.stdout, deadline_s)
            if line is None:
                late = proc.poll() is None
                self._stop()
                return LATE if late else DIED
            reply: dict[str, Any] = json.loads(line)
            return reply


def _read_line(stream: IO[str], timeout_s: float) -> str | None:
    """One line from the child within the time, or None (late, or the child died)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return None
    line = stream.readline()
    return line or None


def serve(handle: Callable[[dict[str, Any]], dict[str, Any]], memory_cap: int | None = None) -> None:
    """The child's loop, once its imports are done: ready, then one JSON request per line in, one reply out. Under
    `memory_cap` bytes of address space a request that allocates past it gets {"error": "memory"}."""
    if memory_cap is not None:
        _cap_memory(memory_cap)
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            reply = handle(json.loads(line))
        except MemoryError:
            reply = {"error": "memory"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _cap_memory(cap: int) -> None:
    """Cap this process's address space at what it holds now plus `cap` (Linux; elsewhere the deadline alone)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            held = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (held + cap, held + cap))
    except (ImportError, OSError, ValueError):
        pass
