"""Shared helpers for the parity tests: tolerance checks, model building, run replay."""

from __future__ import annotations

import os

import pytest
import torch

from glidekit.config import from_openai_options
from glidekit.diffusion.schedule import Schedule
from glidekit.models.unet import GlideUNet
from glidekit.sampling import guidance, noise, reference
from tests.parity.vectors import files

# tests/vectors/README.md s.11
FORWARD_TOL = (1e-5, 1e-5)
ACTIVATION_TOL = (1e-4, 1e-4)
CHECK_TOL = (1e-4, 1e-4)
RUN_MEAN = 2e-4
RUN_MAX = 1e-3
RUN_MAX_T999_X0_FIRST = 1e-1
RUN_MAX_T999 = 2e-2


def require(kind: str) -> list[str]:
    """Files of a kind; none is a failure for the bundled set and a skip for GLIDEKIT_PARITY_DIR."""
    paths = files(kind)
    if not paths:
        if os.environ.get("GLIDEKIT_PARITY_DIR"):
            pytest.skip(f"no {kind} vector file in GLIDEKIT_PARITY_DIR")
        pytest.fail(f"the bundled vector set has no {kind} file")
    return paths


def assert_close(actual: torch.Tensor, ref: torch.Tensor, tol: tuple[float, float], what: str) -> None:
    """|a - ref| <= atol + rtol |ref| elementwise, with the worst ratio in the message."""
    atol, rtol = tol
    assert actual.shape == ref.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
    a, r = actual.detach().double(), ref.double()
    ratio = ((a - r).abs() / (atol + rtol * r.abs())).max().item()
    assert ratio <= 1.0, f"{what}: worst |diff| / tolerance = {ratio:.3g} (max |diff| {(a - r).abs().max().item():.3g})"


def build_unet(v: dict) -> GlideUNet:
    model = GlideUNet(from_openai_options(v["options"]).unet).eval()
    model.load_state_dict(v["state_dict"], strict=True)
    return model


def replay(run: dict, model_fn, cond_fn=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Replay a recorded run free-running from its initial noise with its recorded step noise."""
    s = Schedule.create(run["noise_schedule"], run["diffusion_steps"], run["respacing"])
    assert s.timestep_map.tolist() == list(run["timestep_map"]), "timestep_map differs from the recorded one"
    assert list(range(s.num_steps - 1, -1, -1)) == list(run["indices"]), "visited indices differ"
    assert run["clip_denoised"] is True or run["clip_denoised"] is False
    fn = model_fn
    if run["guidance"] == "cfg":
        fn = guidance.classifier_free(model_fn, run["guidance_scale"])
    elif run["guidance"] == "clip":
        assert cond_fn is not None, "a CLIP-guided run needs the CLIP cond_fn"
    elif run["guidance"] != "none":
        pytest.fail(f"unknown guidance {run['guidance']!r}")
    kw = run["model_kwargs"]
    if run["denoised_fn"] == "inpaint_repaste":
        denoised_fn = guidance.inpaint_repaste(kw["inpaint_image"], kw["inpaint_mask"])
    elif run["denoised_fn"] == "none":
        denoised_fn = None
    else:
        pytest.fail(f"unknown denoised_fn {run['denoised_fn']!r}")
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []
    common = dict(
        model_kwargs=kw,
        clip_denoised=run["clip_denoised"],
        denoised_fn=denoised_fn,
        cond_fn=cond_fn if run["guidance"] == "clip" else None,
        noise_fn=noise.replay(run["step_noise"]),
        callback=lambda j, k, x, x0: steps.append((x.clone(), x0.clone())),
    )
    assert list(run["initial_noise"].shape) == list(run["shape"])
    if run["kind"] == "p_sample":
        final = reference.p_sample_loop(fn, s, run["initial_noise"], **common)
    elif run["kind"] == "ddim":
        final = reference.ddim_sample_loop(fn, s, run["initial_noise"], eta=run["eta"], **common)
    else:
        pytest.fail(f"unknown sampler kind {run['kind']!r}")
    assert torch.equal(final, steps[-1][0])
    return steps


def assert_trajectory(run: dict, steps: list[tuple[torch.Tensor, torch.Tensor]], what: str) -> None:
    """The README s.11 trajectory criteria, including the t=999 cosine exception."""
    assert len(steps) == len(run["steps"]), f"{what}: {len(steps)} steps, recorded {len(run['steps'])}"
    t999 = run["noise_schedule"] == "squaredcos_cap_v2" and run["timestep_map"][run["indices"][0]] == 999
    for j, ((x, x0), rec) in enumerate(zip(steps, run["steps"])):
        for name, mine, ref in (("sample", x, rec["sample"]), ("pred_xstart", x0, rec["pred_xstart"])):
            d = (mine - ref).abs()
            limit = RUN_MAX
            if t999:
                limit = RUN_MAX_T999_X0_FIRST if (j == 0 and name == "pred_xstart") else RUN_MAX_T999
            assert d.mean().item() <= RUN_MEAN, f"{what} step {j} {name}: mean |diff| {d.mean().item():.3g} > {RUN_MEAN}"
            assert d.max().item() <= limit, f"{what} step {j} {name}: max |diff| {d.max().item():.3g} > {limit}"
    assert torch.equal(run["final"], run["steps"][-1]["sample"])
