"""The `glide` command: thin argument parsing over the library.

User errors (`GlidekitError`) print one line and exit with status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bundled import DEFAULT_MODEL
from .errors import ConfigError, GlidekitError


def _cmd_models(args: argparse.Namespace) -> int:
    from .bundled import list_bundled
    from .download import cache_dir, list_models

    bundled, rows = list_bundled(), list_models(args.cache_dir)
    width = max(len(r["name"]) for r in bundled + rows)  # one column of names for both tables
    print("bundled with glidekit (trained with glidekit; model cards beside the files)")
    for r in bundled:
        state = ("default, " if r["name"] == DEFAULT_MODEL else "") + ("installed" if r["present"] else "missing")
        print(f"  {r['name']:<{width}}  {state:<20}  {r['description']}")
    print(f"official GLIDE (filtered) models; cache: {args.cache_dir or cache_dir()}")
    for r in rows:
        state = f"downloaded ({r['size'] / 2**20:.0f} MiB)" if r["path"] else "not downloaded"
        print(f"  {r['name']:<{width}}  {state:<20}  {r['description']}")
    print("fetch one with: glide download NAME")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .download import download

    path = download(args.name, dest_dir=args.cache_dir, force=args.force, progress=not args.quiet)
    print(path)
    return 0


def _openai_options(path: Path | None):
    """A GlideConfig from a JSON file of OpenAI `create_model_and_diffusion` keywords, or None."""
    if path is None:
        return None
    from .config import from_openai_options

    try:
        options = json.loads(Path(path).read_text())
    except OSError as e:
        raise GlidekitError(f"cannot read options file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise GlidekitError(f"options file {path} is not valid JSON: {e}") from None
    if not isinstance(options, dict):
        raise GlidekitError(f"options file {path} must hold a JSON object of GLIDE options")
    return from_openai_options(options)


def _cmd_info(args: argparse.Namespace) -> int:
    from .config import config_to_dict
    from .io import load_model, model_path

    model, kind, config = load_model(args.model, config=_openai_options(args.options))
    n = sum(p.numel() for p in model.parameters())
    info = {"model": str(args.model), "kind": kind, "parameters": n, "config": config_to_dict(config),
            **_training_record(model_path(args.model))}
    print(json.dumps(info, indent=2))
    return 0


def _training_record(path: Path) -> dict:
    """How a glidekit file was trained, where it says: a bundled file's stages (`train_stages`, each
    `glide train` command with its steps), or for a checkpoint of `glide train` (train_state beside it)
    its step and the command that trains with exactly its saved config."""
    from safetensors import SafetensorError, safe_open

    from .train_config import train_command, train_config_from_dict

    if path.suffix != ".safetensors":
        return {}
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "train_stages" in meta:
        try:
            return {"train_step": int(meta["train_step"]),
                    "trained_with": [{"command": st.get("command") or f"glide train {st['preset']} {st['recipe']}",
                                      "steps": int(st["steps"])} for st in json.loads(meta["train_stages"])]}
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # hand-edited or truncated metadata
            return {"trained_with_error": f"{path.name}: its train_stages metadata is malformed "
                                          f"({type(e).__name__}: {e}); no training record"}
    state = path.parent / "train_state.safetensors"
    if not state.is_file():
        return {}
    try:
        with safe_open(str(state), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:  # e.g. a half-copied checkpoint folder: the model itself loaded
        return {"trained_with_error": f"{state} is unreadable ({e}); no training record"}
    if "train_config" not in meta:
        return {}
    try:
        command = train_command(train_config_from_dict(json.loads(meta["train_config"])))
    except ConfigError:  # written by a glidekit with options this one does not know
        command = None
    return {"train_step": int(meta["step"]), "trained_with": [{"command": command, "steps": int(meta["step"])}]}


def _cmd_convert(args: argparse.Namespace) -> int:
    from .io import convert_checkpoint

    dst = Path(args.output)
    if dst.suffix != ".safetensors":
        raise GlidekitError(f"output must end in .safetensors, got {dst.name}")
    kind = convert_checkpoint(args.checkpoint, dst, config=_openai_options(args.options), dtype=args.dtype)
    print(f"wrote {dst} ({kind}, {dst.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo, run_speed_demo

    if args.speed:
        run_speed_demo(threads=args.threads)
    else:
        run_demo(out_dir=args.out, seed=args.seed, threads=args.threads)
    return 0


# --------------------------------------------------------------------------------------------
# generation and editing


# (model, upsampler) per command: the default bundled model works offline; "auto" picks the upsampler
# that belongs to a base model (GLIDE's second stage: the official pair, and the bundled emoji pair,
# trained on the same images) and none for every other model
DEFAULTS = {
    "sample": (DEFAULT_MODEL, "auto"),
    "inpaint": (DEFAULT_MODEL, "auto"),
    "outpaint": (DEFAULT_MODEL, None),
    "edit": (DEFAULT_MODEL, None),
    "upsample": (None, "upsample"),
}
PARTNER_UPSAMPLER = {"base": "upsample", "base-inpaint": "upsample-inpaint", "emoji-64": "emoji-upsample"}


def _sampler_spec(name: str, steps: int | None, respacing: str | None, eta: float | None, default, spacing=None):
    """The sampler the flags ask for; what they leave out comes from `default` when it is the same sampler."""
    from .pipelines import SamplerSpec

    if name is None and steps is None and respacing is None and eta is None and spacing is None:
        return default
    name = name or default.name
    same = name == default.name
    if steps is None:
        steps = default.steps if same else 20
    if spacing is None and same:
        spacing = default.spacing
    return SamplerSpec(name, steps, respacing=respacing, eta=eta, spacing=spacing)


def _runtime(args):
    from . import runtime

    device = runtime.choose_device(args.device)
    dtype = runtime.choose_dtype(device, args.dtype)
    return device, dtype


def _load_upsampler(args, device, dtype):
    """The upsampler `--upsampler` names (resolving "auto"), or None; `args.upsampler` is set to
    the resolved name so the PNG metadata records what ran."""
    if args.upsampler == "auto":
        args.upsampler = PARTNER_UPSAMPLER.get(str(args.model), "none")
    if args.upsampler in (None, "none"):
        return None
    return _load(args.upsampler, device, dtype)


def _load(source: str, device, dtype):
    from .pipelines import GlideModel

    return GlideModel.load(source, device=device, dtype=dtype)


def _load_clip(args, device):
    from .io import clip_pair, load_noised_clip

    if getattr(args, "clip", None):  # one name for both encoders; recorded as the two files it stands for
        args.clip_image, args.clip_text = clip_pair(args.clip)
    return load_noised_clip((args.clip_image, args.clip_text), device=device)


def _slug(text: str, n: int = 40) -> str:
    import re

    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:n] or "image"


def _write_outputs(args, result, records: list[dict], common: dict) -> list[Path]:
    """Save every image (and earlier stages) with its generation record; then an optional grid."""
    from .images import make_grid, save_png, tensor_to_pils

    out_dir = Path(args.out)
    paths = []
    final = tensor_to_pils(result.images)
    for stage, tensor in result.stages.items():
        if tensor is result.images:
            continue
        if args.keep_stages:
            for i, im in enumerate(tensor_to_pils(tensor)):
                rec = {**common, **records[i], "stage": stage}
                name = f"{i:03d}-{_slug(str(records[i].get('prompt', '')))}-s{records[i].get('seed', 0)}-{stage}.png"
                paths.append(save_png(im, out_dir / name, rec))
    for i, im in enumerate(final):
        rec = {**common, **records[i], "stage": "final"}
        name = f"{i:03d}-{_slug(str(records[i].get('prompt', '')))}-s{records[i].get('seed', 0)}.png"
        paths.append(save_png(im, out_dir / name, rec))
    if args.grid and len(final) > 1:
        paths.append(save_png(make_grid(final), out_dir / "grid.png", {**common, "records": records}))
    return paths


def _emit(args, command: str, result, **record) -> int:
    """Write the result's images with their generation records and print the paths."""
    for path in _write_outputs(args, result, result.records, _common_record(args, command, **record)):
        print(path)
    return 0


