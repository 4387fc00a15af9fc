"""Configs: presets build the official architectures, dict round trips, OpenAI option dicts."""

import dataclasses

import pytest
import torch

from glidekit.config import (
    OPENAI_DEFAULTS,
    PRESETS,
    GlideConfig,
    UNetConfig,
    config_from_dict,
    config_from_json,
    config_to_dict,
    config_to_json,
    from_openai_options,
    get_preset,
)
from glidekit.errors import ConfigError
from glidekit.models.unet import GlideUNet

# ../shared/spec/glide-reference.md s.3
OFFICIAL = {
    "base": (385_030_726, 783, 3),
    "upsample": (398_361_286, 797, 6),
    "base-inpaint": (385_037_638, 783, 7),
    "upsample-inpaint": (398_368_198, 797, 10),
}


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_official_unet_sizes(name):
    params, entries, in_ch = OFFICIAL[name]
    with torch.device("meta"):
        model = GlideUNet(get_preset(name).config.unet)
    assert sum(p.numel() for p in model.parameters()) == params
    sd = model.state_dict()
    assert len(sd) == entries
    assert sd["input_blocks.0.0.weight"].shape[1] == in_ch


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_official_unet_keys_match_the_spec_listing(name):
    from pathlib import Path

    listing = Path(__file__).parent / "data" / "keys" / f"{name}.txt"
    expected = []
    for line in listing.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            expected.append((key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    with torch.device("meta"):
        sd = GlideUNet(get_preset(name).config.unet).state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected


def test_fresh_model_outputs_zero_like_openai():
    cfg = from_openai_options(dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                                   attention_resolutions="8", xf_width=32, xf_layers=1, xf_heads=2,
                                   num_head_channels=16))
    model = GlideUNet(cfg.unet).eval()
    tokens = torch.zeros(1, 128, dtype=torch.long)
    out = model(torch.randn(1, 3, 16, 16), torch.tensor([10]), tokens, torch.ones(1, 128, dtype=torch.bool))
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output conv (ADM)


@pytest.mark.parametrize("name", list(PRESETS))
def test_round_trip(name):
    cfg = PRESETS[name].config
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_json(config_to_json(cfg)) == cfg


def test_openai_defaults_give_the_base_preset():
    cfg = from_openai_options({k: v for k, v in OPENAI_DEFAULTS.items()})
    assert cfg.unet == get_preset("base").config.unet
    assert cfg.unet.channel_mult == (1, 2, 3, 4)
    assert cfg.unet.attention_resolutions == (32, 16, 8)


def test_upsampler_default_channel_mult():
    assert get_preset("upsample").config.unet.channel_mult == (1, 1, 2, 2, 4, 4)
    assert get_preset("upsample").config.diffusion.noise_schedule == "linear"


def test_bad_inputs_are_clear():
    with pytest.raises(ConfigError, match="unknown GLIDE option"):
        from_openai_options({"num_chanels": 3})
    with pytest.raises(ConfigError, match="channel_mult"):
        from_openai_options({"channel_mult": "1,2"})
    with pytest.raises(ConfigError, match="unknown model preset"):
        get_preset("base64")
    with pytest.raises(ConfigError, match="unknown UNetConfig field"):
        config_from_dict({"type": "glide", "unet": {"image_sise": 64}})
    with pytest.raises(ConfigError, match="unknown config type"):
        config_from_dict({"type": "vae"})
    with pytest.raises(ConfigError, match=r"num_head_channels 64 must divide the attention layers' channels \[32\]"):
        config_from_dict({"type": "glide", "unet": {"image_size": 16, "model_channels": 32, "channel_mult": [1],
                                                    "attention_resolutions": []}})
    with pytest.raises(ConfigError, match="num_head_channels must be positive, or -1"):
        config_from_dict({"type": "glide", "unet": {"num_head_channels": 0}})
    with pytest.raises(ConfigError, match="noise_schedule"):
        config_from_dict({"type": "glide", "diffusion": {"noise_schedule": "cosine2"}})
    with pytest.raises(ConfigError, match="unknown prediction 'x0'"):
        config_from_dict({"type": "glide", "diffusion": {"prediction": "x0"}})
    # checkpoints written before the field existed read as GLIDE's eps prediction
    assert config_from_dict({"type": "glide", "diffusion": {"steps": 1000}}).diffusion.prediction == "eps"
    with pytest.raises(ConfigError, match="not divisible"):
        UNetConfig(image_size=20, channel_mult=(1, 2, 2, 2))


def test_unconditional_config_has_no_text_side():
    cfg = dataclasses.replace(UNetConfig(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                                         attention_resolutions=(8,), num_head_channels=16), text=None)
    model = GlideUNet(cfg)
    assert not any(k.startswith(("transformer", "token_embedding")) for k in model.state_dict())
    assert config_from_dict(config_to_dict(GlideConfig(unet=cfg))).unet.text is None
    model(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]))
