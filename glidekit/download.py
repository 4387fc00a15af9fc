"""Download and cache the official GLIDE checkpoints (stdlib `urllib` only).

Files land in `cache_dir()` (or a given folder) under their official names. A download streams to
a hidden `.part` temp file in the same folder while hashing, checks the HTTP status, the length
and (when known) the SHA-256, then is fsynced and renamed into place with `os.replace`, so a
final file only ever exists complete. Its hash is then written beside it as `<file>.sha256`
(sha256sum format); a cached file is re-hashed against that sidecar on every later call.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .config import PRESETS
from .errors import DownloadError
from .files import atomic_path, atomic_write_text

CHUNK = 1 << 20

# Known SHA-256 digests of the official files, by filename. OpenAI publishes no checksums for the
# dec-2021 checkpoints and they could not be fetched and hashed where this was written (no
# network), so this is empty: official downloads are checked for HTTP status and length, and
# their hash is recorded in the sidecar on first download. Add entries once verified.
KNOWN_SHA256: dict[str, str] = {}


def cache_dir() -> Path:
    """The model cache folder: `$GLIDEKIT_CACHE` if set, else `~/.cache/glidekit`."""
    env = os.environ.get("GLIDEKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "glidekit"


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_identity(path: str | os.PathLike) -> str:
    """How glidekit names a model file it measured or sampled from (sweep rows, the report's model lines,
    PNG records): the first 16 hex digits of its sha256."""
    return file_sha256(path)[:16]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    try:
        text = _sidecar(path).read_text().split()
    except FileNotFoundError:
        return None
    return text[0].lower() if text else ""


def _resolve(name_or_url: str, url: str | None) -> tuple[str, str]:
    """(url, filename) for a preset name or a URL."""
    if "://" in name_or_url:
        url = url or name_or_url
        filename = urllib.parse.unquote(urllib.parse.urlsplit(name_or_url).path).rsplit("/", 1)[-1]
        if not filename:
            raise DownloadError(f"cannot tell a file name from URL {name_or_url}")
        return url, filename
    if name_or_url not in PRESETS:
        raise DownloadError(
            f"unknown model {name_or_url!r}; known models: {', '.join(PRESETS)} (or give a URL)"
        )
    preset = PRESETS[name_or_url]
    return url or preset.url, preset.filename


def _fetch(url: str, dest: Path, expected: str | None, progress: bool, timeout: float) -> str:
    """Stream `url` to `dest` atomically; returns the hex SHA-256. Leaves nothing on failure."""
    host = urllib.parse.urlsplit(url).netloc or url
    request = urllib.request.Request(url, headers={"User-Agent": "glidekit"})
    with atomic_path(dest, mkdir=False) as tmp, open(tmp, "wb") as tmp_file:
        try:
            resp = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"download failed: HTTP {e.code} ({e.reason}) for {url}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise DownloadError(
                f"cannot reach {host} ({reason}); check your network connection or download "
                f"the file yourself and pass its path with --model"
            ) from None
        with resp:
            if resp.status != 200:
                raise DownloadError(f"download failed: HTTP {resp.status} for {url}")
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            h, received = hashlib.sha256(), 0
            bar = tqdm(
                total=length, unit="B", unit_scale=True, unit_divisor=1024,
                desc=dest.name, file=sys.stderr, disable=not progress, leave=False,
            )
            try:
                while chunk := resp.read(CHUNK):
                    tmp_file.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except http.client.IncompleteRead:
                pass  # the length check below reports it as truncated
            except TimeoutError:
                raise DownloadError(
                    f"download of {url} timed out after {timeout:g} s without data; "
                    f"check your network connection and try again"
                ) from None
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(f"connection to {host} lost during download ({e})") from None
            finally:
                bar.close()
        if length is not None and received != length:
            raise DownloadError(
                f"download of {url} was truncated: got {received} of {length} bytes; try again"
            )
        digest = h.hexdigest()
        if expected is not None and digest != expected:
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {digest}"
            )
        _sidecar(dest).unlink(missing_ok=True)  # never leave an old hash beside a new file
    return digest


def download(
    name_or_url: str,
    *,
    dest_dir: str | os.PathLike | None = None,
    url: str | None = None,
    expected_sha256: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download a preset (`"base"`, `"upsample"`, ...) or a URL; returns the local path.

    The file is `dest_dir/<official filename>` (`dest_dir` defaults to `cache_dir()`); `url`
    overrides the preset's address. A file already there with a `.sha256` sidecar is re-hashed
    and returned without downloading (a mismatch is a `DownloadError`); one without a sidecar
    was never verified and is downloaded again, as is any file when `force` is set. Every
    failure (network, HTTP status, truncation, checksum) is a `DownloadError` and leaves no
    partial file behind. `timeout` is in seconds, per connect and per read.
    """
    url, filename = _resolve(name_or_url, url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"can only download http(s) URLs, got {url}")
    expected = expected_sha256 or KNOWN_SHA256.get(filename)
    if expected is not None:
        expected = expected.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise DownloadError(f"not a SHA-256 hex digest: {expected_sha256!r}")

    folder = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create download folder {folder}: {e.strerror or e}") from None
    dest = folder / filename

    recorded = _read_sidecar(dest) if dest.is_file() else None
    if recorded is not None and not force:
        actual = file_sha256(dest)
        want = recorded if actual != recorded else expected
        if want is not None and actual != want:
            raise DownloadError(
                f"cached file {dest} is corrupt (sha256 {actual}, expected {want}); "
                f"delete it or re-run with --force"
            )
        return dest

    try:
        digest = _fetch(url, dest, expected, progress, timeout)
        try:
            atomic_write_text(_sidecar(dest), f"{digest}  {filename}\n")
        except BaseException:
            dest.unlink(missing_ok=True)  # a file without its sidecar would be re-fetched anyway
            raise
    except OSError as e:  # disk full, permissions... (network errors are already DownloadErrors)
        raise DownloadError(f"cannot write {dest}: {e.strerror or e}") from None
    return dest


def list_models(dest_dir: str | os.PathLike | None = None) -> list[dict]:
    """The official models with their cache state, for `glide models`.

    Each entry has `name`, `description`, `url`, `filename`, `path` (the cached file, or None)
    and `size` (its bytes, or None).
    """
    folder = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir()
    out = []
    for p in PRESETS.values():
        path = folder / p.filename
        cached = path.is_file()
        out.append({
            "name": p.name,
            "description": p.description,
            "url": p.url,
            "filename": p.filename,
            "path": path if cached else None,
            "size": path.stat().st_size if cached else None,
        })
    return out
