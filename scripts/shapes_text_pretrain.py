"""Pretrain a `shapes` model's text tower to say where each object goes: a curriculum step.

    .venv/bin/python scripts/shapes_text_pretrain.py shapes runs/text-layout.safetensors
    glide train shapes-32 ... init_from=runs/text-layout.safetensors freeze=text,transformer_proj.

In the full grammar which object goes on top depends on the word order and the relation word
together ("a red circle below a blue square" puts the blue square on top), an XOR from which
the diffusion loss gives no first-order gradient: the bundled towers encode "above" and "below"
alike (docs/shapes.md). This step teaches the tower the layout directly. A fresh text tower
(GPT-2/CLIP init) and `transformer_proj` are trained, with the UNet untouched, so that linear
heads on the pooled feature `xf_proj` (what GLIDE adds to the timestep embedding) read the scene
in layout order (`glidekit.data.shapes.scene_slots`): the colour and shape of the object on top
or on the left, of the other object, the layout (a place or the relation's axis) and the size,
each with a "none" class (for the empty caption of classifier-free guidance too). The result is
the source checkpoint with the new tower; `glide train ... freeze=text,transformer_proj.` then
teaches the UNet to read it.

`--hold-out` leaves out of training the 512 two-object captions that the linear probe of
`scripts/shapes_text_probe.py` holds out and reports the heads on them: whether the tower
learned the rule or memorised captions. The file to fine-tune from is trained on every caption
(the default). `transformer_proj` is rescaled at the end so that
`xf_proj` has the root-mean-square size the source model's had, the size its UNet was trained with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glidekit.data.shapes import COLOURS, LAYOUTS, SHAPES, SIZES, all_captions, parse_caption, scene_slots  # noqa: E402
from glidekit.errors import GlidekitError  # noqa: E402
from glidekit.io import load_model, model_path, save_checkpoint  # noqa: E402
from glidekit.models.unet import GlideUNet  # noqa: E402
from glidekit.tokenizers import text_tokenizer  # noqa: E402
from glidekit.train import init_from_checkpoint, key_prefixes  # noqa: E402
from scripts.common import run, write_result  # noqa: E402
from scripts.shapes_text_probe import N_FIT, captions_and_labels  # noqa: E402

FRESH = ("text", "transformer_proj.")  # what this step trains: the text tower and its pooled projection
# (head, classes): the last class of each head is "none"
HEADS = (("first colour", COLOURS), ("first shape", SHAPES), ("second colour", COLOURS),
         ("second shape", SHAPES), ("layout", LAYOUTS), ("size", SIZES))


def layout_targets(caption: str) -> list[int]:
    """One class per head of `HEADS` for a caption ("" -> every head "none")."""
    if not caption:
        return [len(words) for _, words in HEADS]
    first, second, layout = scene_slots(parse_caption(caption))
    none = len(COLOURS), len(SHAPES)
    return [COLOURS.index(first.colour), SHAPES.index(first.shape),
            COLOURS.index(second.colour) if second else none[0], SHAPES.index(second.shape) if second else none[1],
            LAYOUTS.index(layout), SIZES.index(first.size) if first.size else len(SIZES)]


def encode(net: GlideUNet, tokenizer, captions: list[str]) -> torch.Tensor:
    return net.encode_text(*tokenizer.encode_batch(captions, net.cfg.text.text_ctx))["xf_proj"]


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Per head and all heads together (the whole scene), in %."""
    right = torch.stack([part.argmax(1) == y[:, k] for k, part in enumerate(_split(logits))], 1)
    out = {name: 100 * right[:, k].float().mean().item() for k, (name, _) in enumerate(HEADS)}
    out["whole scene"] = 100 * right.all(1).float().mean().item()
    return out


