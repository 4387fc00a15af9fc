"""The documented key sets of the reference-vector format (tests/vectors/README.md).

`check(data, kind)` returns a list of problems: keys the format does not define, or defined keys
that are missing. Only state dicts and `forward.activations` have architecture-dependent keys.
"""

from __future__ import annotations

RUN = {
    "kind", "eta", "noise_schedule", "diffusion_steps", "respacing", "clip_denoised", "guidance",
    "guidance_scale", "denoised_fn", "model_kwargs", "seed", "shape", "initial_noise", "step_noise",
    "indices", "timestep_map", "steps", "final",
}
MODEL_KWARGS = {"tokens", "mask", "low_res", "inpaint_image", "inpaint_mask"}
OPTIONS = {
    "image_size", "num_channels", "num_res_blocks", "channel_mult", "num_heads", "num_head_channels",
    "num_heads_upsample", "attention_resolutions", "dropout", "text_ctx", "xf_width", "xf_layers",
    "xf_heads", "xf_final_ln", "xf_padding", "diffusion_steps", "noise_schedule", "timestep_respacing",
    "use_scale_shift_norm", "resblock_updown", "use_fp16", "cache_text_emb", "inpaint", "super_res",
}
COMMON = {"glide_text2im_version", "model_class", "options", "seed", "state_dict", "forward", "meta"}
UNET_TOP = {
    "base": COMMON | {"init", "cfg", "p_sample_loop", "ddim_sample_loop", "ddim_sample_loop_eta"},
    "upsample": COMMON | {"upsample_temp", "sample_prompts", "sample_kwargs", "ddim_sample_loop", "p_sample_loop"},
    "base-inpaint": COMMON | {"sample_prompts", "sample_kwargs", "guidance_scale", "p_sample_loop"},
    "upsample-inpaint": COMMON | {"upsample_temp", "sample_prompts", "sample_kwargs", "p_sample_loop"},
}
UNET_OPTIONAL = {"base": {"init"}}
FORWARD = {
    "base": {"inputs", "output", "text_emb", "activations"},
    "upsample": {"inputs", "output"},
    "base-inpaint": {"inputs", "output", "output_without_inpaint_kwargs"},
    "upsample-inpaint": {"inputs", "output"},
}
FORWARD_INPUTS = {
    "base": {"x_t", "timesteps", "tokens", "mask", "prompts"},
    "upsample": {"x_t", "timesteps", "tokens", "mask", "prompts", "low_res"},
    "base-inpaint": {"x_t", "timesteps", "tokens", "mask", "prompts", "inpaint_image", "inpaint_mask"},
    "upsample-inpaint": {"x_t", "timesteps", "tokens", "mask", "prompts", "low_res", "inpaint_image", "inpaint_mask"},
}
SAMPLE_KWARGS = {k: v - {"x_t", "timesteps", "prompts"} for k, v in FORWARD_INPUTS.items()}
PMV = {"mean", "variance", "log_variance", "pred_xstart"}
DIFFUSION_TOP = {"betas", "spacings", "spaced", "checks", "meta"}
BETAS = {"schedule", "num_timesteps", "betas"}
SPACINGS = {"num_timesteps", "spec", "timesteps"}
SPACED = {
    "schedule", "num_timesteps", "spec", "timestep_map", "betas", "alphas_cumprod", "alphas_cumprod_prev",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
}
CHECK = {
    "name", "schedule", "num_timesteps", "spacing", "t", "t_passed_to_model", "x", "model_output", "cond_grad",
    "x_start", "q_noise", "q_sample", "q_posterior_mean", "p_mean_variance", "p_mean_variance_noclip",
    "condition_mean", "condition_score", "randn_like_draws", "p_sample", "p_sample_cond", "ddim_eta0", "eta",
    "ddim_eta", "ddim_cond",
}
# README s.10 lists no version key for clip.pt, though the public file has one: allowed, optional.
CLIP_OPTIONAL = {"glide_text2im_version"}
CLIP_TOP = CLIP_OPTIONAL | {
    "config", "logit_scale", "seed", "image_encoder_state_dict", "text_encoder_state_dict",
    "inputs", "image_encoder_raw", "text_encoder_raw", "image_embeddings", "text_embeddings", "cond_fn",
    "clip_guided", "meta",
}
CLIP_CONFIG = {
    "logit_scale", "beta_schedule", "n_timesteps", "image_size", "patch_size", "n_vocab", "max_text_len", "n_embd",
    "n_head_text", "n_head_state_text", "n_xf_blocks_text", "n_head_image", "n_head_state_image", "n_xf_blocks_image",
}
CLIP_INPUTS = {"images", "timesteps", "prompts", "tokens", "text_len"}
CLIP_COND = {"prompts", "grad_scale", "x", "t", "grad"}
CLIP_GUIDED = {"base", "guidance_scale", "prompts", "sample_kwargs", "p_sample_loop"}
CFG = {"guidance_scale", "prompts", "tokens", "mask", "note"}
TOKENIZER_TOP = {"glide", "clip", "meta"}


