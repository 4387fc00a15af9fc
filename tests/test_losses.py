"""Losses (normal KL, discretised decoder likelihood, VB terms, hybrid loss) and timestep samplers."""

import math

import numpy as np
import pytest
import torch

from glidekit.diffusion import gaussian
from glidekit.diffusion.losses import (
    DEFAULT_VB_LAMBDA,
    LossSecondMomentSampler,
    UniformSampler,
    approx_standard_normal_cdf,
    create_schedule_sampler,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    mean_flat,
    normal_kl,
    prior_bpd,
    vb_terms_bpd,
)
from glidekit.diffusion.schedule import Schedule
from glidekit.errors import ConfigError

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _pixels(shape, seed):
    """8-bit images rescaled to [-1, 1] (i / 127.5 - 1), float64."""
    return torch.randint(0, 256, shape, generator=_gen(seed)).to(F64) / 127.5 - 1


def _batch(schedule, k, seed=0, shape=(3, 8, 8)):
    b = len(k)
    k = torch.as_tensor(k, dtype=torch.long)
    x0 = _pixels((b, *shape), seed)
    noise = torch.randn(b, *shape, generator=_gen(seed + 1), dtype=F64)
    x_t = gaussian.q_sample(schedule, x0, k, noise)
    return x0, x_t, k, noise


# --------------------------------------------------------------------------- normal_kl


def test_normal_kl_identical_is_zero():
    m = torch.randn(4, 5, generator=_gen(0), dtype=F64)
    lv = torch.randn(4, 5, generator=_gen(1), dtype=F64)
    assert torch.equal(normal_kl(m, lv, m, lv), torch.zeros_like(m))


def test_normal_kl_closed_form():
    # KL(N(1, 2^2) || N(0, 1)) = 1/2 (4 + 1 - 1 - ln 4) = 2 - ln 2
    kl = normal_kl(torch.tensor(1.0, dtype=F64), math.log(4.0), 0.0, 0.0)
    assert kl.item() == pytest.approx(2 - math.log(2), rel=1e-12)
    # random: against log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2
    g = _gen(2)
    m1, m2 = torch.randn(100, generator=g, dtype=F64), torch.randn(100, generator=g, dtype=F64)
    s1, s2 = torch.rand(100, generator=g, dtype=F64) + 0.1, torch.rand(100, generator=g, dtype=F64) + 0.1
    ref = torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    torch.testing.assert_close(normal_kl(m1, 2 * s1.log(), m2, 2 * s2.log()), ref, rtol=1e-12, atol=1e-12)
    assert (normal_kl(m1, 2 * s1.log(), m2, 2 * s2.log()) >= 0).all()


# --------------------------------------------------------------------------- decoder likelihood


def test_approx_cdf_close_to_phi():
    x = torch.linspace(-8, 8, 2001, dtype=F64)
    assert (approx_standard_normal_cdf(x) - torch.special.ndtr(x)).abs().max() < 3e-4
    assert (approx_standard_normal_cdf(x).diff() >= 0).all()


@pytest.mark.parametrize("mean,log_scale", [(0.0, math.log(0.1)), (0.7, math.log(0.01)), (-0.95, math.log(0.5)),
                                            (0.2, math.log(2e-3)), (1.0, math.log(0.05))])
def test_discretized_likelihood_is_a_distribution(mean, log_scale):
    x = torch.arange(256, dtype=F64) / 127.5 - 1
    means = torch.full_like(x, mean)
    ls = torch.full_like(x, log_scale)
    logp = discretized_gaussian_log_likelihood(x, means, ls)
    assert (logp <= 0).all()
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)

    # direct computation with the same CDF, and with the exact Phi (tanh approximation error)
    for cdf, tol in ((approx_standard_normal_cdf, 1e-12), (torch.special.ndtr, 6e-4)):
        s = math.exp(log_scale)
        upper = torch.where(x > 0.999, torch.ones_like(x), cdf((x + 1 / 255 - mean) / s))
        lower = torch.where(x < -0.999, torch.zeros_like(x), cdf((x - 1 / 255 - mean) / s))
        torch.testing.assert_close(logp.exp(), (upper - lower).clamp(min=1e-12), rtol=0, atol=tol)