def _prompts(args) -> list[str]:
    batch = getattr(args, "batch", 1)
    if batch <= 0:
        raise GlidekitError(f"--batch must be >= 1, got {batch}")
    return [p for p in args.prompt for _ in range(batch)]


def _common_record(args, command: str, **extra) -> dict:
    from . import __version__

    rec = {"glidekit": __version__, "command": command, "model": args.model, "guidance": getattr(args, "guidance", None),
           "sampler": {"name": args.sampler, "steps": args.steps, "respacing": args.respacing, "eta": args.eta}}
    rec.update(extra)
    return rec


def _cmd_sample(args: argparse.Namespace) -> int:
    from . import pipelines as P

    if args.from_png is not None:
        _apply_png_record(args)
    if not args.prompt and not args.label:
        raise GlidekitError("give a prompt, e.g. glide sample \"a red circle above a blue square\", or --from-png FILE")
    labels = [lab for lab in args.label for _ in range(args.batch)] if args.label else None
    if labels is not None and args.prompt and len(args.prompt) != len(args.label):
        raise GlidekitError("give one --label per prompt")
    prompts = _prompts(args) if args.prompt else [""] * len(labels)
    spec = _sampler_spec(args.sampler, args.steps, args.respacing, args.eta, P.FAST_BASE, args.spacing)
    up_spec = _sampler_spec(args.up_sampler, args.up_steps, args.up_respacing, None, P.FAST_UPSAMPLE, args.up_spacing)
    _check_guidance(args)
    _check_back_project(args)
    device, dtype = _runtime(args)
    base = _load(args.model, device, dtype)
    upsampler = _load_upsampler(args, device, dtype)
    if args.back_project and upsampler is None:
        raise GlidekitError(f"--back-project corrects an upsampler's output, and {args.model} runs with none here: "
                            "give --upsampler NAME")
    cond_fn = None
    if args.clip_guidance:
        clip = _load_clip(args, device)
        if clip.config.image_size != base.unet.image_size:
            raise GlidekitError(
                f"the noised CLIP sees {clip.config.image_size} px images but the base model makes "
                f"{base.unet.image_size} px; use a matching CLIP")
        cond_fn = P.clip_cond_fn(clip, prompts, args.clip_guidance)
    if args.classifier_scale and not args.classifier:
        raise GlidekitError("--classifier-scale needs --classifier (a noisy classifier checkpoint)")
    if args.classifier:
        if labels is None:
            raise GlidekitError("classifier guidance needs the class to guide towards: --label N")
        from .io import load_model
        from .sampling.guidance import classifier_cond_fn, combine_cond_fns

        classifier, _, _ = load_model(args.classifier, kind="classifier", device=device)
        y = torch_tensor(labels, device)
        cond_fn = combine_cond_fns(cond_fn, classifier_cond_fn(classifier, y, args.classifier_scale or 1.0))
    switch = [args.switch_prompt] * len(prompts) if args.switch_prompt else None
    with _autocast(device, dtype):
        result = P.text_to_image(
            base, prompts, labels=labels, seed=args.seed, guidance_scale=args.guidance, sampler=spec, upsampler=upsampler,
            upsample_sampler=up_spec, upsample_temp=args.upsample_temp, back_projection=args.back_project, cond_fn=cond_fn,
            switch_prompts=switch, switch_at=args.switch_at, progress=not args.quiet)
    return _emit(args, "sample", result, upsampler=args.upsampler, clip_guidance=args.clip_guidance,
                            clip_image=args.clip_image, clip_text=args.clip_text, upsample_temp=args.upsample_temp,
                            back_project=args.back_project,
                            sampler=dataclasses_asdict(spec), up_sampler=dataclasses_asdict(up_spec),
                            switch_prompt=args.switch_prompt, switch_at=args.switch_at,
                            classifier=args.classifier, classifier_scale=args.classifier_scale,
                            model_sha256=_sha(args.model), upsampler_sha256=_sha(args.upsampler))


