"""Where edgeval keeps its own files."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def edgeval_home() -> Path:
    """EDGEVAL_HOME if set, else the platform's user data folder for edgeval (created on first use)."""
    override = os.environ.get("EDGEVAL_HOME", "").strip()
    home = Path(override).expanduser() if override else platformdirs.user_data_path("edgeval")
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_dir(name: str) -> Path:
    """A named folder under edgeval's home for files edgeval can rebuild (tiny models, probes)."""
    folder = edgeval_home() / "cache" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
