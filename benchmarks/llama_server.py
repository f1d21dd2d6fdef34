"""A llama-server for benchmarks: started on 127.0.0.1 at a free port with a given command line, waited for, and
stopped at the end (its log kept beside the benchmark's other files)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeval.edges import server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(binary: Path, argv: list[str], port: int, log: Path) -> Iterator[str]:
    """Start `binary` with `argv` (llama-server's flags, `--port port` among them) and yield its base URL."""
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen([str(binary), *argv], stdout=out, stderr=subprocess.STDOUT)
        try:
            server.wait_ready(url, lambda: proc.poll() is None, timeout=120)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)