def test_discretized_likelihood_float32_and_half_inputs():
    x = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    logp = discretized_gaussian_log_likelihood(x.bfloat16(), torch.zeros(256).bfloat16(), torch.full((256,), -2.0).bfloat16())
    assert logp.dtype == torch.float32 and torch.isfinite(logp).all()


# --------------------------------------------------------------------------- VB terms


def _direct_vb_bpd(schedule, model_output, x0, x_t, k):
    """Float64 KL(q || p) in bits per dim, written out from the float64 schedule arrays."""
    c = x_t.shape[1]
    eps, v = model_output[:, :c], model_output[:, c:]
    view = lambda a: torch.from_numpy(np.asarray(a)[k.numpy()]).view(-1, 1, 1, 1)  # noqa: E731
    true_mean = gaussian.q_posterior_mean(schedule, x0, x_t, k)
    true_var = view(schedule.posterior_variance)
    x0_pred = view(schedule.sqrt_recip_alphas_cumprod) * x_t - view(schedule.sqrt_recipm1_alphas_cumprod) * eps
    model_mean = view(schedule.posterior_mean_coef1) * x0_pred + view(schedule.posterior_mean_coef2) * x_t
    frac = (v + 1) / 2
    model_log_var = frac * view(schedule.log_betas) + (1 - frac) * view(schedule.posterior_log_variance_clipped)
    model_var = model_log_var.exp()
    kl = 0.5 * (torch.log(model_var / true_var) + (true_var + (true_mean - model_mean) ** 2) / model_var - 1)
    return kl.mean(dim=(1, 2, 3)) / math.log(2)


@pytest.mark.parametrize("name,respacing", [("squaredcos_cap_v2", ""), ("linear", ""), ("squaredcos_cap_v2", "100")])
def test_vb_matches_direct_float64_kl(name, respacing):
    s = Schedule.create(name, 1000, respacing)
    k = [1, 2, 5, s.num_steps // 3, s.num_steps // 2, s.num_steps - 1]
    x0, x_t, k, noise = _batch(s, k, seed=3)
    g = _gen(4)
    eps = noise + 0.3 * torch.randn(x_t.shape, generator=g, dtype=F64)
    v = torch.rand(x_t.shape, generator=g, dtype=F64) * 2 - 1
    out = torch.cat([eps, v], dim=1)
    vb = vb_terms_bpd(s, out, x0, x_t, k)
    assert vb.shape == (len(k),) and vb.dtype == F64
    torch.testing.assert_close(vb, _direct_vb_bpd(s, out, x0, x_t, k), rtol=1e-4, atol=1e-6)
    assert (vb > 0).all()


def test_vb_at_zero_is_decoder_nll():
    s = Schedule.create("squaredcos_cap_v2", 1000)
    x0, x_t, k, noise = _batch(s, [0, 0, 7], seed=5)
    g = _gen(6)
    out = torch.cat([noise + 0.1 * torch.randn(x_t.shape, generator=g, dtype=F64),
                     torch.rand(x_t.shape, generator=g, dtype=F64) * 2 - 1], dim=1)
    vb = vb_terms_bpd(s, out, x0, x_t, k)
    p = gaussian.p_mean_variance(s, out, x_t, k, clip_denoised=False)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])) / math.log(2)
    torch.testing.assert_close(vb[:2], nll[:2], rtol=0, atol=0)
    # and against a direct bin-probability computation with the exact normal CDF
    mean, sd = p["mean"], (0.5 * p["log_variance"]).exp()
    upper = torch.where(x0 > 0.999, torch.ones_like(x0), torch.special.ndtr((x0 + 1 / 255 - mean) / sd))
    lower = torch.where(x0 < -0.999, torch.zeros_like(x0), torch.special.ndtr((x0 - 1 / 255 - mean) / sd))
    direct = -mean_flat((upper - lower).clamp(min=1e-12).log()) / math.log(2)
    torch.testing.assert_close(vb[:2], direct[:2], rtol=5e-3, atol=0)
    assert not torch.allclose(vb[2], nll[2])  # k = 7 is a KL term


