"""Pipelines on the tiny reference-layout models: composition, reproducibility, edits keep pixels."""

import pytest
import torch

from glidekit.config import DiffusionConfig, GlideConfig, UNetConfig, from_openai_options
from glidekit.diffusion.schedule import Schedule
from glidekit.errors import ConfigError, GlidekitError
from glidekit.models.unet import GlideUNet
from glidekit.pipelines import (
    FAST_BASE,
    GlideModel,
    SamplerSpec,
    edit,
    guided_model_fn,
    inpaint,
    model_fn,
    iterative_edit,
    outpaint,
    plain_prompt,
    prompt_parts,
    run_sampler,
    text_kwargs,
    text_to_image,
)
from tests.parity.common import build_unet
from tests.parity.vectors import DEFAULT_DIR

FEW = SamplerSpec("dpm++2m", 4)


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


def _tiny(name: str) -> GlideModel:
    v = torch.load(DEFAULT_DIR / f"{name}.pt", weights_only=True)
    return GlideModel(build_unet(v), from_openai_options(v["options"]), name)


@pytest.fixture(scope="module")
def models():
    return {n: _tiny(n) for n in ("base", "upsample", "base-inpaint", "upsample-inpaint")}


def test_cascade_keeps_every_stage(models):
    r = text_to_image(models["base"], ["a corgi", "a cat"], sampler=FEW, upsampler=models["upsample"],
                      upsample_sampler=SamplerSpec("dpm++2m", 3))
    assert set(r.stages) == {"base", "upsample"}
    assert r.images is r.stages["upsample"]
    assert r.stages["base"].shape == (2, 3, 32, 32)
    assert [rec["seed"] for rec in r.records] == [0, 1]
    assert torch.isfinite(r.images).all() and r.images.abs().max() <= 1


def test_same_seed_same_image_across_batch_size_and_position(models):
    base = models["base"]
    alone = text_to_image(base, ["a cat"], seed=7, sampler=SamplerSpec("euler_a", 5)).images[0]
    batch = text_to_image(base, ["a dog", "a cat", "a cow"], seed=6, sampler=SamplerSpec("euler_a", 5)).images[1]
    # Same seed (7) and prompt: identical up to float summation order of batched convolutions.
    assert (alone - batch).abs().max() < 1e-3
    other = text_to_image(base, ["a cat"], seed=8, sampler=SamplerSpec("euler_a", 5)).images[0]
    assert (alone - other).abs().max() > 0.1


def test_guidance_scale_one_is_the_conditional_model(models):
    base = models["base"]
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([500, 500])
    cond = text_kwargs(base, ["a", "b"], 1.0)
    with torch.no_grad():
        plain = base.net(x, t, **cond)
        guided = guided_model_fn(base, 1.0)(x, t, **cond)
        # a scale that is not 1 runs [cond, uncond]; at s the eps mixes and variance is conditional
        both = text_kwargs(base, ["a", "b"], 2.0)
        mixed = guided_model_fn(base, 2.0)(x, t, **both)
        uncond = base.net(x, t, **text_kwargs(base, ["", ""], 1.0))
    assert torch.equal(plain, guided)
    assert torch.allclose(mixed[:, :3], uncond[:, :3] + 2.0 * (plain[:, :3] - uncond[:, :3]), atol=1e-5)
    assert torch.allclose(mixed[:, 3:], plain[:, 3:], atol=1e-5)  # batch 4 vs 2: conv summation order


def test_guided_rows_equal_glides_notebook_wrapper(models):
    """The B-row CFG denoiser gives the same conditional rows as GLIDE's 2B-row wrapper."""
    from glidekit.sampling.guidance import classifier_free

    base = models["base"]
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([300, 300])
    kw = text_kwargs(base, ["a"] * 2, 3.0)
    with torch.no_grad():
        ours = guided_model_fn(base, 3.0)(x, t, **kw)
        kw2 = text_kwargs(base, ["a", "a"], 3.0)
        glide = classifier_free(base.net, 3.0)(torch.cat([x, torch.randn_like(x)]), torch.cat([t, t]), **kw2)
    assert torch.allclose(ours, glide[:2], atol=1e-6)


