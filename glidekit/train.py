"""The one training loop: every GLIDE model type is a config of it (nanoGPT-style, top to bottom).

Determinism is by construction: every random draw of sample j at step s (timestep, noise, caption
dropout, mask, crop) comes from a generator seeded by (seed, s, j), where j indexes the *global*
batch, and the data order is a seeded permutation per epoch. So a resumed run continues exactly,
and N processes give the result of 1 process with the same global batch (up to float reduction
order). Checkpoints hold model, EMA, optimizer, step and timestep-sampler state; they are written
to a temporary folder and renamed, so a kill mid-write never replaces the last good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from . import runtime
from .config import GlideConfig, UNetConfig
from .diffusion import gaussian as G
from .diffusion import losses as L
from .diffusion.schedule import Schedule
from .download import file_sha256
from .errors import GlidekitError
from .files import atomic_path, atomic_write_text
from .io import build_model, load_checkpoint, load_official, save_checkpoint
from .models.unet import TEXT_TOWER, deepened_state_dict
from .train_config import TrainConfig, train_config_from_dict, train_config_to_dict

# --------------------------------------------------------------------------------------------
# processes


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Dist:
    """From torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): nccl on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = runtime.choose_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev)


def _all_reduce(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op)
    return t


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """The generator for global sample `index` at `step`: independent of ranks and batching."""
    return torch.Generator().manual_seed(hash((seed, step, index)) & (2**63 - 1))


# --------------------------------------------------------------------------------------------
# data order


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up over `warmup_steps`,
    then `cfg.lr` (constant) or a cosine from `cfg.lr` down to `cfg.lr_min` at `max_steps`
    (SGDR, Loshchilov & Hutter 2017, eq. 5)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * progress))


def batch_indices(n: int, step: int, global_batch: int, seed: int) -> list[int]:
    """Dataset indices of the global batch at `step`: consecutive slices of per-epoch permutations."""
    out: list[int] = []
    pos = step * global_batch
    while len(out) < global_batch:
        epoch, offset = divmod(pos, n)
        # ints only in the hash: str hashes are randomised per process
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(hash((seed, -1, epoch)) & (2**63 - 1)))
        take = min(n - offset, global_batch - len(out))
        out += perm[offset:offset + take].tolist()
        pos += take
    return out


def rank_slice(items: list, d: Dist) -> tuple[int, list]:
    """This rank's contiguous share of the global batch and its first global index."""
    per = len(items) // d.world
    return d.rank * per, items[d.rank * per:(d.rank + 1) * per]


# --------------------------------------------------------------------------------------------
# tasks: model + (samples -> per-sample loss)


class Task:
    """A model type's freshly initialised model (seeded) and its per-sample loss."""

    def losses(self, model: nn.Module, batch: dict, gens: list[torch.Generator], step: int) -> tuple[torch.Tensor, dict]:
        """Per-sample losses (weighted for the optimiser) and extra per-sample values to log."""
        raise NotImplementedError


