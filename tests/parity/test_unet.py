"""UNet forward passes (all four variants), text embeddings and per-block activations."""

import pytest
import torch

from tests.parity.common import ACTIVATION_TOL, FORWARD_TOL, assert_close, build_unet, require
from tests.parity.vectors import UNET_CLASSES, files, ids, load

KINDS = list(UNET_CLASSES.values())
PATHS = [p for k in KINDS for p in files(k)]


@pytest.mark.parametrize("kind", KINDS)
def test_has_unet_vectors(kind):
    require(kind)


def _inputs(inp: dict, with_inpaint: bool = True) -> dict:
    names = ["low_res"] + (["inpaint_image", "inpaint_mask"] if with_inpaint else [])
    return {k: inp[k] for k in names if k in inp}


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_state_dict_layout(path):
    v = load(path)
    model = build_unet(v)
    mine = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    ref = {k: tuple(t.shape) for k, t in v["state_dict"].items()}
    assert list(mine) == list(ref)
    assert mine == ref


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_forward(path):
    v = load(path)
    model = build_unet(v)
    inp = v["forward"]["inputs"]
    with torch.no_grad():
        out = model(inp["x_t"], inp["timesteps"], inp["tokens"], inp["mask"], **_inputs(inp))
    assert_close(out, v["forward"]["output"], FORWARD_TOL, "forward.output")
    if "output_without_inpaint_kwargs" in v["forward"]:
        with torch.no_grad():
            out = model(inp["x_t"], inp["timesteps"], inp["tokens"], inp["mask"], **_inputs(inp, False))
        assert_close(out, v["forward"]["output_without_inpaint_kwargs"], FORWARD_TOL, "output_without_inpaint_kwargs")


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_cached_text_embedding_gives_the_same_output(path):
    v = load(path)
    model = build_unet(v)
    inp = v["forward"]["inputs"]
    with torch.no_grad():
        emb = model.encode_text(inp["tokens"], inp["mask"])
        out = model(inp["x_t"], inp["timesteps"], text_emb=emb, **_inputs(inp))
    assert_close(out, v["forward"]["output"], FORWARD_TOL, "forward.output with cached text_emb")


@pytest.mark.parametrize("path", [p for p in PATHS if "text_emb" in load(p)["forward"]], ids=lambda p: p.rsplit("/", 1)[-1])
def test_text_embedding_and_activations(path):
    v = load(path)
    model = build_unet(v)
    inp = v["forward"]["inputs"]
    with torch.no_grad():
        emb = model.encode_text(inp["tokens"], inp["mask"])
    assert_close(emb["xf_proj"], v["forward"]["text_emb"]["xf_proj"], FORWARD_TOL, "text_emb.xf_proj")
    assert_close(emb["xf_out"], v["forward"]["text_emb"]["xf_out"], FORWARD_TOL, "text_emb.xf_out")

    acts = {}
    modules = dict(model.named_modules())
    handles = []
    for name in v["forward"]["activations"]:
        assert name in modules, f"activation {name!r} names no module of the model"
        handles.append(modules[name].register_forward_hook(lambda m, a, o, name=name: acts.__setitem__(name, o)))
    with torch.no_grad():
        model(inp["x_t"], inp["timesteps"], inp["tokens"], inp["mask"])
    for h in handles:
        h.remove()
    assert list(acts) == list(v["forward"]["activations"]), "blocks ran in a different order"
    for name, ref in v["forward"]["activations"].items():
        assert_close(acts[name], ref, ACTIVATION_TOL, f"activations[{name}]")
