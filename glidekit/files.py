"""Atomic file writes: every file glidekit writes goes through here.

A write goes to a temporary file in the destination's folder, created as a plain `open()` would
(0666 less the umask, applied by the kernel: `tempfile.mkstemp` makes 0600 files, which other
users and web servers cannot read), is fsynced and renamed over the destination with `os.replace`.
The destination holds either its old content or the whole new file; the temporary file is
removed on any failure.

- `atomic_path(path)`: a context manager yielding the temporary path, for writers that take a
  path (safetensors, torch.save).
- `atomic_open(path, mode)`: the same, yielding an open file object.
- `atomic_write_text(path, text)`: a whole text file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator


def _create_temp(path: Path) -> Path:
    """A new empty file `.NAME.<random>.part` beside `path`, mode 0666 less the umask."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an exception, the
    file written there is fsynced and renamed onto `path`."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    mode = os.stat(tmp).st_mode & 0o777
    try:
        yield tmp
        # a writer may replace the file with its own 0600 temp file (safetensors' save_file does)
        if os.stat(tmp).st_mode & 0o777 != mode:
            os.chmod(tmp, mode)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kw) -> Iterator[IO]:
    """`open(path, mode)` made atomic: yields the temporary file's object (`mode` "w" or "wb",
    `kw` as for `open`); the file replaces `path` when the block ends without an exception."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kw) as f:
        yield f


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)