def torch_tensor(values, device):
    import torch

    return torch.as_tensor(values, dtype=torch.long, device=device)


def dataclasses_asdict(obj) -> dict:
    import dataclasses

    return dataclasses.asdict(obj)


def _sha(source: str | None) -> str | None:
    """Short content hash of a model file (`download.file_identity`, the identity in PNG metadata) for a
    model name or path as `load_model` resolves it (bundled, official preset, path), None for missing ones."""
    from .io import model_identity

    return None if source in (None, "none") else model_identity(source)


def _apply_png_record(args) -> None:
    from .images import read_png_metadata

    rec = read_png_metadata(args.from_png)
    if rec.get("command") != "sample":
        raise GlidekitError(f"{args.from_png} was made by 'glide {rec.get('command')}', not 'glide sample'")
    args.prompt = [rec["prompt"]] if rec["prompt"] or rec.get("label") is None else []
    args.label = [rec["label"]] if rec.get("label") is not None else []
    args.classifier, args.classifier_scale = rec.get("classifier"), rec.get("classifier_scale")
    args.batch = 1
    args.seed = rec["seed"]
    args.model, args.upsampler = rec["model"], rec.get("upsampler")
    args.guidance = rec["guidance"]
    args.clip_guidance = rec.get("clip_guidance")
    args.clip_image, args.clip_text = rec.get("clip_image", args.clip_image), rec.get("clip_text", args.clip_text)
    args.clip = None  # the record names the two encoder files that ran
    args.upsample_temp = rec.get("upsample_temp", args.upsample_temp)
    args.back_project = rec.get("back_project", 0)
    s, u = rec["sampler"], rec.get("up_sampler") or {}
    args.sampler, args.steps, args.respacing, args.eta = s["name"], s["steps"], s.get("respacing"), s.get("eta")
    args.spacing = _recorded_spacing(s)
    if u:
        args.up_sampler, args.up_steps, args.up_respacing = u["name"], u["steps"], u.get("respacing")
        args.up_spacing = _recorded_spacing(u)
    args.switch_prompt, args.switch_at = rec.get("switch_prompt"), rec.get("switch_at", args.switch_at)
    for key, source in (("model_sha256", args.model), ("upsampler_sha256", args.upsampler)):
        if rec.get(key) and _sha(source) and rec[key] != _sha(source):
            print(f"glide: warning: {source} differs from the model that made {args.from_png}", file=sys.stderr)


def _recorded_spacing(sampler: dict) -> str | None:
    """A record's solver spacing; records written before spacings were recorded used "linspace"."""
    from .pipelines import REFERENCE_SAMPLERS

    return None if sampler["name"] in REFERENCE_SAMPLERS else sampler.get("spacing") or "linspace"


def _check_guidance(args) -> None:
    if args.guidance < 0:
        raise GlidekitError(f"--guidance must be >= 0, got {args.guidance}")
    for flag in ("clip_guidance", "classifier_scale"):
        value = getattr(args, flag, None)
        if value is not None and value < 0:
            raise GlidekitError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")


def _check_back_project(args) -> None:
    if args.back_project < 0:
        raise GlidekitError(f"--back-project must be >= 0 (iterations), got {args.back_project}")


def _autocast(device, dtype):
    from . import runtime

    return runtime.autocast_context(device, dtype)


def _image_and_mask(args, base_size: int):
    """Source image at the base model size (and the original), and the keep-mask at that size."""
    from .images import load_mask, open_image, pil_to_tensor, rect_mask, resize_mask

    image = open_image(args.image)
    if args.mask is None and args.rect is None:
        raise GlidekitError("give the region to repaint: --mask MASK.png or --rect LEFT,TOP,RIGHT,BOTTOM")
    if args.mask is not None and args.rect is not None:
        raise GlidekitError("give either --mask or --rect, not both")
    if args.mask is not None:
        keep = load_mask(args.mask, args.mask_mode, image.size)
    else:
        try:
            box = tuple(int(v) for v in args.rect.split(","))
        except ValueError:
            box = ()
        if len(box) != 4:
            raise GlidekitError(f"--rect must be LEFT,TOP,RIGHT,BOTTOM in pixels, got {args.rect!r}")
        keep = rect_mask(image.size, box)
    return image, pil_to_tensor(image, base_size), resize_mask(keep, base_size)


def _cmd_inpaint(args: argparse.Namespace) -> int:
    from . import pipelines as P
    from .images import pil_to_tensor

    prompts = _prompts(args)
    spec = _sampler_spec(args.sampler, args.steps, args.respacing, args.eta, P.FAST_BASE, args.spacing)
    up_spec = _sampler_spec(args.up_sampler, args.up_steps, args.up_respacing, None, P.FAST_UPSAMPLE, args.up_spacing)
    _check_guidance(args)
    device, dtype = _runtime(args)
    base = _load(args.model, device, dtype)
    upsampler = _load_upsampler(args, device, dtype)
    pil, image, keep = _image_and_mask(args, base.unet.image_size)
    image_hr = pil_to_tensor(pil, upsampler.unet.image_size) if upsampler else None
    with _autocast(device, dtype):
        result = P.inpaint(base, image, keep, prompts, seed=args.seed, guidance_scale=args.guidance, sampler=spec,
                           upsampler=upsampler, image_hr=image_hr, upsample_sampler=up_spec,
                           upsample_temp=args.upsample_temp, progress=not args.quiet)
    return _emit(args, "inpaint", result, image=str(args.image), mask=str(args.mask), rect=args.rect,
                            mask_mode=args.mask_mode, upsampler=args.upsampler, sampler=dataclasses_asdict(spec),
                            up_sampler=dataclasses_asdict(up_spec))


