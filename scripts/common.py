"""What the measurement scripts share: writing their JSON result and ending a user error in one line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from glidekit.errors import GlidekitError
from glidekit.files import atomic_write_text


def write_result(out: dict, path: Path | None) -> dict:
    """Write `out` as JSON to `path` (atomically) when one is given; return it."""
    if path:
        atomic_write_text(path, json.dumps(out, indent=1))
    return out


def run(main: Callable[[], object], script: str) -> None:
    """Call `main()`; a GlidekitError (a bad model name or path) is one error line, no traceback."""
    try:
        main()
    except GlidekitError as e:
        sys.exit(f"{Path(script).name}: error: {e}")
