"""Where a bundled model came from, as its model card states it: the training stages a file
records, the commit that holds a file (or the version of it a run began from), and the machine a stage ran on."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def file_stages(path: Path, commit: str | None = None) -> list[dict] | None:
    """The stages a bundled file records (`train_stages` metadata), as on disk or as `commit` holds it;
    None for older files."""
    with (io.BytesIO(version_bytes(path, commit)) if commit is not None else path.open("rb")) as f:
        size = int.from_bytes(f.read(8), "little")  # safetensors: a u64 header length, then the JSON header
        stages = (json.loads(f.read(size)).get("__metadata__") or {}).get("train_stages")
    return json.loads(stages) if stages else None


def _git(path: Path, *args: str, text: bool = True):
    """`git args` run in the folder of `path` (the repository the file is in); its stdout."""
    out = subprocess.run(["git", "-C", str(path.resolve().parent), *args], capture_output=True, text=text).stdout
    return out.strip() if text else out


def committed(path: Path) -> str | None:
    """The last commit that holds `path` as it is on disk, or None (not committed, or changed since),
    in the git repository the file is in."""
    if _git(path, "status", "--porcelain", "--", path.name):
        return None
    return _git(path, "log", "-1", "--format=%h", "--", path.name) or None


def version_bytes(path: Path, commit: str) -> bytes:
    """The content of `path` as `commit` holds it."""
    return _git(path, "cat-file", "blob", f"{commit}:./{path.name}", text=False)


def version_of(path: Path, sha256: str | None = None, started: float | None = None) -> str | None:
    """The commit holding the version of `path` a run began from: the newest whose content has `sha256`
    (what `glide train` records), or without it the newest committed at or before `started` (Unix
    seconds); None if no commit matches."""
    # not --diff-filter=D: a commit that deleted the file holds no version of it
    for line in _git(path, "log", "--diff-filter=ACMRT", "--format=%h %ct", "--", path.name).splitlines():
        commit, when = line.split()
        if sha256 is not None:
            if hashlib.sha256(version_bytes(path, commit)).hexdigest() == sha256:
                return commit
        elif started is not None and int(when) <= started:
            return commit
    return None


def machine() -> str:
    """This CPU as the card states it: model name and whether it has bf16 instructions."""
    from glidekit import runtime

    name = runtime.cpu_model_name()
    isa = "AVX-512 with bf16 instructions" if runtime.cpu_has_fast_bf16() else "no bf16 instructions"
    return f"{name} vCPU ({isa}, no GPU; {platform.machine()})"