def _cmd_outpaint(args: argparse.Namespace) -> int:
    from . import pipelines as P
    from .images import open_image, pil_to_tensor

    spec = _sampler_spec(args.sampler, args.steps, args.respacing, args.eta, P.FAST_BASE, args.spacing)
    _check_guidance(args)
    device, dtype = _runtime(args)
    base = _load(args.model, device, dtype)
    size = base.unet.image_size
    image = pil_to_tensor(open_image(args.image), size)
    with _autocast(device, dtype):
        result = P.outpaint(base, image, args.prompt[0], left=args.left, right=args.right, top=args.top,
                            bottom=args.bottom, seed=args.seed, guidance_scale=args.guidance, sampler=spec,
                            progress=not args.quiet)
    return _emit(args, "outpaint", result, image=str(args.image), sampler=dataclasses_asdict(spec))


def _cmd_edit(args: argparse.Namespace) -> int:
    from . import pipelines as P
    from .images import open_image, pil_to_tensor

    prompts = _prompts(args)
    spec = _sampler_spec(args.sampler, args.steps, args.respacing, args.eta, P.FAST_BASE, args.spacing)
    _check_guidance(args)
    device, dtype = _runtime(args)
    base = _load(args.model, device, dtype)
    image = pil_to_tensor(open_image(args.image), base.unet.image_size)
    with _autocast(device, dtype):
        result = P.edit(base, image, prompts, strength=args.strength, seed=args.seed, guidance_scale=args.guidance,
                        sampler=spec, progress=not args.quiet)
    return _emit(args, "edit", result, image=str(args.image), sampler=dataclasses_asdict(spec))


def _cmd_upsample(args: argparse.Namespace) -> int:
    from . import pipelines as P
    from .images import open_image, pil_to_tensor

    prompts = _prompts(args)
    spec = _sampler_spec(args.sampler, args.steps, args.respacing, args.eta, P.FAST_UPSAMPLE, args.spacing)
    _check_back_project(args)
    device, dtype = _runtime(args)
    model = _load(args.model, device, dtype)
    low_res = pil_to_tensor(open_image(args.image), args.low_res_size)
    seeds = [args.seed + i for i in range(len(prompts))]
    with _autocast(device, dtype):
        images = P.upsample(model, low_res.expand(len(prompts), -1, -1, -1), prompts, seeds=seeds, sampler=spec,
                            upsample_temp=args.upsample_temp, progress=not args.quiet, back_projection=args.back_project)
    result = P.Result(images=images, stages={"upsample": images},
                      records=[{"prompt": p, "seed": s} for p, s in zip(prompts, seeds)])
    return _emit(args, "upsample", result, image=str(args.image), sampler=dataclasses_asdict(spec),
                 back_project=args.back_project)


def _add_generation_args(s: argparse.ArgumentParser, command: str, prompt_nargs: str = "+") -> None:
    from .pipelines import SAMPLERS, UPSAMPLE_TEMP
    from .sampling.solvers import SPACINGS

    model, upsampler = DEFAULTS[command]
    if command == "sample":
        s.add_argument("prompt", nargs="*", help="text prompt(s); 'A AND B' composes concepts A and B "
                                                 "(Composable Diffusion)")
    else:
        s.add_argument("prompt", nargs=prompt_nargs, help="text prompt(s)")
    s.add_argument("--model", default=model or upsampler, help=f"model name or checkpoint path (default: {model or upsampler})")
    if command in ("sample", "inpaint"):
        s.add_argument("--upsampler", default=upsampler,
                       help="upsampler name or path, 'none' for base-resolution output, or 'auto': the base "
                            "model's own second stage (official base: upsample; base-inpaint: upsample-inpaint; "
                            "bundled emoji-64: emoji-upsample), none otherwise (default: auto)")
        s.add_argument("--up-sampler", choices=SAMPLERS, default=None, help="upsampler's sampler (default dpm++2m)")
        s.add_argument("--up-steps", type=int, default=None, help="upsampler steps (default 10)")
        s.add_argument("--up-spacing", choices=SPACINGS, default=None,
                       help="how a solver spaces the upsampler's steps (default logsnr)")
        s.add_argument("--up-respacing", default=None, help="OpenAI respacing for ancestral/ddim upsampling, e.g. fast27")
    if command in ("sample", "inpaint", "upsample"):
        s.add_argument("--upsample-temp", type=float, default=UPSAMPLE_TEMP,
                       help=f"scale of the upsampler's initial noise (GLIDE: {UPSAMPLE_TEMP})")
    if command in ("sample", "upsample"):
        s.add_argument("--back-project", type=int, default=0, metavar="N",
                       help="N iterations of back-projection on the upsampled image, so that it averages back to its "
                            "64 px input: removes a low-frequency drift such as a tinted background (default 0, GLIDE's "
                            "output as it is; 1 for emoji-upsample)")
    s.add_argument("--sampler", choices=SAMPLERS, default=None, help="sampler (default dpm++2m; 'ancestral' and 'ddim' are OpenAI's exact loops)")
    s.add_argument("--steps", type=int, default=None, help="model evaluations (default 20 base, 10 upsampler)")
    s.add_argument("--spacing", choices=SPACINGS, default=None,
                   help="how a solver spaces its steps: linspace (GLIDE's respacing N; the base default), logsnr "
                        "(the upsampler default), trailing")
    s.add_argument("--respacing", default=None, help="OpenAI respacing string for ancestral/ddim, e.g. 100 or fast27")
    s.add_argument("--eta", type=float, default=None, help="noise level for ddim / euler_a")
    if command != "upsample":
        s.add_argument("--guidance", type=float, default=5.0 if command in ("inpaint", "outpaint") else 3.0,
                       help="classifier-free guidance scale (1 = off; GLIDE: 3 for samples, 5 for inpainting)")
    s.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    if command != "outpaint":
        s.add_argument("--batch", type=int, default=1, help="images per prompt")
    s.add_argument("--out", type=Path, default=Path("outputs"), help="output folder (default: outputs)")
    s.add_argument("--grid", action="store_true", help="also write grid.png of all images")
    s.add_argument("--keep-stages", action="store_true", help="also save the 64 px base images")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16 (auto: the fastest the device supports)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_mask_args(s: argparse.ArgumentParser) -> None:
    from .images import MASK_MODES

    s.add_argument("--image", type=Path, required=True, help="image to edit")
    s.add_argument("--mask", type=Path, default=None, help="PNG mask at the image's size")
    s.add_argument("--mask-mode", choices=MASK_MODES, default="white-repaints",
                   help="white-repaints: white = area to change (as drawn in image editors, default); "
                        "white-keeps: white = area to keep (GLIDE's tensor convention)")
    s.add_argument("--rect", default=None, help="rectangle to repaint instead of a mask: LEFT,TOP,RIGHT,BOTTOM pixels")


