"""The Hugging Face Hub side of edgeval: cache folder, offline mode, token — read as huggingface_hub does."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from edgeval.core.errors import EdgevalError
from edgeval.core.units import format_bytes

if TYPE_CHECKING:
    from huggingface_hub import HfFileMetadata

    from edgeval.edges.catalog import ModelFile
    from edgeval.edges.gguf_info import GGUFInfo

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


# ---------------------------------------------------------------- downloads and remote headers

DEFAULT_ENDPOINT = "https://huggingface.co"
# Room left free beyond the download itself, so the disk does not fill to the last byte.
DISK_MARGIN_BYTES = 512 * 1024 * 1024


class HubError(EdgevalError):
    """A Hugging Face Hub request that failed in a way the user can fix."""


class GatedRepoError(HubError):
    """A gated repo: the user must accept its terms on the Hub and use a token."""

    def __init__(self, repo: str, token_set: bool) -> None:
        hint = (
            f"your token has no access yet: accept the terms at {endpoint()}/{repo} with that account"
            if token_set
            else f"accept the terms at {endpoint()}/{repo}, then set HF_TOKEN (or run `hf auth login`)"
        )
        super().__init__(f"{repo} is gated", hint=hint)
        self.repo = repo


class RepoNotFoundError(HubError):
    """A repo the Hub does not show (missing, private, or gated without a token)."""

    def __init__(self, repo: str, token_set: bool) -> None:
        hint = "check the repo id in the catalog" + ("" if token_set else "; if it is private, set HF_TOKEN")
        super().__init__(f"repository {repo} not found on the Hub", hint=hint)
        self.repo = repo


class FileNotOnHubError(HubError):
    """A file name the repo does not have (at that revision)."""

    def __init__(self, repo: str, filename: str, revision: str | None) -> None:
        at = f" at revision {revision}" if revision else ""
        super().__init__(
            f"{repo} has no file {filename}{at}",
            hint="check the file name in the catalog against the repo's file list",
        )
        self.repo, self.filename = repo, filename


class OfflineNotCachedError(HubError):
    """HF_HUB_OFFLINE is set and the file is not in the cache."""

    def __init__(self, repo: str, filename: str) -> None:
        super().__init__(
            f"{repo}/{filename} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
            hint="unset HF_HUB_OFFLINE to download it, or try `edgeval demo`, which needs no download",
        )


class HubUnreachableError(HubError):
    """No answer from the Hub (no network, proxy, DNS)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"cannot reach the Hugging Face Hub at {endpoint()} ({detail})",
            hint="check the network; set HF_HUB_OFFLINE=1 to use cached files only, or try `edgeval demo`",
        )


class NotEnoughDiskError(HubError):
    """The cache's disk has too little room for a download."""

    def __init__(self, what: str, needed: int, free: int, folder: Path) -> None:
        super().__init__(
            f"{what} needs {format_bytes(needed)} but {folder} has {format_bytes(free)} free",
            hint="free some space, or point HF_HOME / HF_HUB_CACHE at a larger disk",
        )
        self.needed, self.free = needed, free


class ChecksumError(HubError):
    """A model file whose sha256 is not the catalog's: it is never evaluated (and leaves the cache)."""

    def __init__(self, path: Path, expected: str, actual: str, *, removed: bool) -> None:
        hint = (
            "it was removed from the Hugging Face cache; pull again, and if it happens again the catalog entry "
            "(or the Hub file) is out of date"
            if removed
            else "check that the file is the one the catalog entry means, or correct the entry's sha256"
        )
        super().__init__(f"{path.name}: sha256 {actual[:12]}… is not the catalog's {expected[:12]}…", hint=hint)
        self.path, self.expected, self.actual, self.removed = path, expected, actual, removed


