"""The web page behind `glide serve`: text-to-image (optionally upsampled), inpainting with a brush,
outpainting and re-noise editing in a gradio app (`pip install 'glidekit[web]'`).

Two layers, like the CLI: `WebServer` is plain Python (models, limits, the library calls, PNGs
with their generation records) and raises `GlidekitError` for anything the user should fix;
`build_app` lays out the page and turns those errors into messages in it (`gr.Error`).

Safe by default (docs/web.md): binds to 127.0.0.1; limits on steps, batch, prompt length, upload
bytes, image sides and outpainting size, checked on the server whatever the page sent; one
generation at a time per model behind gradio's visible queue; models are only those the server
was started with or knows (a request names one by its label, never by a path); analytics,
telemetry, share links, monitoring and run history are off.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import GlidekitError

SERVED_KINDS = ("base", "base-inpaint", "upsample")
# which model kinds each tab can use (inpaint/outpaint also work with a plain base model); "upsample"
# is the text-to-image tab's second stage
TAB_KINDS = {"sample": ("base",), "inpaint": ("base", "base-inpaint"), "outpaint": ("base", "base-inpaint"),
             "edit": ("base",), "upsample": ("upsample",)}
NO_UPSAMPLER = "none"
MAX_BACK_PROJECTION = 4
DIRECTIONS = ("left", "right", "top", "bottom")
KEEP_OUTPUTS_S = 3600  # generated PNGs stay downloadable this long


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the page's sliders stop at these and the server checks them."""

    max_steps: int = 250
    max_batch: int = 8
    max_upload_mb: float = 10.0
    max_side: int = 2048
    max_extend: int = 256
    max_prompt_chars: int = 1000
    queue_size: int = 16

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise GlidekitError(f"--{f.name.replace('_', '-')} must be > 0, got {value}")