def add_generation_commands(sub) -> None:
    s = sub.add_parser("sample", help="text -> 64 px -> 256 px images")
    _add_generation_args(s, "sample")
    s.add_argument("--clip-guidance", type=float, default=None, help="CLIP guidance scale with the noised CLIP (GLIDE: 3)")
    s.add_argument("--clip", default=None, help="noised CLIP for --clip-guidance, both encoders by one name: 'clip' "
                                                "(OpenAI's), a bundled CLIP such as shapes-clip, or a glidekit CLIP checkpoint stem")
    s.add_argument("--clip-image", default="clip-image", help="noised CLIP image encoder (name or path)")
    s.add_argument("--clip-text", default="clip-text", help="noised CLIP text encoder (name or path)")
    s.add_argument("--switch-prompt", default=None, help="switch to this prompt for the last part of sampling")
    s.add_argument("--switch-at", type=float, default=0.5, help="fraction of the process left when the prompt switches")
    s.add_argument("--label", type=int, action="append", default=[],
                   help="class label for class-conditional models (repeat for several; one per prompt)")
    s.add_argument("--classifier", default=None, help="noisy classifier checkpoint for classifier guidance (needs --label)")
    s.add_argument("--classifier-scale", type=float, default=None, help="classifier guidance scale (default 1)")
    s.add_argument("--from-png", type=Path, default=None, help="reproduce the image stored in this PNG's metadata")
    s.set_defaults(func=_cmd_sample)

    s = sub.add_parser("inpaint", help="repaint a masked region of an image with a prompt")
    _add_generation_args(s, "inpaint")
    _add_mask_args(s)
    s.set_defaults(func=_cmd_inpaint)

    s = sub.add_parser("outpaint", help="extend an image beyond its borders (panoramas with large extensions)")
    _add_generation_args(s, "outpaint", prompt_nargs=1)
    s.add_argument("--image", type=Path, required=True, help="image to extend")
    for side in ("left", "right", "top", "bottom"):
        s.add_argument(f"--{side}", type=int, default=0, help=f"pixels to add on the {side} (at the model's resolution)")
    s.set_defaults(func=_cmd_outpaint)

    s = sub.add_parser("edit", help="re-noise an image and redo it with a new prompt")
    _add_generation_args(s, "edit")
    s.add_argument("--image", type=Path, required=True, help="image to edit")
    s.add_argument("--strength", type=float, default=0.6, help="how far back into the noise to go, (0, 1] (default 0.6)")
    s.set_defaults(func=_cmd_edit)

    s = sub.add_parser("upsample", help="64 -> 256 px text-conditional super-resolution of an image")
    _add_generation_args(s, "upsample")
    s.add_argument("--image", type=Path, required=True, help="low-resolution image")
    s.add_argument("--low-res-size", type=int, default=64, help="resize the input to this size first (default 64)")
    s.set_defaults(func=_cmd_upsample)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train_config import resolve_train_config, train_config_to_dict

    cfg = resolve_train_config(args.config, args.overrides)
    if args.dry_run:
        from .train import count_parameters

        print(json.dumps(train_config_to_dict(cfg), indent=2))
        print(f"model: {cfg.task}, {count_parameters(cfg):,} parameters")
        return 0
    from .train import train

    if args.time_limit is not None and args.time_limit <= 0:
        raise GlidekitError(f"--time-limit must be a positive number of minutes, got {args.time_limit:g}")
    record = train(cfg, resume=args.resume, device=args.device, progress=not args.quiet,
                   time_limit_s=None if args.time_limit is None else 60 * args.time_limit)
    print(json.dumps(record))
    return 0


def _cmd_filter(args: argparse.Namespace) -> int:
    from .data import build_dataset
    from .data.filters import CaptionBlocklist, ClassifierFilter, apply_filters, write_manifest

    filters = []
    if args.blocklist:
        words = args.blocklist[0] if len(args.blocklist) == 1 and Path(args.blocklist[0]).is_file() else args.blocklist
        filters.append(CaptionBlocklist(words))
    if args.classifier:
        filters.append(ClassifierFilter(_unwanted_class_scorer(args.classifier, args.unwanted_class), args.threshold,
                                        name=f"classifier:{Path(args.classifier).name}"))
    if not filters:
        raise GlidekitError("give at least one filter: --blocklist WORDS|FILE and/or --classifier CKPT --unwanted-class N")
    if not str(args.out).endswith(".jsonl"):
        raise GlidekitError(f"--out must be a .jsonl manifest, got {args.out}")
    size = args.image_size
    dataset = build_dataset(args.data, size)
    report = apply_filters(dataset, filters, batch_size=args.batch_size)
    path = write_manifest(report, dataset, args.out)
    print(report.summary())
    print(f"wrote {path}; train on it with data=manifest:{path}")
    return 0