def endpoint() -> str:
    """HF_ENDPOINT (read now), else the public Hub."""
    return (_env("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _token() -> str | None:
    return _env("HF_TOKEN") or _env("HUGGING_FACE_HUB_TOKEN") or None


# Progress: (file name, bytes done, bytes total or None).
Progress = Callable[[str, int, int | None], None]


def _progress_bar_class(filename: str, progress: Progress | None) -> type[tqdm] | None:
    """A silent tqdm that reports to `progress` (huggingface_hub drives tqdm; edgeval renders with rich)."""
    if progress is None:
        return None
    report = progress

    class _Reporting(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial", 0) or 0)
            self._total = kwargs.get("total")
            report(filename, self._done, self._total)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            report(filename, self._done, self._total)
            return None

    return _Reporting


def _translate(exc: Exception, repo: str, filename: str, revision: str | None) -> Exception:
    """huggingface_hub's exceptions as edgeval's, with the next step spelled out."""
    from huggingface_hub import errors as hf

    if isinstance(exc, hf.GatedRepoError):
        return GatedRepoError(repo, token_configured())
    if isinstance(exc, hf.RepositoryNotFoundError):
        return RepoNotFoundError(repo, token_configured())
    if isinstance(exc, hf.RevisionNotFoundError | hf.RemoteEntryNotFoundError):
        return FileNotOnHubError(repo, filename, revision)
    if isinstance(exc, hf.LocalEntryNotFoundError | hf.OfflineModeIsEnabled):
        return OfflineNotCachedError(repo, filename) if offline() else HubUnreachableError(str(exc).splitlines()[0])
    if isinstance(exc, hf.HfHubHTTPError):
        return HubError(f"the Hub answered {str(exc).splitlines()[0]}", hint="try again later")
    if isinstance(exc, OSError | ConnectionError) or type(exc).__module__.startswith(("httpx", "httpcore")):
        return HubUnreachableError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return exc


def cached_file(repo: str, filename: str, revision: str | None = None) -> Path | None:
    """The file's path in the Hugging Face cache, if it was downloaded."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=cache_folder(), revision=revision)
    return Path(found) if isinstance(found, str) else None


def _incomplete_bytes(repo: str) -> int:
    """Bytes already fetched by interrupted downloads of this repo (they resume, so they need no new room)."""
    blobs = cache_folder() / f"models--{repo.replace('/', '--')}" / "blobs"
    return sum(p.stat().st_size for p in blobs.glob("*.incomplete")) if blobs.exists() else 0


def download(
    repo: str,
    filename: str,
    *,
    revision: str | None = None,
    expected_size: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """One file into the Hugging Face cache with hf_hub_download (resuming a partial download), checked for room."""
    from huggingface_hub import hf_hub_download

    cached = cached_file(repo, filename, revision)
    if cached is not None:
        return cached
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = dict(
        repo_id=repo,
        filename=filename,
        revision=revision,
        cache_dir=folder,
        endpoint=endpoint(),
        token=_token(),
        local_files_only=offline(),
    )
    try:
        meta = None if offline() else _metadata(repo, filename, revision)
        size = expected_size if expected_size is not None else (meta.size if meta else None)
        if size is not None:
            needed = size - _incomplete_bytes(repo) + DISK_MARGIN_BYTES
            free = shutil.disk_usage(folder).free
            if needed > free:
                raise NotEnoughDiskError(f"{filename} ({format_bytes(size)})", needed, free, folder)
        if meta is not None:
            _finish_partial_download(repo, meta, progress, filename)
        return Path(hf_hub_download(**common, tqdm_class=_progress_bar_class(filename, progress)))
    except EdgevalError:
        raise
    except Exception as exc:
        raise _translate(exc, repo, filename, revision) from exc


def _metadata(repo: str, filename: str, revision: str | None, repo_type: str | None = None) -> HfFileMetadata:
    """One HEAD request for the file's size, etag and content location; no retries, so an offline
    machine hears so at once instead of after huggingface_hub's minute of backoff."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint(), repo_type=repo_type)
    return get_hf_file_metadata(url, token=_token(), endpoint=endpoint(), retry_on_errors=False)


def _finish_partial_download(repo: str, meta: HfFileMetadata, progress: Progress | None, filename: str) -> None:
    """Complete the bytes an interrupted download left in the cache, so hf_hub_download finds the whole blob.

    huggingface_hub resumes within one call (on a dropped connection) but writes each call to a fresh
    `<etag>.<random>.incomplete` file, so a killed `pull` would start again from zero. edgeval picks up the
    largest such file, fetches only the missing range, and moves it to `blobs/<etag>` — where hf_hub_download
    then links it into the snapshot as if it had downloaded it.
    """
    from huggingface_hub import get_session
    from huggingface_hub.file_download import repo_folder_name

    blobs = cache_folder() / repo_folder_name(repo_id=repo, repo_type="model") / "blobs"
    if not blobs.exists() or meta.etag is None or meta.size is None or (blobs / meta.etag).exists():
        return
    partials = sorted(blobs.glob(f"{meta.etag}*.incomplete"), key=lambda p: p.stat().st_size)
    if not partials or partials[-1].stat().st_size >= meta.size:
        return
    partial, done = partials[-1], partials[-1].stat().st_size
    headers = {"Range": f"bytes={done}-", "Accept-Encoding": "identity"}
    with get_session().stream("GET", meta.location, headers=headers, follow_redirects=True) as response:
        if response.status_code != 206:
            return  # the server will not resume: let hf_hub_download start afresh
        with partial.open("ab") as out:
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(filename, done, meta.size)
    if partial.stat().st_size == meta.size:
        partial.replace(blobs / meta.etag)
        for stale in partials[:-1]:
            stale.unlink(missing_ok=True)


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    """The file's sha256 (the Hub's LFS object id)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, sha256: Callable[[Path], str] = sha256_of) -> None:
    """Raise ChecksumError (after taking the file out of the cache) unless the file hashes to `expected`."""
    actual = sha256(path)
    if actual != expected.lower():
        raise reject(path, expected, actual)


def reject(path: Path, expected: str, actual: str) -> ChecksumError:
    """The error for a file that failed its check, with the file taken out of the Hugging Face cache (its
    snapshot link and its blob) so nothing loads it; a file outside the cache is the user's and stays."""
    cache = Path(os.path.abspath(cache_folder()))
    where = Path(os.path.abspath(path))
    if not where.is_relative_to(cache):
        return ChecksumError(path, expected, actual, removed=False)
    blob = where.resolve()
    where.unlink(missing_ok=True)
    if blob != where and blob.is_relative_to(cache.resolve()):
        blob.unlink(missing_ok=True)
    return ChecksumError(path, expected, actual, removed=True)


def remote_reader(repo: str, filename: str, revision: str | None = None) -> tuple[Callable[[int, int], bytes], int]:
    """A range reader over a Hub file, and its size: reads a header without downloading the file."""
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint())
    if offline():
        raise OfflineNotCachedError(repo, filename)
    try:
        meta = _metadata(repo, filename, revision)
    except Exception as exc:
        raise _translate(exc, repo, filename, revision) from exc
    if meta.size is None:
        raise HubError(f"the Hub did not say how large {filename} is", hint="try again later")
    size = int(meta.size)
    location = meta.location or url
    headers = build_hf_headers(token=_token())

    def read_at(offset: int, n: int) -> bytes:
        if offset >= size:
            return b""
        last = min(offset + n, size) - 1
        try:
            response = get_session().get(
                location, headers={**headers, "Range": f"bytes={offset}-{last}"}, follow_redirects=True
            )
            hf_raise_for_status(response)
        except Exception as exc:
            raise _translate(exc, repo, filename, revision) from exc
        if response.status_code != 206:
            raise HubError(f"the Hub ignored a range request for {filename}", hint="try again later")
        data: bytes = response.content
        return data

    return read_at, size


def local_path(file: ModelFile) -> Path | None:
    """Where a catalog file is on this machine: its own path, or its (first part's) place in the cache."""
    if file.path is not None:
        return file.path if file.path.exists() else None
    if file.repo is None:
        return None
    paths = [cached_file(file.repo, name, file.revision) for name in file.files]
    return paths[0] if paths and all(p is not None for p in paths) else None


def part_paths(file: ModelFile) -> list[Path]:
    """Where each part of a catalog file is on this machine (one path for a whole file; none missing)."""
    if file.path is not None:
        return [file.path] if file.path.exists() else []
    if file.repo is None:
        return []
    paths = [cached_file(file.repo, name, file.revision) for name in file.files]
    return [p for p in paths if p is not None]


QWEN3_ARCHITECTURES = ("qwen3", "qwen3moe")  # llama.cpp's names for the dense and the mixture-of-experts Qwen3


def pull(
    file: ModelFile,
    *,
    progress: Progress | None = None,
    expected_arch: tuple[str, ...] = QWEN3_ARCHITECTURES,
    sha256: Callable[[Path], str] = sha256_of,
) -> Path:
    """Download a catalog file (every part), then check it is a readable GGUF of the expected architecture
    and, where the catalog has one, that its sha256 matches (a file that does not is taken out of the cache).
    Returns the path llama.cpp loads. `sha256` may remember hashes (the store does, by path, size and mtime)."""
    from edgeval.edges.gguf_info import read_local

    if file.path is not None:
        paths = [file.path]
    else:
        if file.repo is None or not file.files:
            raise HubError("this catalog entry names no repo and file", hint="fix the catalog entry")
        size = file.size if len(file.files) == 1 else None
        paths = [
            download(file.repo, name, revision=file.revision, expected_size=size, progress=progress)
            for name in file.files
        ]
    header = read_local(paths[0]) if len(paths) == 1 else None
    if header is not None and header.arch_name not in expected_arch:
        raise HubError(
            f"{paths[0].name} is a '{header.arch_name}' model, not {' or '.join(expected_arch)}",
            hint="check the catalog entry's repo and file",
        )
    if file.sha256 and len(paths) == 1:
        verify_sha256(paths[0], file.sha256, sha256)
    return paths[0]


def remote_header(file: ModelFile) -> GGUFInfo:
    """The header of a catalog file on the Hub, read with a few range requests (no download)."""
    from edgeval.edges.gguf_info import read_header

    if file.repo is None or file.file is None:
        raise HubError("this catalog entry names no repo and file", hint="fix the catalog entry")
    read_at, size = remote_reader(file.repo, file.files[0], file.revision)
    return read_header(read_at, f"{endpoint()}/{file.repo}/{file.files[0]}", file_size=size)


def download_dataset_file(repo: str, filename: str, revision: str | None = None) -> Path:
    """A dataset file through hf_hub_download (repo_type="dataset"), cached; gated sets need the user's token.

    As for models, one request without retries comes first, so an unreachable Hub is reported at once rather than
    after huggingface_hub's backoff and its retry messages; a cached copy is then used as it is."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    try:
        if not offline():
            _metadata(repo, filename, revision, repo_type="dataset")
    except Exception as exc:
        error = _translate(exc, repo, filename, revision)
        cached = try_to_load_from_cache(
            repo, filename, cache_dir=cache_folder(), revision=revision, repo_type="dataset"
        )
        if isinstance(error, HubUnreachableError) and isinstance(cached, str):
            return Path(cached)
        raise error from exc
    try:
        return Path(
            hf_hub_download(
                repo_id=repo, filename=filename, repo_type="dataset", revision=revision, cache_dir=cache_folder(),
                endpoint=endpoint(), token=_token(), local_files_only=offline(),
            )
        )  # fmt: skip
    except Exception as exc:
        raise _translate(exc, repo, filename, revision) from exc