def test_composed_prompts_sum_each_concepts_guidance(models):
    """Composable Diffusion (Liu et al. 2022, eq. 10): eps_u + s sum_k (eps_k - eps_u); a prompt
    with one concept in a composed batch gets plain classifier-free guidance."""
    from glidekit.pipelines import composed_kwargs

    base = models["base"]
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([400, 400])
    kw, parts = composed_kwargs(base, ["a cat AND a hat", "a dog"])
    assert parts.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    with torch.no_grad():
        out = guided_model_fn(base, 2.0, parts)(x, t, **kw)
        eps = {p: base.net(x, t, **text_kwargs(base, [p, p], 1.0))[:, :3] for p in ("a cat", "a hat", "a dog", "")}
        plain_dog = guided_model_fn(base, 2.0)(x, t, **text_kwargs(base, ["a dog", "a dog"], 2.0))
    u = eps[""][0]
    want = u + 2.0 * (eps["a cat"][0] - u) + 2.0 * (eps["a hat"][0] - u)
    assert torch.allclose(out[0, :3], want, atol=1e-4)
    assert torch.allclose(out[1], plain_dog[1], atol=1e-4)
    assert composed_kwargs(base, ["a cat", "a dog"]) == ({}, None)


def test_composed_prompts_sample_and_refuse_where_they_cannot(models):
    base = models["base"]
    r = text_to_image(base, ["a cat AND a hat", "a dog"], seed=3, sampler=SamplerSpec("dpm++2m", 3))
    assert r.images.shape == (2, 3, 32, 32) and r.records[0]["prompt"] == "a cat AND a hat"
    alone = text_to_image(base, ["a dog"], seed=4, sampler=SamplerSpec("dpm++2m", 3)).images[0]
    assert (r.images[1] - alone).abs().max() < 1e-3  # a plain prompt is unchanged by its neighbour's AND
    assert prompt_parts("a cat  AND a hat AND sky") == ["a cat", "a hat", "sky"]
    assert prompt_parts("sand and sea") == ["sand and sea"]  # only the upper-case word composes
    assert plain_prompt("a cat AND a hat") == "a cat, a hat"
    with pytest.raises(ConfigError, match="every side of AND"):
        text_to_image(base, ["a cat AND "], sampler=SamplerSpec("dpm++2m", 3))
    with pytest.raises(ConfigError, match="only the prompts of text-to-image sampling"):
        text_kwargs(base, ["a cat AND a hat"], 3.0)
    with pytest.raises(ConfigError, match="or a switch prompt"):
        text_to_image(base, ["a cat"], switch_prompts=["a hat AND a dog"], sampler=SamplerSpec("dpm++2m", 3))
    with pytest.raises(ConfigError, match="prompt switch"):
        text_to_image(base, ["a cat AND a hat"], switch_prompts=["a dog"], sampler=SamplerSpec("dpm++2m", 3))


def test_every_sampler_runs_with_guidance(models):
    for spec in (SamplerSpec("ancestral", 5), SamplerSpec("ddim", 5, eta=0.5), SamplerSpec("ddim", 27, respacing="fast27"),
                 SamplerSpec("heun", 3), SamplerSpec("euler", 3), SamplerSpec("euler_a", 3), SamplerSpec("dpm++2m", 3, thresholding=True)):
        r = text_to_image(models["base"], ["x"], sampler=spec, guidance_scale=2.0)
        assert torch.isfinite(r.images).all(), spec


def test_inpainting_leaves_known_pixels_unchanged(models):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    keep = torch.ones(1, 1, 32, 32)
    keep[..., 8:20, 4:28] = 0
    r = inpaint(models["base-inpaint"], image, keep, ["a", "b"], sampler=FEW, upsampler=models["upsample-inpaint"],
                image_hr=image, upsample_sampler=SamplerSpec("dpm++2m", 3))
    for stage in ("base", "upsample"):
        out = r.stages[stage]
        assert torch.equal(out * keep, (image * keep).expand_as(out)), stage
        assert (out - image).abs().mul(1 - keep).max() > 0.05, "the masked region was not regenerated"