def _split(logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return logits.split([len(words) + 1 for _, words in HEADS], dim=1)


def pretrain(source: str, *, steps: int, batch: int, lr: float, hold_out: bool, seed: int, log_every: int = 200) -> tuple[GlideUNet, str, object, dict]:
    """Train a fresh text tower of `source` (a bundled name or a checkpoint) on the layout heads;
    returns (network with the new tower, kind, config, measurements)."""
    net, kind, config = load_model(source, device="cpu")
    if kind != "base" or config.unet.text is None:
        raise GlidekitError(f"{source} is a {kind} model without a text tower; give a text-conditional base model")
    tokenizer = text_tokenizer(config.unet.text)
    two = captions_and_labels()[0]
    n_train = N_FIT if hold_out else len(two)
    train_caps, held_caps = ["", *all_captions("one"), *two[:n_train]], two[n_train:]
    with torch.no_grad():
        rms_source = encode(net, tokenizer, train_caps).square().mean().sqrt().item()

    torch.manual_seed(seed)
    net = GlideUNet(config.unet)  # the source's weights, its text path freshly initialised
    init_from_checkpoint(net, str(model_path(source)), FRESH)
    trained = key_prefixes(FRESH)
    for name, p in net.named_parameters():
        p.requires_grad_(name.startswith(trained))
    params = [p for p in net.parameters() if p.requires_grad]
    head = nn.Linear(net.transformer_proj.out_features, sum(len(w) + 1 for _, w in HEADS))
    opt = torch.optim.AdamW([*params, *head.parameters()], lr=lr, weight_decay=0.01)
    y_train = torch.tensor([layout_targets(c) for c in train_caps])
    tokens, mask = tokenizer.encode_batch(train_caps, config.unet.text.text_ctx)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(len(train_caps), (batch,), generator=gen)
        logits = head(net.encode_text(tokens[idx], mask[idx])["xf_proj"])
        loss = sum(F.cross_entropy(part, y_train[idx, k]) for k, part in enumerate(_split(logits)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        feats = encode(net, tokenizer, train_caps)
        result = {"source": str(source), "steps": steps, "batch": batch, "lr": lr, "seed": seed,
                  "captions trained": len(train_caps), "train": accuracy(head(feats), y_train)}
        if held_caps:
            result["held out"] = {"captions": len(held_caps),
                                  **accuracy(head(encode(net, tokenizer, held_caps)), torch.tensor([layout_targets(c) for c in held_caps]))}
        rms = feats.square().mean().sqrt().item()
        net.transformer_proj.weight.mul_(rms_source / rms)
        net.transformer_proj.bias.mul_(rms_source / rms)
        result["xf_proj rms"] = {"source": rms_source, "trained (rescaled to the source's)": rms}
    return net, kind, config, result


def stages_of(source: str, result: dict, seconds: float, command: str) -> list[dict]:
    """The source file's training stages (`train_stages` metadata, as `scripts/bundle_model.py`
    writes them) followed by this step, for the model card of a model fine-tuned from the output."""
    from glidekit.bundled import BUNDLED
    from scripts.provenance import REPO, committed, file_stages, machine

    path = model_path(source)
    before = file_stages(path) or []
    this = {"command": command, "steps": result["steps"], "batch": result["batch"], "hours": seconds / 3600,
            "rate": result["steps"] * result["batch"] / seconds, "unit": "captions", "machine": machine()}
    if source in BUNDLED:
        commit = committed(path) or "HEAD (uncommitted)"
        this["source"] = (f"the bundled `{source}` of git {commit} (`git show {commit}:"
                          f"{path.relative_to(REPO).as_posix()}`), with a fresh text tower")
    return [*before, this]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="text-conditional shapes base model (bundled name or checkpoint)")
    ap.add_argument("out", type=Path, nargs="?", help="checkpoint to write (the source with the new tower)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hold-out", action="store_true",
                    help="leave out and score the 512 two-object captions scripts/shapes_text_probe.py holds out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the measurements here")
    args = ap.parse_args(argv)
    if args.steps <= 0 or args.batch <= 0:
        raise GlidekitError("--steps and --batch must be positive")
    if args.out and not os.access(args.out.resolve().parent, os.W_OK):  # before minutes of training, not after
        raise GlidekitError(f"cannot write {args.out}: {args.out.resolve().parent} is not a writable folder; create it or "
                            "give another path")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    net, kind, config, result = pretrain(args.source, steps=args.steps, batch=args.batch, lr=args.lr,
                                         hold_out=args.hold_out, seed=args.seed)
    if args.out:
        command = "python scripts/shapes_text_pretrain.py " + " ".join(argv if argv is not None else sys.argv[1:])
        stages = stages_of(args.source, result, time.time() - t0, command)
        save_checkpoint(args.out, net.state_dict(), config, kind=kind,
                        extra_metadata={"text_pretrain": json.dumps(result), "train_stages": json.dumps(stages)})
        result["written"] = str(args.out)
    print(json.dumps(write_result(result, args.json), indent=1))


if __name__ == "__main__":
    run(main, __file__)
