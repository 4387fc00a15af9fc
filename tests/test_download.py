"""Offline tests of glidekit.download against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import os
import stat
import threading
from collections import Counter
from pathlib import Path

import pytest

import glidekit.download as dl
from glidekit.config import PRESETS
from glidekit.errors import DownloadError

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.counts[self.path] += 1
        if self.path == "/base.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD) + 1000))
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
        elif self.path == "/slow.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.flush()
            srv.stop.wait(2.0)  # never sends the body before the client times out
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.counts, srv.lock, srv.stop = Counter(), threading.Lock(), threading.Event()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()
    thread.join(2)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_and_sidecar(server, tmp_path):
    path = dl.download("base", dest_dir=tmp_path, url=server.base + "/base.pt", progress=False)
    assert path == tmp_path / PRESETS["base"].filename
    assert path.read_bytes() == PAYLOAD
    assert (tmp_path / "base.pt.sha256").read_text().split()[0] == SHA
    assert dl.file_sha256(path) == SHA
    assert _leftovers(tmp_path) == ["base.pt", "base.pt.sha256"]


def test_downloads_get_umask_permissions(server, tmp_path):
    old = os.umask(0o022)
    try:
        path = dl.download("base", dest_dir=tmp_path, url=server.base + "/base.pt", progress=False)
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (path, tmp_path / "base.pt.sha256")] == [0o644, 0o644]


def test_cached_file_not_redownloaded(server, tmp_path):
    kw = dict(dest_dir=tmp_path, url=server.base + "/base.pt", progress=False)
    dl.download("base", **kw)
    dl.download("base", **kw)
    assert server.counts["/base.pt"] == 1
    dl.download("base", force=True, **kw)
    assert server.counts["/base.pt"] == 2


def test_file_without_sidecar_is_refetched(server, tmp_path):
    (tmp_path / "base.pt").write_bytes(b"unverified")
    path = dl.download("base", dest_dir=tmp_path, url=server.base + "/base.pt", progress=False)
    assert path.read_bytes() == PAYLOAD and server.counts["/base.pt"] == 1


def test_corrupt_cache_detected(server, tmp_path):
    kw = dict(dest_dir=tmp_path, url=server.base + "/base.pt", progress=False)
    path = dl.download("base", **kw)
    data = bytearray(path.read_bytes())
    data[1234] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="corrupt.*--force"):
        dl.download("base", **kw)
    assert dl.download("base", force=True, **kw).read_bytes() == PAYLOAD
    assert dl.download("base", **kw).read_bytes() == PAYLOAD  # sidecar matches again


def test_expected_sha256(server, tmp_path):
    url = server.base + "/base.pt"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        dl.download("base", dest_dir=tmp_path, url=url, expected_sha256="0" * 64, progress=False)
    assert _leftovers(tmp_path) == []
    path = dl.download("base", dest_dir=tmp_path, url=url, expected_sha256=SHA.upper(), progress=False)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="SHA-256"):
        dl.download("base", dest_dir=tmp_path, url=url, expected_sha256="abc", progress=False)


def test_known_sha256_used(server, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.KNOWN_SHA256, "base.pt", "1" * 64)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        dl.download("base", dest_dir=tmp_path, url=server.base + "/base.pt", progress=False)
    assert _leftovers(tmp_path) == []


def test_http_404(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404") as e:
        dl.download("base", dest_dir=tmp_path, url=server.base + "/missing.pt", progress=False)
    assert "/missing.pt" in str(e.value)
    assert _leftovers(tmp_path) == []


def test_truncated(server, tmp_path):
    with pytest.raises(DownloadError, match="truncated"):
        dl.download("base", dest_dir=tmp_path, url=server.base + "/truncated.pt", progress=False)
    assert _leftovers(tmp_path) == []


def test_timeout(server, tmp_path):
    with pytest.raises(DownloadError, match="timed out"):
        dl.download("base", dest_dir=tmp_path, url=server.base + "/slow.pt", progress=False, timeout=0.3)
    assert _leftovers(tmp_path) == []


def test_unreachable(tmp_path):
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1:1 .*--model") as e:
        dl.download("base", dest_dir=tmp_path, url="http://127.0.0.1:1/base.pt", progress=False, timeout=2)
    assert "\n" not in str(e.value)
    assert _leftovers(tmp_path) == []


def test_interrupt_cleans_up(server, tmp_path, monkeypatch):
    class Boom:
        def __init__(self, *a, **k):
            pass

        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(dl, "tqdm", Boom)
    with pytest.raises(KeyboardInterrupt):
        dl.download("base", dest_dir=tmp_path, url=server.base + "/base.pt")
    assert _leftovers(tmp_path) == []


def test_download_by_url(server, tmp_path):
    path = dl.download(server.base + "/base.pt", dest_dir=tmp_path, progress=False)
    assert path == tmp_path / "base.pt" and path.read_bytes() == PAYLOAD


def test_unknown_name(tmp_path):
    with pytest.raises(DownloadError, match="unknown model 'nope'") as e:
        dl.download("nope", dest_dir=tmp_path)
    assert all(name in str(e.value) for name in PRESETS)


def test_cache_env_and_list_models(server, tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDEKIT_CACHE", str(tmp_path / "cache"))
    assert dl.cache_dir() == tmp_path / "cache"
    path = dl.download("upsample", url=server.base + "/base.pt", progress=False)
    assert path == tmp_path / "cache" / "upsample.pt"
    models = {m["name"]: m for m in dl.list_models()}
    assert set(models) == set(PRESETS)
    assert models["upsample"]["path"] == path and models["upsample"]["size"] == len(PAYLOAD)
    assert models["base"]["path"] is None and models["base"]["size"] is None
    assert models["base"]["url"] == PRESETS["base"].url
    monkeypatch.delenv("GLIDEKIT_CACHE")
    assert dl.cache_dir() == Path.home() / ".cache" / "glidekit"
