"""Checkpoint I/O: official .pt import, glidekit safetensors, load_model (offline, tiny models)."""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from glidekit import io
from glidekit.config import NoisedCLIPConfig, from_openai_options
from glidekit.errors import CheckpointError
from glidekit.models.clip import CLIP_PIXEL_MEANS, CLIPImageEncoder
from glidekit.models.unet import GlideUNet

VECTORS = Path(__file__).parent / "vectors"
UNET_KINDS = ("base", "upsample", "base-inpaint", "upsample-inpaint")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest single-threaded, above all on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def unets() -> dict:
    """kind -> (state_dict, config, vectors) of the tiny official-layout UNets."""
    out = {}
    for kind in UNET_KINDS:
        v = torch.load(VECTORS / f"{kind}.pt", weights_only=True)
        out[kind] = (v["state_dict"], from_openai_options(v["options"]), v)
    return out


@pytest.fixture(scope="module")
def clips() -> dict:
    """kind -> (state_dict, config) of the tiny noised-CLIP encoders."""
    v = torch.load(VECTORS / "clip.pt", weights_only=True)
    cfg = NoisedCLIPConfig(**v["config"])
    return {
        "clip-image": (v["image_encoder_state_dict"], cfg),
        "clip-text": (v["text_encoder_state_dict"], cfg),
    }


@pytest.fixture(scope="module")
def models(unets, clips) -> dict:
    """kind -> (state_dict, config) for all six kinds."""
    return {**{k: (sd, cfg) for k, (sd, cfg, _) in unets.items()}, **clips}


def _pt(tmp_path: Path, obj, name: str = "model.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


# ---------------------------------------------------------------------------------------------
# identify / official files


@pytest.mark.parametrize("kind", [*UNET_KINDS, "clip-image", "clip-text"])
def test_identify_each_kind(models, kind):
    assert io.identify_state_dict(models[kind][0]) == kind


def test_identify_unknown_names_keys():
    with pytest.raises(CheckpointError, match="found foo.weight, bar"):
        io.identify_state_dict({"foo.weight": torch.zeros(1), "bar": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="5 input channels"):
        io.identify_state_dict({"input_blocks.0.0.weight": torch.zeros(8, 5, 3, 3)})


@pytest.mark.parametrize("kind", [*UNET_KINDS, "clip-image", "clip-text"])
def test_load_official_with_config(tmp_path, models, kind):
    sd, cfg = models[kind]
    found, config, loaded = io.load_official(_pt(tmp_path, sd), config=cfg)
    assert found == kind and config == cfg
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_load_official_keeps_fp16(tmp_path, unets):
    sd, cfg, _ = unets["base"]
    half = {k: v.half() for k, v in sd.items()}
    _, _, loaded = io.load_official(_pt(tmp_path, half), config=cfg)
    assert all(t.dtype == torch.float16 for t in loaded.values())


def test_truncated_file(tmp_path, unets):
    data = _pt(tmp_path, unets["base"][0]).read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint.*download it again"):
        io.load_official(bad)
    bad.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated"):
        io.load_official(bad)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such file: .*nope.pt"):
        io.load_official(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        io.load_official(tmp_path)


class _Dict(collections.OrderedDict):
    pass


class _Thing:
    pass


@pytest.mark.parametrize("obj", [_Dict(a=torch.zeros(1)), {"a": _Thing()}], ids=["dict-subclass", "object"])
def test_arbitrary_unpickling_refused(tmp_path, obj):
    with pytest.raises(CheckpointError, match="refuses to unpickle code objects for safety") as e:
        io.load_official(_pt(tmp_path, obj))
    assert "\n" not in str(e.value) and "test_io" in str(e.value)


def test_not_a_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        io.load_official(_pt(tmp_path, [torch.zeros(1)]))
    with pytest.raises(CheckpointError, match="entry 'options' holds a dict"):
        io.load_official(_pt(tmp_path, {"options": {}, "w": torch.zeros(1)}))


def test_wrong_kind(tmp_path, unets):
    sd, cfg, _ = unets["base-inpaint"]
    with pytest.raises(CheckpointError, match="holds a base-inpaint checkpoint, not upsample"):
        io.load_official(_pt(tmp_path, sd), kind="upsample", config=cfg)


def test_architecture_mismatch_against_preset(tmp_path, unets):
    with pytest.raises(CheckpointError) as e:
        io.load_official(_pt(tmp_path, unets["base"][0]))
    msg = str(e.value)
    assert "does not match the official 'base' architecture" in msg
    assert re.search(r"time_embed\.0\.weight has \(\d+,\d+\), expected \(768,192\)", msg)
    assert re.search(r"\(and \d+ more\)", msg)
    assert msg.endswith("pass the matching config") and "\n" not in msg


def test_config_of_wrong_variant(tmp_path, unets):
    sd = unets["base"][0]
    with pytest.raises(CheckpointError, match="describes an upsample model.*pass a config for base"):
        io.load_official(_pt(tmp_path, sd), config=unets["upsample"][1])


# ---------------------------------------------------------------------------------------------
# glidekit safetensors


def test_round_trip_bit_exact(tmp_path, unets):
    sd, cfg, _ = unets["base"]
    sd = dict(sd)
    sd["time_embed.0.weight"] = sd["time_embed.0.weight"].half()  # dtypes are kept
    sd["out.0.bias"] = sd["out.0.weight"]  # shared memory is cloned
    sd["time_embed.2.weight"] = sd["time_embed.2.weight"].t().contiguous().t()  # non-contiguous
    path = tmp_path / "m.safetensors"
    io.save_checkpoint(path, sd, cfg, kind="base", extra_metadata={"step": "12"})
    kind, config, loaded, meta = io.load_checkpoint(path)
    assert kind == "base" and config == cfg
    assert meta["step"] == "12" and meta["glidekit_format"] == "1"
    assert loaded.keys() == sd.keys()
    for k, t in sd.items():
        assert loaded[k].dtype == t.dtype and torch.equal(loaded[k], t), k


def test_save_is_atomic(tmp_path, unets, monkeypatch):
    sd, cfg, _ = unets["base"]
    path = tmp_path / "m.safetensors"
    io.save_checkpoint(path, sd, cfg, kind="base")
    good = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CheckpointError, match="cannot write .*No space left"):
        io.save_checkpoint(path, {k: v + 1 for k, v in sd.items()}, cfg, kind="base")
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_save_rejects_mismatched_state_dict(tmp_path, unets):
    sd, cfg, _ = unets["base"]
    with pytest.raises(CheckpointError, match="out.2.bias is missing"):
        partial = {k: v for k, v in sd.items() if k != "out.2.bias"}
        io.save_checkpoint(tmp_path / "m.safetensors", partial, cfg, kind="base")
    assert not list(tmp_path.iterdir())


def test_load_checkpoint_errors(tmp_path, unets):
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(4)}, plain)
    with pytest.raises(CheckpointError, match="safetensors file without a glidekit config"):
        io.load_checkpoint(plain)
    data = plain.read_bytes()
    plain.write_bytes(data[: len(data) - 8])
    with pytest.raises(CheckpointError, match="truncated"):
        io.load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="no such file"):
        io.load_checkpoint(tmp_path / "none.safetensors")