def test_outpaint_extends_and_keeps_the_original(models):
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    r = outpaint(models["base-inpaint"], image, "a wide view", right=24, bottom=8, sampler=FEW)
    assert r.images.shape == (1, 3, 40, 56)
    assert torch.equal(r.images[..., :32, :32], image)
    assert r.images[..., :, 32:].abs().sum() > 0


def test_iterative_edit_applies_each_mask(models):
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    k1, k2 = torch.ones(1, 1, 32, 32), torch.ones(1, 1, 32, 32)
    k1[..., :8, :8] = 0
    k2[..., -8:, -8:] = 0
    r = iterative_edit(models["base-inpaint"], image, [(k1, "a"), (k2, "b")], sampler=FEW)
    assert set(r.stages) == {"edit0", "edit1"}
    assert torch.equal(r.images * k1 * k2, image * k1 * k2)


def test_edit_strength_controls_distance(models):
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    near = edit(models["base"], image, ["x"], strength=0.1, sampler=FEW).images
    far = edit(models["base"], image, ["x"], strength=1.0, sampler=FEW).images
    assert (near - image).abs().mean() < (far - image).abs().mean()


def test_prompt_switch_changes_the_result(models):
    a = text_to_image(models["base"], ["a cat"], sampler=FEW).images
    b = text_to_image(models["base"], ["a cat"], sampler=FEW, switch_prompts=["a dog"], switch_at=0.5).images
    assert not torch.equal(a, b)


def test_bad_arguments(models):
    with pytest.raises(ConfigError, match="steps"):
        SamplerSpec("dpm++2m", 0)
    with pytest.raises(ConfigError, match="unknown sampler"):
        SamplerSpec("plms", 10)
    with pytest.raises(ConfigError, match="eta"):
        SamplerSpec("heun", 10, eta=0.3)
    with pytest.raises(ConfigError, match="guidance"):
        text_to_image(models["base"], ["x"], guidance_scale=-1, sampler=FEW)
    with pytest.raises(GlidekitError, match="needs a base model"):
        inpaint(models["upsample"], torch.zeros(1, 3, 32, 32), torch.ones(1, 1, 32, 32), ["x"], sampler=FEW)
    with pytest.raises(GlidekitError, match="needs a base model"):
        text_to_image(models["upsample"], ["x"], sampler=FEW)
    with pytest.raises(ConfigError, match="strength"):
        edit(models["base"], torch.zeros(1, 3, 32, 32), ["x"], strength=0)
    with pytest.raises(ConfigError, match="there is no upsampler"):  # before any sampling
        text_to_image(models["base"], ["x"], sampler=FEW, back_projection=1)
    with pytest.raises(ConfigError, match="back_projection must be >= 0"):
        text_to_image(models["base"], ["x"], sampler=FEW, upsampler=models["upsample"], back_projection=-1)


def _class_model():
    from glidekit.config import DiffusionConfig, GlideConfig, UNetConfig

    torch.manual_seed(0)
    ucfg = UNetConfig(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
                      num_head_channels=16, num_classes=3, text=None)
    net = GlideUNet(ucfg).eval()
    for p in net.parameters():  # zero-initialised output conv would make every sample identical
        p.data.normal_(0, 0.05)
    return GlideModel(net, GlideConfig(unet=ucfg, diffusion=DiffusionConfig()), "tiny-class")


def test_class_conditional_generation_and_classifier_guidance():
    from glidekit.config import ClassifierConfig
    from glidekit.models.classifier import NoisyClassifier
    from glidekit.sampling.guidance import classifier_cond_fn

    model = _class_model()
    plain = text_to_image(model, [], labels=[0, 2], sampler=FEW, guidance_scale=2.0)
    assert plain.images.shape == (2, 3, 16, 16) and [r["label"] for r in plain.records] == [0, 2]
    from glidekit.pipelines import cond_kwargs

    x, t = torch.randn(2, 3, 16, 16), torch.tensor([500, 500])
    with torch.no_grad():
        a = guided_model_fn(model, 2.0)(x, t, **cond_kwargs(model, ["", ""], [0, 2], 2.0))
        b = guided_model_fn(model, 2.0)(x, t, **cond_kwargs(model, ["", ""], [1, 2], 2.0))
    assert (a[0] - b[0]).abs().max() > 1e-4 and torch.allclose(a[1], b[1], atol=1e-6)  # rows independent
    clf = NoisyClassifier(ClassifierConfig(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                                           attention_resolutions=(8,), num_head_channels=16, num_classes=3)).eval()
    guided = text_to_image(model, [], labels=[0, 2], sampler=FEW, guidance_scale=2.0,
                           cond_fn=classifier_cond_fn(clf, torch.tensor([0, 2]), 5.0))
    assert torch.isfinite(guided.images).all()
    with pytest.raises(ConfigError, match="class-conditional"):
        text_to_image(model, ["x"], sampler=FEW)
    with pytest.raises(ConfigError, match="0..2"):
        text_to_image(model, [], labels=[3], sampler=FEW)


