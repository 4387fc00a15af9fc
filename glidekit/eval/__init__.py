"""Evaluation: `shapes_score` (scores images against `shapes` captions), and the sample-quality
metrics in their own modules (`features`, `metrics`).

Submodules are imported on first use: ``from glidekit.eval import score_batch`` loads
`shapes_score` only then, so importing one evaluation module does not pull in the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_SHAPES_NAMES = ("Detected", "detect_objects", "score", "score_batch")


def __getattr__(name: str) -> Any:
    if name in _SHAPES_NAMES:
        return getattr(importlib.import_module(".shapes_score", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_SHAPES_NAMES)
