"""glidekit.runtime: device/dtype choice and the inference preparation (fast, tiny models only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glidekit import runtime
from glidekit.config import from_openai_options
from glidekit.errors import GlidekitError
from glidekit.models import layers
from glidekit.models.unet import GlideUNet

VECTORS = "tests/vectors/base.pt"


@pytest.fixture(autouse=True)
def _restore_attention_switch():
    previous = layers.fused_attention_enabled()
    yield
    layers.set_fused_attention(previous)


# ---------------------------------------------------------------------------------------------
# choose_device


def test_choose_device_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert runtime.choose_device() == torch.device("cpu")
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert runtime.choose_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.choose_device("AUTO") == torch.device("cuda")


def test_choose_device_explicit(monkeypatch):
    assert runtime.choose_device("cpu") == torch.device("cpu")
    assert runtime.choose_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    with pytest.raises(GlidekitError, match="CUDA is not available"):
        runtime.choose_device("cuda")
    with pytest.raises(GlidekitError, match="CUDA is not available"):
        runtime.choose_device("cuda:1")
    with pytest.raises(GlidekitError, match="MPS is not available"):
        runtime.choose_device("mps")
    with pytest.raises(GlidekitError, match="unknown device"):
        runtime.choose_device("tpu-please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.choose_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(GlidekitError, match="only 1 CUDA device"):
        runtime.choose_device("cuda:3")


# ---------------------------------------------------------------------------------------------
# choose_dtype


@pytest.mark.parametrize("fast_bf16, expected", [(False, torch.float32), (True, torch.bfloat16)])
def test_choose_dtype_cpu_auto_follows_bf16_instructions(monkeypatch, fast_bf16, expected):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert runtime.choose_dtype("cpu") == expected
    assert runtime.choose_dtype(torch.device("cpu"), "auto") == expected
    assert runtime.choose_dtype("cpu", None) == expected


def test_choose_dtype_gpu_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.choose_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert runtime.choose_dtype("cuda") == torch.float16
    with pytest.raises(GlidekitError, match="bf16"):
        runtime.choose_dtype("cuda", "bf16")
    assert runtime.choose_dtype("mps") == torch.float32
    assert runtime.choose_dtype("mps", "fp16") == torch.float16


def test_choose_dtype_explicit(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert runtime.choose_dtype("cpu", "fp32") == torch.float32
    assert runtime.choose_dtype("cpu", "float32") == torch.float32
    assert runtime.choose_dtype("cpu", torch.float32) == torch.float32
    # Asked for explicitly, bf16 is allowed even where it is emulated.
    assert runtime.choose_dtype("cpu", "bf16") == torch.bfloat16
    with pytest.raises(GlidekitError, match="unknown dtype"):
        runtime.choose_dtype("cpu", "int8")


@pytest.mark.parametrize("requested", ["fp16", "float16", torch.float16])
def test_choose_dtype_refuses_fp16_on_cpu(requested):
    with pytest.raises(GlidekitError, match="100x slower"):
        runtime.choose_dtype("cpu", requested)


def test_autocast_context():
    with runtime.autocast_context("cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with runtime.autocast_context("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with runtime.autocast_context("cpu", torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with runtime.inference_context("cpu", torch.float32):
        assert not torch.is_grad_enabled()


# ---------------------------------------------------------------------------------------------
# Winograd convolution and fused attention


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 7, 8, 8), (1, 3, 4, 16, 8), (3, 6, 9, 24, 16)])
def test_winograd_conv_matches_conv2d(monkeypatch, tile, channels_last, shape):
    b, cin, cout, h, w = shape
    if h % tile or w % tile:
        pytest.skip("size not a multiple of the tile")
    # Small chunks so several chunks, and a partial last one, are exercised.
    monkeypatch.setattr(layers, "_WINOGRAD_CHUNK_TILES", 3 * b * (w // tile))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, cin, h, w, generator=g)
    weight, bias = torch.randn(cout, cin, 3, 3, generator=g), torch.randn(cout, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = layers.winograd_conv3x3(x, layers.winograd_weight(weight, tile), bias, tile)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    assert y.shape == ref.shape
    err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
    assert err < (1e-6 if tile == 2 else 1e-5), err


def test_winograd_conv2d_falls_back_and_tracks_weight_changes(monkeypatch):
    monkeypatch.setattr(layers, "_WINOGRAD_MIN_CHANNELS", 1)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    ref_conv = nn.Conv2d(4, 6, 3, padding=1)
    ref_conv.load_state_dict(conv.state_dict())
    conv.__class__ = layers.WinogradConv2d
    assert set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), ref_conv(x), atol=1e-5, rtol=1e-5)
        conv.weight.mul_(2)
        ref_conv.weight.mul_(2)
        torch.testing.assert_close(conv(x), ref_conv(x), atol=1e-5, rtol=1e-5)
        assert set(conv.__dict__["_winograd_cache"]) == {2}  # 8 px: F(2x2, 3x3)
        conv(torch.randn(1, 4, 16, 16))
        assert set(conv.__dict__["_winograd_cache"]) == {2, 4}  # 16 px: F(4x4, 3x3)
        # odd size: not a multiple of the tile, the plain convolution runs
        x_odd = torch.randn(1, 4, 7, 9)
        torch.testing.assert_close(conv(x_odd), ref_conv(x_odd), atol=1e-5, rtol=1e-5)
    # with gradients the plain convolution runs (and backpropagates)
    conv.weight.requires_grad_(True)
    conv(x).sum().backward()
    assert conv.weight.grad is not None


def test_winograd_conv2d_skips_thin_convolutions():
    # GLIDE's 3 -> C input and C -> 6 output convs: the direct convolution is faster there.
    conv = nn.Conv2d(3, 8, 3, padding=1)
    conv.__class__ = layers.WinogradConv2d
    with torch.no_grad():
        conv(torch.randn(1, 3, 16, 16))
    assert not conv.__dict__.get("_winograd_cache")


def test_fused_attention_matches_einsum():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 16, n, generator=g) for n in (40, 56, 56))
    layers.set_fused_attention(False)
    ref = layers.qk_attention(q, k, v)
    assert layers.set_fused_attention(True) is False
    out = layers.qk_attention(q, k, v)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# prepare_for_inference on the tiny model of the parity vectors


def _tiny_model_and_inputs():
    v = torch.load(VECTORS, weights_only=True)
    model = GlideUNet(from_openai_options(v["options"]).unet).eval()
    model.load_state_dict(v["state_dict"])
    return model, v["forward"]["inputs"]


@pytest.mark.parametrize("cached_text", [False, True])
@pytest.mark.parametrize("winograd_everywhere", [False, True])
def test_prepare_for_inference_keeps_outputs(monkeypatch, cached_text, winograd_everywhere):
    if winograd_everywhere:  # the tiny model's 32-64 channels are below the Winograd threshold
        monkeypatch.setattr(layers, "_WINOGRAD_MIN_CHANNELS", 1)
    model, inp = _tiny_model_and_inputs()
    x, t, tokens, mask = inp["x_t"], inp["timesteps"], inp["tokens"], inp["mask"]
    layers.set_fused_attention(False)
    with torch.no_grad():
        ref = model(x, t, tokens, mask)
    assert ref.abs().max() > 0.1  # real weights: a meaningful comparison

    device = runtime.choose_device("cpu")
    dtype = torch.float32
    fast = runtime.prepare_for_inference(model, device, dtype)
    assert fast is model and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert layers.fused_attention_enabled()
    n_wino = sum(isinstance(m, layers.WinogradConv2d) for m in model.modules())
    assert n_wino > 0 if runtime.WINOGRAD_TILE != 0 else n_wino == 0
    with runtime.inference_context(device, dtype):
        if cached_text:
            emb = model.encode_text(tokens, mask)
            out = model(runtime.to_model_input(x, device), t, text_emb=emb)
        else:
            out = model(runtime.to_model_input(x, device), t, tokens, mask)
    torch.testing.assert_close(out.contiguous(), ref, atol=1e-5, rtol=1e-5)
    caches = [m.__dict__.get("_winograd_cache") for m in model.modules() if isinstance(m, layers.WinogradConv2d)]
    if winograd_everywhere and runtime.WINOGRAD_TILE != 0:
        assert sum(bool(c) for c in caches) > 0
    # the state dict is untouched: still loads into / from a plain model
    plain = GlideUNet(model.cfg)
    plain.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("swish", [False, True])
def test_group_norm_bf16_inference_path_is_the_float32_result_rounded(swish):
    """bf16 inference reads bf16 and accumulates in float32 (no float32 copy of the activation):
    within two bf16 roundings of the float32 computation; with grad on it takes GLIDE's cast path."""
    g = torch.Generator().manual_seed(0)
    gn = layers.GroupNorm32(64, swish=swish)
    with torch.no_grad():
        gn.weight.copy_(torch.randn(64, generator=g))
        gn.bias.copy_(torch.randn(64, generator=g))
    x = (torch.randn(2, 64, 8, 8, generator=g) * 3 + 1).bfloat16()
    ref = F.group_norm(x.float(), 32, gn.weight, gn.bias, 1e-5)
    ref = F.silu(ref) if swish else ref
    with torch.no_grad():
        out = gn(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2 * 2**-8)
    with torch.enable_grad():  # training: the float32 path, cast back (its gradient is the reference one)
        xg = x.clone().requires_grad_()
        y = gn(xg)
        y.float().sum().backward()
    torch.testing.assert_close(y.detach(), ref.bfloat16(), atol=0, rtol=0)
    assert xg.grad is not None and torch.isfinite(xg.grad.float()).all()
