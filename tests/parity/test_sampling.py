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


def _clip_guided_base(clip_path: str) -> dict:
    """The UNet file a CLIP-guided run used: named in `clip_guided.base`, else the only base file."""
    name = load(clip_path)["clip_guided"]["base"].split()[0]
    bases = files("base")
    named = [p for p in bases if p.rsplit("/", 1)[-1] == name]
    if named:
        return load(named[0])
    assert len(bases) == 1, f"cannot tell which base file {clip_path} used ({name!r})"
    return load(bases[0])


CLIP_PATHS = files("clip")


@pytest.mark.parametrize("path", CLIP_PATHS, ids=[p.rsplit("/", 1)[-1] for p in CLIP_PATHS])
def test_clip_guided_run(path):
    import torch

    from glidekit.config import NoisedCLIPConfig
    from glidekit.models.clip import NoisedCLIP
    from glidekit.tokenizers import clip_tokenizer

    v = load(path)
    g = v["clip_guided"]
    run = g["p_sample_loop"]
    assert run["guidance"] == "clip" and run["guidance_scale"] == g["guidance_scale"]
    cfg = NoisedCLIPConfig(**v["config"])
    clip = NoisedCLIP(cfg).eval()
    clip.image_encoder.load_state_dict(v["image_encoder_state_dict"], strict=True)
    clip.text_encoder.load_state_dict(v["text_encoder_state_dict"], strict=True)
    assert torch.equal(clip.logit_scale.float(), v["logit_scale"])
    tokens, text_len = clip_tokenizer().encode_batch(g["prompts"], cfg.max_text_len)
    cond_fn = clip.cond_fn(tokens, text_len, run["guidance_scale"])
    base = _clip_guided_base(path)
    steps = replay(run, build_unet(base), cond_fn=cond_fn)
    assert_trajectory(run, steps, f"{path.rsplit('/', 1)[-1]} clip_guided")
