"""The training loop: every task steps, loss falls, exact resume (also after kill -9), DDP == 1
process, corrupt images skipped, interrupted checkpoints never replace good ones, fine-tuning."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from glidekit.errors import GlidekitError
from glidekit.train import init_from_checkpoint, latest_checkpoint, train
from glidekit.train_config import config_overrides, resolve_train_config

ROOT = Path(__file__).resolve().parent.parent
TINY_UNET = ["model.unet.image_size=16", "model.unet.model_channels=32", "model.unet.channel_mult=1,2",
             "model.unet.num_res_blocks=1", "model.unet.attention_resolutions=8", "model.unet.num_head_channels=16",
             "model.unet.dropout=0", "model.unet.text.width=32", "model.unet.text.layers=1", "model.unet.text.heads=2",
             "model.unet.text.text_ctx=16"]
FAST = ["batch_size=4", "log_every=1", "save_every=1000", "precision=fp32", "ema_rate=0.9"]


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Eight captioned, labelled 16 px images with a JSONL manifest."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    rows = []
    for i in range(8):
        name = list(colours)[i % 2]
        arr = np.zeros((16, 16, 3), np.uint8)
        arr[4:12, 4:12] = colours[name]
        arr = np.clip(arr.astype(int) + rng.integers(-10, 10, arr.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i}.png")
        (d / f"{i}.txt").write_text(f"a {name} square")
        rows.append({"file": f"{i}.png", "caption": f"a {name} square", "label": i % 2})
    (d / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d


def tiny(task_preset: str, data_spec: str, out: Path, *extra: str):
    return resolve_train_config(task_preset, [*TINY_UNET, *FAST, f"data={data_spec}", f"out_dir={out}", *extra])


def losses_of(out: Path) -> dict[int, float]:
    recs = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def test_one_step_of_every_task(data, tmp_path):
    m = f"manifest:{data / 'manifest.jsonl'}"
    configs = {
        "base": tiny("base-32", f"folder:{data}", tmp_path / "base"),
        "base-inpaint": resolve_train_config("base-inpaint", [*TINY_UNET, *FAST, f"data=folder:{data}", f"out_dir={tmp_path / 'bi'}"]),
        "upsample": resolve_train_config("upsample", [*TINY_UNET, *FAST, f"data=folder:{data}", "low_res_size=8", "data_size=24",
                                                      "lowres_noise=0.02", "lowres_blur=0.5", f"out_dir={tmp_path / 'up'}"]),
        "upsample-inpaint": resolve_train_config("upsample-inpaint", [*TINY_UNET, *FAST, f"data=folder:{data}", "low_res_size=8",
                                                                      f"out_dir={tmp_path / 'ui'}"]),
        "class": resolve_train_config("class-32", [*[o for o in TINY_UNET if ".text." not in o], *FAST, f"data={m}",
                                                   f"out_dir={tmp_path / 'cls'}"]),
        "clip": resolve_train_config("clip", ["model.image_size=16", "model.patch_size=4", "model.n_embd=16",
                                              "model.n_head_text=2", "model.n_head_state_text=8", "model.n_xf_blocks_text=1",
                                              "model.n_head_image=2", "model.n_head_state_image=8", "model.n_xf_blocks_image=1",
                                              *FAST, f"data=folder:{data}", f"out_dir={tmp_path / 'clip'}"]),
        "classifier": resolve_train_config("classifier", ["model.image_size=16", "model.model_channels=32", "model.channel_mult=1,2",
                                                          "model.num_res_blocks=1", "model.attention_resolutions=8",
                                                          "model.num_head_channels=16", "model.num_classes=2", *FAST,
                                                          f"data={m}", f"out_dir={tmp_path / 'clf'}"]),
    }
    for name, cfg in configs.items():
        cfg = cfg.__class__(**{**cfg.__dict__, "max_steps": 1, "save_every": 1})
        start = time.perf_counter()
        rec = train(cfg, progress=False)
        assert np.isfinite(rec["loss"]), name
        assert latest_checkpoint(Path(cfg.out_dir)) is not None, name
        assert time.perf_counter() - start < 30, name


def test_upsamplers_train_on_patches_and_sample_whole_images(data, tmp_path, monkeypatch):
    """patch_size: the upsampler (and the inpainting upsampler) sees 8 px crops of its 16 px targets
    with the 4 px of low-res under them, then samples whole 16 px images from 8 px inputs."""
    from glidekit.errors import ConfigError
    from glidekit.models.unet import GlideUNet
    from glidekit.pipelines import GlideModel, SamplerSpec, upsample

    sizes = []
    forward = GlideUNet.forward

    def spy(self, x, *a, **kw):
        sizes.append((x.shape[-1], kw["low_res"].shape[-1]))
        return forward(self, x, *a, **kw)

    monkeypatch.setattr(GlideUNet, "forward", spy)
    for task in ("upsample", "upsample-inpaint"):
        out = tmp_path / task
        cfg = resolve_train_config(task, [*TINY_UNET, *FAST, f"data=folder:{data}", "low_res_size=8", "patch_size=8",
                                          "max_steps=2", "save_every=2", f"out_dir={out}"])
        sizes.clear()
        assert np.isfinite(train(cfg, progress=False)["loss"])
        assert sizes and set(sizes) == {(8, 4)}
    model = GlideModel.load(str(latest_checkpoint(tmp_path / "upsample") / "ema.safetensors"), device="cpu", dtype="float32")
    sizes.clear()
    images = upsample(model, torch.zeros(1, 3, 8, 8), ["a red square"], seeds=[0], sampler=SamplerSpec("ddim", 2))
    assert images.shape == (1, 3, 16, 16) and set(sizes) == {(16, 8)}
    for bad, says in (("patch_size=5", "multiple of 2"), ("patch_size=32", "up to the model's 16 px")):
        with pytest.raises(ConfigError, match=says):
            resolve_train_config("upsample", [*TINY_UNET, "low_res_size=8", bad])
    with pytest.raises(ConfigError, match="low_res_size to divide"):  # no whole low-res pixels under a crop
        resolve_train_config("upsample", [*TINY_UNET, "low_res_size=6", "patch_size=8"])
    with pytest.raises(ConfigError, match="upsampler tasks only"):
        resolve_train_config("base", [*TINY_UNET, "patch_size=8"])


def test_loss_falls_when_overfitting(data, tmp_path):
    cfg = tiny("base-32", f"folder:{data}", tmp_path, "max_steps=60", "lr=2e-3", "cfg_dropout=0")
    train(cfg, progress=False)
    losses = losses_of(tmp_path)
    first = np.mean([losses[s] for s in range(1, 11)])
    last = np.mean([losses[s] for s in range(51, 61)])
    assert last < 0.7 * first, (first, last)


def test_v_prediction_trains_and_loads_as_v(data, tmp_path):
    from glidekit.pipelines import GlideModel, SamplerSpec, text_to_image

    cfg = tiny("base-32", f"folder:{data}", tmp_path, "max_steps=40", "lr=2e-3", "cfg_dropout=0",
               "model.diffusion.prediction=v", "save_every=40")
    train(cfg, progress=False)
    losses = losses_of(tmp_path)
    assert np.mean([losses[s] for s in range(31, 41)]) < 0.7 * np.mean([losses[s] for s in range(1, 11)])
    model = GlideModel.load(str(latest_checkpoint(tmp_path) / "ema.safetensors"), device="cpu", dtype="float32")
    assert model.config.diffusion.prediction == "v"
    images = text_to_image(model, ["a red square"], sampler=SamplerSpec("dpm++2m", 4)).images
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()


def test_glide_info_gives_a_checkpoints_step_and_the_command_that_trains_it(data, tmp_path, capsys):
    """`glide info` on a checkpoint of `glide train`: its step and a `glide train` command whose
    config is exactly the one the run saved, from the preset needing the fewest overrides."""
    import shlex

    from glidekit.cli import main

    cfg = tiny("base-32", f"folder:{data}", tmp_path, "max_steps=2", "save_every=2", "preview_prompts=a red, square|")
    train(cfg, progress=False)
    assert main(["info", str(latest_checkpoint(tmp_path) / "ema.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train_step"] == 2 and len(info["trained_with"]) == 1
    words = shlex.split(info["trained_with"][0]["command"])
    assert words[:2] == ["glide", "train"] and resolve_train_config(words[2], words[3:]) == cfg
    assert len(words[3:]) <= len(config_overrides("base-32", cfg))  # no longer than from the preset it came from
    (latest_checkpoint(tmp_path) / "train_state.safetensors").write_bytes(b"truncated")  # a half-copied folder
    assert main(["info", str(latest_checkpoint(tmp_path) / "ema.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "trained_with" not in info and "unreadable" in info["trained_with_error"]
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    ema = latest_checkpoint(tmp_path) / "ema.safetensors"
    with safe_open(str(ema), "pt") as f:
        meta = f.metadata()
    edited = tmp_path / "edited.safetensors"  # a file whose train_stages someone cut short by hand
    save_file(load_file(str(ema)), str(edited), metadata={**meta, "train_step": "2", "train_stages": '[{"steps": 2'})
    assert main(["info", str(edited)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "trained_with" not in info and "malformed" in info["trained_with_error"]


def test_resume_continues_exactly(data, tmp_path):
    full = tmp_path / "full"
    train(tiny("base-32", f"folder:{data}", full, "max_steps=6", "timestep_sampler=loss-aware"), progress=False)
    part = tmp_path / "part"
    train(tiny("base-32", f"folder:{data}", part, "max_steps=3", "save_every=3", "timestep_sampler=loss-aware"), progress=False)
    train(tiny("base-32", f"folder:{data}", part, "max_steps=6", "save_every=3", "timestep_sampler=loss-aware"),
          resume=True, progress=False)
    a, b = losses_of(full), losses_of(part)
    for step in (4, 5, 6):
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-7), step


def _cli(*args, env=None):
    return [sys.executable, "-m", "glidekit", "train", *map(str, args)]


def test_kill_9_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    common = [*TINY_UNET, *FAST, f"data=folder:{data}", "max_steps=12", "save_every=2", "--quiet"]
    subprocess.run(_cli("base-32", *common, f"out_dir={tmp_path / 'full'}"), check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli("base-32", *common, f"out_dir={out}"), env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while time.time() < deadline and (latest_checkpoint(out) is None or latest_checkpoint(out).name < "step-0000004"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest_checkpoint(out) is not None
    subprocess.run(_cli("base-32", *common, f"out_dir={out}", "--resume"), check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    a, b = losses_of(tmp_path / "full"), losses_of(out)
    assert a[12] == pytest.approx(b[12], rel=1e-6, abs=1e-7)
    from safetensors.torch import load_file

    wa = load_file(latest_checkpoint(tmp_path / "full") / "ema.safetensors")
    wb = load_file(latest_checkpoint(out) / "ema.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_two_gloo_processes_equal_one(data, tmp_path):
    common = [*TINY_UNET, *FAST, f"data=folder:{data}", "max_steps=3", "save_every=3", "--quiet", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli("base-32", *common, f"out_dir={tmp_path / 'one'}"), check=True, timeout=300, env=env)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    "-m", "glidekit", "train", "base-32", *common, f"out_dir={tmp_path / 'two'}"], check=True, timeout=300, env=env)
    a, b = losses_of(tmp_path / "one"), losses_of(tmp_path / "two")
    for step in (1, 2, 3):
        assert a[step] == pytest.approx(b[step], rel=1e-5), step
    from safetensors.torch import load_file

    wa = load_file(latest_checkpoint(tmp_path / "one") / "model.safetensors")
    wb = load_file(latest_checkpoint(tmp_path / "two") / "model.safetensors")
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < 1e-5, worst


def test_corrupt_images_are_skipped_and_counted(data, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for f in data.glob("*.png"):
        (d / f.name).write_bytes(f.read_bytes())
        (d / f"{f.stem}.txt").write_text("a square")
    (d / "bad.png").write_bytes(b"\x89PNG not really")
    (d / "bad.txt").write_text("broken")
    cfg = tiny("base-32", f"folder:{d}", tmp_path / "run", "max_steps=4", "batch_size=9")
    rec = train(cfg, progress=False)
    assert rec["skipped_samples"] >= 1 and np.isfinite(rec["loss"])


def test_interrupted_checkpoint_never_replaces_the_last_good_one(data, tmp_path, monkeypatch):
    import glidekit.train as T

    cfg = tiny("base-32", f"folder:{data}", tmp_path, "max_steps=2", "save_every=1")
    train(cfg, progress=False)
    good = latest_checkpoint(tmp_path)
    assert good.name == "step-0000002"

    def dying_save(*a, **k):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(T, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg.__class__(**{**cfg.__dict__, "max_steps": 3}), resume=True, progress=False)
    assert latest_checkpoint(tmp_path) == good
    assert (good / "model.safetensors").is_file() and (good / "train_state.safetensors").is_file()


def test_inpainting_fine_tune_starts_where_the_base_model_was(data, tmp_path):
    from glidekit.io import load_model
    from glidekit.models.unet import GlideUNet

    train(tiny("base-32", f"folder:{data}", tmp_path / "base", "max_steps=2", "save_every=2"), progress=False)
    base_ckpt = latest_checkpoint(tmp_path / "base") / "ema.safetensors"
    base, _, cfg = load_model(base_ckpt)
    icfg = resolve_train_config("base-inpaint", [*TINY_UNET, *FAST, f"data=folder:{data}", f"out_dir={tmp_path / 'i'}"])
    inpaint = GlideUNet(icfg.model.unet).eval()
    notes = init_from_checkpoint(inpaint, str(base_ckpt))
    assert any("zeroed" in n for n in notes)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    tokens = torch.randint(0, 50000, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.bool)
    with torch.no_grad():
        a = base(x, t, tokens, mask)
        b = inpaint(x, t, tokens, mask, inpaint_image=torch.randn(2, 3, 16, 16), inpaint_mask=torch.ones(2, 1, 16, 16))
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("blocks", [(1, 2), (1, 3), (2, 3)])
def test_a_deeper_model_starts_where_the_shallower_one_was(tmp_path, blocks):
    """init_from a checkpoint with fewer ResBlocks per level (otherwise the same UNet): the deeper
    model computes exactly what the source does (added blocks are identities, every decoder block
    gets its old skip), its new blocks then train; another difference still refuses."""
    from glidekit.io import save_checkpoint
    from glidekit.models.unet import GlideUNet

    src_n, n = blocks
    cfg = resolve_train_config("base-32", [*TINY_UNET, *FAST, "model.unet.channel_mult=1,2,2",
                                           "model.unet.attention_resolutions=8,4", f"model.unet.num_res_blocks={src_n}",
                                           "data=shapes", f"out_dir={tmp_path / 'f'}"]).model
    torch.manual_seed(0)
    source = GlideUNet(cfg.unet).eval()
    with torch.no_grad():  # a generic function: no block is near an identity as at initialisation
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(tmp_path / "src.safetensors", source.state_dict(), cfg, kind="base")
    deep = GlideUNet(dataclasses.replace(cfg.unet, num_res_blocks=n)).eval()
    notes = init_from_checkpoint(deep, str(tmp_path / "src.safetensors"))
    assert notes == [f"deepened from {src_n} to {n} ResBlocks per level: {3 * (n - src_n)} encoder and "
                     f"{3 * (n - src_n)} decoder blocks added as identities (the model starts as the source computes)"]
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    tokens, mask = torch.randint(0, 50000, (2, 16)), torch.ones(2, 16, dtype=torch.bool)
    with torch.no_grad():
        want = source(x, t, tokens, mask)
        assert torch.allclose(deep(x, t, tokens, mask), want, atol=1e-5)
    deep.train()
    loss = deep(x, t, tokens, mask).square().mean()
    loss.backward()
    added = deep.output_blocks[1][0].out_layers[3].weight  # the first added decoder block's output conv
    assert added.grad is not None and added.grad.abs().sum() > 0
    # into the deeper inpainting variant: its new input channels zeroed as well
    inpaint = GlideUNet(dataclasses.replace(cfg.unet, num_res_blocks=n, inpaint=True)).eval()
    assert len(init_from_checkpoint(inpaint, str(tmp_path / "src.safetensors"))) == 2
    with torch.no_grad():
        out = inpaint(x, t, tokens, mask, inpaint_image=torch.randn(2, 3, 16, 16), inpaint_mask=torch.ones(2, 1, 16, 16))
    assert torch.allclose(out, want, atol=1e-5)
    wider = GlideUNet(dataclasses.replace(cfg.unet, num_res_blocks=n, model_channels=64))
    with pytest.raises(GlidekitError, match="cannot fine-tune"):
        init_from_checkpoint(wider, str(tmp_path / "src.safetensors"))


def test_init_fresh_text_keeps_a_fresh_text_tower_and_copies_the_rest(data, tmp_path):
    """init_fresh=text: the UNet comes from init_from, the text tower (embeddings, transformer,
    final_ln) keeps its fresh initialisation, e.g. to retrain a text encoder that stayed a bag
    of words; a prefix matching nothing and init_fresh without init_from are refused."""
    from glidekit.errors import ConfigError, GlidekitError
    from glidekit.models.unet import TEXT_TOWER, GlideUNet

    train(tiny("base-32", f"folder:{data}", tmp_path / "base", "max_steps=2", "save_every=2"), progress=False)
    src_path = latest_checkpoint(tmp_path / "base") / "model.safetensors"
    src = load_file(src_path)
    cfg = tiny("base-32", f"folder:{data}", tmp_path / "f", "max_steps=1", f"init_from={src_path}", "init_fresh=text")
    torch.manual_seed(1)
    net = GlideUNet(cfg.model.unet)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    notes = init_from_checkpoint(net, str(src_path), cfg.init_fresh)
    got = net.state_dict()
    text = [k for k in got if k.startswith(TEXT_TOWER)]
    assert any(k.startswith("transformer.") for k in text) and "positional_embedding" in text
    assert "transformer_proj.weight" not in text  # the UNet's projection of the text features is copied
    assert notes[0].startswith(f"{len(text)} tensors kept fresh by init_fresh")
    for k, v in got.items():
        assert torch.equal(v, fresh[k] if k in text else src[k]), k
    assert not torch.equal(got["token_embedding.weight"], src["token_embedding.weight"])
    with pytest.raises(GlidekitError, match="init_fresh=nothing. matches none"):
        init_from_checkpoint(GlideUNet(cfg.model.unet), str(src_path), ("nothing.",))
    with pytest.raises(ConfigError, match="init_fresh needs init_from"):
        tiny("base-32", f"folder:{data}", tmp_path / "g", "init_fresh=text")
    train(cfg, progress=False)  # the command line form trains
    assert latest_checkpoint(tmp_path / "f") is not None


def test_freeze_keeps_the_named_tensors_and_trains_the_rest(data, tmp_path):
    """freeze=text,transformer_proj.: a tower pretrained apart stays exactly as it was (model and
    EMA) while the UNet trains; a prefix matching nothing is one error."""
    from glidekit.errors import GlidekitError
    from glidekit.models.unet import TEXT_TOWER

    train(tiny("base-32", f"folder:{data}", tmp_path / "base", "max_steps=1", "save_every=1"), progress=False)
    src_path = latest_checkpoint(tmp_path / "base") / "model.safetensors"
    src = load_file(src_path)
    cfg = tiny("base-32", f"folder:{data}", tmp_path / "f", "max_steps=3", "save_every=3", f"init_from={src_path}",
               "freeze=text,transformer_proj.", "lr=1e-2")
    train(cfg, progress=False)
    for name in ("model", "ema"):
        got = load_file(latest_checkpoint(tmp_path / "f") / f"{name}.safetensors")
        frozen = [k for k in got if k.startswith((*TEXT_TOWER, "transformer_proj."))]
        assert "transformer_proj.weight" in frozen and "token_embedding.weight" in frozen
        assert all(torch.equal(got[k], src[k]) for k in frozen)
        assert not torch.equal(got["out.2.weight"], src["out.2.weight"])  # the UNet trained
    bad = tiny("base-32", f"folder:{data}", tmp_path / "g", "max_steps=1", "freeze=nothing.")
    with pytest.raises(GlidekitError, match="freeze=nothing. matches none"):
        train(bad, progress=False)


def test_a_fine_tune_records_the_file_it_began_from_by_content(data, tmp_path):
    """init_from: the run folder records that file's path and sha256 (INIT_FROM_RECORD), since bundling
    replaces a bundled file in place; a resumed run keeps the record of what it began from."""
    import hashlib

    from glidekit.train import INIT_FROM_RECORD

    train(tiny("base-32", f"folder:{data}", tmp_path / "base", "max_steps=1", "save_every=1"), progress=False)
    src = tmp_path / "m.safetensors"
    src.write_bytes((latest_checkpoint(tmp_path / "base") / "model.safetensors").read_bytes())
    began = hashlib.sha256(src.read_bytes()).hexdigest()
    train(tiny("base-32", f"folder:{data}", tmp_path / "f", "max_steps=1", "save_every=1", f"init_from={src}"),
          progress=False)
    record = tmp_path / "f" / INIT_FROM_RECORD
    assert json.loads(record.read_text()) == {"path": str(src), "sha256": began}
    src.write_bytes(src.read_bytes()[:-4] + b"    ")  # the file is replaced after the run began
    train(tiny("base-32", f"folder:{data}", tmp_path / "f", "max_steps=2", "save_every=1", f"init_from={src}"),
          progress=False, resume=True)
    assert json.loads(record.read_text())["sha256"] == began
    train(tiny("base-32", f"folder:{data}", tmp_path / "base", "max_steps=2", "save_every=1"), progress=False,
          resume=True)
    assert not (tmp_path / "base" / INIT_FROM_RECORD).exists()


def test_text_layout_pretraining_changes_only_the_text_path(tmp_path):
    """scripts/shapes_text_pretrain.py: a fresh text tower learns the layout heads (the object on
    top or on the left first, whatever the wording), the UNet is untouched, and xf_proj keeps the
    source model's size."""
    import importlib.util

    from glidekit.data.shapes import all_captions
    from glidekit.io import save_checkpoint
    from glidekit.models.unet import GlideUNet

    spec = importlib.util.spec_from_file_location("pretrain", ROOT / "scripts" / "shapes_text_pretrain.py")
    pre = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pre)
    assert pre.layout_targets("a red circle below a blue square") == pre.layout_targets("a blue square above a red circle")
    assert pre.layout_targets("") == [7, 3, 7, 3, 7, 2]  # every head "none"
    assert pre.layout_targets("a large red circle on the left")[2:] == [7, 3, 0, 1]

    cfg = tiny("base-32", "shapes", tmp_path / "unused")
    torch.manual_seed(0)
    src = GlideUNet(cfg.model.unet).state_dict()
    path = save_checkpoint(tmp_path / "src.safetensors", src, cfg.model, kind="base")
    net, kind, config, result = pre.pretrain(str(path), steps=150, batch=64, lr=3e-3, hold_out=True, seed=0, log_every=1000)
    assert kind == "base" and result["held out"]["captions"] == 512 and result["captions trained"] == 1 + 210 + 1000
    assert result["train"]["layout"] > 60 and result["train"]["first colour"] > 40  # chance: 12.5 %
    got = net.state_dict()
    tower = pre.key_prefixes(pre.FRESH)
    assert any(k.startswith("transformer.") for k in got) and any(k.startswith("transformer_proj.") for k in got)
    for k, v in got.items():
        assert torch.equal(v, src[k]) != k.startswith(tower), k
    # xf_proj over the trained captions has the source model's size again
    caps = ["", *all_captions("one"), *pre.captions_and_labels()[0][:pre.N_FIT]]
    tokens, mask = pre.text_tokenizer(config.unet.text).encode_batch(caps, 16)
    with torch.no_grad():
        rms = net.encode_text(tokens, mask)["xf_proj"].square().mean().sqrt().item()
    assert rms == pytest.approx(result["xf_proj rms"]["source"], rel=1e-4)
    assert result["xf_proj rms"]["trained (rescaled to the source's)"] > 1.5 * rms  # the rescale was needed here
    # an output path that cannot be written is refused before any training, not after it
    with pytest.raises(pre.GlidekitError, match="not a writable folder"):
        pre.main([str(path), str(tmp_path / "no" / "such" / "out.safetensors"), "--steps", "1", "--batch", "2"])


