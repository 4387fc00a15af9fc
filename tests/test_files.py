"""glidekit.files: atomic writes that leave the old file or the whole new one, with the
permissions a plain open() gives (0666 less the umask), and nothing behind on failure."""

from __future__ import annotations

import os
import stat

import pytest

from glidekit.files import atomic_open, atomic_path, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_umask_permissions_not_mkstemp_0600(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a.txt", "hello")
    with atomic_open(tmp_path / "b.bin", "wb") as f:
        f.write(b"\0\1")
    with atomic_path(tmp_path / "sub" / "c.bin") as tmp:  # missing folders are made
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.txt").read_text() == "hello" and (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert [mode(tmp_path / n) for n in ("a.txt", "b.bin", "sub/c.bin")] == [0o644] * 3
    os.umask(0o077)
    atomic_write_text(tmp_path / "a.txt", "private")
    assert mode(tmp_path / "a.txt") == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_open_refuses_append_and_read_modes(tmp_path):
    for m in ("a", "r+", "r"):
        with pytest.raises(ValueError, match="whole files"):
            with atomic_open(tmp_path / "x", m):
                pass
    assert not list(tmp_path.iterdir())


def test_every_writer_respects_the_umask(tmp_path, umask_022):
    """PNGs, checkpoints and feature caches go through glidekit.files (downloads:
    tests/test_download.py)."""
    import numpy as np
    from PIL import Image

    from glidekit import io
    from glidekit.config import GlideConfig, TextEncoderConfig, UNetConfig
    from glidekit.eval.features import _save_atomic
    from glidekit.images import save_png
    from glidekit.models.unet import GlideUNet

    cfg = GlideConfig(UNetConfig(image_size=8, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                                 attention_resolutions=(), num_head_channels=32,
                                 text=TextEncoderConfig(n_vocab=16, text_ctx=4, width=8, layers=1, heads=1)))
    save_png(Image.new("RGB", (4, 4)), tmp_path / "i.png")
    io.save_checkpoint(tmp_path / "m.safetensors", GlideUNet(cfg.unet).state_dict(), cfg, kind="base")
    _save_atomic(tmp_path / "f.npy", np.zeros(3))
    assert [mode(tmp_path / n) for n in ("i.png", "m.safetensors", "f.npy")] == [0o644] * 3


def test_a_training_run_writes_files_with_umask_permissions(tmp_path, umask_022):
    from glidekit.train import train
    from glidekit.train_config import resolve_train_config

    cfg = resolve_train_config("base-32", [
        "data=shapes", f"out_dir={tmp_path}", "max_steps=1", "save_every=1", "batch_size=2", "precision=fp32",
        "model.unet.image_size=16", "model.unet.channel_mult=1", "model.unet.attention_resolutions=",
        "model.unet.num_head_channels=32", "model.unet.text.width=32", "model.unet.text.layers=1",
        "model.unet.text.heads=1", "model.unet.text.text_ctx=8"])
    train(cfg, progress=False)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "latest", "model.safetensors", "ema.safetensors",
                                         "train_state.safetensors"}
    assert {p.relative_to(tmp_path).as_posix(): mode(p) for p in files if mode(p) != 0o644} == {}