class DiffusionTask(Task):
    """Base, upsampler and both inpainting variants: the improved-DDPM hybrid loss."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        from .models.unet import GlideUNet

        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        self.model = GlideUNet(cfg.model.unet).to(device)
        d = cfg.model.diffusion
        self.schedule = Schedule.create(d.noise_schedule, d.steps)
        self.timesteps = (L.LossSecondMomentSampler(d.steps) if cfg.timestep_sampler == "loss-aware"
                          else L.UniformSampler(d.steps))
        self.unet = cfg.model.unet
        if self.unet.text is not None:
            from .tokenizers import text_tokenizer

            self.tokenizer = text_tokenizer(self.unet.text)

    def losses(self, model, batch, gens, step):
        from .data.masks import random_mask
        from .data.transforms import make_low_res, paired_crop, random_crop

        u, cfg = self.unet, self.cfg
        images, captions, labels = [], [], []
        kwargs: dict[str, Any] = {}
        lows, keeps = [], []
        for img, cap, lab, g in zip(batch["image"], batch["caption"], batch["label"].tolist(), gens):
            if img.shape[-1] != u.image_size:
                img = random_crop(img, u.image_size, g)
            drop = torch.rand((), generator=g).item() < cfg.cfg_dropout
            captions.append("" if drop else cap)
            labels.append(u.num_classes if (drop or lab < 0) and u.num_classes else lab)
            if u.super_res:
                low = make_low_res(img[None], cfg.low_res_size, generator=g, noise_std=cfg.lowres_noise,
                                   blur_sigma=cfg.lowres_blur)[0]
                if cfg.patch_size:
                    img, low = paired_crop(img, low, cfg.patch_size, g)
                lows.append(low)
            if u.inpaint:
                size = img.shape[-1]
                keeps.append(random_mask(size, g, kinds=cfg.mask_kinds).reshape(1, size, size))
            images.append(img)
        x0 = torch.stack(images).to(self.device)
        if u.text is not None:
            tokens, mask = self.tokenizer.encode_batch(captions, u.text.text_ctx)
            kwargs.update(tokens=tokens.to(self.device), mask=mask.to(self.device))
        if u.num_classes:
            kwargs["y"] = torch.tensor(labels, dtype=torch.long, device=self.device)
        if lows:
            kwargs["low_res"] = torch.stack(lows).to(self.device)
        if keeps:
            keep = torch.stack(keeps).to(self.device)
            kwargs.update(inpaint_image=x0 * keep, inpaint_mask=keep)
        draws = [self.timesteps.sample(1, g) for g in gens]
        k = torch.cat([d[0] for d in draws]).to(self.device)
        w = torch.cat([d[1] for d in draws]).to(self.device)
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(self.device)
        x_t = G.q_sample(self.schedule, x0, k, noise)
        out = model(runtime.to_model_input(x_t, self.device), k, **kwargs).float()
        terms = L.hybrid_loss(self.schedule, out, x0, x_t, k, noise, prediction=self.cfg.model.diffusion.prediction)
        return terms["loss"] * w, {"mse": terms["mse"], "vb": terms["vb"], "k": k, "raw": terms["loss"]}


class CLIPTask(Task):
    """Noised CLIP (GLIDE s.2.4): contrastive image-text loss on images noised at random t; the
    image encoder sees t. Symmetric InfoNCE with the fixed logit scale of the config."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        from .models.clip import NoisedCLIP
        from .tokenizers import clip_tokenizer

        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        self.model = NoisedCLIP(cfg.model).to(device)
        self.schedule = Schedule.create(cfg.model.beta_schedule, cfg.model.n_timesteps)
        self.tokenizer = clip_tokenizer()

    def losses(self, model, batch, gens, step):
        x0 = batch["image"].to(self.device)
        k = torch.stack([torch.randint(0, self.cfg.model.n_timesteps, (), generator=g) for g in gens]).to(self.device)
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(self.device)
        x_t = G.q_sample(self.schedule, x0, k, noise)
        tokens, text_len = self.tokenizer.encode_batch(batch["caption"], self.cfg.model.max_text_len)
        zi = model.image_embeddings(x_t, k)
        zt = model.text_embeddings(tokens.to(self.device), text_len.to(self.device))
        # Gather embeddings from every rank so the negatives are the whole global batch.
        zi_all, zt_all = _gather_with_grad(zi), _gather_with_grad(zt)
        logits = model.logit_scale.exp() * zi_all @ zt_all.T
        target = torch.arange(len(logits), device=self.device)
        per = 0.5 * (F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none"))
        start = _rank_start(len(zi))
        mine = per[start:start + len(zi)]
        return mine, {"acc": (logits.argmax(1) == target).float()[start:start + len(zi)]}


def _rank_start(n: int) -> int:
    return dist.get_rank() * n if dist.is_available() and dist.is_initialized() else 0


def _gather_with_grad(z: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return z
    parts = [torch.empty_like(z) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, z.detach().contiguous())
    parts[dist.get_rank()] = z
    return torch.cat(parts)


class ClassifierTask(Task):
    """Noisy classifier (ADM): cross-entropy on q(x_t | x_0) at uniform random t."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        from .models.classifier import NoisyClassifier

        self.model = NoisyClassifier(cfg.model).to(device)
        d = cfg.model.diffusion
        self.schedule = Schedule.create(d.noise_schedule, d.steps)

    def losses(self, model, batch, gens, step):
        x0 = batch["image"].to(self.device)
        y = batch["label"].to(self.device)
        if (y < 0).any():
            raise GlidekitError("classifier training needs labelled data (a dataset with class labels)")
        k = torch.stack([torch.randint(0, self.cfg.model.diffusion.steps, (), generator=g) for g in gens]).to(self.device)
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(self.device)
        logits = model(runtime.to_model_input(G.q_sample(self.schedule, x0, k, noise), self.device), k).float()
        return F.cross_entropy(logits, y, reduction="none"), {"acc": (logits.argmax(1) == y).float()}


def make_task(cfg: TrainConfig, device: torch.device) -> Task:
    if cfg.task == "clip":
        return CLIPTask(cfg, device)
    if cfg.task == "classifier":
        return ClassifierTask(cfg, device)
    return DiffusionTask(cfg, device)


# --------------------------------------------------------------------------------------------
# fine-tuning initialisation


def key_prefixes(names: tuple[str, ...]) -> tuple[str, ...]:
    """State-dict key prefixes of `init_fresh` / `freeze`: "text" stands for the text tower
    (`models.unet.TEXT_TOWER`), anything else is a prefix as it is."""
    return tuple(q for f in names for q in (TEXT_TOWER if f == "text" else (f,)))


def freeze_parameters(model: nn.Module, names: tuple[str, ...]) -> int:
    """Stop training the parameters whose names start with a prefix of `names` (`key_prefixes`);
    returns how many tensors that froze."""
    prefixes = key_prefixes(names)
    frozen = [p for key, p in model.named_parameters() if key.startswith(prefixes)]
    if names and not frozen:
        raise GlidekitError(f"freeze={','.join(names)} matches none of the model's parameters; "
                            f"use 'text' or state-dict key prefixes such as 'transformer_proj.'")
    for p in frozen:
        p.requires_grad_(False)
    return len(frozen)


# beside config.json in a run folder: the path and sha256 of the file `init_from` loaded
INIT_FROM_RECORD = "init_from.json"


def init_from_checkpoint(model: nn.Module, source: str, fresh: tuple[str, ...] = ()) -> list[str]:
    """Load weights from a glidekit or official checkpoint into `model` for fine-tuning.

    Tensors of equal shape are copied. The first conv may have more input channels than the
    source (base -> inpainting or super-res): the source's channels are copied and the new ones
    zeroed, so the fine-tuned model starts exactly where the source model was. Keys starting
    with a prefix in `fresh` ("text": the text tower, `models.unet.TEXT_TOWER`) keep the model's own fresh
    initialisation. Returns notes.
    """
    prefixes = key_prefixes(fresh)
    p = Path(source)
    notes = []
    if p.suffix == ".safetensors":
        _, src_cfg, sd, _ = load_checkpoint(p)
        sd, grown = _deepened(model, src_cfg, sd)
        if grown:
            notes.append(grown)
    else:
        _, _, sd = load_official(p, config=None) if p.suffix == ".pt" else (None, None, None)
        if sd is None:
            raise GlidekitError(f"init_from must be a .safetensors or .pt checkpoint, got {source}")
    own = model.state_dict()
    new = {}
    kept = {key for key in own if key.startswith(prefixes)} if prefixes else set()
    if fresh and not kept:
        raise GlidekitError(f"init_fresh={','.join(fresh)} matches none of the model's tensors; "
                            f"use 'text' or state-dict key prefixes such as 'input_blocks.0.'")
    if kept:
        notes.append(f"{len(kept)} tensors kept fresh by init_fresh (e.g. {min(kept)})")
    for key, t in own.items():
        src = sd.get(key)
        if key in kept:
            new[key] = t
        elif src is None:
            notes.append(f"{key}: not in {p.name}, kept fresh")
            new[key] = t
        elif src.shape == t.shape:
            new[key] = src.to(t.dtype)
        elif key == "input_blocks.0.0.weight" and src.shape[0] == t.shape[0] and src.shape[2:] == t.shape[2:] and src.shape[1] < t.shape[1]:
            w = torch.zeros_like(t)
            w[:, : src.shape[1]] = src
            new[key] = w
            notes.append(f"{key}: {src.shape[1]} input channels copied, {t.shape[1] - src.shape[1]} new ones zeroed")
        else:
            raise GlidekitError(f"cannot fine-tune from {p.name}: {key} has shape {tuple(src.shape)}, the model needs {tuple(t.shape)}")
    unused = sorted(set(sd) - set(own))
    if unused:
        notes.append(f"{len(unused)} tensors of {p.name} unused (e.g. {unused[0]})")
    model.load_state_dict(new)
    return notes


def _deepened(model: nn.Module, src_cfg, sd: dict) -> tuple[dict, str]:
    """`sd` laid out for `model` when the source is the same UNet with fewer ResBlocks per level
    (`models.unet.deepened_state_dict`), with a note; else `sd` unchanged and no note."""
    cfg, src_unet = getattr(model, "cfg", None), getattr(src_cfg, "unet", None)
    if not isinstance(cfg, UNetConfig) or not isinstance(src_unet, UNetConfig) or src_unet.num_res_blocks >= cfg.num_res_blocks:
        return sd, ""
    own_unet = cfg.num_res_blocks
    # the same UNet but for depth (and the variant's extra input channels, which init_from then zero-fills)
    if dataclasses.replace(src_unet, num_res_blocks=own_unet, inpaint=cfg.inpaint, super_res=cfg.super_res) != cfg:
        return sd, ""
    added = (own_unet - src_unet.num_res_blocks) * len(cfg.channel_mult)
    return (deepened_state_dict(sd, model, src_unet.num_res_blocks),
            f"deepened from {src_unet.num_res_blocks} to {own_unet} ResBlocks per level: {added} encoder and "
            f"{added} decoder blocks added as identities (the model starts as the source computes)")


# --------------------------------------------------------------------------------------------
# EMA and checkpoints


class EMA:
    """Exponential moving average of the weights with warm-up (rate min(r, (1+s)/(10+s)))."""

    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        r = min(self.rate, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(r).add_(v.detach().float(), alpha=1 - r)
            else:
                self.shadow[k].copy_(v)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _save_weights(folder: Path, name: str, sd: dict, cfg: TrainConfig) -> None:
    if cfg.task == "clip":
        for part, prefix in (("clip-image", "image_encoder."), ("clip-text", "text_encoder.")):
            sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            save_checkpoint(folder / f"{name}-{part}.safetensors", sub, cfg.model, kind=part)
    else:
        save_checkpoint(folder / f"{name}.safetensors", sd, cfg.model, kind=cfg.task)


def save_training_checkpoint(out_dir: Path, step: int, model, ema: EMA, opt, timesteps, cfg: TrainConfig, keep: int = 3,
                             data_state: dict | None = None) -> Path:
    """Write checkpoints/step-N atomically (temp folder + rename, then the `latest` pointer)."""
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    net = _unwrap(model)
    _save_weights(tmp, "model", net.state_dict(), cfg)
    _save_weights(tmp, "ema", ema.shadow, cfg)
    opt_sd = opt.state_dict()
    tensors, meta_state = {}, {}
    for pid, st in opt_sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"opt.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                meta_state[f"{pid}.{key}"] = val
    sampler_state = timesteps.state_dict() if timesteps is not None else {}
    for key, val in sampler_state.items():
        if torch.is_tensor(val):
            tensors[f"sampler.{key}"] = val.detach().cpu().contiguous()
    meta = {
        "step": str(step),
        "param_groups": json.dumps(opt_sd["param_groups"]),
        "opt_scalars": json.dumps(meta_state),
        "sampler_scalars": json.dumps({k: v for k, v in sampler_state.items() if not torch.is_tensor(v)}),
        "train_config": json.dumps(train_config_to_dict(cfg)),
        "data_state": json.dumps(data_state or {}),
    }
    with atomic_path(tmp / "train_state.safetensors", mkdir=False) as part:  # umask permissions, as model/ema
        save_file(tensors or {"empty": torch.zeros(1)}, str(part), metadata=meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / "latest", final.name)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    pointer = out_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    folder = out_dir / "checkpoints" / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def load_training_checkpoint(folder: Path, model, ema: EMA, opt, timesteps, cfg: TrainConfig) -> tuple[int, dict]:
    """Restore model, EMA, optimizer and timestep sampler; returns (step, data stream state)."""
    from .io import load_checkpoint as load_st

    def weights(name: str) -> dict:
        if cfg.task == "clip":
            sd = {}
            for part, prefix in (("clip-image", "image_encoder."), ("clip-text", "text_encoder.")):
                _, _, sub, _ = load_st(folder / f"{name}-{part}.safetensors")
                sd.update({prefix + k: v for k, v in sub.items()})
            sd["logit_scale"] = _unwrap(model).state_dict()["logit_scale"]
            return sd
        _, _, sd, _ = load_st(folder / f"{name}.safetensors")
        return sd

    _unwrap(model).load_state_dict(weights("model"))
    ema.shadow = {k: v.float().clone() for k, v in weights("ema").items()}
    from safetensors import safe_open

    with safe_open(str(folder / "train_state.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    saved = train_config_from_dict(json.loads(meta["train_config"]))
    # max_steps may grow; worker processes read the same batches however many there are
    if dataclasses.replace(saved, max_steps=cfg.max_steps, out_dir=cfg.out_dir, num_workers=cfg.num_workers) != cfg:
        raise GlidekitError(f"{folder} was written with a different training config; resume with the same config "
                            "(only max_steps and num_workers may change) or start a new out_dir")
    state: dict = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    for key, val in json.loads(meta["opt_scalars"]).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    if timesteps is not None:
        sampler_state = {k[len("sampler."):]: v for k, v in tensors.items() if k.startswith("sampler.")}
        sampler_state.update(json.loads(meta["sampler_scalars"]))
        timesteps.load_state_dict(sampler_state)
    return int(meta["step"]), json.loads(meta.get("data_state", "{}"))


# --------------------------------------------------------------------------------------------
# the loop


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "auto":
        return runtime.choose_dtype(device, "auto")
    return runtime.choose_dtype(device, cfg.precision)


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    time_limit_s: float | None = None,
) -> dict:
    """Train until `cfg.max_steps`; returns the last logged record. Works under torchrun.

    time_limit_s: stop after the first step that ends past this many seconds of training (all
    ranks together), with a checkpoint there, so `resume=True` continues as if never stopped."""
    from tqdm.auto import tqdm

    from .data import build_dataset

    d = init_distributed(device)
    if cfg.batch_size % d.world:
        raise GlidekitError(f"batch_size {cfg.batch_size} is not divisible by {d.world} processes")
    out_dir = Path(cfg.out_dir)
    dataset = build_dataset(cfg.data, _data_size(cfg), hflip=cfg.hflip, seed=cfg.seed)

    stream = None
    if isinstance(dataset, torch.utils.data.IterableDataset):
        from .data import make_loader

        stream = make_loader(dataset, cfg.batch_size // d.world, seed=cfg.seed, rank=d.rank, world_size=d.world,
                             num_workers=cfg.num_workers)
    task = make_task(cfg, d.device)
    model = task.model
    if cfg.init_from and not resume:
        for note in init_from_checkpoint(model, cfg.init_from, cfg.init_fresh):
            if d.main:
                print(f"init_from: {note}")
    if cfg.freeze:
        n = freeze_parameters(model, cfg.freeze)
        if d.main:
            print(f"freeze: {n} tensors not trained ({','.join(cfg.freeze)})")
    if cfg.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    model.train()
    dtype = _precision(cfg, d.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # fused AdamW: one kernel over all parameters (CPU and CUDA); the per-tensor loop cost ~10 % of
    # a small model's step on CPU, mostly over the GPT-2 token embedding (benchmarks/bench_train.py)
    fused = d.device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    ema = EMA(model, cfg.ema_rate)
    timesteps = getattr(task, "timesteps", None)
    step = 0
    if resume:
        folder = latest_checkpoint(out_dir)
        if folder is None:
            raise GlidekitError(f"nothing to resume in {out_dir}: no checkpoint there yet")
        step, data_state = load_training_checkpoint(folder, model, ema, opt, timesteps, cfg)
        if stream is not None:
            stream.load_state_dict(data_state)
    ddp = nn.parallel.DistributedDataParallel(model) if d.world > 1 else model
    stream_it = iter(stream) if stream is not None else None
    reader = _map_reader(dataset, step, cfg, d) if stream is None and cfg.num_workers else None

    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.json", json.dumps(train_config_to_dict(cfg), indent=2))
        if cfg.init_from and not resume:
            # what the run began from, by content: bundling a run replaces its bundled file in place, so the
            # path alone does not say which version a run fine-tuned (scripts/bundle_model.py reads this)
            atomic_write_text(out_dir / INIT_FROM_RECORD,
                              json.dumps({"path": cfg.init_from, "sha256": file_sha256(cfg.init_from)}, indent=2))
    per_rank = cfg.batch_size // d.world
    micro = cfg.microbatch or per_rank
    writer = _tensorboard(cfg, out_dir, d)
    record: dict = {}
    skipped_total = 0
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and d.main), desc=f"train {cfg.task}")
    t_last, samples_since = time.perf_counter(), 0
    t_start = t_last
    while step < cfg.max_steps:
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(hash((cfg.seed, step, d.rank)) & (2**63 - 1))  # dropout: per step, per rank
        opt.zero_grad(set_to_none=True)
        logs: dict[str, list[torch.Tensor]] = {}
        skipped = 0
        for first, batch in _step_batches(dataset, stream_it, step, cfg, d, micro, reader):
            skipped += int(batch.get("skipped", 0))
            n = len(batch["caption"])
            if n == 0:
                continue
            gens = [sample_generator(cfg.seed, step, first + j) for j in range(n)]
            sync = first + micro >= (d.rank + 1) * per_rank or d.world == 1
            ctx = contextlib.nullcontext() if sync else ddp.no_sync()
            with ctx, runtime.autocast_context(d.device, dtype):
                per_sample, extra = task.losses(ddp, batch, gens, step)
                # sum / global batch, times world: DDP's gradient mean then equals the global mean
                loss = per_sample.float().sum() * d.world / cfg.batch_size
            (scaler.scale(loss) if scaler else loss).backward()
            logs.setdefault("loss", []).append(per_sample.detach().float())
            for key, val in extra.items():
                logs.setdefault(key, []).append(val.detach().float() if val.is_floating_point() else val.detach())
        if scaler:
            scaler.unscale_(opt)
        params = [p for p in model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        bad = _all_reduce(torch.tensor([0.0 if torch.isfinite(grad_norm) else 1.0], device=d.device), dist.ReduceOp.MAX)
        if bad.item():
            opt.zero_grad(set_to_none=True)  # NaN/inf guard: skip the update, keep going
            if scaler:
                scaler.update()
            record = {"step": step, "event": "skipped non-finite gradient"}
            _log(out_dir, record, d, writer)
        else:
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            ema.update(model, step)
        if timesteps is not None and "k" in logs and hasattr(timesteps, "update"):
            timesteps.update(_all_gather(torch.cat(logs["k"])), _all_gather(torch.cat(logs["raw"])))
        step += 1
        skipped_total += int(_all_reduce(torch.tensor([float(skipped)], device=d.device)).item())
        samples_since += cfg.batch_size
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.perf_counter()
            record = {"step": step, "lr": lr, "grad_norm": float(grad_norm), "samples_per_s": samples_since / (now - t_last),
                      "skipped_samples": skipped_total}
            for key, vals in logs.items():
                if key in ("k", "raw"):
                    continue
                v = _all_gather(torch.cat(vals))
                record[key] = float(v.mean())
            t_last, samples_since = now, 0
            _log(out_dir, record, d, writer)
            bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}")
        if on_step is not None:
            on_step(step, record)
        if d.main and (step % cfg.save_every == 0 or step == cfg.max_steps):
            save_training_checkpoint(out_dir, step, model, ema, opt, timesteps, cfg,
                                     data_state=stream.state_dict() if stream is not None else None)
        if d.main and cfg.preview_every and step % cfg.preview_every == 0:
            _preview(cfg, ema, out_dir, step, d.device)
        if time_limit_s is not None and _all_reduce(torch.tensor(
                [float(time.perf_counter() - t_start > time_limit_s)], device=d.device)).item() > 0:
            if step < cfg.max_steps:
                if d.main and step % cfg.save_every:
                    save_training_checkpoint(out_dir, step, model, ema, opt, timesteps, cfg,
                                             data_state=stream.state_dict() if stream is not None else None)
                record = {**record, "step": step, "event": f"stopped at the time limit ({time_limit_s:g} s)"}
                _log(out_dir, record, d, writer)
            if d.world > 1:
                dist.barrier()
            break
        if d.world > 1:
            dist.barrier()
    bar.close()
    if writer is not None:
        writer.close()
    return record


class _MicroBatchIndices:
    """The dataset indices of each micro-batch this rank reads, step after step from `start`, in
    the order the loop takes them (`batch_indices`, `rank_slice`), for a DataLoader's workers."""

    def __init__(self, n: int, start: int, cfg: TrainConfig, d: Dist, micro: int) -> None:
        self.n, self.start, self.cfg, self.d, self.micro = n, start, cfg, d, micro

    def __iter__(self):
        step = self.start
        while True:
            _, mine = rank_slice(batch_indices(self.n, step, self.cfg.batch_size, self.cfg.seed), self.d)
            for m0 in range(0, len(mine), self.micro):
                yield mine[m0:m0 + self.micro]
            step += 1


def _map_reader(dataset, start: int, cfg: TrainConfig, d: Dist):
    """An iterator of collated micro-batches of map-style `dataset` from step `start` on, read
    ahead by `cfg.num_workers` worker processes: the same batches as reading in-process, since
    an item depends on its index alone."""
    from .data import collate

    micro = cfg.microbatch or cfg.batch_size // d.world
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_MicroBatchIndices(len(dataset), start, cfg, d, micro),
                                         collate_fn=collate, num_workers=cfg.num_workers,
                                         pin_memory=d.device.type == "cuda")
    return iter(loader)


def _step_batches(dataset, stream, step: int, cfg: TrainConfig, d: Dist, micro: int, reader=None):
    """This rank's (first global sample index, collated micro-batch) pairs for `step`.

    Map-style data: the step's slice of the seeded permutation, read here or, with `reader`
    (`_map_reader`), taken from its workers; streamed shards (`stream` is the resumable loader's
    iterator): its next batch, split into micro-batches."""
    from .data import collate

    per_rank = cfg.batch_size // d.world
    base = d.rank * per_rank
    if stream is not None:
        batch = next(stream)
        for m0 in range(0, per_rank, micro):
            part = {k: (v[m0:m0 + micro] if isinstance(v, (list, torch.Tensor)) else v) for k, v in batch.items()}
            part["skipped"] = batch.get("skipped", 0) if m0 == 0 else 0
            yield base + m0, part
        return
    _, mine = rank_slice(batch_indices(len(dataset), step, cfg.batch_size, cfg.seed), d)
    for m0 in range(0, len(mine), micro):
        yield base + m0, next(reader) if reader is not None else collate([dataset[i] for i in mine[m0:m0 + micro]])


def _data_size(cfg: TrainConfig) -> int:
    if cfg.data_size:
        return cfg.data_size
    if isinstance(cfg.model, GlideConfig):
        return cfg.model.unet.image_size
    return cfg.model.image_size


def _log(out_dir: Path, record: dict, d: Dist, writer=None) -> None:
    """Append to log.jsonl (and TensorBoard when enabled); rank 0 only."""
    if not d.main:
        return
    with open(out_dir / "log.jsonl", "a") as f:
        f.write(json.dumps({**record, "time": time.time()}) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                writer.add_scalar(key, value, record["step"])


def _tensorboard(cfg: TrainConfig, out_dir: Path, d: Dist):
    if not (cfg.tensorboard and d.main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GlidekitError("tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out_dir / "tensorboard"))


def _preview(cfg: TrainConfig, ema: EMA, out_dir: Path, step: int, device: torch.device) -> None:
    """Sample the EMA model on the preview prompts into previews/step-N.png."""
    if cfg.task not in ("base",) or not cfg.preview_prompts:
        return
    from .images import make_grid, save_png, tensor_to_pils
    from .pipelines import GlideModel, SamplerSpec, text_to_image

    net = build_model(cfg.task, cfg.model, device=device)
    net.load_state_dict({k: v.to(net.state_dict()[k].dtype) for k, v in ema.shadow.items()})
    model = GlideModel(net.eval(), cfg.model, f"{out_dir} step {step}")
    with torch.no_grad():
        res = text_to_image(model, list(cfg.preview_prompts), seed=0, sampler=SamplerSpec("dpm++2m", cfg.preview_steps))
    save_png(make_grid(tensor_to_pils(res.images)), out_dir / "previews" / f"step-{step:07d}.png",
             {"step": step, "prompts": list(cfg.preview_prompts)})


def count_parameters(cfg: TrainConfig) -> int:
    """Parameters of the model a config trains (built on the meta device: no memory, instant)."""
    from .models.classifier import NoisyClassifier
    from .models.clip import NoisedCLIP
    from .models.unet import GlideUNet

    with torch.device("meta"):
        if cfg.task == "clip":
            model = NoisedCLIP(cfg.model)
        elif cfg.task == "classifier":
            model = NoisyClassifier(cfg.model)
        else:
            model = GlideUNet(cfg.model.unet)
    return sum(p.numel() for p in model.parameters())
