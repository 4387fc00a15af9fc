"""`glide demo`: prompts to images with the bundled models, offline, in well under a minute.

`run_demo` samples a grid of `shapes` prompts and one of emoji prompts with the models that ship
inside glidekit (`glidekit.bundled`), brings the first emoji up to 256 px with the emoji upsampler,
scores the shapes grid with the independent shapes scorer,
and makes two inpainting edits (a `shapes` scene with the base model's re-pasting, an emoji with
the model trained for inpainting), writing everything (PNG with generation metadata) to a folder.

`run_speed_demo` (`glide demo --speed`) builds GLIDE's 64 px base at its official size (random weights: OpenAI's checkpoints are not
bundled), checks its parameter count against the released model, and times one classifier-free
guided denoising step (batch 2) in float32 eager mode and on glidekit's default inference path
(`runtime.prepare_for_inference` + cached text embeddings; bf16 autocast only where the CPU has
bf16 instructions, since without them bf16 is emulated and far slower).
"""

from __future__ import annotations

import statistics
import time

import torch

from . import runtime
from .config import get_preset
from .models.unet import GlideUNet
from .sampling.guidance import classifier_free
from .tokenizers import glide_tokenizer

OFFICIAL_PARAMS = {"base": 385_030_726, "upsample": 398_361_286}


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_speed_demo(threads: int = 1, repeats: int = 2, prompt: str = "an oil painting of a corgi") -> dict:
    """Print and return sizes and per-step timings of the official base model."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    result: dict = {}
    for name in ("base", "upsample"):
        with torch.device("meta"):
            n = sum(p.numel() for p in GlideUNet(get_preset(name).config.unet).parameters())
        ok = "matches" if n == OFFICIAL_PARAMS[name] else "DIFFERS FROM"
        print(f"{name:<9} {n:>12,} parameters ({ok} OpenAI's released {name}.pt: {OFFICIAL_PARAMS[name]:,})")
        result[f"{name}_params"] = n

    cfg = get_preset("base").config
    print("building the official base model (random weights)...", flush=True)
    model = GlideUNet(cfg.unet).eval()
    tok = glide_tokenizer()
    tokens, mask = tok.encode_batch([prompt, ""], cfg.unet.text.text_ctx)
    print(f"prompt {prompt!r} -> {int(mask[0].sum())} GLIDE tokens: {tok.encode(prompt)}")
    guided = classifier_free(model, 3.0)
    x = torch.randn(2, 3, 64, 64)
    t = torch.full((2,), 999)

    def step() -> None:
        with torch.no_grad():
            guided(x, t, tokens=tokens, mask=mask)

    fp32 = _time(step, repeats)
    print(f"one classifier-free guided base step (batch 2, 64 px, {threads} thread, {torch.backends.cpu.get_cpu_capability()}):")
    print(f"  float32 eager     {fp32:6.2f} s")
    result["fp32_step_s"] = fp32

    # glidekit's default inference path: runtime preparation + text encoded once per prompt
    device = torch.device("cpu")
    dtype = runtime.choose_dtype(device, "auto")
    fast_model = runtime.prepare_for_inference(model, device, dtype)
    with torch.no_grad():
        emb = fast_model.encode_text(tokens, mask)
    xf = runtime.to_model_input(x, device)
    guided_fast = classifier_free(fast_model, 3.0)

    def step_default() -> None:
        with runtime.inference_context(device, dtype):
            guided_fast(xf, t, text_emb=emb)

    default = _time(step_default, repeats)
    print(f"  glidekit default  {default:6.2f} s  ({fp32 / default:.1f}x; {str(dtype).replace('torch.', '')}, see BENCHMARKS.md)")
    result["default_step_s"] = default
    print(f"  OpenAI's 100-step base sampling would take ~{100 * fp32 / 60:.1f} min in float32 here")
    return result


SHAPES_PROMPTS = (
    "a large red circle in the center", "a small blue square on the left", "a large yellow triangle at the top",
    "a small white circle on the right", "a red circle above a blue square", "a green triangle to the left of a purple circle",
    "a cyan square below a yellow circle", "a white triangle to the right of a red square",
)
EMOJI_PROMPTS = ("red heart", "grinning face", "dog face", "pizza", "rocket", "sun", "strawberry", "snowman")
EMOJI_UPSAMPLED = 2  # of those, brought up to 256 px by `emoji-upsample` (about 3 s each here)
EMOJI_BACK_PROJECTION = 1  # iterations on the upsampled emoji: removes the upsampler's tint (its card)
# the emoji edit: this training emoji's right half drawn again by `emoji-64-inpaint` from each prompt
EMOJI_EDIT_SOURCE = "red heart"
EMOJI_EDIT_PROMPTS = ("red heart", "blue heart", "yellow heart")


def _save_grid(images: torch.Tensor, prompts, path, scale: int, record: dict, ncols: int = 4):
    """A grid PNG whose record names the bundled model by name and by file (`download.file_identity`, as
    `glide sample` records it)."""
    from PIL import Image

    from .images import make_grid, save_png, tensor_to_pils
    from .io import model_identity

    pils = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in tensor_to_pils(images)]
    meta = {**record, "model_sha256": model_identity(record["model"]), "prompts": list(prompts)}
    return save_png(make_grid(pils, ncols=min(ncols, len(pils))), path, metadata=meta)


def _right_half(image: torch.Tensor) -> torch.Tensor:
    """The keep-mask that repaints the right half of `image` (N, 3, H, W)."""
    from .images import rect_mask

    h, w = image.shape[-2:]
    return rect_mask((w, h), (w // 2, 0, w, h))


def run_demo(out_dir: str = "outputs/demo", seed: int = 0, threads: int = 1) -> dict:
    """Sample the bundled models into `out_dir`; print where and how long; return a summary."""
    from pathlib import Path

    from .bundled import BUNDLED, DEFAULT_MODEL, bundled_path
    from .data.shapes import ShapesDataset
    from .eval.shapes_score import score_batch
    from .pipelines import FAST_BASE, FAST_UPSAMPLE, GlideModel, inpaint, text_to_image, upsample

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    dtype = runtime.choose_dtype(device, "auto")
    out = Path(out_dir)
    summary: dict = {"outputs": []}
    sampling = 0.0

    def load(name: str) -> GlideModel:
        bundled_path(name)  # a clear error if the file is missing
        return GlideModel.load(name, device=device, dtype=dtype)

    def timed(fn):
        nonlocal sampling
        start = time.perf_counter()
        with runtime.inference_context(device, dtype):
            result = fn()
        sampling += time.perf_counter() - start
        return result

    record = {"glidekit_demo": True, "sampler": FAST_BASE.describe(), "guidance": 3.0, "seed": seed}
    shapes = load(DEFAULT_MODEL)
    res = timed(lambda: text_to_image(shapes, SHAPES_PROMPTS, seed=seed, guidance_scale=3.0))
    path = _save_grid(res.images, SHAPES_PROMPTS, out / "shapes.png", 4, {**record, "model": DEFAULT_MODEL})
    acc = score_batch(res.images, SHAPES_PROMPTS)
    print(f"{DEFAULT_MODEL} ({BUNDLED[DEFAULT_MODEL].filename}): {len(SHAPES_PROMPTS)} prompts -> {path}")
    print(f"  shapes scorer on these 8: whole caption {acc['whole_caption']:.0%} "
          f"(one object {acc['one']['whole_caption']:.0%}, two objects {acc['two']['whole_caption']:.0%})")
    summary["outputs"].append(str(path))
    summary["shapes_accuracy"] = acc["whole_caption"]

    emoji = load("emoji-64")
    res = timed(lambda: text_to_image(emoji, EMOJI_PROMPTS, seed=seed, guidance_scale=3.0))
    path = _save_grid(res.images, EMOJI_PROMPTS, out / "emoji.png", 2, {**record, "model": "emoji-64"})
    print(f"emoji-64 ({BUNDLED['emoji-64'].filename}): {len(EMOJI_PROMPTS)} prompts -> {path}")
    summary["outputs"].append(str(path))
    if "emoji-upsample" in BUNDLED:  # the first samples brought up to 256 px by the emoji upsampler
        upsampler = load("emoji-upsample")
        n = EMOJI_UPSAMPLED
        big = timed(lambda: upsample(upsampler, res.images[:n], EMOJI_PROMPTS[:n], seeds=[seed + i for i in range(n)],
                                     back_projection=EMOJI_BACK_PROJECTION))
        path = _save_grid(big, EMOJI_PROMPTS[:n], out / "emoji_256.png", 1,
                          {**record, "model": "emoji-upsample", "upsampled": "emoji.png", "sampler": FAST_UPSAMPLE.describe(),
                           "guidance": None, "back_project": EMOJI_BACK_PROJECTION}, ncols=n)
        print(f"emoji-upsample ({BUNDLED['emoji-upsample'].filename}): the first {n} brought up to "
              f"{upsampler.unet.image_size} px -> {path}")
        summary["outputs"].append(str(path))

    # inpainting: keep the left half of a rendered scene, redraw the right half from a new prompt
    scenes = ShapesDataset(shapes.unet.image_size, length=1, seed=seed)
    image = scenes[0]["image"][None]
    keep = _right_half(image)
    prompt = "a red circle to the left of a blue square"
    res = timed(lambda: inpaint(shapes, image, keep, [prompt], seed=seed, guidance_scale=3.0))
    panel = torch.cat([image, image * keep + (1 - keep) * -0.5, res.images.cpu()])
    path = _save_grid(panel, [scenes[0]["caption"], "mask (grey = repaint)", prompt], out / "inpaint.png", 4,
                      {**record, "model": DEFAULT_MODEL, "edit": "inpaint right half"})
    print(f"inpainting (source | mask | '{prompt}') -> {path}")
    summary["outputs"].append(str(path))

    # the same kind of edit with a model trained for inpainting (GLIDE s.4.1): a training emoji's right half
    # cut away and drawn again from each prompt, the known half given to the model as an input
    from .data import build_dataset

    inpainter = load("emoji-64-inpaint")
    twemoji = build_dataset("emoji:no-skin-tones", inpainter.unet.image_size)
    image = twemoji[twemoji.captions.index(EMOJI_EDIT_SOURCE)]["image"][None]
    keep = _right_half(image)
    res = timed(lambda: inpaint(inpainter, image, keep, list(EMOJI_EDIT_PROMPTS), seed=seed, guidance_scale=5.0))
    panel = torch.cat([image, image * keep + (1 - keep) * -0.5, res.images.cpu()])
    path = _save_grid(panel, [EMOJI_EDIT_SOURCE, "mask (grey = repaint)", *EMOJI_EDIT_PROMPTS], out / "emoji_inpaint.png", 2,
                      {**record, "guidance": 5.0, "model": "emoji-64-inpaint", "edit": "inpaint right half"}, ncols=len(panel))
    print(f"emoji-64-inpaint: '{EMOJI_EDIT_SOURCE}' with its right half repainted as "
          f"{', '.join(repr(p) for p in EMOJI_EDIT_PROMPTS)} -> {path}")
    summary["outputs"].append(str(path))
    summary["sampling_s"] = sampling
    print(f"sampling took {sampling:.1f} s in all ({threads} thread, {str(dtype).replace('torch.', '')}, "
          f"{FAST_BASE.describe()} with guidance 3, 5 for the emoji edit); images in {out}/")
    return summary
