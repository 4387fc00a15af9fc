"""Every recorded sampling trajectory, replayed free-running with the recorded step noise."""

import pytest

from tests.parity.common import assert_trajectory, build_unet, replay
from tests.parity.vectors import UNET_CLASSES, files, load

RUN_KEYS = ("p_sample_loop", "ddim_sample_loop", "ddim_sample_loop_eta")
RUNS = [(p, key) for kind in UNET_CLASSES.values() for p in files(kind) for key in RUN_KEYS if key in load(p)]


@pytest.mark.parametrize("path,key", RUNS, ids=[f"{p.rsplit('/', 1)[-1]}:{k}" for p, k in RUNS])
def test_recorded_run(path, key):
    v = load(path)
    run = v[key]
    steps = replay(run, build_unet(v))
    assert_trajectory(run, steps, f"{path.rsplit('/', 1)[-1]} {key}")


def test_cfg_metadata_matches_runs():
    for p in files("base"):
        v = load(p)
        for key in RUN_KEYS:
            if key in v and v[key]["guidance"] == "cfg":
                assert v[key]["guidance_scale"] == v["cfg"]["guidance_scale"]
                assert (v[key]["model_kwargs"]["tokens"] == v["cfg"]["tokens"]).all()
