"""Guidance / sampler / steps sweeps: generate a fixed prompt set at every grid point, score it.

GLIDE's headline result (Nichol et al. 2022, s.5 and fig. 6) is a trade-off curve: as the
classifier-free guidance scale grows, fidelity (and caption match) rises and diversity falls.
`run_sweep` measures such curves for any glidekit model: for each (sampler, steps, guidance)
point it samples the same prompts with the same per-prompt seeds (so points differ only in the
setting), then scores the images with

- the `shapes` scorer (whole-caption and per-attribute accuracy, one- and two-object prompts
  separately) when the prompts come from the `shapes` grammar, and/or
- FID / KID, improved precision / recall (fidelity / coverage) and the mean pairwise feature
  distance between samples (diversity) against a reference image folder, all in the standard
  Inception feature space (`glidekit.eval.metrics`; refused below its minimum sample counts).

Two guidance types can be swept side by side, as in GLIDE s.5 (fig. 6): classifier-free guidance
("cfg", the scale mixes conditional and unconditional eps) and CLIP guidance ("clip", a noised
CLIP's gradient times the scale, classifier-free guidance off). With a scoring CLIP each point
also gets a CLIP score (`glidekit.eval.clip_score`; a glidekit-trained CLIP, not OpenAI's).

One CSV row per point, written atomically after each point; a re-run with the same CSV skips
the points already in it, so a long sweep survives interruptions.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError

GUIDANCE_TYPES = ("cfg", "clip")
GRID_COLS = 8  # the sample grids: the first 64 images of a point, 8 a row, their prompts in the PNG

COLUMNS = (
    "model", "sampler", "steps", "guidance_type", "guidance", "n", "seconds_per_image",
    "whole_caption", "one_whole_caption", "two_whole_caption",
    "one_colour", "one_shape", "one_size", "one_place", "one_count",
    "two_colour", "two_shape", "two_relation", "two_count",
    "fid", "kid", "precision", "recall", "diversity", "clip_score",
)


@dataclass(frozen=True)
class SweepPoint:
    sampler: str
    steps: int
    guidance: float
    guidance_type: str = "cfg"

    @property
    def key(self) -> tuple[str, int, str, float]:
        return (self.sampler, int(self.steps), self.guidance_type, float(self.guidance))


def row_key(row: dict) -> tuple[str, int, str, float]:
    return (row["sampler"], int(row["steps"]), row.get("guidance_type") or "cfg", float(row["guidance"]))


def model_identity(model) -> str:
    """What a sweep row says it measured: `file_identity` of the model's file when it was loaded from one
    (`io.model_path` of its source), else its `source` text."""
    from .. import io

    return io.model_identity(model.source) or str(model.source)


def parse_sampler(text: str) -> tuple[str, int]:
    """`"dpm++2m:20"` -> ("dpm++2m", 20); the sampler name is checked by `SamplerSpec`."""
    from ..pipelines import SamplerSpec

    name, sep, steps = text.partition(":")
    if not sep or not steps.isdigit():
        raise ConfigError(f"a sweep sampler is NAME:STEPS, e.g. dpm++2m:20 or ancestral:250; got {text!r}")
    SamplerSpec(name, int(steps))
    return name, int(steps)


def grid(samplers: Sequence[str], guidance: Sequence[float], clip_guidance: Sequence[float] = ()) -> list[SweepPoint]:
    """Every sampler (NAME:STEPS) at every classifier-free guidance scale, then at every CLIP
    guidance scale."""
    if not samplers or not (guidance or clip_guidance):
        raise ConfigError("a sweep needs at least one sampler and one guidance scale")
    for g in (*guidance, *clip_guidance):
        if not np.isfinite(g) or g < 0:
            raise ConfigError(f"guidance scales must be finite and >= 0, got {g}")
    parsed = [parse_sampler(s) for s in samplers]
    return ([SweepPoint(*p, float(g)) for p, g in itertools.product(parsed, guidance)]
            + [SweepPoint(*p, float(g), "clip") for p, g in itertools.product(parsed, clip_guidance)])


def prompt_set(spec: str) -> list[str]:
    """Prompts from `shapes:N[:SEED]` (drawn from the grammar, `random_captions`) or a text file
    with one prompt per line."""
    if spec.startswith("shapes:"):
        from ..data.shapes import random_captions

        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]) or int(parts[1]) <= 0:
            raise ConfigError(f"use shapes:N or shapes:N:SEED (N > 0), got {spec!r}")
        return random_captions(int(parts[1]), seed=int(parts[2]) if len(parts) == 3 else 0)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"prompts: {spec} is neither shapes:N[:SEED] nor a text file")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"{spec} holds no prompts")
    return prompts


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_csv(path: str | Path) -> list[dict]:
    """The rows of a sweep CSV, numbers parsed (empty cells are None)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for k, v in raw.items():
                if k in ("model", "sampler", "guidance_type"):
                    row[k] = v or ("cfg" if k == "guidance_type" else v)
                elif v in ("", None):
                    row[k] = None
                else:
                    row[k] = int(v) if k in ("steps", "n") else float(v)
            row.setdefault("guidance_type", "cfg")  # CSVs from before CLIP guidance
            rows.append(row)
    return rows


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Write the rows (atomically) with the sweep's columns."""
    from ..files import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in COLUMNS])
    atomic_write_text(path, buf.getvalue())