# ---------------------------------------------------------------------------------------------
# models


def test_load_model_matches_direct_model(tmp_path, unets):
    sd, cfg, v = unets["base"]
    dst = tmp_path / "base.safetensors"
    assert io.convert_official(_pt(tmp_path, sd), dst, config=cfg) == "base"
    model, kind, config = io.load_model(dst)
    assert kind == "base" and config == cfg and not model.training

    direct = GlideUNet(cfg.unet)
    direct.load_state_dict(sd)
    direct.eval()
    inp = v["forward"]["inputs"]
    args = tuple(inp[k][:1] for k in ("x_t", "timesteps", "tokens", "mask"))  # one row is enough
    with torch.no_grad():
        assert torch.equal(model(*args), direct(*args))

    with pytest.raises(CheckpointError, match="holds a base checkpoint, not upsample"):
        io.load_model(dst, kind="upsample")
    half, _, _ = io.load_model(dst, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_load_model_clip_keeps_constant_buffers(tmp_path, clips):
    sd, cfg = clips["clip-image"]
    model, kind, _ = io.load_model(_convert(tmp_path, sd, cfg))
    assert kind == "clip-image" and isinstance(model, CLIPImageEncoder)
    assert torch.allclose(model.blocks.input.pixel_means.flatten(), torch.tensor(CLIP_PIXEL_MEANS))
    direct = CLIPImageEncoder(cfg)
    direct.load_state_dict(sd)
    x, t = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1, torch.tensor([0, 500])
    with torch.no_grad():
        assert torch.equal(model(x, t), direct(x, t))


def _convert(tmp_path: Path, sd: dict, cfg) -> Path:
    dst = tmp_path / "clip.safetensors"
    io.convert_official(_pt(tmp_path, sd), dst, config=cfg)
    return dst


def test_load_model_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDEKIT_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="model 'base' is not downloaded; run: glide download base"):
        io.load_model("base")


def test_load_model_unsupported_extension(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"give a model name .*\.pt.*\.safetensors"):
        io.load_model(path)
