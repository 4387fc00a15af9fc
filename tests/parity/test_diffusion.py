"""Schedules, respacing, spaced arrays and model-free sampler checks against diffusion vectors."""

import numpy as np
import pytest
import torch

from glidekit.diffusion import gaussian as G
from glidekit.diffusion.schedule import Schedule, get_betas, space_timesteps
from glidekit.sampling import noise, reference
from tests.parity.common import CHECK_TOL, assert_close, require
from tests.parity.vectors import files, ids, load

PATHS = files("diffusion")


def test_has_diffusion_vectors():
    require("diffusion")


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float((np.abs(a - ref) / np.maximum(np.abs(ref), 1e-300)).max()) if len(ref) else 0.0


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_betas(path):
    for b in load(path)["betas"]:
        assert _rel(get_betas(b["schedule"], b["num_timesteps"]), b["betas"].numpy()) <= 1e-12, b["schedule"]


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_spacings(path):
    for s in load(path)["spacings"]:
        assert space_timesteps(s["num_timesteps"], s["spec"]) == list(s["timesteps"]), s["spec"]


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_spaced_arrays(path):
    for rec in load(path)["spaced"]:
        s = Schedule.create(rec["schedule"], rec["num_timesteps"], rec["spec"])
        assert s.timestep_map.tolist() == list(rec["timestep_map"])
        for key in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"):
            assert _rel(getattr(s, key), rec[key].numpy()) <= 1e-12, f"{rec['schedule']} {rec['spec']} {key}"


def _checks(path):
    return [(path, i) for i in range(len(load(path)["checks"]))]


CHECKS = [c for p in PATHS for c in _checks(p)]


@pytest.mark.parametrize("path,i", CHECKS, ids=[f"{load(p)['checks'][i]['name']}" for p, i in CHECKS])
def test_model_free_checks(path, i):
    c = load(path)["checks"][i]
    s = Schedule.create(c["schedule"], c["num_timesteps"], c["spacing"])
    k, x = c["t"], c["x"]
    assert s.timestep_map[k.numpy()].tolist() == c["t_passed_to_model"].tolist()
    seen_t = []

    def model_fn(xx, t):
        seen_t.append(t.clone())
        return c["model_output"]

    def cond_fn(xx, t):
        assert torch.equal(t, c["t_passed_to_model"]), "cond_fn must see original timesteps"
        return c["cond_grad"]

    tol = CHECK_TOL
    assert_close(G.q_sample(s, c["x_start"], k, c["q_noise"]), c["q_sample"], tol, "q_sample")
    assert_close(G.q_posterior_mean(s, c["x_start"], x, k), c["q_posterior_mean"], tol, "q_posterior_mean")
    out = G.p_mean_variance(s, c["model_output"], x, k, clip_denoised=True)
    for key in ("mean", "variance", "log_variance", "pred_xstart"):
        assert_close(out[key], c["p_mean_variance"][key], tol, f"p_mean_variance.{key}")
    raw = G.p_mean_variance(s, c["model_output"], x, k, clip_denoised=False)
    for key in ("mean", "variance", "log_variance", "pred_xstart"):
        assert_close(raw[key], c["p_mean_variance_noclip"][key], tol, f"p_mean_variance_noclip.{key}")
    assert_close(G.condition_mean(out, c["cond_grad"]), c["condition_mean"], tol, "condition_mean")
    cs = G.condition_score(s, out, x, k, c["cond_grad"])
    for key in ("mean", "variance", "log_variance", "pred_xstart"):
        assert_close(cs[key], c["condition_score"][key], tol, f"condition_score.{key}")

    z = noise.replay(c["randn_like_draws"])
    sample, _ = reference.p_sample(model_fn, s, x, k, noise_fn=z)
    assert_close(sample, c["p_sample"], tol, "p_sample")
    sample, _ = reference.p_sample(model_fn, s, x, k, cond_fn=cond_fn, noise_fn=z)
    assert_close(sample, c["p_sample_cond"], tol, "p_sample with cond_fn")
    sample, _ = reference.ddim_sample(model_fn, s, x, k, eta=0.0, noise_fn=z)
    assert_close(sample, c["ddim_eta0"], tol, "ddim eta 0")
    sample, _ = reference.ddim_sample(model_fn, s, x, k, eta=c["eta"], noise_fn=z)
    assert_close(sample, c["ddim_eta"], tol, f"ddim eta {c['eta']}")
    sample, _ = reference.ddim_sample(model_fn, s, x, k, eta=0.0, cond_fn=cond_fn, noise_fn=z)
    assert_close(sample, c["ddim_cond"], tol, "ddim with cond_fn")
    assert all(torch.equal(t, c["t_passed_to_model"]) for t in seen_t), "model must see original timesteps"
