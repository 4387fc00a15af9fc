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


def test_every_writer_respects_the_umask(tmp_path, umask_022, unets_for_files, server_payload):
    """PNGs, checkpoints, downloads, feature caches and manifests all go through glidekit.files."""
    import numpy as np
    from PIL import Image

    from glidekit import download as dl
    from glidekit import io
    from glidekit.eval.features import _save_atomic
    from glidekit.images import save_png

    save_png(Image.new("RGB", (4, 4)), tmp_path / "i.png")
    sd, cfg = unets_for_files
    io.save_checkpoint(tmp_path / "m.safetensors", sd, cfg, kind="base")
    _save_atomic(tmp_path / "f.npy", np.zeros(3))
    url = server_payload
    got = dl.download(url, dest_dir=tmp_path / "dl", progress=False)
    files = [tmp_path / "i.png", tmp_path / "m.safetensors", tmp_path / "f.npy", got, dl._sidecar(got)]
    assert [mode(p) for p in files] == [0o644] * len(files)


@pytest.fixture
def unets_for_files():
    from glidekit.config import GlideConfig, TextEncoderConfig, UNetConfig
    from glidekit.models.unet import GlideUNet

    cfg = GlideConfig(UNetConfig(image_size=8, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                                 attention_resolutions=(), num_head_channels=32,
                                 text=TextEncoderConfig(n_vocab=16, text_ctx=4, width=8, layers=1, heads=1)))
    return GlideUNet(cfg.unet).state_dict(), cfg


@pytest.fixture
def server_payload():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/file.bin"
    srv.shutdown()
    srv.server_close()
    thread.join(2)
