"""A running llama-server, reached over HTTP with the standard library: one JSON request, one JSON answer."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from edgeval.core.errors import EdgevalError


class ServerError(EdgevalError):
    """llama-server could not be reached or refused the request."""

    hint = "start llama-server with the command `edgeval export` prints, and check --server"


def _message(body: bytes) -> str:
    """The server's own error message (`{"error": {"message": …}}`), or the body's first line."""
    try:
        error = json.loads(body).get("error", {})
        return str(error.get("message", error) if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        text = body.decode("utf-8", errors="replace").strip()
        return text.splitlines()[0] if text else "no message"


def post_json(url: str, body: dict[str, Any], *, timeout: float) -> Any:
    """POST `body` as JSON to `url` and return the decoded answer; every failure is a ServerError in one line."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as exc:
        raise ServerError(f"{url} answered HTTP {exc.code}: {_message(exc.read())}") from None
    except urllib.error.URLError as exc:
        raise ServerError(f"cannot reach llama-server at {url}: {exc.reason}") from None
    except TimeoutError:
        raise ServerError(f"{url} did not answer within {timeout:g} s", hint="give it longer with --timeout") from None
    except (ConnectionError, OSError) as exc:
        raise ServerError(f"cannot reach llama-server at {url}: {exc}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise ServerError(f"{url} did not answer with JSON: {_message(raw)}") from None


def endpoint(base: str, path: str) -> str:
    """`http://host:8080` + `/completion`; a bare `host:port` gets http://."""
    base = base.strip().rstrip("/")
    if "://" not in base:
        base = "http://" + base
    return base + path


def wait_ready(url: str, alive: Callable[[], bool], *, timeout: float = 60.0) -> None:
    """Wait until the llama-server at `url` answers `/health` (it loads its model first); a ServerError when
    `alive()` says its process ended, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ServerError(f"llama-server at {url} exited before it was ready")
        try:
            urllib.request.urlopen(endpoint(url, "/health"), timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise ServerError(f"llama-server at {url} was not ready in {timeout:.0f} s")
