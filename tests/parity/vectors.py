"""Discovery of reference-vector files (format: tests/vectors/README.md).

The parity tests run on `tests/vectors/` or, if set, on `$GLIDEKIT_PARITY_DIR`. Files are
recognised by their content, not their name, so every `*.pt` found is tested; a file of no known
kind becomes a failing test, never a skip.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "vectors"

UNET_CLASSES = {
    "Text2ImUNet": "base",
    "SuperResText2ImUNet": "upsample",
    "InpaintText2ImUNet": "base-inpaint",
    "SuperResInpaintText2ImUnet": "upsample-inpaint",
}


def vector_dir() -> Path:
    return Path(os.environ.get("GLIDEKIT_PARITY_DIR") or DEFAULT_DIR)


@functools.lru_cache(maxsize=None)
def load(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def kind_of(data: dict) -> str:
    """'tokenizer', 'diffusion', 'clip', one of the UNet kinds, or 'unknown'."""
    if not isinstance(data, dict):
        return "unknown"
    if "model_class" in data:
        return UNET_CLASSES.get(data["model_class"], "unknown")
    if "glide" in data and "clip" in data:
        return "tokenizer"
    if "betas" in data and "spaced" in data:
        return "diffusion"
    if "image_encoder_state_dict" in data:
        return "clip"
    return "unknown"


@functools.lru_cache(maxsize=None)
def classified() -> dict[str, list[str]]:
    """Map kind -> sorted list of file paths in the vector directory."""
    out: dict[str, list[str]] = {}
    d = vector_dir()
    if not d.is_dir():
        return {"unknown": [str(d)]}
    for p in sorted(d.glob("*.pt")):
        try:
            kind = kind_of(load(str(p)))
        except Exception:  # unreadable file: reported by test_every_file_is_understood
            kind = "unknown"
        out.setdefault(kind, []).append(str(p))
    return out


def files(kind: str) -> list[str]:
    return classified().get(kind, [])


def ids(paths: list[str]) -> list[str]:
    return [Path(p).name for p in paths]
