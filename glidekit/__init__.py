"""glidekit: GLIDE text-guided diffusion, weight-compatible with OpenAI's released checkpoints.

    from glidekit import GlideModel, SamplerSpec, text_to_image, inpaint, outpaint, edit, upsample
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GlideModel": "pipelines",
    "SamplerSpec": "pipelines",
    "Result": "pipelines",
    "text_to_image": "pipelines",
    "inpaint": "pipelines",
    "outpaint": "pipelines",
    "edit": "pipelines",
    "upsample": "pipelines",
    "iterative_edit": "pipelines",
    "load_model": "io",
    "train": "train",
    "TrainConfig": "train_config",
    "resolve_train_config": "train_config",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    # Lazy: `import glidekit` (and `glide --help`) stays fast; torch loads on first use.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'glidekit' has no attribute {name!r}")
