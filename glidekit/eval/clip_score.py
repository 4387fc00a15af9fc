"""CLIP score: how well images match their captions, measured with a CLIP trained by glidekit.

CLIPScore (Hessel et al. 2021, eq. 1) is `w * max(cos(E_I(image), E_T(caption)), 0)` averaged over
image-caption pairs; `w = 100` here, the convention of torchmetrics and of most text-to-image
papers (GLIDE s.5 reports CLIP score against guidance scale). The embeddings come from a
*noised CLIP trained by glidekit* (`glide train clip`) evaluated at t = 0, not from OpenAI's CLIP:
scores are comparable between models scored with the same CLIP file only, and every result says
which file that was (`clip` in the returned dict).

A CLIP used to guide sampling is also what such guidance maximises, so it scores its own
samples too well (GLIDE s.5: CLIP guidance "exploits" the model it follows). Score with a CLIP
trained separately (another seed or shape) from the one that guided.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

SCALE = 100.0
STATEMENT = "noised CLIP trained by glidekit, evaluated at t=0 (not OpenAI's CLIP); 100 * max(cos, 0)"


def _as_batch(images) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] from a tensor in [-1, 1] or a list of HxWx3 uint8 arrays."""
    if isinstance(images, torch.Tensor):
        return images.float()
    arrays = [np.asarray(im) for im in images]
    return torch.stack([torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1) for a in arrays]) / 127.5 - 1


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = "area" if x.shape[-1] > size else "bilinear"
    return F.interpolate(x, (size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))


@torch.no_grad()
def clip_similarities(clip, images, prompts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each image with its prompt (one prompt per image), float64 array."""
    from ..tokenizers import clip_tokenizer

    prompts = list(prompts)
    if len(images) != len(prompts):
        raise ConfigError(f"CLIP score needs one prompt per image ({len(images)} images, {len(prompts)} prompts)")
    if not prompts:
        raise ConfigError("CLIP score needs at least one image")
    device = next(clip.parameters()).device
    size = clip.config.image_size
    tok = clip_tokenizer()
    out = []
    for start in range(0, len(prompts), batch_size):
        x = _resize(_as_batch(images[start:start + batch_size]), size).clamp(-1, 1).to(device)
        tokens, text_len = tok.encode_batch(prompts[start:start + batch_size], clip.config.max_text_len)
        z_i = clip.image_embeddings(x, torch.zeros(len(x), dtype=torch.long, device=device)).float()
        z_t = clip.text_embeddings(tokens.to(device), text_len.to(device)).float()
        out.append((z_i * z_t).sum(-1).double().cpu())
    return torch.cat(out).numpy()


def clip_score(clip, images, prompts: Sequence[str], *, batch_size: int = 64, name: str = "") -> dict:
    """Mean CLIP score of images against their prompts, with the CLIP that measured it named."""
    cos = clip_similarities(clip, images, prompts, batch_size=batch_size)
    per = SCALE * np.maximum(cos, 0.0)
    return {"clip_score": float(per.mean()), "std": float(per.std()), "n": int(len(per)),
            "clip": name or "unnamed glidekit CLIP", "definition": STATEMENT, "batch_size": batch_size}


@torch.no_grad()
def retrieval_accuracy(clip, images: torch.Tensor, captions: Sequence[str], t: int = 0, *, seed: int = 0,
                       batch_size: int = 64) -> float:
    """Top-1 caption retrieval: the fraction of images whose most similar caption, among all the
    captions given, is their own (a repeated caption counts as a hit). Images in [-1, 1] are noised
    to timestep `t` of the CLIP's schedule first (q(x_t | x_0), one generator seeded `seed`)."""
    from ..diffusion import gaussian as G
    from ..diffusion.schedule import Schedule
    from ..tokenizers import clip_tokenizer

    captions = list(captions)
    device = next(clip.parameters()).device
    x = _resize(images.float(), clip.config.image_size).clamp(-1, 1)
    k = torch.full((len(x),), int(t), dtype=torch.long)
    if t:
        sched = Schedule.create(clip.config.beta_schedule, clip.config.n_timesteps)
        x = G.q_sample(sched, x, k, torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)))
    tokens, lens = clip_tokenizer().encode_batch(captions, clip.config.max_text_len)
    z_t = torch.cat([clip.text_embeddings(tokens[i:i + batch_size].to(device), lens[i:i + batch_size].to(device)).float()
                     for i in range(0, len(captions), batch_size)])
    z_i = torch.cat([clip.image_embeddings(x[i:i + batch_size].to(device), k[i:i + batch_size].to(device)).float()
                     for i in range(0, len(x), batch_size)])
    best = (z_i @ z_t.T).argmax(1).tolist()
    return sum(captions[j] == captions[i] for i, j in enumerate(best)) / len(captions)


__all__ = ["SCALE", "STATEMENT", "clip_score", "clip_similarities", "retrieval_accuracy"]
