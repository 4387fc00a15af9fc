"""Does a text encoder say which object is on top? A linear probe over `shapes` captions.

    .venv/bin/python scripts/shapes_text_probe.py shapes shapes-minilm

Over all 1,512 two-object captions of the grammar (shuffled, seed 0: 1,000 to fit, 512 held out)
a linear classifier predicts the colour and shape of the object on top or on the left (21
classes) from text features: MiniLM's hidden states and mean-pooled sentence embedding, and for
each model named, its text tower's per-token output (`xf_out`) and pooled projection (`xf_proj`).
Which object that is depends on the word order and the relation word together ("a red circle
below a blue square" puts the blue square on top). Three reference rows calibrate the probe: a
one-hot of the answer (100 %), each object's colour and shape without their order plus the
relation, and a bag of the caption's words.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glidekit.data.shapes import COLOURS, RELATIONS, SHAPES, all_captions, parse_caption, scene_slots  # noqa: E402
from glidekit.models.minilm import PAD, frozen_minilm, minilm_tokenizer  # noqa: E402
from glidekit.pipelines import GlideModel  # noqa: E402
from glidekit.tokenizers import text_tokenizer  # noqa: E402
from scripts.common import run  # noqa: E402

N_FIT = 1000


def _object_class(obj) -> int:
    return COLOURS.index(obj.colour) * len(SHAPES) + SHAPES.index(obj.shape)


def reference_features(caps: list[str], y: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the probe gets from the answer itself, from the objects without their order, and
    from the words alone."""
    scenes = [parse_caption(c) for c in caps]
    pairs = torch.stack([F.one_hot(torch.tensor(_object_class(s.objects[0])), 21)
                         + F.one_hot(torch.tensor(_object_class(s.objects[1])), 21) for s in scenes]).float()
    relation = torch.stack([F.one_hot(torch.tensor(RELATIONS.index(s.relation)), len(RELATIONS)) for s in scenes]).float()
    words = (*COLOURS, *SHAPES, "above", "below", "left", "right")
    return {"reference: the answer (one-hot)": F.one_hot(y, 21).float(),
            "reference: both objects, unordered, and the relation": torch.cat([pairs, relation], 1),
            "reference: bag of words": torch.tensor([[float(w in c.split()) for w in words] for c in caps])}


def captions_and_labels() -> tuple[list[str], torch.Tensor]:
    """The two-object captions, shuffled (the first N_FIT to fit, the rest held out), and the
    class of each one's object on top or on the left."""
    caps = all_captions("two")
    random.Random(0).shuffle(caps)
    return caps, torch.tensor([_object_class(scene_slots(parse_caption(c))[0]) for c in caps])


@torch.enable_grad()
def probe(x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> float:
    """Held-out accuracy of an L2-regularised softmax regression fitted on the first N_FIT rows."""
    x = x.detach().float()
    x = (x - x[:N_FIT].mean(0)) / (x[:N_FIT].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (F.cross_entropy(x[:N_FIT] @ w + b, y[:N_FIT]) + 1e-4 * w.square().sum()).backward()
        opt.step()
    return ((x[N_FIT:] @ w + b).argmax(1) == y[N_FIT:]).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="text-conditional models (bundled names or checkpoints)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    caps, y = captions_and_labels()
    print(f"{len(caps)} two-object captions, {N_FIT} to fit, {len(caps) - N_FIT} held out; 21 classes "
          f"(chance {100 / 21:.1f} %)")
    with torch.no_grad():
        tokens, _ = minilm_tokenizer().encode_batch(caps, 24)
        h = frozen_minilm()(tokens)
        keep = (tokens != PAD)[..., None]
        rows = {**reference_features(caps, y), "MiniLM hidden states": h.flatten(1), "MiniLM mean-pooled sentence embedding": (h * keep).sum(1) / keep.sum(1)}
        for name in args.models:
            model = GlideModel.load(name, device="cpu", dtype="fp32")
            t, m = text_tokenizer(model.unet.text).encode_batch(caps, model.unet.text.text_ctx)
            emb = model.net.encode_text(t, m)
            rows[f"{name}: text tower output (xf_out)"] = emb["xf_out"].flatten(1)
            rows[f"{name}: pooled (xf_proj)"] = emb["xf_proj"]
    for label, x in rows.items():
        print(f"{label:55s} {100 * probe(x, y):5.1f} % held out")


if __name__ == "__main__":
    run(main, __file__)