def test_fresh_text_embeddings_start_on_one_scale():
    """Tokens N(0, 0.02) and positions N(0, 0.01), as CLIP and GPT-2: with torch's N(0, 1) tokens
    the positions start 100x weaker and the trained transformer ignores word order."""
    from glidekit.config import TextEncoderConfig, UNetConfig
    from glidekit.models.unet import GlideUNet

    torch.manual_seed(0)
    net = GlideUNet(UNetConfig(image_size=16, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                               num_head_channels=32, attention_resolutions=(), text=TextEncoderConfig(n_vocab=500, text_ctx=16, width=64,
                                                                                layers=1, heads=2)))
    tok = net.token_embedding.weight.std().item()
    pos = net.positional_embedding.std().item()
    assert 0.015 < tok < 0.025 and 0.007 < pos < 0.013
    assert tok / pos < 4


def test_coordinate_channels_fine_tune_starts_where_the_model_was_and_sees_position(data, tmp_path):
    """model.unet.coords=true: x and y in [-1, 1] as 2 more input channels (zeroed by init_from, so
    the fine-tune starts as the source model); once weighted, they change the output; the
    checkpoint loads back as a base model with its coordinates."""
    import dataclasses

    from glidekit.io import load_model, save_checkpoint
    from glidekit.models.unet import GlideUNet, coordinate_channels

    grid = coordinate_channels(torch.zeros(1, 3, 4, 8))
    assert grid.shape == (1, 2, 4, 8)
    assert torch.allclose(grid[0, 0, 0], torch.linspace(-7 / 8, 7 / 8, 8))  # x: left to right
    assert torch.allclose(grid[0, 1, :, 0], torch.linspace(-3 / 4, 3 / 4, 4))  # y: top to bottom

    train(tiny("base-32", f"folder:{data}", tmp_path / "base", "max_steps=2", "save_every=2"), progress=False)
    base_ckpt = latest_checkpoint(tmp_path / "base") / "ema.safetensors"
    base, _, cfg = load_model(base_ckpt)
    ccfg = resolve_train_config("base-32", [*TINY_UNET, *FAST, "model.unet.coords=true", f"data=folder:{data}",
                                            f"out_dir={tmp_path / 'c'}"]).model
    assert ccfg.unet.in_channels == 5 and ccfg.unet.kind_in_channels == 3
    coords = GlideUNet(ccfg.unet).eval()
    assert any("2 new ones zeroed" in n for n in init_from_checkpoint(coords, str(base_ckpt)))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    tokens, mask = torch.randint(0, 50000, (2, 16)), torch.ones(2, 16, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(base(x, t, tokens, mask), coords(x, t, tokens, mask), atol=1e-6)
        coords.input_blocks[0][0].weight[:, 3:].normal_()
        out = coords(x, t, tokens, mask)
        assert not torch.allclose(out, base(x, t, tokens, mask), atol=1e-3)
    save_checkpoint(tmp_path / "c.safetensors", coords.state_dict(), ccfg, kind="base")
    loaded, kind, lcfg = load_model(tmp_path / "c.safetensors")
    assert kind == "base" and lcfg.unet.coords
    with torch.no_grad():
        assert torch.equal(loaded(x, t, tokens, mask), out)
    # without coordinates the same weights cannot load: the first conv has 2 channels too many
    with pytest.raises(Exception, match="input_blocks.0.0.weight"):
        GlideUNet(dataclasses.replace(ccfg.unet, coords=False)).load_state_dict(coords.state_dict())


def test_half_resolution_stage_fine_tunes_at_full_resolution_with_every_tensor(data, tmp_path):
    """Progressive resolution (the emoji-64 recipe): a model trained at half size with attention at
    the same depths (image_size / resolution) has exactly the full-size model's tensors, so
    init_from carries every one over and the full-size run trains from it; attention moved to
    another depth leaves tensors behind, and init_from says so."""
    import dataclasses

    from glidekit.io import load_model
    from glidekit.models.unet import GlideUNet

    train(tiny("base-32", f"folder:{data}", tmp_path / "half", "max_steps=2", "save_every=2"), progress=False)
    half = latest_checkpoint(tmp_path / "half") / "ema.safetensors"
    full = tiny("base-32", f"folder:{data}", tmp_path / "full", "model.unet.image_size=32",
                "model.unet.attention_resolutions=16", f"init_from={half}", "max_steps=1", "save_every=1")
    net = GlideUNet(full.model.unet)
    assert init_from_checkpoint(net, str(half)) == []  # nothing kept fresh, nothing unused
    train(full, progress=False)
    grown, _, cfg = load_model(latest_checkpoint(tmp_path / "full") / "ema.safetensors")
    assert cfg.unet.image_size == 32
    with torch.no_grad():
        out = grown(torch.randn(1, 3, 32, 32), torch.tensor([500]), torch.randint(0, 50000, (1, 16)),
                    torch.ones(1, 16, dtype=torch.bool))
    assert out.shape == (1, 6, 32, 32) and torch.isfinite(out).all()
    # attention at the top level (32 px, depth 1) instead of depth 2: fresh tensors there, the source's unused
    moved = init_from_checkpoint(GlideUNet(dataclasses.replace(full.model.unet, attention_resolutions=(32,))), str(half))
    assert any("kept fresh" in n for n in moved) and any("unused" in n for n in moved)
    # the half-size value (8 px) kept as it was: depth 4, a level this model does not have, so no attention
    kept = init_from_checkpoint(GlideUNet(dataclasses.replace(full.model.unet, attention_resolutions=(8,))), str(half))
    assert any("unused" in n for n in kept)


def test_dry_run_and_bad_overrides(tmp_path, capsys):
    from glidekit.cli import main

    assert main(["train", "base-32", "--dry-run", "max_steps=7"]) == 0
    out = capsys.readouterr().out
    assert '"max_steps": 7' in out and "parameters" in out
    assert main(["train", "base-32", "lr=fast"]) == 2
    assert "lr expects a float" in capsys.readouterr().err
    assert main(["train", "base-32", f"data=folder:{tmp_path / 'missing'}", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err


def test_config_overrides_give_back_the_config():
    """config_overrides is resolve_train_config's inverse: a card's recipe derived from a run's saved
    config trains with exactly that config, lists included (prompts with commas, one-item lists)."""
    from glidekit.errors import ConfigError
    from glidekit.train_config import TRAIN_PRESETS

    cases = {
        "base": ["model.unet.model_channels=32", "model.unet.channel_mult=1,2,4", "model.unet.dropout=0",
                 "model.diffusion.prediction=v", "data=emoji:no-skin-tones", "lr=2e-4", "ema_rate=0.998",
                 "preview_prompts=red heart,grinning face", "init_from=glidekit/bundled/emoji-64.safetensors",
                 "hflip=true", "freeze=text", "model.unet.text.pretrained=minilm-l6"],
        "shapes-32": ["preview_prompts=a red circle, large|", "mask_kinds=", "lr=1e-05", "model.unet.coords=false"],
    }
    for preset in TRAIN_PRESETS:
        assert config_overrides(preset, TRAIN_PRESETS[preset]) == []
    for preset, given in cases.items():
        cfg = resolve_train_config(preset, given)
        derived = config_overrides(preset, cfg)
        assert len(derived) == len(given) and resolve_train_config(preset, derived) == cfg, derived
    # a text tower where the preset has none: the whole group as JSON
    texted = resolve_train_config("base-32", ["max_steps=3"])
    grown = dataclasses.replace(TRAIN_PRESETS["class-32"], model=dataclasses.replace(
        TRAIN_PRESETS["class-32"].model, unet=dataclasses.replace(texted.model.unet, num_classes=10)))
    assert resolve_train_config("class-32", config_overrides("class-32", grown)) == grown
    with pytest.raises(ConfigError, match="clip config"):
        config_overrides("base", TRAIN_PRESETS["clip"])
    with pytest.raises(ConfigError, match="cannot unset"):
        config_overrides("base-32", dataclasses.replace(texted, model=TRAIN_PRESETS["class-32"].model))


def test_streamed_shards_train_and_resume_exactly(data, tmp_path):
    import tarfile

    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for f in sorted(data.glob("*.png")):
            tar.add(f, arcname=f"{f.stem}.png")
            tar.add(data / f"{f.stem}.txt", arcname=f"{f.stem}.txt")
    spec = f"wds:{shard}"
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny("base-32", spec, full, "max_steps=5"), progress=False)
    train(tiny("base-32", spec, part, "max_steps=3", "save_every=3"), progress=False)
    train(tiny("base-32", spec, part, "max_steps=5", "save_every=3"), resume=True, progress=False)
    a, b = losses_of(full), losses_of(part)
    for step in (4, 5):
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-7), step


def test_nan_guard_skips_the_step_and_logs_it(data, tmp_path, monkeypatch):
    import glidekit.train as T

    real = T.DiffusionTask.losses

    def poisoned(self, model, batch, gens, step):
        loss, extra = real(self, model, batch, gens, step)
        return (loss * float("nan") if step == 1 else loss), extra

    monkeypatch.setattr(T.DiffusionTask, "losses", poisoned)
    seen = {}

    def on_step(step, record):
        seen[step] = {k: v.clone() for k, v in T._unwrap(model_ref[0]).state_dict().items()} if model_ref else None

    model_ref = []
    real_make = T.make_task

    def make(cfg, device):
        task = real_make(cfg, device)
        model_ref.append(task.model)
        return task

    monkeypatch.setattr(T, "make_task", make)
    rec = train(tiny("base-32", f"folder:{data}", tmp_path, "max_steps=3"), progress=False, on_step=on_step)
    events = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "skipped non-finite gradient" and e["step"] == 1 for e in events)
    assert all(torch.equal(seen[1][k], seen[2][k]) for k in seen[1])  # step index 1 made no update
    assert np.isfinite(rec["loss"])


