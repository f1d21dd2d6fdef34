"""A local stand-in for the Hugging Face Hub: the resolve/CDN protocol huggingface_hub speaks, on 127.0.0.1.

It answers HEAD and GET on `/{repo}/resolve/{revision}/{file}` with the Hub's headers (X-Repo-Commit,
X-Linked-Etag, X-Linked-Size, a redirect to a content URL), serves byte ranges there, and answers gated,
missing-repo, missing-file and unknown-revision requests with the Hub's status codes and X-Error-Code.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALLOWED_TOKEN = "hf_granted_test_token"
# Model repos at /{org}/{name}, dataset repos at /datasets/{org}/{name} (stored here under "datasets/{org}/{name}").
_RESOLVE = re.compile(r"^/(?P<repo>(?:datasets/)?[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")


@dataclass
class Request:
    """What the server saw: method, path, the Range header and whether a token came along."""

    method: str
    path: str
    range: str | None
    authorized: bool


@dataclass
class FakeHub:
    """Repos and files to serve, and knobs to make downloads slow."""

    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    chunk_delay_s: float = 0.0  # pause after every 64 KiB of a body (to interrupt a download mid-file)
    url: str = ""
    cdn_url: str = ""

    def add(self, repo: str, filename: str, data: bytes) -> str:
        """Serve `data` as repo/filename; returns its sha256."""
        self.files[(repo, filename)] = data
        return hashlib.sha256(data).hexdigest()

    def commit(self, repo: str) -> str:
        """The repo's current commit: it changes whenever any of its files does, as on the Hub."""
        digest = hashlib.sha1(repo.encode())
        for (r, name), data in sorted(self.files.items()):
            if r == repo:
                digest.update(name.encode() + hashlib.sha256(data).digest())
        return digest.hexdigest()

    def _blob(self, sha: str) -> bytes | None:
        return next((d for d in self.files.values() if hashlib.sha256(d).hexdigest() == sha), None)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def _error(self, status: int, code: str, message: str) -> None:
            body = f'{{"error": "{message}"}}'.encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization", "") == f"Bearer {ALLOWED_TOKEN}"

        def _serve(self) -> None:
            hub.requests.append(Request(self.command, self.path, self.headers.get("Range"), self._authorized()))
            if m := _RESOLVE.match(self.path):
                self._resolve(m.group("repo"), m.group("rev"), m.group("file"))
            elif m := _CDN.match(self.path):
                self._content(m.group("sha"))
            else:
                self._error(404, "EntryNotFound", "not found")

        def _resolve(self, repo: str, revision: str, filename: str) -> None:
            if not any(r == repo for r, _ in hub.files):
                self._error(401, "RepoNotFound", "Repository not found")
                return
            if repo in hub.gated and not self._authorized():
                self._error(401, "GatedRepo", f"Access to model {repo} is restricted. You must have access to it.")
                return
            if revision not in ("main", hub.commit(repo)):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            data = hub.files.get((repo, filename))
            if data is None:
                self._error(404, "EntryNotFound", f"{filename} does not exist on main")
                return
            sha = hashlib.sha256(data).hexdigest()
            # Large files live in LFS: the Hub answers with a redirect to the content and its real size and hash.
            self.send_response(302)
            self.send_header("X-Repo-Commit", hub.commit(repo))
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", '"pointer-etag"')
            # The content lives on another host, as the Hub's CDN does (huggingface_hub only follows
            # redirects within the Hub's own host itself).
            self.send_header("Location", f"{hub.cdn_url}/cdn/{sha}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _content(self, sha: str) -> None:
            data = hub._blob(sha)
            if data is None:
                self._error(404, "EntryNotFound", "no such blob")
                return
            start, end = 0, len(data) - 1
            ranged = self.headers.get("Range")
            if ranged and (m := re.match(r"bytes=(\d+)-(\d*)", ranged)):
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{sha}"')
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if self.command != "GET":
                return
            body = data[start : end + 1]
            try:
                for i in range(0, len(body), 64 * 1024):
                    self.wfile.write(body[i : i + 64 * 1024])
                    if hub.chunk_delay_s:
                        time.sleep(hub.chunk_delay_s)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = _serve
        do_HEAD = _serve

    return Handler


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run the fake Hub on a free port of 127.0.0.1 for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    hub.cdn_url = f"http://localhost:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