def _unwanted_class_scorer(checkpoint: str, unwanted: int | None):
    """p(unwanted class | x) from a glidekit noisy classifier evaluated at t = 0 (clean images)."""
    import torch

    from .io import load_model

    if unwanted is None:
        raise GlidekitError("--classifier needs --unwanted-class N (the class whose images are dropped)")
    clf, _, cfg = load_model(checkpoint, kind="classifier")
    if not 0 <= unwanted < cfg.num_classes:
        raise GlidekitError(f"--unwanted-class must be in 0..{cfg.num_classes - 1}, got {unwanted}")

    def score(images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != cfg.image_size:
            images = torch.nn.functional.interpolate(images, (cfg.image_size, cfg.image_size), mode="area")
        logits = clf(images, torch.zeros(len(images), dtype=torch.long))
        return logits.float().softmax(-1)[:, unwanted]

    return score


CAPTION_METRICS = ("clip_score", "shapes")  # scored on the generated side against its prompts


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval.metrics import METRICS, evaluate

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS + CAPTION_METRICS]
    if unknown or not metrics:
        raise GlidekitError(f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS + CAPTION_METRICS)}")
    if not Path(args.fake).is_dir():
        raise GlidekitError(f"{args.fake} is not a folder of images")
    if "clip_score" in metrics and not args.clip:
        raise GlidekitError("clip_score needs --clip, a glidekit-trained noised CLIP (e.g. --clip shapes-clip)")
    distribution = [m for m in metrics if m in METRICS]
    result: dict = {}
    if distribution:
        real = str(args.real)
        real_note = None
        if not Path(real).is_dir():
            from .eval.features import dataset_features, list_images
            from .images import open_image

            size = open_image(list_images(args.fake)[0]).size[0]
            real = dataset_features(str(args.real), size, n=args.real_n, batch_size=args.batch_size, progress=not args.quiet)
            real_note = f"dataset {args.real}: {len(real)} images at {size} px"
        result = evaluate(real, str(args.fake), distribution, batch_size=args.batch_size, progress=not args.quiet,
                          kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, k=args.k)
        if real_note:
            result["real"]["source"] = real_note
    if any(m in CAPTION_METRICS for m in metrics):
        images, captions = _images_with_prompts(args.fake)
        result.setdefault("fake", {"source": str(args.fake), "n": len(images)})
        if "shapes" in metrics:
            from .eval.shapes_score import score_batch

            _check_shapes_captions(args.fake, captions)
            result["shapes"] = score_batch(images, captions)
        if "clip_score" in metrics:
            from .eval.clip_score import clip_score
            from .io import load_noised_clip

            result["clip_score"] = clip_score(load_noised_clip(args.clip), images, captions, name=str(args.clip),
                                              batch_size=args.batch_size)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        from .files import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


def _images_with_prompts(folder) -> tuple[list, list[str]]:
    """Every image of a folder with the prompt in its PNG metadata (as written by glide sample)."""
    import numpy as np

    from .eval.features import list_images
    from .images import open_image, read_png_metadata

    files = list_images(folder) if Path(folder).is_dir() else []
    if not files:
        raise GlidekitError(f"{folder} is not a folder of images")
    images, captions = [], []
    for f in files:
        prompt = read_png_metadata(f).get("prompt") if f.suffix.lower() == ".png" else None
        if not prompt:
            raise GlidekitError(f"{f} has no prompt in its metadata (score images written by glide sample)")
        images.append(np.asarray(open_image(f)))
        captions.append(prompt)
    return images, captions


def _check_shapes_captions(folder, captions: list[str]) -> None:
    """The shapes scorer reads only captions of its grammar: name the others in one error line."""
    from .data.shapes import outside_grammar

    bad = outside_grammar(captions)
    if bad:
        raise GlidekitError(f"{len(bad)} of {len(captions)} images in {folder} have prompts outside the shapes grammar "
                            f"(e.g. {bad[0]!r}); the shapes scorer reads only grammar captions (docs/shapes.md), so "
                            "score a folder of those")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .eval import sweep as S

    clip_scales = _floats(args.clip_guidance, "--clip-guidance") if args.clip_guidance else []
    points = S.grid(args.sampler or ["dpm++2m:20"], _floats(args.guidance, "--guidance"), clip_scales)
    prompts = S.prompt_set(args.prompts)
    if clip_scales and not args.clip:
        raise GlidekitError("--clip-guidance needs --clip, the noised CLIP to follow (e.g. --clip shapes-clip)")
    if args.batch <= 0:
        raise GlidekitError(f"--batch must be positive, got {args.batch}")
    if args.reference is not None and not Path(args.reference).is_dir():
        raise GlidekitError(f"--reference {args.reference} is not a folder of images")
    device, dtype = _runtime(args)
    model = _load(args.model, device, dtype)
    from .io import load_noised_clip

    guide = load_noised_clip(args.clip, device=device) if clip_scales else None
    scorer = load_noised_clip(args.score_clip, device=device) if args.score_clip else None
    print(f"sweep: {len(points)} points x {len(prompts)} prompts with {args.model}; rows -> {args.csv}")
    if scorer is not None:
        from .eval.clip_score import STATEMENT

        print(f"CLIP score: {args.score_clip}, {STATEMENT}")

    def report(row: dict) -> None:
        acc = "" if row.get("whole_caption") is None else f" whole-caption {row['whole_caption']:.3f}"
        fid = "" if row.get("fid") is None else f" FID {row['fid']:.2f} KID {row['kid']:.4f}"
        cs = "" if row.get("clip_score") is None else f" CLIP score {row['clip_score']:.2f}"
        kind = "CLIP guidance" if row["guidance_type"] == "clip" else "guidance"
        print(f"{row['sampler']}:{row['steps']} {kind} {row['guidance']:g}:{acc}{fid}{cs} "
              f"({row['seconds_per_image']:.2f} s/image)", flush=True)

    with _autocast(device, dtype):
        rows = S.run_sweep(model, prompts, points, csv_path=args.csv, seed=args.seed, batch_size=args.batch,
                           reference=args.reference, clip_guide=guide, clip_scorer=scorer,
                           clip_scorer_name=str(args.score_clip or ""), image_dir=args.images, on_point=report,
                           progress=not args.quiet)
    if args.plot:
        metric = next((m for m in ("whole_caption", "clip_score", "fid") if any(r.get(m) is not None for r in rows)), "fid")
        plot = Path(args.plot)
        print(f"plot: {S.plot(rows, plot, metric)}")
        if len({r['steps'] for r in rows}) > 1:  # quality against model evaluations, per sampler
            print(f"plot: {S.plot(rows, plot.with_name(plot.stem + '-steps.png'), metric, x='steps')}")
        if any(r.get("recall") is not None for r in rows):  # fidelity against diversity
            print(f"plot: {S.plot(rows, plot.with_name(plot.stem + '-tradeoff.png'), 'precision', x='recall')}")
            print(f"plot: {S.plot(rows, plot.with_name(plot.stem + '-diversity.png'), metric, x='diversity')}")
    return 0


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise GlidekitError(f"{what} takes comma-separated numbers, e.g. 0,1,3,5,8; got {text!r}") from None