def _score_columns(summary: dict) -> dict:
    out = {"whole_caption": summary["whole_caption"]}
    for group in ("one", "two"):
        for key, value in summary[group].items():
            if key != "n":
                out[f"{group}_{key}"] = value
    return out


def mean_pairwise_distance(feats) -> float:
    """Mean Euclidean distance over all pairs of samples: a diversity measure (higher = more varied)."""
    x = torch.as_tensor(np.asarray(feats), dtype=torch.float64)
    if len(x) < 2:
        raise ConfigError("pairwise distance needs at least two samples")
    d = torch.cdist(x, x)
    return float(d.sum() / (len(x) * (len(x) - 1)))


def run_sweep(
    model,
    prompts: Sequence[str],
    points: Sequence[SweepPoint],
    *,
    csv_path: str | Path,
    seed: int = 0,
    batch_size: int = 32,
    shapes: bool | None = None,
    reference: str | Path | None = None,
    clip_guide=None,
    clip_scorer=None,
    clip_scorer_name: str = "",
    image_dir: str | Path | None = None,
    on_point: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> list[dict]:
    """Sample `prompts` at every point (prompt i always with seed `seed + i`) and score them.

    `shapes` (default: whether every prompt parses in the `shapes` grammar) adds the scorer's
    accuracies; `reference` (an image folder) adds FID, KID, precision/recall and diversity;
    `clip_scorer` (a `NoisedCLIP`, named by `clip_scorer_name`) adds the CLIP score.
    `clip_guide` is the noised CLIP that "clip" points follow (GLIDE's CLIP guidance:
    the scale times its gradient, with classifier-free guidance off). `image_dir` keeps a PNG
    grid of the first 64 images of each point. Returns all rows of the CSV (earlier ones included).
    """
    from ..data.shapes import outside_grammar
    from ..images import make_grid, save_png, tensor_to_pils
    from ..pipelines import SamplerSpec, clip_cond_fn, text_to_image
    from .shapes_score import score_batch

    prompts = list(prompts)
    if not prompts:
        raise ConfigError("a sweep needs at least one prompt")
    if any(p.guidance_type == "clip" for p in points):
        if clip_guide is None:
            raise ConfigError("CLIP-guidance points need a noised CLIP to follow (clip_guide / --clip)")
        if clip_guide.config.image_size != model.unet.image_size:
            raise ConfigError(f"the guiding CLIP sees {clip_guide.config.image_size} px images, the model makes "
                              f"{model.unet.image_size} px")
    if reference is not None:  # refuse before sampling, not after the first point
        from .features import list_images
        from .metrics import MIN_SAMPLES, check_sample_count

        n_ref = len(list_images(reference))
        for metric in MIN_SAMPLES:
            check_sample_count(metric, n_ref, len(prompts))
    if shapes is None:
        shapes = not outside_grammar(prompts)
    rows = read_csv(csv_path)
    ident = model_identity(model)
    others = sorted({r.get("model") or "none named" for r in rows} - {ident})
    if others:  # resuming must never mix in (or skip for) rows that measured another model
        raise ConfigError(f"{csv_path} holds rows of another model ({', '.join(others)}; this one is {ident}): "
                          f"move it away (mv {csv_path} {csv_path}.old) to measure this model from scratch, or give "
                          "another CSV")
    done = {row_key(r) for r in rows if r.get("n") == len(prompts)}
    ref_feats = None
    for point in points:
        if point.key in done:
            continue
        spec = SamplerSpec(point.sampler, point.steps)
        images = []
        t0 = time.perf_counter()
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            cfg_scale, cond_fn = point.guidance, None
            if point.guidance_type == "clip":
                cfg_scale, cond_fn = 1.0, clip_cond_fn(clip_guide, chunk, point.guidance)
            with torch.no_grad():
                res = text_to_image(model, chunk, seed=seed + start, guidance_scale=cfg_scale, sampler=spec, cond_fn=cond_fn)
            images.append(res.images.float().cpu().clamp(-1, 1))
            if progress:
                print(f"  {point.sampler}:{point.steps} {point.guidance_type} {point.guidance:g}: "
                      f"{start + len(chunk)}/{len(prompts)}", flush=True)
        elapsed = time.perf_counter() - t0
        x = torch.cat(images)
        row: dict = {"model": ident, "sampler": point.sampler, "steps": point.steps, "guidance_type": point.guidance_type,
                     "guidance": point.guidance, "n": len(prompts), "seconds_per_image": elapsed / len(prompts)}
        if shapes:
            row.update(_score_columns(score_batch(x, prompts)))
        if reference is not None:
            from .features import InceptionFeatures, folder_features
            from .metrics import fid, kid, precision_recall

            ext = InceptionFeatures()
            if ref_feats is None:
                ref_feats = folder_features(reference, extractor=ext, progress=progress)
            fake = ext(x)
            row["fid"] = fid(ref_feats, fake)["fid"]
            row["kid"] = kid(ref_feats, fake)["kid"]
            pr = precision_recall(ref_feats, fake)
            row.update(precision=pr["precision"], recall=pr["recall"], diversity=mean_pairwise_distance(fake))
        if clip_scorer is not None:
            from .clip_score import clip_score

            row["clip_score"] = clip_score(clip_scorer, x, prompts, name=clip_scorer_name)["clip_score"]
        if image_dir is not None:
            tag = "" if point.guidance_type == "cfg" else f"{point.guidance_type}-"
            name = f"{point.sampler}-{point.steps}-{tag}g{point.guidance:g}.png"
            save_png(make_grid(tensor_to_pils(x[:64]), ncols=GRID_COLS), Path(image_dir) / name, metadata={"prompts": prompts[:64]})
        rows = [r for r in rows if row_key(r) != point.key] + [row]
        write_csv(csv_path, rows)
        if on_point is not None:
            on_point(row)
    return rows


def plot(rows: Sequence[dict], path: str | Path, metric: str = "whole_caption", x: str = "guidance") -> Path:
    """A line per sampler and guidance type (x = "guidance") or per guidance scale (x = "steps",
    the number of sampler steps): `metric` against `x`; or, with x = a second metric such as
    "recall" or "diversity", the fidelity/diversity trade-off with one point per guidance scale
    (annotated) and a line per guidance type. PNG, written atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'glidekit[eval]'") from None

    types = {r.get("guidance_type") or "cfg" for r in rows if r.get(metric) is not None}
    labels = {"guidance": "classifier-free guidance scale" if types == {"cfg"} else "guidance scale (classifier-free or CLIP)",
              "steps": "sampler steps (model evaluations per image, x2 with CFG)", "clip_score": "CLIP score (glidekit CLIP)",
              "whole_caption": "whole-caption accuracy (fraction)", "fid": "FID (lower is better)",
              "precision": "precision (fidelity)", "recall": "recall (coverage)",
              "diversity": "mean pairwise Inception distance (diversity)"}
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    series: dict[str, list[tuple[float, float, float]]] = {}
    mixed_n = len({r.get("n") for r in rows if r.get(metric) is not None and r.get(x) is not None}) > 1
    for r in rows:
        if r.get(metric) is None or r.get(x) is None:
            continue
        kind = "CLIP guidance" if r.get("guidance_type") == "clip" else "classifier-free"
        label = (f"{r['sampler']}, {kind} {r['guidance']:g}" if x == "steps"
                 else f"{kind}, {r['sampler']} {r['steps']}")
        if mixed_n:  # points over different prompt sets: say which
            label += f" ({r['n']} prompts)"
        series.setdefault(label, []).append((r[x], r[metric], r["guidance"]))
    if not series:
        raise ConfigError(f"no rows with {metric} and {x} values to plot")
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        if x not in ("guidance", "steps"):
            for px, py, g in pts:
                ax.annotate(f"{g:g}", (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if x == "steps":
        ax.set_xscale("log")
    ax.set_xlabel(labels.get(x, x.replace("_", " ")))
    ax.set_ylabel(labels.get(metric, metric.replace("_", " ")))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    from PIL import Image

    from ..images import save_png

    return save_png(Image.open(buf), path)


__all__ = ["COLUMNS", "GUIDANCE_TYPES", "mean_pairwise_distance", "model_identity", "SweepPoint", "grid", "parse_sampler", "plot", "prompt_set",
           "read_csv", "row_key", "run_sweep", "write_csv"]
