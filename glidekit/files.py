"""Atomic file writes: every file glidekit writes goes through here.

A write goes to a temporary file in the destination's folder, is fsynced, given the permissions
a plain `open()` would give (0666 less the umask: `tempfile.mkstemp` makes 0600 files, which
other users and web servers cannot read) and renamed over the destination with `os.replace`.
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
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _default_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an exception, the
    file written there is fsynced, given umask permissions and renamed onto `path`."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, _default_mode())
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