def test_preview_samples_are_written(data, tmp_path):
    train(tiny("base-32", f"folder:{data}", tmp_path, "max_steps=2", "preview_every=2", "preview_prompts=a red square|a blue square",
               "preview_steps=2"), progress=False)
    assert (tmp_path / "previews" / "step-0000002.png").is_file()


def test_glide_filter_writes_a_manifest(data, tmp_path, capsys):
    from glidekit.cli import main
    from glidekit.data import build_dataset

    out = tmp_path / "kept.jsonl"
    assert main(["filter", f"folder:{data}", "--blocklist", "red", "--out", str(out), "--image-size", "16"]) == 0
    text = capsys.readouterr().out
    assert "kept 4 of 8" in text
    kept = build_dataset(f"manifest:{out}", 16)
    assert len(kept) == 4 and all("red" not in kept[i]["caption"] for i in range(4))
    assert main(["filter", f"folder:{data}", "--out", str(out)]) == 2


def test_cosine_learning_rate_schedule(data, tmp_path):
    """lr_schedule=cosine: the warm-up ramps to lr, then a cosine reaches lr_min at max_steps
    (half-way it is the mean of the two); the constant schedule stays at lr; the loop applies
    what learning_rate says (its log records it); bad values are one ConfigError."""
    from glidekit.errors import ConfigError
    from glidekit.train import learning_rate

    cfg = tiny("base-32", f"folder:{data}", tmp_path, "max_steps=12", "lr=1e-3", "warmup_steps=2",
               "lr_schedule=cosine", "lr_min=1e-4", "log_every=1")
    lrs = [learning_rate(cfg, s) for s in range(12)]
    assert lrs[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert learning_rate(cfg, 7) == pytest.approx(5.5e-4)  # progress 5/10
    assert learning_rate(cfg, 12) == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    const = tiny("base-32", f"folder:{data}", tmp_path, "max_steps=12", "lr=1e-3", "warmup_steps=2")
    assert [learning_rate(const, s) for s in range(12)] == pytest.approx([5e-4] + [1e-3] * 11)
    train(cfg, progress=False)
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in logged if "lr" in r}
    assert logged and all(logged[s] == pytest.approx(lrs[s - 1]) for s in logged)
    with pytest.raises(ConfigError, match="unknown lr_schedule"):
        tiny("base-32", f"folder:{data}", tmp_path, "lr_schedule=step")
    with pytest.raises(ConfigError, match="lr_min must be in"):
        tiny("base-32", f"folder:{data}", tmp_path, "lr=1e-4", "lr_min=1e-3")