def test_labels_for_a_text_model_are_refused(models):
    with pytest.raises(ConfigError, match="no class labels"):
        text_to_image(models["base"], ["x"], labels=[1], sampler=FEW)


def test_inpaint_with_a_plain_base_model_keeps_known_pixels(models):
    # a model without mask inputs inpaints through the x0 re-paste alone (replacement method)
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    keep = torch.ones(1, 1, 32, 32)
    keep[..., 8:24, 8:24] = 0
    out = inpaint(models["base"], image, keep, ["a cat"], sampler=FEW).images
    assert torch.equal(out * keep, image * keep)
    assert not torch.allclose(out[..., 8:24, 8:24], image[..., 8:24, 8:24])
    wide = outpaint(models["base"], image, "a cat", right=16, sampler=FEW).images
    assert wide.shape[-1] == 48 and torch.equal(wide[..., :32], image)


def test_on_step_reports_every_step_of_each_stage(models):
    """`on_step(done, total)` (the web page's live progress) counts each sampler step of a stage."""
    base = models["base"]
    calls = []
    text_to_image(base, ["a cat"], sampler=SamplerSpec("dpm++2m", 4), on_step=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls.clear()
    text_to_image(base, ["a cat"], sampler=SamplerSpec("ancestral", 3), on_step=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    edit(base, torch.zeros(1, 3, 32, 32), ["a cat"], strength=0.5, sampler=SamplerSpec("euler_a", 4),
         on_step=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]  # strength 0.5 runs half of the 4 steps
    calls.clear()
    keep = torch.ones(1, 1, 32, 32)
    keep[..., :8, :8] = 0
    inpaint(base, torch.zeros(1, 3, 32, 32), keep, ["a hat"], sampler=SamplerSpec("euler", 2),
            on_step=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]


def test_solver_spacing_is_explicit_validated_and_reaches_the_solver(models):
    from glidekit.diffusion.schedule import Schedule
    from glidekit.pipelines import FAST_UPSAMPLE, run_sampler
    from glidekit.sampling.solvers import solver_timesteps

    assert SamplerSpec("dpm++2m", 10).spacing == "linspace"  # recorded explicitly, never implied
    assert FAST_UPSAMPLE.spacing == "logsnr" and FAST_UPSAMPLE.describe() == "dpm++2m:10:logsnr"
    assert SamplerSpec("ddim", 27, respacing="fast27").spacing is None
    with pytest.raises(ConfigError, match="spacing applies to the solvers"):
        SamplerSpec("ancestral", 10, spacing="logsnr")
    with pytest.raises(ConfigError, match="unknown spacing"):
        SamplerSpec("dpm++2m", 10, spacing="karras")
    up = models["upsample"]
    seen = []
    x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kwargs = {**text_kwargs(up, ["a corgi"], 1.0), "low_res": torch.zeros(1, 3, 8, 8)}
    run_sampler(SamplerSpec("dpm++2m", 6, spacing="logsnr"), up.net, up.config, x_T, model_kwargs=kwargs,
                callback=lambda j, t, x, x0: seen.append(int(t)))
    d = up.config.diffusion
    abar = Schedule.create(d.noise_schedule, d.steps).alphas_cumprod
    assert seen == solver_timesteps(d.steps, 6, "logsnr", abar).tolist()
    assert seen != solver_timesteps(d.steps, 6, "linspace").tolist()


@pytest.mark.parametrize("fast_bf16", [False, True])
def test_glidemodel_load_picks_the_precision_and_samples_in_it(tmp_path, monkeypatch, fast_bf16):
    """GlideModel.load("auto") is the command line's choice: bf16 autocast only on CPUs with bf16
    instructions; the pipelines then sample under that autocast (the model's weights stay float32)."""
    from glidekit import runtime
    from glidekit.io import save_checkpoint

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: fast_bf16)
    v = torch.load(DEFAULT_DIR / "base.pt", weights_only=True)
    path = save_checkpoint(tmp_path / "tiny.safetensors", v["state_dict"], from_openai_options(v["options"]), kind="base")
    model = GlideModel.load(str(path), device="cpu")
    assert model.dtype == (torch.bfloat16 if fast_bf16 else None)
    assert not model.net.training and next(model.net.parameters()).dtype == torch.float32
    seen = []
    hook = model.net.register_forward_hook(lambda m, i, o: seen.append((o.dtype, torch.is_autocast_enabled("cpu"))))
    text_to_image(model, ["a corgi"], sampler=SamplerSpec("dpm++2m", 2))
    hook.remove()
    assert seen and all(auto == fast_bf16 for _, auto in seen)
    assert GlideModel.load(str(path), device="cpu", dtype="fp32").dtype is None


class _PointMass(torch.nn.Module):
    """The exact denoiser of a one-image data set x0*, as a v- or eps-prediction network whose
    output is rounded to bfloat16 like an autocast UNet's (x_t = alpha x0* + sigma eps, so
    eps = (x_t - alpha x0*) / sigma and v = alpha eps - sigma x0* = (alpha x_t - x0*) / sigma)."""

    def __init__(self, target: torch.Tensor, prediction: str):
        super().__init__()
        self.register_buffer("target", target)
        self.prediction = prediction
        self.unused = torch.nn.Parameter(torch.zeros(()))  # GlideModel.device reads a parameter
        abar = torch.from_numpy(Schedule.create("squaredcos_cap_v2", 1000).alphas_cumprod)
        self.alpha, self.sigma = abar.sqrt(), (1 - abar).sqrt()

    def forward(self, x, t, **_):
        a, s = (v[t].view(-1, 1, 1, 1) for v in (self.alpha, self.sigma))
        x = x.double()
        pred = (a * x - self.target) / s if self.prediction == "v" else (x - a * self.target) / s
        return torch.cat([pred, torch.zeros_like(pred)], dim=1).to(torch.bfloat16)


def _point_mass_model(prediction: str) -> GlideModel:
    target = torch.linspace(-1, 1, 3 * 8 * 8).view(3, 8, 8) * 0.9
    cfg = GlideConfig(UNetConfig(image_size=8, text=None), DiffusionConfig(prediction=prediction))
    return GlideModel(_PointMass(target, prediction), cfg, f"point mass ({prediction})")


def test_v_prediction_recovers_x0_where_eps_cannot():
    """At t = T - 1 of the cosine schedule sqrt(abar) ~ 1e-4: from eps, x0 amplifies the output's
    bfloat16 rounding ~1e4 times (Lin et al. 2024, s.3.2); from v it stays exact. Samplers see
    both through `model_fn`, which turns v into eps in float32."""
    from glidekit.sampling.solvers import x0_from_output

    full = Schedule.create("squaredcos_cap_v2", 1000)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 999)
    errors = {}
    for prediction in ("v", "eps"):
        m = _point_mass_model(prediction)
        x0 = x0_from_output(full, x, 999, model_fn(m)(x, t), clip_denoised=False)
        errors[prediction] = (x0 - m.net.target).abs().max().item()
    assert errors["v"] < 0.02 < 10 < errors["eps"], errors
    # and whole runs land on the data point with every kind of sampler
    m = _point_mass_model("v")
    for spec in (FAST_BASE, SamplerSpec("ancestral", 25), SamplerSpec("ddim", 10)):
        out = run_sampler(spec, guided_model_fn(m, 1.0), m.config, x, model_kwargs={})
        assert (out - m.net.target).abs().max() < 0.02, spec
    eps_model = _point_mass_model("eps")
    assert model_fn(eps_model) is eps_model.net  # GLIDE's models reach the samplers untouched
