"""The `glide` command as a user meets it: real subprocesses, one-line errors, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

VECTORS = Path(__file__).parent / "vectors"


def glide(*args, env=None, cwd=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "glidekit", *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=cwd, timeout=120)


def assert_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glide: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    v = torch.load(VECTORS / "base.pt", weights_only=True)
    torch.save(v["state_dict"], d / "tiny_base.pt")
    (d / "options.json").write_text(json.dumps(v["options"]))
    return d


def test_help_lists_commands():
    r = glide("--help")
    assert r.returncode == 0
    for cmd in ("models", "download", "info", "convert", "demo"):
        assert cmd in r.stdout


def test_models_lists_presets(tmp_path):
    r = glide("models", env={"GLIDEKIT_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    for name in ("base", "upsample", "base-inpaint", "upsample-inpaint", "clip-image", "clip-text"):
        assert name in r.stdout
    assert "not downloaded" in r.stdout
    assert "shapes" in r.stdout and "default" in r.stdout  # the bundled model comes first


def test_convert_a_glidekit_checkpoint_to_float16(tiny_base, tmp_path):
    from glidekit.io import load_checkpoint

    full = tmp_path / "full.safetensors"
    assert glide("convert", tiny_base / "tiny_base.pt", full, "--options", tiny_base / "options.json").returncode == 0
    half = tmp_path / "half.safetensors"
    r = glide("convert", full, half, "--dtype", "fp16")
    assert r.returncode == 0, r.stderr
    _, cfg, sd, meta = load_checkpoint(half)
    _, cfg0, sd0, _ = load_checkpoint(full)
    assert cfg == cfg0 and meta["source"] == "full.safetensors"
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    assert all(torch.allclose(sd[k].float(), sd0[k].float(), rtol=1e-3, atol=1e-4) for k in sd0)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    from glidekit.io import convert_checkpoint

    tagged = tmp_path / "tagged.safetensors"
    convert_checkpoint(half, tagged, extra_metadata={"train_step": "6000"})  # what scripts/bundle_model.py records
    meta = load_checkpoint(tagged)[3]
    assert meta["train_step"] == "6000" and meta["source"] == "half.safetensors"


def test_convert_and_info_round_trip(tiny_base, tmp_path):
    out = tmp_path / "tiny.safetensors"
    r = glide("convert", tiny_base / "tiny_base.pt", out, "--options", tiny_base / "options.json")
    assert r.returncode == 0, r.stderr
    r = glide("info", out)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "base"
    assert info["config"]["unet"]["model_channels"] == 32


def test_missing_file(tmp_path):
    assert_one_line_error(glide("info", tmp_path / "nope.pt"), "no such file")


def test_truncated_checkpoint(tiny_base, tmp_path):
    data = (tiny_base / "tiny_base.pt").read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    assert_one_line_error(glide("info", bad), "truncated")


def test_tiny_checkpoint_without_options_is_refused(tiny_base):
    assert_one_line_error(glide("info", tiny_base / "tiny_base.pt"), "does not match the official 'base'")


def test_wrong_model_type_in_the_options(tiny_base, tmp_path):
    opts = json.loads((tiny_base / "options.json").read_text())
    opts["super_res"] = True
    (tmp_path / "o.json").write_text(json.dumps(opts))
    assert_one_line_error(glide("info", tiny_base / "tiny_base.pt", "--options", tmp_path / "o.json"), "upsample")


def test_convert_needs_safetensors_suffix(tiny_base, tmp_path):
    assert_one_line_error(glide("convert", tiny_base / "tiny_base.pt", tmp_path / "x.pt"), ".safetensors")
    assert not (tmp_path / "x.pt").exists()


def test_model_not_downloaded(tmp_path):
    assert_one_line_error(glide("info", "base", env={"GLIDEKIT_CACHE": str(tmp_path)}), "glide download base")


def test_download_without_network(tmp_path):
    r = glide("download", "http://127.0.0.1:1/base.pt", "--cache-dir", tmp_path, "--quiet")
    assert_one_line_error(r, "cannot reach")
    assert list(tmp_path.iterdir()) == []


def test_unknown_download_name(tmp_path):
    assert_one_line_error(glide("download", "base64", "--cache-dir", tmp_path), "known models")


def test_bad_options_file(tiny_base, tmp_path):
    (tmp_path / "o.json").write_text("{not json")
    assert_one_line_error(glide("info", tiny_base / "tiny_base.pt", "--options", tmp_path / "o.json"), "not valid JSON")


def test_eval_refuses_too_few_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert_one_line_error(glide("eval", tmp_path / "a", tmp_path / "b"), "at least 100 samples")
    assert_one_line_error(glide("eval", tmp_path / "a", tmp_path / "missing"), "not a folder")