def _whole(value, name: str, lo: int, hi: int, hint: str = "") -> int:
    """An integer in [lo, hi] from a page value (sliders and numbers may arrive as floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        raise GlidekitError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise GlidekitError(f"{name} must be between {lo} and {hi}{hint}, got {value}")
    return value


@dataclass(frozen=True)
class ModelEntry:
    """A model the page offers: `label` is what the page shows and sends back; `source` (a name or
    the path given on the command line) never comes from a request."""

    label: str
    source: str
    kind: str
    origin: str  # "command line", "bundled" or "downloaded"


def catalog(models: Sequence[str] = (), cache_dir: str | os.PathLike | None = None) -> list[ModelEntry]:
    """The models to serve: those given with --model first (names or paths, kind read later), then
    the bundled models that are installed (the default one first) and the official base models
    and upsampler that are downloaded."""
    from .bundled import BUNDLED, DEFAULT_MODEL, list_bundled
    from .config import PRESETS
    from .download import list_models

    entries: dict[str, ModelEntry] = {}
    for source in dict.fromkeys(models):
        if source in BUNDLED or source in PRESETS:
            label = source
        else:
            label = Path(source).name or source
            n = 2
            while label in entries:  # two files of the same name in different folders
                label, n = f"{Path(source).name} ({n})", n + 1
        entries.setdefault(label, ModelEntry(label, source, "", "command line"))
    for row in sorted(list_bundled(), key=lambda r: r["name"] != DEFAULT_MODEL):
        if row["present"] and row["kind"] in SERVED_KINDS:
            entries.setdefault(row["name"], ModelEntry(row["name"], row["name"], row["kind"], "bundled"))
    for row in list_models(cache_dir):
        kind = PRESETS[row["name"]].kind
        if row["path"] and kind in SERVED_KINDS:
            entries.setdefault(row["name"], ModelEntry(row["name"], row["name"], kind, "downloaded"))
    return list(entries.values())


def _kind(model) -> str:
    cfg = model.unet
    return ("upsample" if cfg.super_res else "base") + ("-inpaint" if cfg.inpaint else "")


class WebServer:
    """Models, limits and the generation calls behind the page; no gradio in here.

    Models given on the command line are loaded (and so checked) at start; the others on first
    use. A model runs one generation at a time (a lock per model); images are written as PNGs
    with the same generation record as `glide sample` into a private temporary folder.
    """

    def __init__(self, models: Sequence[str] = (), *, device="auto", dtype="auto", limits: Limits | None = None,
                 cache_dir=None, out_dir: str | os.PathLike | None = None):
        from . import runtime

        self.limits = limits or Limits()
        self.device = runtime.choose_device(device)
        self.dtype = runtime.choose_dtype(self.device, dtype)
        self._loaded: dict[str, object] = {}
        self._sha: dict[str, str | None] = {}
        entries = []
        for entry in catalog(models, cache_dir):
            if entry.origin == "command line":
                model = self._load(entry.source)
                if _kind(model) not in SERVED_KINDS:
                    raise GlidekitError(f"{entry.source}: the page serves {', '.join(SERVED_KINDS[:-1])} and {SERVED_KINDS[-1]} models, "
                                        f"not {_kind(model)} models")
                entry = dataclasses.replace(entry, kind=_kind(model))
                self._loaded[entry.label] = model
            entries.append(entry)
        if not entries:
            raise GlidekitError("no model to serve: the bundled models are not installed and no official base model "
                                "is downloaded; pass --model PATH (or run: glide download base)")
        self.models = {e.label: e for e in entries}
        self._locks = {label: threading.Lock() for label in self.models}
        self.out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="glidekit-web-"))
        self._own_out_dir = out_dir is None

    # ---------------------------------------------------------------------------------------- models

    def labels(self, tab: str) -> list[str]:
        """Labels of the models the tab can use, the server's first (default) model first."""
        return [label for label, e in self.models.items() if e.kind in TAB_KINDS[tab]]

    def _load(self, source: str):
        from .pipelines import GlideModel

        return GlideModel.load(source, device=self.device, dtype=self.dtype)

    def _entry(self, label, tab: str) -> ModelEntry:
        if label not in self.models:
            raise GlidekitError(f"no model {label!r} on this server; choose one of {', '.join(self.models)}")
        entry = self.models[label]
        if entry.kind not in TAB_KINDS[tab]:
            what = "an upsampler must be an upsample model" if tab == "upsample" else \
                f"this tab takes {' or '.join(TAB_KINDS[tab])} models"
            raise GlidekitError(f"{label} is a {entry.kind} model; {what}")
        return entry

    def _model_sha(self, entry: ModelEntry) -> str | None:
        """Short content hash of the model file (`download.file_identity`), recorded in the PNGs (computed once)."""
        if entry.label not in self._sha:
            from .io import model_identity

            self._sha[entry.label] = model_identity(entry.source)
        return self._sha[entry.label]

    # ---------------------------------------------------------------------------------------- checks

    def _spec(self, sampler: str, steps):
        from .pipelines import SAMPLERS, SamplerSpec

        if sampler not in SAMPLERS:
            raise GlidekitError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
        return SamplerSpec(sampler, _whole(steps, "steps", 1, self.limits.max_steps, " on this server"))

    def _prompt(self, prompt) -> str:
        prompt = "" if prompt is None else str(prompt)
        if len(prompt) > self.limits.max_prompt_chars:
            raise GlidekitError(f"the prompt has {len(prompt)} characters; this server takes at most "
                                f"{self.limits.max_prompt_chars}")
        return prompt

    def _image(self, image, what: str = "image"):
        """The upload as RGB (transparent areas on white), within the size limit."""
        from .images import flatten_alpha

        if image is None:
            raise GlidekitError(f"upload an {what} first")
        w, h = image.size
        if max(w, h) > self.limits.max_side:
            raise GlidekitError(f"the {what} is {w}x{h} px; this server accepts images up to "
                                f"{self.limits.max_side} px on a side")
        return flatten_alpha(image)

    @staticmethod
    def _guidance(value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise GlidekitError(f"guidance must be a number >= 0, got {value!r}")
        return float(value)

    def _seed(self, seed) -> int:
        return _whole(seed, "seed", 0, 2**32 - 1)

    def _batch(self, batch) -> int:
        return _whole(batch, "batch", 1, self.limits.max_batch, " on this server")

    # ---------------------------------------------------------------------------------------- running

    def _run(self, tab: str, label, fn: Callable, on_status: Callable[[str], None] | None, upsampler: ModelEntry | None = None):
        """Run `fn(model)` (`fn(model, upsampler)` with an upsampler entry) with the models to
        itself, in the server's inference precision. Locks are taken base first: an upsampler is
        never a base, so two requests cannot wait on each other."""
        from contextlib import ExitStack

        from . import runtime

        entry = self._entry(label, tab)
        with ExitStack() as held:
            models = [held.enter_context(self._hold(e, on_status)) for e in (entry, upsampler) if e is not None]
            with runtime.inference_context(self.device, self.dtype):
                return entry, fn(*models)

    @contextmanager
    def _hold(self, entry: ModelEntry, on_status: Callable[[str], None] | None):
        """The entry's model, loaded on first use, with its lock held (waiting, and saying so, if taken)."""
        lock = self._locks[entry.label]
        if not lock.acquire(blocking=False):
            if on_status:
                on_status(f"waiting: another generation is using {entry.label}")
            lock.acquire()
        try:
            if entry.label not in self._loaded:
                if on_status:
                    on_status(f"loading {entry.label}")
                self._loaded[entry.label] = self._load(entry.source)
            yield self._loaded[entry.label]
        finally:
            lock.release()

    def _request_dir(self) -> Path:
        """A fresh folder for one request's files; folders older than KEEP_OUTPUTS_S are removed."""
        now = time.time()
        if self.out_dir.is_dir():
            for old in self.out_dir.iterdir():
                try:
                    if old.is_dir() and now - old.stat().st_mtime > KEEP_OUTPUTS_S:
                        shutil.rmtree(old, ignore_errors=True)
                except OSError:
                    pass
        folder = self.out_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def _save(self, command: str, entry: ModelEntry, result, spec, guidance: float, **extra) -> list[Path]:
        """The result's images as PNGs carrying the generation record `glide sample` writes (so
        `glide sample --from-png` re-makes a text-to-image one)."""
        from .cli import _common_record, _write_outputs

        args = argparse.Namespace(out=self._request_dir(), keep_stages=False, grid=False, model=entry.label,
                                  guidance=guidance, sampler=spec.name, steps=spec.steps, respacing=None, eta=None)
        common = _common_record(args, command, sampler=dataclasses.asdict(spec), model_sha256=self._model_sha(entry),
                                source="glide serve", **extra)
        return _write_outputs(args, result, result.records, common)

    def close(self) -> None:
        if self._own_out_dir:
            shutil.rmtree(self.out_dir, ignore_errors=True)

    # ---------------------------------------------------------------------------------------- the tabs

    def text_to_image(self, model, prompt, sampler="dpm++2m", steps=20, guidance=3.0, seed=0, batch=1,
                      upsampler=NO_UPSAMPLER, back_projection=0, *, on_step=None, on_status=None) -> list[Path]:
        """Text to image; with an upsampler label, the base samples brought to its size as `glide
        sample --upsampler` does (its fast sampler, GLIDE's noise scale, `back_projection`
        iterations of `images.back_project`), recorded so that `--from-png` re-makes them."""
        from .pipelines import FAST_UPSAMPLE, UPSAMPLE_TEMP, text_to_image

        prompt, spec, guidance = self._prompt(prompt), self._spec(sampler, steps), self._guidance(guidance)
        seed, batch = self._seed(seed), self._batch(batch)
        up = None if upsampler in (None, NO_UPSAMPLER) else self._entry(upsampler, "upsample")
        back_projection = _whole(back_projection, "back-projection iterations", 0, MAX_BACK_PROJECTION) if up else 0

        def run(m, u=None):
            return text_to_image(m, [prompt] * batch, seed=seed, guidance_scale=guidance, sampler=spec, upsampler=u,
                                 upsample_sampler=FAST_UPSAMPLE, upsample_temp=UPSAMPLE_TEMP,
                                 back_projection=back_projection, on_step=on_step)

        entry, result = self._run("sample", model, run, on_status, upsampler=up)
        if up is None:
            return self._save("sample", entry, result, spec, guidance, upsampler=NO_UPSAMPLER)
        return self._save("sample", entry, result, spec, guidance, upsampler=up.label,
                          upsampler_sha256=self._model_sha(up), up_sampler=dataclasses.asdict(FAST_UPSAMPLE),
                          upsample_temp=UPSAMPLE_TEMP, back_project=back_projection)

    def inpaint(self, model, image, painted: Sequence, prompt, sampler="dpm++2m", steps=20, guidance=5.0, seed=0,
                batch=1, *, on_step=None, on_status=None) -> tuple[list[Path], Path]:
        """Repaint where `painted` (the brush layers: RGBA, any opaque pixel counts) covers `image`.
        Returns the PNGs and a picture of the repainted region at the model's resolution."""
        import numpy as np
        from PIL import Image

        from .images import mask_from_image, pil_to_tensor, resize_mask, save_png
        from .pipelines import inpaint

        image = self._image(image)
        prompt, spec, guidance = self._prompt(prompt), self._spec(sampler, steps), self._guidance(guidance)
        seed, batch = self._seed(seed), self._batch(batch)
        alpha = Image.new("L", image.size, 0)
        for layer in painted or ():
            if layer is None:
                continue
            if layer.size != image.size:
                raise GlidekitError(f"the painted layer is {layer.size[0]}x{layer.size[1]} but the image is "
                                    f"{image.size[0]}x{image.size[1]}")
            alpha = Image.fromarray(np.maximum(np.asarray(alpha), np.asarray(layer.convert("RGBA").getchannel("A"))))
        if alpha.getbbox() is None:
            raise GlidekitError("paint the region to change with the brush first")
        keep_full = mask_from_image(alpha, "white-repaints", image.size, name="painted region", threshold=1)

        def run(m):
            size = m.unet.image_size
            keep = resize_mask(keep_full, size)
            return keep, inpaint(m, pil_to_tensor(image, size), keep, [prompt] * batch, seed=seed,
                                 guidance_scale=guidance, sampler=spec, on_step=on_step)

        entry, (keep, result) = self._run("inpaint", model, run, on_status)
        paths = self._save("inpaint", entry, result, spec, guidance, image="upload", mask="painted",
                           mask_mode="white-repaints", upsampler="none")
        mask_png = paths[0].parent / "repainted-region.png"
        save_png(Image.fromarray(((1 - keep[0, 0].cpu()) * 255).round().byte().numpy()), mask_png)  # white = repainted
        return paths, mask_png

    def outpaint(self, model, image, prompt, directions: Sequence[str] = ("right",), pixels=16, sampler="dpm++2m",
                 steps=20, guidance=5.0, seed=0, *, on_step=None, on_status=None) -> list[Path]:
        from .images import pil_to_tensor
        from .pipelines import outpaint

        image = self._image(image)
        prompt, spec, guidance, seed = self._prompt(prompt), self._spec(sampler, steps), self._guidance(guidance), self._seed(seed)
        pixels = _whole(pixels, "pixels to add", 1, self.limits.max_extend, " on this server")
        directions = list(directions or ())
        if not directions or any(d not in DIRECTIONS for d in directions):
            raise GlidekitError(f"tick at least one direction to extend ({', '.join(DIRECTIONS)})")
        sides = {d: pixels if d in directions else 0 for d in DIRECTIONS}
        entry, result = self._run("outpaint", model, lambda m: outpaint(
            m, pil_to_tensor(image, m.unet.image_size), prompt, **sides, seed=seed, guidance_scale=guidance,
            sampler=spec, on_step=on_step), on_status)
        return self._save("outpaint", entry, result, spec, guidance, image="upload")

    def edit(self, model, image, prompt, strength=0.6, sampler="dpm++2m", steps=20, guidance=3.0, seed=0, batch=1, *,
             on_step=None, on_status=None) -> list[Path]:
        from .images import pil_to_tensor
        from .pipelines import edit

        image = self._image(image)
        prompt, spec, guidance = self._prompt(prompt), self._spec(sampler, steps), self._guidance(guidance)
        seed, batch = self._seed(seed), self._batch(batch)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise GlidekitError(f"strength must be in (0, 1], got {strength!r}")
        entry, result = self._run("edit", model, lambda m: edit(
            m, pil_to_tensor(image, m.unet.image_size), [prompt] * batch, strength=float(strength), seed=seed,
            guidance_scale=guidance, sampler=spec, on_step=on_step), on_status)
        return self._save("edit", entry, result, spec, guidance, image="upload")


# --------------------------------------------------------------------------------------------
# the page


def telemetry_off() -> None:
    """Before gradio is imported: no analytics, no Hugging Face telemetry, no version check."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"


def _import_gradio():
    telemetry_off()
    try:
        import gradio as gr
    except ImportError:
        raise GlidekitError("the web page needs gradio: pip install 'glidekit[web]'") from None
    return gr


# small images shown big: sharp pixels
CSS = ("[id$='-gallery'] img, [id$='-image'] img, #inpaint-region img { image-rendering: pixelated; } "
       "#inpaint-region img { width: 100%; height: 100%; object-fit: contain; }")
INTRO = """# glidekit
Text-to-image, inpainting, outpainting and editing with GLIDE models, on this machine.
Images come out at the model's resolution (text-to-image: at the upsampler's, if one is chosen); every PNG carries its prompt, seed and settings
(`glide sample --from-png FILE` re-makes a text-to-image one). One generation runs at a time per
model; further requests wait in the queue shown on the result."""


def app_theme(gr):
    """gradio's default look with the system's fonts (no web fonts fetched)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_app(server: WebServer):
    """The gradio Blocks for `server` (launch it with `launch`)."""
    gr = _import_gradio()
    from .pipelines import FAST_BASE, SAMPLERS

    lim = server.limits
    origins = ", ".join(f"**{e.label}** ({e.origin}, {e.kind})" for e in server.models.values())

    def call(method, *args, progress=None):
        def on_step(done, total):
            progress((done, total), desc="sampling", unit="steps")

        def on_status(text):
            progress(0, desc=text)

        try:
            # (a gr.Progress has a length, so `if progress` would be false)
            tracked = progress is not None
            return method(*args, on_step=on_step if tracked else None, on_status=on_status if tracked else None)
        except GlidekitError as e:
            raise gr.Error(str(e), print_exception=False) from None

    def gallery(paths):
        return [(str(p), p.name) for p in paths], [str(p) for p in paths]

    def settings(tab: str, guidance: float, batch: bool = True):
        """Model and sampler controls shared by the tabs."""
        labels = server.labels(tab)
        model = gr.Dropdown(labels, value=labels[0] if labels else None, label="model", elem_id=f"{tab}-model")
        with gr.Accordion("sampling", open=True):
            sampler = gr.Dropdown(list(SAMPLERS), value=FAST_BASE.name, label="sampler", elem_id=f"{tab}-sampler",
                                  info="ancestral and ddim are OpenAI's exact loops")
            steps = gr.Slider(1, lim.max_steps, value=FAST_BASE.steps, step=1, label="steps", elem_id=f"{tab}-steps")
            guidance = gr.Slider(0, 20, value=guidance, step=0.5, label="guidance (classifier-free; 1 = off)",
                                 elem_id=f"{tab}-guidance")
            with gr.Row():
                seed = gr.Number(0, precision=0, minimum=0, maximum=2**32 - 1, label="seed (image i uses seed + i)",
                                 elem_id=f"{tab}-seed")
                count = gr.Slider(1, lim.max_batch, value=1, step=1, label="batch", elem_id=f"{tab}-batch",
                                  visible=batch)
        return model, sampler, steps, guidance, seed, count

    def outputs(tab: str):
        images = gr.Gallery(label="images", columns=4, height="auto", format="png", elem_id=f"{tab}-gallery",
                            buttons=["download", "fullscreen"])
        files = gr.File(label="PNGs with their settings", file_count="multiple", interactive=False,
                        elem_id=f"{tab}-files")
        return images, files

    def no_model(tab: str):
        if not server.labels(tab):
            gr.Markdown(f"No model on this server can do this: it needs a {' or '.join(TAB_KINDS[tab])} model.")

    def prompt_box(tab: str, label: str = "prompt", **kw):
        return gr.Textbox(label=label, lines=2, max_length=lim.max_prompt_chars, elem_id=f"{tab}-prompt", **kw)

    def image_box(tab: str, label: str):
        return gr.Image(label=label, image_mode="RGB", elem_id=f"{tab}-image", height=256, **upload)

    def run_button(tab: str, text: str):
        return gr.Button(text, variant="primary", elem_id=f"{tab}-run", interactive=bool(server.labels(tab)))

    upload = dict(type="pil", sources=["upload", "clipboard"], format="png")
    limits_note = (f"Limits on this server: {lim.max_steps} steps, batch {lim.max_batch}, uploads "
                   f"{lim.max_upload_mb:g} MB and {lim.max_side} px a side, outpainting {lim.max_extend} px.")
    with gr.Blocks(title="glidekit", analytics_enabled=False, delete_cache=(600, KEEP_OUTPUTS_S)) as app:
        gr.Markdown(INTRO + f"\n\nModels: {origins}. {limits_note}")
        queue = dict(concurrency_id="generate", concurrency_limit=len(server.models), show_progress="full")

        with gr.Tab("Text to image", id="sample"):
            no_model("sample")
            with gr.Row():
                with gr.Column():
                    prompt = prompt_box("sample", placeholder="a red circle above a blue square",
                                        info="'A AND B' composes concepts A and B (Composable Diffusion)")
                    ctl = settings("sample", 3.0)
                    ups = server.labels("upsample")
                    with gr.Row(visible=bool(ups)):
                        upsampler = gr.Dropdown([NO_UPSAMPLER, *ups], value=NO_UPSAMPLER, label="upsample with",
                                                elem_id="sample-upsampler", info="GLIDE's second stage, 64 -> 256 px")
                        back = gr.Slider(0, MAX_BACK_PROJECTION, value=0, step=1, elem_id="sample-back-projection",
                                         label="back-projection iterations", interactive=False,
                                         info="pull the upsampled image back to the base image (0 = GLIDE's output)")
                    # back-projection acts on an upsampler's output: settable only when one is chosen
                    upsampler.change(lambda u: gr.Slider(interactive=u != NO_UPSAMPLER), upsampler, back, queue=False)
                    go = run_button("sample", "Generate")
                with gr.Column():
                    gal, files = outputs("sample")

            def run_sample(model, prompt, sampler, steps, guidance, seed, batch, upsampler, back,
                           progress=gr.Progress()):
                return gallery(call(server.text_to_image, model, prompt, sampler, steps, guidance, seed, batch,
                                    upsampler, back, progress=progress))

            ev = dict(fn=run_sample, inputs=[ctl[0], prompt, *ctl[1:], upsampler, back], outputs=[gal, files], **queue)
            go.click(**ev, api_name="text_to_image")
            prompt.submit(**ev)

        with gr.Tab("Inpaint", id="inpaint"):
            no_model("inpaint")
            with gr.Row():
                with gr.Column():
                    editor = gr.ImageEditor(label="image: upload, then paint the region to change", image_mode="RGBA",
                                            layers=False, transforms=[], eraser=gr.Eraser(default_size=6),
                                            brush=gr.Brush(colors=["#ff00ff"], default_size=6, color_mode="fixed"),
                                            elem_id="inpaint-editor", **upload)
                    prompt = prompt_box("inpaint", "prompt for the painted region")
                    ctl = settings("inpaint", 5.0)
                    go = run_button("inpaint", "Inpaint")
                with gr.Column():
                    gal, files = outputs("inpaint")
                    region = gr.Image(label="repainted region at the model's resolution (white)", type="filepath",
                                      interactive=False, format="png", elem_id="inpaint-region", height=200,
                                      buttons=["download", "fullscreen"])

            def run_inpaint(model, edited, prompt, sampler, steps, guidance, seed, batch, progress=gr.Progress()):
                edited = edited or {}
                paths, mask = call(server.inpaint, model, edited.get("background"), edited.get("layers") or [],
                                   prompt, sampler, steps, guidance, seed, batch, progress=progress)
                return *gallery(paths), str(mask)

            go.click(run_inpaint, [ctl[0], editor, prompt, *ctl[1:]], [gal, files, region], api_name="inpaint", **queue)

        with gr.Tab("Outpaint", id="outpaint"):
            no_model("outpaint")
            with gr.Row():
                with gr.Column():
                    image, prompt = image_box("outpaint", "image to extend"), prompt_box("outpaint")
                    with gr.Row():
                        directions = gr.CheckboxGroup(list(DIRECTIONS), value=["right"], label="extend to the",
                                                      elem_id="outpaint-directions")
                        pixels = gr.Slider(1, lim.max_extend, value=16, step=1, elem_id="outpaint-pixels",
                                           label="pixels to add (at the model's resolution)")
                    ctl = settings("outpaint", 5.0, batch=False)
                    go = run_button("outpaint", "Outpaint")
                with gr.Column():
                    gal, files = outputs("outpaint")

            def run_outpaint(model, image, prompt, directions, pixels, sampler, steps, guidance, seed, _batch,
                             progress=gr.Progress()):
                return gallery(call(server.outpaint, model, image, prompt, directions, pixels, sampler, steps,
                                    guidance, seed, progress=progress))

            go.click(run_outpaint, [ctl[0], image, prompt, directions, pixels, *ctl[1:]], [gal, files],
                     api_name="outpaint", **queue)

        with gr.Tab("Edit", id="edit"):
            no_model("edit")
            with gr.Row():
                with gr.Column():
                    image, prompt = image_box("edit", "image to redo"), prompt_box("edit", "new prompt")
                    strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, elem_id="edit-strength",
                                         label="strength: how far back into the noise (1 ignores the image)")
                    ctl = settings("edit", 3.0)
                    go = run_button("edit", "Edit")
                with gr.Column():
                    gal, files = outputs("edit")

            def run_edit(model, image, prompt, strength, sampler, steps, guidance, seed, batch, progress=gr.Progress()):
                return gallery(call(server.edit, model, image, prompt, strength, sampler, steps, guidance, seed, batch,
                                    progress=progress))

            go.click(run_edit, [ctl[0], image, prompt, strength, *ctl[1:]], [gal, files], api_name="edit", **queue)

    app.queue(max_size=lim.queue_size, default_concurrency_limit=1)
    return app


def launch(server: WebServer, host: str = "127.0.0.1", port: int = 7860):
    """Start serving the page in the background; returns the gradio app (`app.block_thread()`
    waits until Ctrl+C, `app.close()` stops it)."""
    from PIL import Image

    gr = _import_gradio()
    app = build_app(server)
    # gradio decodes uploads before the handlers see them (and check the sides): refuse pixel
    # bombs at decode time (PIL raises above twice this, well past any image the sides allow)
    Image.MAX_IMAGE_PIXELS = 4 * server.limits.max_side**2
    try:
        app.launch(server_name=host, server_port=port, share=False, quiet=True, prevent_thread_lock=True,
                   show_error=False, max_file_size=int(server.limits.max_upload_mb * 2**20), enable_monitoring=False,
                   run_history=False, mcp_server=False, ssr_mode=False, pwa=False, footer_links=["api", "settings"],
                   theme=app_theme(gr), css=CSS)
    except OSError as e:
        raise GlidekitError(f"cannot serve on {host}:{port}: {e}") from None
    return app