@pytest.mark.parametrize("respacing", ["", "50"])
def test_exact_posterior_gives_zero_kl(respacing):
    s = Schedule.create("squaredcos_cap_v2", 1000, respacing)
    k = list(range(1, s.num_steps, max(1, s.num_steps // 16)))
    x0, x_t, k, noise = _batch(s, k, seed=7)
    out = torch.cat([noise, -torch.ones_like(noise)], dim=1)  # true eps; v = -1 -> posterior variance
    vb = vb_terms_bpd(s, out, x0, x_t, k)
    assert vb.abs().max() < 1e-6


def test_prior_bpd_small_for_full_schedule():
    s = Schedule.create("squaredcos_cap_v2", 1000)
    x0 = _pixels((2, 3, 8, 8), 8)
    bpd = prior_bpd(s, x0)
    assert bpd.shape == (2,) and (bpd >= 0).all() and (bpd < 1e-4).all()


# --------------------------------------------------------------------------- hybrid loss


def _hybrid_inputs(s, seed=9, requires_grad=True, k=(0, 1, 10, 300, 999)):
    x0, x_t, k, noise = _batch(s, k, seed=seed)
    g = _gen(seed + 10)
    out = torch.cat([noise + 0.2 * torch.randn(x_t.shape, generator=g, dtype=F64),
                     torch.rand(x_t.shape, generator=g, dtype=F64) * 2 - 1], dim=1)
    return out.requires_grad_(requires_grad), x0, x_t, k, noise


def test_hybrid_mse_term_and_total():
    s = Schedule.create("squaredcos_cap_v2", 1000)
    out, x0, x_t, k, noise = _hybrid_inputs(s)
    terms = hybrid_loss(s, out, x0, x_t, k, noise)
    assert set(terms) == {"loss", "mse", "vb"} and all(t.shape == (5,) for t in terms.values())
    assert torch.equal(terms["mse"], ((noise - out[:, :3]) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(terms["vb"], vb_terms_bpd(s, out, x0, x_t, k), rtol=0, atol=0)
    # T = 1000: lambda * T = 0.001 * 1000 = 1 -> loss = mse + vb
    assert DEFAULT_VB_LAMBDA * s.num_steps == 1.0
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"], rtol=0, atol=0)
    custom = hybrid_loss(s, out, x0, x_t, k, noise, vb_weight=0.25)
    torch.testing.assert_close(custom["loss"], terms["mse"] + 0.25 * terms["vb"], rtol=0, atol=0)


def test_v_target_round_trips_to_the_noise():
    s = Schedule.create("squaredcos_cap_v2", 1000)
    x0, x_t, k, noise = _batch(s, (0, 1, 10, 300, 999))
    v = gaussian.v_from_eps(s, x0, k, noise)
    torch.testing.assert_close(gaussian.eps_from_v(s, x_t, k, v), noise, rtol=0, atol=1e-6)
    # at t = T - 1 (abar ~ 1e-8) v is almost exactly -x0: the prediction the eps route cannot make
    torch.testing.assert_close(v[-1], -x0[-1], rtol=0, atol=1e-3)


def test_hybrid_v_prediction_loss():
    s = Schedule.create("squaredcos_cap_v2", 1000)
    out, x0, x_t, k, noise = _hybrid_inputs(s, requires_grad=False)
    v = gaussian.v_from_eps(s, x0, k, noise)
    exact = hybrid_loss(s, torch.cat([v, out[:, 3:]], dim=1), x0, x_t, k, noise, prediction="v")
    assert torch.equal(exact["mse"], torch.zeros(5, dtype=F64))
    # a perfect v implies a perfect eps: the vb term is the eps model's with eps = noise
    perfect_eps = hybrid_loss(s, torch.cat([noise, out[:, 3:]], dim=1), x0, x_t, k, noise)
    torch.testing.assert_close(exact["vb"], perfect_eps["vb"], rtol=1e-6, atol=1e-9)
    off = hybrid_loss(s, torch.cat([v + 0.1, out[:, 3:]], dim=1), x0, x_t, k, noise, prediction="v")
    torch.testing.assert_close(off["mse"], torch.full((5,), 0.01, dtype=F64), rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="prediction"):
        hybrid_loss(s, out, x0, x_t, k, noise, prediction="x0")


def test_hybrid_default_weight_scales_with_num_steps():
    s = Schedule.create("squaredcos_cap_v2", 200)
    out, x0, x_t, k, noise = _hybrid_inputs(s, requires_grad=False, k=(0, 1, 10, 150, 199))
    terms = hybrid_loss(s, out, x0, x_t, k, noise)
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.2 * terms["vb"], rtol=1e-12, atol=0)


def test_hybrid_vb_stop_gradient_on_mean():
    s = Schedule.create("squaredcos_cap_v2", 1000)
    out, x0, x_t, k, noise = _hybrid_inputs(s)
    terms = hybrid_loss(s, out, x0, x_t, k, noise)
    (g_vb,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    assert torch.equal(g_vb[:, :3], torch.zeros_like(g_vb[:, :3]))  # no gradient to eps
    assert (g_vb[:, 3:].abs().flatten(1).sum(1) > 0).all()  # every row trains its variance
    (g_mse,) = torch.autograd.grad(terms["mse"].sum(), out, retain_graph=True)
    assert torch.equal(g_mse[:, 3:], torch.zeros_like(g_mse[:, 3:]))
    (g_loss,) = torch.autograd.grad(terms["loss"].sum(), out)
    torch.testing.assert_close(g_loss[:, :3], g_mse[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(g_loss[:, 3:], g_vb[:, 3:], rtol=0, atol=0)


def test_hybrid_mse_only():
    s = Schedule.create("squaredcos_cap_v2", 1000)
    out, x0, x_t, k, noise = _hybrid_inputs(s, requires_grad=False)
    fixed = hybrid_loss(s, out[:, :3], x0, x_t, k, noise)  # fixed-variance model: C channels
    forced = hybrid_loss(s, out, x0, x_t, k, noise, mse_only=True)
    for terms in (fixed, forced):
        assert torch.equal(terms["loss"], terms["mse"]) and torch.equal(terms["vb"], torch.zeros(5, dtype=F64))
    torch.testing.assert_close(fixed["mse"], forced["mse"], rtol=0, atol=0)
    with pytest.raises(ValueError):
        hybrid_loss(s, out[:, :4], x0, x_t, k, noise)


def test_hybrid_float32_finite_and_bf16_promoted():
    s = Schedule.create("squaredcos_cap_v2", 1000)
    out, x0, x_t, k, noise = _hybrid_inputs(s, requires_grad=False)
    t32 = hybrid_loss(s, out.float(), x0.float(), x_t.float(), k, noise.float())
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in t32.values())
    t64 = hybrid_loss(s, out, x0, x_t, k, noise)
    torch.testing.assert_close(t32["loss"].double(), t64["loss"], rtol=1e-3, atol=1e-4)
    tb = hybrid_loss(s, out.bfloat16(), x0.float(), x_t.float(), k, noise.float())
    assert tb["loss"].dtype == torch.float32


# --------------------------------------------------------------------------- samplers


def test_uniform_sampler():
    sampler = UniformSampler(50)
    k, w = sampler.sample(5000, _gen(0))
    assert k.dtype == torch.long and w.dtype == torch.float32
    assert torch.equal(w, torch.ones(5000))
    assert set(k.tolist()) == set(range(50))
    k2, _ = sampler.sample(5000, _gen(0))
    assert torch.equal(k, k2)
    sampler.update(k, torch.rand(5000))  # no-op
    sampler.load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError):
        sampler.load_state_dict(UniformSampler(10).state_dict())


def _warm(sampler, T, history):
    # loss at step t is ~ (t + 1) so later steps matter more; (t+1)^2 weight ratio grows with t
    ks = torch.arange(T).repeat(history)
    losses = (ks + 1).double() * (1 + 0.01 * torch.rand(len(ks), generator=_gen(1), dtype=F64))
    sampler.update(ks, losses)


def test_loss_second_moment_sampler_uniform_until_warm():
    T, H = 20, 4
    s = LossSecondMomentSampler(T, history=H)
    _warm(s, T, H - 1)
    s.update(torch.arange(T - 1), torch.ones(T - 1))  # all but the last step full
    assert not s.warmed_up()
    k, w = s.sample(300, _gen(3))
    ku, wu = UniformSampler(T).sample(300, _gen(3))
    assert torch.equal(k, ku) and torch.equal(w, wu)  # same draws as the uniform sampler
    s.update(torch.tensor([T - 1]), torch.tensor([1.0]))
    assert s.warmed_up()


def test_loss_second_moment_sampler_prefers_high_loss():
    T, H = 20, 10
    s = LossSecondMomentSampler(T, history=H, uniform_prob=0.001)
    _warm(s, T, H)
    p = s.probabilities()
    assert p.dtype == F64 and p.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (p.diff() > 0).all()  # monotone in the loss
    expected = torch.sqrt(s.loss_history.pow(2).mean(-1))
    expected = expected / expected.sum() * 0.999 + 0.001 / T
    torch.testing.assert_close(p, expected, rtol=1e-12, atol=0)
    k, w = s.sample(20000, _gen(4))
    assert (k >= T // 2).float().mean() > 0.6
    torch.testing.assert_close(w, (1 / (T * p[k])).float(), rtol=1e-6, atol=0)
    # E_p[w] = sum_k p_k / (T p_k) = 1, exactly and empirically
    assert (p * (1 / (T * p))).sum().item() == pytest.approx(1.0, abs=1e-12)
    assert w.double().mean().item() == pytest.approx(1.0, abs=0.02)
    # FIFO history: a full step drops its oldest loss
    before = s.loss_history[3].clone()
    s.update(torch.tensor([3]), torch.tensor([123.0]))
    assert torch.equal(s.loss_history[3], torch.cat([before[1:], torch.tensor([123.0], dtype=F64)]))
    assert int(s.loss_counts[3]) == H


def test_loss_second_moment_sampler_state_round_trip():
    T, H = 16, 3
    a = LossSecondMomentSampler(T, history=H)
    _warm(a, T, H)
    a.update(torch.tensor([0, 5, 5]), torch.tensor([100.0, 0.5, 7.0]))
    state = a.state_dict()
    b = LossSecondMomentSampler(T, history=H)
    b.load_state_dict(state)
    g = _gen(11)
    g_state = g.get_state()
    ka, wa = a.sample(64, g)
    g2 = torch.Generator()
    g2.set_state(g_state)
    kb, wb = b.sample(64, g2)
    assert torch.equal(ka, kb) and torch.equal(wa, wb)
    # the state is plain data and independent of the live sampler
    a.update(torch.tensor([1]), torch.tensor([1e6]))
    assert not torch.equal(a.loss_history, state["loss_history"])
    with pytest.raises(ValueError):
        LossSecondMomentSampler(T, history=H + 1).load_state_dict(state)


def test_create_schedule_sampler():
    assert isinstance(create_schedule_sampler("uniform", 10), UniformSampler)
    assert isinstance(create_schedule_sampler("loss-second-moment", 10), LossSecondMomentSampler)
    with pytest.raises(ConfigError):
        create_schedule_sampler("nope", 10)