def _keys(problems: list[str], where: str, d, expected: set, optional: set = frozenset()) -> None:
    if not isinstance(d, dict):
        problems.append(f"{where}: expected a dict, got {type(d).__name__}")
        return
    extra = set(d) - expected
    missing = expected - set(d) - set(optional)
    if extra:
        problems.append(f"{where}: unknown key(s) {sorted(extra)}")
    if missing:
        problems.append(f"{where}: missing key(s) {sorted(missing)}")


def _run(problems: list[str], where: str, r) -> None:
    _keys(problems, where, r, RUN)
    if isinstance(r, dict):
        _keys(problems, f"{where}.model_kwargs", r.get("model_kwargs", {}), MODEL_KWARGS, MODEL_KWARGS)
        for j, st in enumerate(r.get("steps", [])):
            _keys(problems, f"{where}.steps[{j}]", st, {"sample", "pred_xstart"})


def check(data: dict, kind: str) -> list[str]:
    p: list[str] = []
    if kind in UNET_TOP:
        _keys(p, kind, data, UNET_TOP[kind], UNET_OPTIONAL.get(kind, set()))
        _keys(p, "options", data.get("options"), OPTIONS)
        fwd = data.get("forward", {})
        _keys(p, "forward", fwd, FORWARD[kind])
        _keys(p, "forward.inputs", fwd.get("inputs"), FORWARD_INPUTS[kind])
        if "text_emb" in fwd:
            _keys(p, "forward.text_emb", fwd["text_emb"], {"xf_proj", "xf_out"})
        if "cfg" in data:
            _keys(p, "cfg", data["cfg"], CFG)
        if "sample_kwargs" in data:
            _keys(p, "sample_kwargs", data["sample_kwargs"], SAMPLE_KWARGS[kind])
        for name in ("p_sample_loop", "ddim_sample_loop", "ddim_sample_loop_eta"):
            if name in data:
                _run(p, name, data[name])
    elif kind == "diffusion":
        _keys(p, kind, data, DIFFUSION_TOP)
        for i, b in enumerate(data.get("betas", [])):
            _keys(p, f"betas[{i}]", b, BETAS)
        for i, b in enumerate(data.get("spacings", [])):
            _keys(p, f"spacings[{i}]", b, SPACINGS)
        for i, b in enumerate(data.get("spaced", [])):
            _keys(p, f"spaced[{i}]", b, SPACED)
        for i, c in enumerate(data.get("checks", [])):
            _keys(p, f"checks[{i}]", c, CHECK)
            for sub in ("p_mean_variance", "p_mean_variance_noclip", "condition_score"):
                if isinstance(c, dict) and sub in c:
                    _keys(p, f"checks[{i}].{sub}", c[sub], PMV)
    elif kind == "clip":
        _keys(p, kind, data, CLIP_TOP, CLIP_OPTIONAL)
        _keys(p, "config", data.get("config"), CLIP_CONFIG)
        _keys(p, "inputs", data.get("inputs"), CLIP_INPUTS)
        _keys(p, "cond_fn", data.get("cond_fn"), CLIP_COND)
        g = data.get("clip_guided", {})
        _keys(p, "clip_guided", g, CLIP_GUIDED)
        if isinstance(g, dict):
            _keys(p, "clip_guided.sample_kwargs", g.get("sample_kwargs"), {"tokens", "mask"})
            if "p_sample_loop" in g:
                _run(p, "clip_guided.p_sample_loop", g["p_sample_loop"])
    elif kind == "tokenizer":
        _keys(p, kind, data, TOKENIZER_TOP)  # item-level keys: tests/parity/test_tokenizer.py
    else:
        p.append("not a reference-vector file of any known kind")
    return p
