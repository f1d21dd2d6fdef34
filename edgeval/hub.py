"""The Hugging Face Hub side of edgeval: cache folder, offline mode, token — read as huggingface_hub does."""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "on", "yes", "true"}


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def hf_home() -> Path:
    """HF_HOME, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`."""
    if _env("HF_HOME"):
        return Path(_env("HF_HOME")).expanduser()
    xdg = _env("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface"


def cache_folder() -> Path:
    """Where downloads go: HF_HUB_CACHE, else `HF_HOME/hub` (read now, not at huggingface_hub's import)."""
    return Path(_env("HF_HUB_CACHE")).expanduser() if _env("HF_HUB_CACHE") else hf_home() / "hub"


def offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no network at all."""
    return _env("HF_HUB_OFFLINE").lower() in _TRUE


def token_configured() -> bool:
    """Whether a Hub token is set (HF_TOKEN, or saved by `hf auth login`); the token itself is never shown."""
    if _env("HF_TOKEN") or _env("HUGGING_FACE_HUB_TOKEN"):
        return True
    token_file = Path(_env("HF_TOKEN_PATH")).expanduser() if _env("HF_TOKEN_PATH") else hf_home() / "token"
    try:
        return bool(token_file.read_text().strip())
    except OSError:
        return False
