"""Where a bundled model came from, as its model card states it: the training stages a file
records, the commit that holds a file, and the machine a stage ran on."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def file_stages(path: Path) -> list[dict] | None:
    """The stages a bundled file records (`train_stages` metadata), or None for older files."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        stages = (f.metadata() or {}).get("train_stages")
    return json.loads(stages) if stages else None


def committed(path: Path) -> str | None:
    """The last commit that holds `path` as it is on disk, or None (not committed, or changed since),
    in the git repository the file is in."""
    path = path.resolve()

    def git(*a):
        return subprocess.run(["git", "-C", str(path.parent), *a], capture_output=True, text=True).stdout.strip()

    if git("status", "--porcelain", "--", path.name):
        return None
    return git("log", "-1", "--format=%h", "--", path.name) or None


def machine() -> str:
    """This CPU as the card states it: model name and whether it has bf16 instructions."""
    from glidekit import runtime

    name = runtime.cpu_model_name()
    isa = "AVX-512 with bf16 instructions" if runtime.cpu_has_fast_bf16() else "no bf16 instructions"
    return f"{name} vCPU ({isa}, no GPU; {platform.machine()})"