def test_time_limit_stops_with_a_checkpoint_that_resumes_exactly(data, tmp_path, capsys):
    """--time-limit: the run stops after the step that crossed the limit, checkpoints there (not
    at a save_every boundary) and logs why; --resume then goes on as an uninterrupted run would
    (the cosine schedule included). A limit that is not positive is one error line."""
    from glidekit.cli import main

    opts = ["max_steps=5", "lr_schedule=cosine", "lr_min=1e-5"]
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny("base-32", f"folder:{data}", full, *opts), progress=False)
    rec = train(tiny("base-32", f"folder:{data}", part, *opts), progress=False, time_limit_s=0.0)
    assert rec["step"] == 1 and rec["event"].startswith("stopped at the time limit")
    assert latest_checkpoint(part).name == "step-0000001"
    train(tiny("base-32", f"folder:{data}", part, *opts), resume=True, progress=False)
    a, b = losses_of(full), losses_of(part)
    for step in (2, 3, 4, 5):
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-7), step
    assert main(["train", "base-32", f"data=folder:{data}", f"out_dir={tmp_path / 'x'}", "--time-limit", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["glide: error: --time-limit must be a positive number of minutes, got 0"]


def test_map_style_data_read_by_workers_trains_the_same(data, tmp_path):
    """num_workers on a map-style set: worker processes read each micro-batch ahead, and the run
    is the one read in-process, step for step (micro-batches included); a run read in-process
    resumes with workers (num_workers may change on resume)."""
    opts = ["max_steps=4", "microbatch=2", "save_every=2"]
    train(tiny("base-32", f"folder:{data}", tmp_path / "a", *opts), progress=False)
    train(tiny("base-32", f"folder:{data}", tmp_path / "b", *opts[1:], "max_steps=2"), progress=False)
    train(tiny("base-32", f"folder:{data}", tmp_path / "b", *opts, "num_workers=2"), resume=True, progress=False)
    a, b = losses_of(tmp_path / "a"), losses_of(tmp_path / "b")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    from glidekit.errors import GlidekitError

    with pytest.raises(GlidekitError, match=r"different training config; .*only max_steps and num_workers may change"):
        train(tiny("base-32", f"folder:{data}", tmp_path / "b", *opts, "max_steps=6", "lr=1e-3"), resume=True, progress=False)
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-7), step


def test_map_reader_reads_in_workers_the_micro_batches_of_each_step():
    """_map_reader: micro-batches of every step from `start` in loop order, read in worker processes."""
    from glidekit.train import Dist, _map_reader, batch_indices

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 2, 2), "caption": str(os.getpid()), "label": 0, "key": str(i)}

    cfg = tiny("base-32", "folder:unused", "/tmp/unused", "batch_size=4", "microbatch=2", "num_workers=2")
    reader = _map_reader(Items(), 3, cfg, Dist())
    got = [next(reader) for _ in range(4)]
    want = batch_indices(10, 3, 4, cfg.seed) + batch_indices(10, 4, 4, cfg.seed)
    assert [int(k) for b in got for k in b["key"]] == want
    assert str(os.getpid()) not in {c for b in got for c in b["caption"]}
