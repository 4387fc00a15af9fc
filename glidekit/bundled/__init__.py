"""Models trained with glidekit and shipped inside the package, so generation works offline.

Each is a glidekit safetensors file (config in the metadata, float16 weights) next to its model
card (`<file stem>.md`: data, recipe, steps, compute, measured quality, licence). Load them by
name anywhere a model is taken: `glide sample --model shapes-minilm`, `GlideModel.load("emoji-64")`.
A noised CLIP ships as two entries, `<name>-image` and `<name>-text`, with one card `<name>.md`,
and is named by `<name>` where a CLIP is taken (`glide sample --clip-guidance 3 --clip shapes-clip`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

BUNDLE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BundledModel:
    name: str
    filename: str
    kind: str
    description: str
    card_name: str = ""  # the model card's file when not `<file stem>.md` (a CLIP pair shares one)

    @property
    def path(self) -> Path:
        return BUNDLE_DIR / self.filename

    @property
    def card(self) -> Path:
        return BUNDLE_DIR / self.card_name if self.card_name else self.path.with_suffix(".md")


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel("shapes-layout", "shapes-32-layout.safetensors", "base",
                     "32 px text-conditional base trained on the procedural `shapes` captions (docs/shapes.md) whose "
                     "text tower was first taught which object goes where, then frozen while the UNet learned to read "
                     "it: one- and two-object captions come out right (the default)"),
        BundledModel("shapes", "shapes-32.safetensors", "base",
                     "32 px text-conditional base trained on the procedural `shapes` captions (docs/shapes.md), its text "
                     "tower learned from the images alone: one-object captions come out right, two-object scenes a "
                     "third of the time (`shapes-layout` is this model fine-tuned)"),
        BundledModel("shapes-minilm", "shapes-32-minilm.safetensors", "base",
                     "32 px text-conditional base trained on the procedural `shapes` captions (docs/shapes.md) whose "
                     "text tower reads the frozen pretrained MiniLM: it also follows size and layout words the captions "
                     "never used"),
        BundledModel("shapes-clip-image", "shapes-clip-image.safetensors", "clip-image",
                     "noised CLIP for `shapes` (32 px), image encoder: CLIP guidance of the `shapes` model", "shapes-clip.md"),
        BundledModel("shapes-clip-text", "shapes-clip-text.safetensors", "clip-text",
                     "noised CLIP for `shapes` (32 px), text encoder", "shapes-clip.md"),
        BundledModel("emoji-clip-image", "emoji-clip-image.safetensors", "clip-image",
                     "noised CLIP for the emoji set (64 px), image encoder: CLIP guidance of emoji models", "emoji-clip.md"),
        BundledModel("emoji-clip-text", "emoji-clip-text.safetensors", "clip-text",
                     "noised CLIP for the emoji set (64 px), text encoder", "emoji-clip.md"),
        BundledModel("emoji-clip-score-image", "emoji-clip-score-image.safetensors", "clip-image",
                     "a second, independently trained emoji CLIP (64 px), image encoder: the emoji CLIP score",
                     "emoji-clip-score.md"),
        BundledModel("emoji-clip-score-text", "emoji-clip-score-text.safetensors", "clip-text",
                     "the second emoji CLIP's text encoder", "emoji-clip-score.md"),
        BundledModel("emoji-64", "emoji-64.safetensors", "base",
                     "64 px text-conditional base trained on Twemoji with the emoji names as captions (CC-BY 4.0)"),
        BundledModel("emoji-64-inpaint", "emoji-64-inpaint.safetensors", "base-inpaint",
                     "64 px text-conditional inpainting model: `emoji-64` fine-tuned with the image outside a random "
                     "hole and the mask as extra inputs (GLIDE s.4.1), so that it fills a hole in an emoji from a prompt "
                     "(CC-BY 4.0)"),
        BundledModel("emoji-upsample", "emoji-upsample.safetensors", "upsample",
                     "64 -> 256 px text-conditional upsampler for emoji (GLIDE's second stage, small): trained on "
                     "Twemoji drawn from their SVGs at 256 px, it brings `emoji-64`'s samples up to 256 px with sharp "
                     "edges (CC-BY 4.0)"),
    )
}

# what `glide sample` uses without --model, and what the web page starts with
DEFAULT_MODEL = "shapes-layout"


def bundled_path(name: str) -> Path:
    """The file of bundled model `name`; a clear error if the name is unknown or the file missing."""
    if name not in BUNDLED:
        raise CheckpointError(f"no bundled model {name!r}; bundled: {', '.join(BUNDLED)}")
    path = BUNDLED[name].path
    if not path.is_file():
        raise CheckpointError(f"bundled model {name!r} is missing from this install ({path}); reinstall glidekit")
    return path


def list_bundled() -> list[dict]:
    """One row per bundled model: name, kind, path, whether the file is present, description."""
    return [{"name": m.name, "kind": m.kind, "path": str(m.path), "present": m.path.is_file(),
             "description": m.description} for m in BUNDLED.values()]


__all__ = ["BUNDLED", "BUNDLE_DIR", "DEFAULT_MODEL", "BundledModel", "bundled_path", "list_bundled"]
