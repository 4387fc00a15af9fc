"""Class-conditional UNets, the noisy classifier and classifier guidance (Dhariwal & Nichol 2021).

Tiny random models only (float32 on CPU); no vectors needed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from glidekit import io
from glidekit.config import (
    PRESETS,
    ClassifierConfig,
    DiffusionConfig,
    GlideConfig,
    TextEncoderConfig,
    UNetConfig,
    config_from_dict,
    config_from_json,
    config_to_dict,
    config_to_json,
)
from glidekit.diffusion.schedule import Schedule
from glidekit.errors import CheckpointError, ConfigError
from glidekit.models.classifier import NoisyClassifier
from glidekit.models.unet import GlideUNet
from glidekit.sampling import guidance, noise, reference, solvers

K = 5  # classes
TINY = dict(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2),
            attention_resolutions=(8,), num_head_channels=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest single-threaded, above all on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _unet_cfg(**kw) -> UNetConfig:
    return UNetConfig(**{**TINY, "dropout": 0.0, "text": None, "num_classes": K, **kw})


def _clf_cfg(**kw) -> ClassifierConfig:
    return ClassifierConfig(**{**TINY, "num_classes": K, **kw})


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill the zero-initialised (residual-branch, output) parameters so every path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def unet() -> GlideUNet:
    torch.manual_seed(0)
    return _randomize(GlideUNet(_unet_cfg()))


@pytest.fixture(scope="module")
def classifier() -> NoisyClassifier:
    torch.manual_seed(1)
    model = _randomize(NoisyClassifier(_clf_cfg()), seed=1)
    with torch.no_grad():  # confident logits (not ~uniform), so log p(y | x) has a sizeable gradient
        model.out[2].c_proj.weight.mul_(30)
    return model


# ---------------------------------------------------------------------------------------------
# class-conditional UNet


def test_label_emb_only_when_num_classes_set():
    with torch.device("meta"):
        plain = GlideUNet(_unet_cfg(num_classes=None)).state_dict()
        cond = GlideUNet(_unet_cfg()).state_dict()
        base = GlideUNet(PRESETS["base"].config.unet).state_dict()
    assert not any("label_emb" in k for k in plain) and not any("label_emb" in k for k in base)
    assert set(cond) - set(plain) == {"label_emb.weight"}
    assert cond["label_emb.weight"].shape == (K + 1, 4 * 32)  # + the null class
    keys = list(cond)  # guided-diffusion's order: right after the time embedding
    assert keys[keys.index("label_emb.weight") - 1] == "time_embed.2.bias"
    assert PRESETS["base"].config.unet.num_classes is None


def test_class_conditioning_changes_the_output(unet):
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([10, 500, 999])
    with torch.no_grad():
        out_y = unet(x, t, y=torch.tensor([0, 1, 4]))
        out_null = unet(x, t)
        out_null2 = unet(x, t, y=torch.full((3,), K))
        out_other = unet(x, t, y=torch.tensor([2, 3, 0]))
    assert out_y.shape == (3, 6, 16, 16) and torch.isfinite(out_y).all()
    assert torch.equal(out_null, out_null2)  # y=None is the null class
    for a, b in [(out_y, out_null), (out_y, out_other)]:
        assert ((a - b).flatten(1).abs().amax(1) > 1e-4).all()


def test_class_and_text_conditioning_combine():
    text = TextEncoderConfig(n_vocab=64, text_ctx=8, width=32, layers=1, heads=2)
    torch.manual_seed(0)
    model = _randomize(GlideUNet(_unet_cfg(text=text)))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    tokens, mask = torch.randint(0, 64, (2, 8)), torch.ones(2, 8, dtype=torch.bool)
    with torch.no_grad():
        a, b = model(x, t, tokens, mask, y=torch.tensor([1, 2])), model(x, t, tokens, mask)
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


def test_bad_labels_and_unconditional_models():
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="not class-conditional"):
        GlideUNet(_unet_cfg(num_classes=None))(x, t, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one integer class label per row"):
        GlideUNet(_unet_cfg())(x, t, y=torch.tensor([0]))
    with pytest.raises(ConfigError, match="num_classes"):
        _unet_cfg(num_classes=0)


def test_cfg_at_scale_one_is_the_conditional_model(unet):
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([250, 250, 250, 250]), torch.tensor([3, 1])
    labels = guidance.class_cfg_labels(y, unet.null_class)
    assert labels.tolist() == [3, 1, K, K]
    with torch.no_grad():
        guided = guidance.classifier_free(unet, 1.0)(torch.cat([x, x]), t, y=labels)
        cond, uncond = unet(x, t[:2], y=y), unet(x, t[:2])
        strong = guidance.classifier_free(unet, 4.0)(torch.cat([x, x]), t, y=labels)
    torch.testing.assert_close(guided[:2], cond, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided[2:, :3], cond[:, :3], atol=1e-5, rtol=1e-5)  # eps shared
    torch.testing.assert_close(guided[2:, 3:], uncond[:, 3:], atol=1e-5, rtol=1e-5)  # own variance
    torch.testing.assert_close(strong[:2, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]),
                               atol=1e-4, rtol=1e-4)  # batch-size rounding, amplified 4x


# ---------------------------------------------------------------------------------------------
# noisy classifier


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_classifier_shapes_and_keys(pool):
    torch.manual_seed(0)
    model = NoisyClassifier(_clf_cfg(pool=pool)).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 16, 16), torch.tensor([0, 400, 999]))
    assert logits.shape == (3, K) and torch.isfinite(logits).all()
    sd = model.state_dict()
    assert not any(k.startswith("output_blocks") for k in sd)
    assert sd["input_blocks.0.0.weight"].shape == (32, 3, 3, 3)
    if pool == "attention":  # guided-diffusion's AttentionPool2d names; 8x8 features + mean token
        assert sd["out.2.positional_embedding"].shape == (64, 8 * 8 + 1)
        assert sd["out.2.c_proj.weight"].shape == (K, 64, 1)
        assert logits.abs().sum() > 0
    else:
        assert sd["out.3.weight"].shape == (K, 64, 1, 1)
        assert torch.equal(logits, torch.zeros_like(logits))  # zero-initialised head (ADM)
    assert io.identify_state_dict(sd) == "classifier"
    # the encoder is the UNet's: same block names and shapes as a UNet of the same settings
    with torch.device("meta"):
        unet_sd = GlideUNet(UNetConfig(**TINY, text=None)).state_dict()
    enc = {k: v.shape for k, v in unet_sd.items() if k.startswith(("input_blocks", "middle_block", "time_embed"))}
    assert {k: v.shape for k, v in sd.items() if not k.startswith("out.")} == enc


def test_classifier_config_defaults_and_round_trip():
    cfg = ClassifierConfig()
    assert cfg.channel_mult == (1, 2, 3, 4) and cfg.pool == "attention" and cfg.num_classes == 1000
    assert ClassifierConfig(image_size=256).channel_mult == (1, 1, 2, 2, 4, 4)
    cfg = _clf_cfg(pool="adaptive", diffusion=DiffusionConfig(noise_schedule="linear"))
    assert config_to_dict(cfg)["type"] == "classifier"
    assert config_from_dict(config_to_dict(cfg)) == cfg and config_from_json(config_to_json(cfg)) == cfg
    ucfg = GlideConfig(unet=_unet_cfg())
    assert config_from_json(config_to_json(ucfg)) == ucfg
    with pytest.raises(ConfigError, match="pool"):
        _clf_cfg(pool="spatial")
    with pytest.raises(ConfigError, match="num_classes"):
        _clf_cfg(num_classes=1)
    with torch.device("meta"):  # the ADM default classifier builds (shapes only)
        sd = NoisyClassifier(ClassifierConfig()).state_dict()
    assert sd["out.2.positional_embedding"].shape == (512, 8 * 8 + 1)
    assert sd["out.2.c_proj.weight"].shape == (1000, 512, 1)


# ---------------------------------------------------------------------------------------------
# classifier guidance


def _log_p(classifier, x, t, y):
    return torch.log_softmax(classifier(x, t), dim=-1)[torch.arange(len(y)), y]


def test_cond_fn_is_the_gradient_of_log_p(classifier):
    # float32: GroupNorm32 computes in float32 by design, so the model cannot run in float64
    clf = classifier
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([100, 800]), torch.tensor([1, 3])
    with torch.no_grad():  # as the samplers call it
        grad = guidance.classifier_cond_fn(clf, y, 2.5)(x, t)
    assert grad.shape == x.shape and grad.dtype == x.dtype and not grad.requires_grad
    assert grad.flatten(1).norm(dim=1).min() > 1.0
    # autograd of each row's own log p(y | x), one row at a time
    for i in range(2):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(_log_p(clf, xi, t[i : i + 1], y[i : i + 1]).sum(), xi)
        torch.testing.assert_close(grad[i : i + 1], 2.5 * gi, rtol=1e-4, atol=1e-6)
    # central finite differences of 2.5 * log p(y | x) along unit directions (the gradient's own,
    # where the derivative is |grad| ~ 2, and random ones, ~ |grad| / sqrt(768)), per row
    with torch.no_grad():
        for v in [grad] + [torch.randn(x.shape, generator=g) for _ in range(3)]:
            v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            h = 3e-2
            fd = 2.5 * (_log_p(clf, x + h * v, t, y) - _log_p(clf, x - h * v, t, y)) / (2 * h)
            torch.testing.assert_close((grad * v).flatten(1).sum(1), fd, rtol=1e-2, atol=5e-4)
    # a small step along the gradient raises log p(y | x) of every row
    with torch.no_grad():
        step = 1e-2 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        assert (_log_p(clf, x + step, t, y) > _log_p(clf, x, t, y)).all()
    # one label for every row; scale 0 is exactly zero
    one = guidance.classifier_cond_fn(clf, 3, 1.0)(x, t)
    torch.testing.assert_close(one[1], grad[1] / 2.5)
    assert torch.equal(guidance.classifier_cond_fn(clf, y, 0.0)(x, t), torch.zeros_like(x))
    with pytest.raises(ValueError, match="3 class labels for a batch of 2"):
        guidance.classifier_cond_fn(clf, torch.tensor([0, 1, 2]), 1.0)(x, t)


def test_combine_cond_fns(classifier):
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 5])
    a = guidance.classifier_cond_fn(classifier, torch.tensor([0, 1]), 1.0)
    b = guidance.classifier_cond_fn(classifier, torch.tensor([2, 2]), 0.5)
    both = guidance.combine_cond_fns(a, None, b)
    torch.testing.assert_close(both(x, t), a(x, t) + b(x, t))
    assert guidance.combine_cond_fns(a) is a and guidance.combine_cond_fns(None) is None


def test_guided_sampling_runs(unet, classifier):
    """Classifier guidance with classifier-free guidance on a class-conditional UNet, through the
    reference ancestral loop and DPM-Solver++(2M)."""
    y = torch.tensor([1, 4])
    x_T = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model_fn = guidance.classifier_free(unet, 3.0)
    kwargs = {"y": guidance.class_cfg_labels(y, unet.null_class)}
    cond_fn = guidance.classifier_cond_fn(classifier, y.repeat(2), 1.0)
    seen = []

    def spy(x, t, **kw):
        seen.append(t.clone())
        return cond_fn(x, t, **kw)

    ref = reference.p_sample_loop(
        model_fn, Schedule.create("squaredcos_cap_v2", 1000, "4"), x_T, model_kwargs=kwargs, cond_fn=spy,
        noise_fn=noise.per_sample(noise.seeded_generators([0, 1, 0, 1])),
    )
    assert [s[0].item() for s in seen] == [999, 666, 333, 0]  # original timesteps reach the classifier
    fast = solvers.dpm_solver_pp_2m(
        model_fn, Schedule.create("squaredcos_cap_v2", 1000), x_T, steps=4, model_kwargs=kwargs, cond_fn=cond_fn,
    )
    unguided = solvers.dpm_solver_pp_2m(model_fn, Schedule.create("squaredcos_cap_v2", 1000), x_T, steps=4,
                                        model_kwargs=kwargs)
    for out in (ref, fast):  # (the ancestral k = 0 step adds the guided mean shift after the clamp)
        assert out.shape == x_T.shape and torch.isfinite(out).all() and out.abs().max() <= 1.5
    assert not torch.equal(fast, unguided)


# ---------------------------------------------------------------------------------------------
# checkpoints


def test_classifier_checkpoint_round_trip(tmp_path, classifier):
    path = tmp_path / "clf.safetensors"
    io.save_checkpoint(path, classifier.state_dict(), classifier.cfg, kind="classifier")
    model, kind, cfg = io.load_model(path, kind="classifier")
    assert kind == "classifier" and cfg == classifier.cfg and isinstance(model, NoisyClassifier)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([7, 70])
    with torch.no_grad():
        assert torch.equal(model(x, t), classifier(x, t))
    assert io.identify_state_dict(classifier.state_dict()) == "classifier"
    with pytest.raises(CheckpointError, match="holds a classifier checkpoint, not base"):
        io.load_model(path, kind="base")
    with pytest.raises(ConfigError, match="needs a ClassifierConfig"):
        io.save_checkpoint(path, classifier.state_dict(), GlideConfig(), kind="classifier")
    # a .pt classifier (e.g. guided-diffusion's layout) has no preset: its config is required
    pt = tmp_path / "clf.pt"
    torch.save(classifier.state_dict(), pt)
    with pytest.raises(CheckpointError, match="no official preset"):
        io.load_official(pt)
    assert io.load_model(pt, config=classifier.cfg)[1] == "classifier"


def test_class_conditional_unet_checkpoint_round_trip(tmp_path, unet):
    cfg = GlideConfig(unet=unet.cfg)
    path = tmp_path / "unet.safetensors"
    io.save_checkpoint(path, unet.state_dict(), cfg, kind="base")
    model, kind, loaded = io.load_model(path)
    assert kind == "base" and loaded == cfg and loaded.unet.num_classes == K
    x, t, y = torch.randn(1, 3, 16, 16), torch.tensor([9]), torch.tensor([2])
    with torch.no_grad():
        assert torch.equal(model(x, t, y=y), unet(x, t, y=y))
    no_classes = GlideConfig(unet=dataclasses.replace(unet.cfg, num_classes=None))
    with pytest.raises(CheckpointError, match="unexpected label_emb.weight"):
        io.save_checkpoint(path, unet.state_dict(), no_classes, kind="base")
