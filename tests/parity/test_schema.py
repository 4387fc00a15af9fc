"""Every file in the vector directory is understood: known kind, no unknown or missing keys."""

from pathlib import Path

import pytest

from tests.parity.schema import check
from tests.parity.vectors import classified, kind_of, load, vector_dir

ALL = [(kind, path) for kind, paths in classified().items() for path in paths]


def test_directory_has_vectors():
    if not ALL:
        pytest.fail(f"no *.pt vector files in {vector_dir()}")


@pytest.mark.parametrize("kind,path", ALL, ids=[f"{k}:{Path(p).name}" for k, p in ALL])
def test_every_file_is_understood(kind, path):
    try:
        data = load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a failure
        pytest.fail(f"{path}: cannot be read with torch.load(weights_only=True): {e}")
    kind = kind_of(data)
    problems = check(data, kind)
    assert not problems, f"{Path(path).name} ({kind}): " + "; ".join(problems)