def _cmd_score(args: argparse.Namespace) -> int:
    from .eval.shapes_score import score_batch

    images, captions = _images_with_prompts(args.folder)
    _check_shapes_captions(args.folder, captions)
    summary = score_batch(images, captions)
    text = json.dumps(summary, indent=2)
    if args.out:
        from .files import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .web import Limits, WebServer, launch

    if not 0 < args.port < 65536:
        raise GlidekitError(f"--port must be between 1 and 65535, got {args.port}")
    limits = Limits(max_steps=args.max_steps, max_batch=args.max_batch, max_upload_mb=args.max_upload_mb,
                    max_side=args.max_side, max_extend=args.max_extend, queue_size=args.queue_size)
    server = WebServer(args.model, device=args.device, dtype=args.dtype, limits=limits)
    try:
        app = launch(server, args.host, args.port)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"glide serve: http://{host}:{args.port}/  models: {', '.join(server.models)}  (Ctrl+C stops)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"glide serve: warning: listening on {args.host}: anyone who can reach this machine can use the page "
                  "(there is no login)", file=sys.stderr, flush=True)
        app.block_thread()
    finally:
        server.close()
    return 0


def _add_serve_command(sub) -> None:
    from .web import Limits

    d = Limits()
    s = sub.add_parser("serve", help="web page for generating and editing (needs glidekit[web])",
                       description="Serve a web page with tabs for text-to-image (optionally upsampled), inpainting with a "
                                   "brush, outpainting and re-noise editing. Offers the models given with --model, then "
                                   "the bundled models and the downloaded official base models and upsampler.")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--model", action="append", default=[], metavar="NAME|PATH",
                   help="a base, base-inpaint or upsample model to offer (repeat for several; the first is the default)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16 (auto: the fastest the device supports)")
    s.add_argument("--max-steps", type=int, default=d.max_steps, help=f"most sampling steps a request may ask for (default {d.max_steps})")
    s.add_argument("--max-batch", type=int, default=d.max_batch, help=f"most images per request (default {d.max_batch})")
    s.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help=f"largest upload in MB (default {d.max_upload_mb:g})")
    s.add_argument("--max-side", type=int, default=d.max_side, help=f"largest uploaded image side in pixels (default {d.max_side})")
    s.add_argument("--max-extend", type=int, default=d.max_extend,
                   help=f"most pixels outpainting may add on a side, at the model's resolution (default {d.max_extend})")
    s.add_argument("--queue-size", type=int, default=d.queue_size, help=f"most requests waiting in the queue (default {d.queue_size})")
    s.set_defaults(func=_cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glide",
        description="glidekit: GLIDE text-guided diffusion, weight-compatible with OpenAI's released checkpoints.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_generation_commands(sub)

    s = sub.add_parser("models", help="list the official models and whether they are downloaded")
    s.add_argument("--cache-dir", type=Path, default=None, help="download folder (default: $GLIDEKIT_CACHE or ~/.cache/glidekit)")
    s.set_defaults(func=_cmd_models)

    s = sub.add_parser("download", help="fetch an official checkpoint from OpenAI into the cache")
    s.add_argument("name", help="preset name (see `glide models`) or an http(s) URL")
    s.add_argument("--cache-dir", type=Path, default=None, help="download folder (default: $GLIDEKIT_CACHE or ~/.cache/glidekit)")
    s.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_download)

    s = sub.add_parser("info", help="identify a checkpoint (official .pt or glidekit .safetensors) and print its config "
                                    "(and, for a glidekit file, its step and the glide train command(s) behind it)")
    s.add_argument("model", help="a preset name (downloaded) or a checkpoint path")
    s.add_argument("--options", type=Path, default=None, metavar="JSON",
                   help="JSON file of OpenAI create_model_and_diffusion options, for a .pt that is not an official size")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("convert", help="convert an official .pt checkpoint (or re-write a glidekit one, e.g. in "
                                       "float16) to glidekit safetensors (config included)")
    s.add_argument("checkpoint", help="official checkpoint (e.g. base.pt) or a glidekit .safetensors (e.g. a training run's ema)")
    s.add_argument("--dtype", choices=("keep", "fp16", "bf16", "fp32"), default="keep",
                   help="store floating-point weights in this precision (default: as they are)")
    s.add_argument("output", help="destination .safetensors file")
    s.add_argument("--options", type=Path, default=None, metavar="JSON",
                   help="JSON file of OpenAI create_model_and_diffusion options, for a .pt that is not an official size")
    s.set_defaults(func=_cmd_convert)

    from .train_config import TRAIN_PRESETS

    s = sub.add_parser("train", help="train or fine-tune a model (base, upsampler, inpainting, noised CLIP, classifier)",
                       description="Train with a preset or a config.json, then key=value overrides, e.g. "
                                   "glide train base data=folder:imgs max_steps=5000 lr=3e-4 model.unet.model_channels=96")
    s.add_argument("config", help=f"preset ({', '.join(TRAIN_PRESETS)}) or a config.json from an earlier run")
    s.add_argument("overrides", nargs="*", help="key=value settings (dotted for nested: model.unet.dropout=0)")
    s.add_argument("--resume", action="store_true", help="continue exactly from the latest checkpoint in out_dir")
    s.add_argument("--dry-run", action="store_true", help="print the resolved config and the model size, then stop")
    s.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop after this many minutes of training with a checkpoint (continue it with --resume)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (under torchrun: one GPU per process)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("filter", help="filter a dataset (caption blocklist, classifier) into a JSONL manifest",
                       description="Drops samples before training, as GLIDE filtered its data, and reports what was dropped and why.")
    s.add_argument("data", help="dataset spec: folder:PATH, manifest:FILE, emoji, mnist, ...")
    s.add_argument("--out", type=Path, required=True, help="filtered manifest to write (.jsonl)")
    s.add_argument("--blocklist", nargs="+", default=None, help="words/phrases to block, or a file with one per line")
    s.add_argument("--classifier", default=None, help="glidekit noisy classifier checkpoint (.safetensors)")
    s.add_argument("--unwanted-class", type=int, default=None, help="class index whose images the classifier filter drops")
    s.add_argument("--threshold", type=float, default=0.5, help="drop when p(unwanted class) >= this (default 0.5)")
    s.add_argument("--image-size", type=int, default=64, help="image size the dataset is read at (default 64)")
    s.add_argument("--batch-size", type=int, default=64)
    s.set_defaults(func=_cmd_filter)

    s = sub.add_parser("eval", help="FID, KID, precision/recall (standard Inception features), CLIP score and the shapes "
                                     "scorer for a folder of generated images",
                       description="Distribution metrics between REAL and FAKE; caption metrics (clip_score, shapes) "
                                   "score FAKE's PNGs against the prompts in their metadata.")
    s.add_argument("real", help="folder of reference images, or a dataset spec (emoji, shapes, mnist:test, folder:PATH) "
                                "read at the generated images' size")
    s.add_argument("fake", type=Path, help="folder of generated images")
    s.add_argument("--metrics", default="fid,kid,precision_recall",
                   help="comma-separated: fid, kid, precision_recall, clip_score (needs --clip), shapes")
    s.add_argument("--clip", default=None, help="glidekit-trained noised CLIP for clip_score (bundled name or checkpoint stem)")
    s.add_argument("--real-n", type=int, default=None, help="a dataset as REAL: use its first N images (default all)")
    s.add_argument("--batch-size", type=int, default=50, help="feature-network batch size")
    s.add_argument("--kid-subsets", type=int, default=100)
    s.add_argument("--kid-subset-size", type=int, default=1000)
    s.add_argument("--k", type=int, default=3, help="neighbours for precision/recall manifolds")
    s.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_eval)

    s = sub.add_parser("sweep", help="sample a prompt set over samplers and guidance scales; score each point into a CSV",
                       description="Sample the same prompts (prompt i with seed SEED+i) at every sampler x guidance "
                                   "point; score shapes prompts with the shapes scorer and, with --reference, FID/KID. "
                                   "Re-running with the same --csv skips the points already in it (a CSV of another "
                                   "model is refused).")
    s.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or checkpoint path (default: {DEFAULT_MODEL})")
    s.add_argument("--prompts", default="shapes:500", help="shapes:N[:SEED] drawn from the grammar, or a text file with one "
                                                          "prompt per line (default: shapes:500)")
    s.add_argument("--sampler", action="append", metavar="NAME:STEPS",
                   help="repeatable, e.g. --sampler dpm++2m:20 --sampler ancestral:250 (default: dpm++2m:20)")
    s.add_argument("--guidance", default="0,1,3,5,8", help="comma-separated classifier-free guidance scales (default 0,1,3,5,8)")
    s.add_argument("--clip-guidance", default=None, metavar="SCALES",
                   help="comma-separated CLIP guidance scales, swept beside the classifier-free ones (classifier-free "
                        "guidance off at these points, as GLIDE's CLIP guidance); needs --clip")
    s.add_argument("--clip", default=None, help="noised CLIP that CLIP-guidance points follow: a bundled CLIP (shapes-clip), "
                                                "'clip' (OpenAI's) or a training checkpoint stem/file")
    s.add_argument("--score-clip", default=None,
                   help="noised CLIP that measures the CLIP score column (a glidekit-trained CLIP at t=0, not OpenAI's); "
                        "use a different one from --clip, which its own guidance would flatter")
    s.add_argument("--seed", type=int, default=1000, help="seed of prompt 0 (default 1000)")
    s.add_argument("--batch", type=int, default=50, help="images per model call (default 50)")
    s.add_argument("--reference", type=Path, default=None, help="folder of real images: adds FID and KID columns")
    s.add_argument("--csv", type=Path, default=Path("sweep.csv"), help="results, one row per point (default sweep.csv)")
    s.add_argument("--plot", type=Path, default=None,
                   help="also plot accuracy (or FID) against guidance to this PNG; with several step counts also "
                        "NAME-steps.png (quality against steps per sampler), with --reference NAME-tradeoff.png "
                        "(precision against recall, one point per guidance scale)")
    s.add_argument("--images", type=Path, default=None, help="keep a grid of each point's first 64 images in this folder")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    s.add_argument("--quiet", action="store_true", help="no per-batch progress")
    s.set_defaults(func=_cmd_sweep)

    s = sub.add_parser("score", help="score generated shapes images (prompts from their PNG metadata) with the shapes scorer")
    s.add_argument("folder", type=Path, help="folder of PNGs written by glide sample")
    s.add_argument("--out", type=Path, default=None, help="also write the summary as JSON")
    s.set_defaults(func=_cmd_score)

    _add_serve_command(sub)

    s = sub.add_parser("demo", help="generate sample grids and inpainting edits with the bundled models (offline)")
    s.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--speed", action="store_true",
                   help="instead: build the official-size base model, check its size, time one guided step")
    s.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: stable on shared cores)")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `glide train` takes key=value overrides anywhere on the line, also after its options
        if getattr(args, "command", None) == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except GlidekitError as e:
        print(f"glide: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glide: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
