"""The models that ship inside glidekit: present, loadable by name, the CLI default, the demo."""

import json

import pytest
import torch
from PIL import Image

from glidekit.bundled import BUNDLED, DEFAULT_MODEL, bundled_path, list_bundled
from glidekit.cli import main
from glidekit.errors import CheckpointError
from glidekit.io import load_checkpoint, load_model

MAX_BYTES = 40 * 2**20  # issue 7: each bundled file at most 40 MB


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_file_is_small_float16_with_config_and_card(name):
    path = bundled_path(name)
    assert path.stat().st_size <= MAX_BYTES
    kind, cfg, sd, meta = load_checkpoint(path)
    assert kind == BUNDLED[name].kind
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    card = BUNDLED[name].card.read_text()
    for heading in ("Data", "Recipe", "Compute", "Quality", "Licence"):
        assert f"## {heading}" in card, (name, heading)
    model, kind, _ = load_model(name)
    assert next(model.parameters()).dtype == torch.float32  # loads into float32 for the CPU


def test_unknown_or_missing_bundled_model_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(CheckpointError, match="no bundled model 'nope'"):
        bundled_path("nope")
    monkeypatch.setattr("glidekit.bundled.BUNDLE_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="missing from this install"):
        bundled_path("shapes")
    assert not any(r["present"] for r in list_bundled())


def test_glide_sample_without_model_uses_the_bundled_default(tmp_path, capsys):
    code = main(["sample", "a red circle above a blue square", "--out", str(tmp_path), "--quiet", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    png = list(tmp_path.glob("*.png"))
    assert len(png) == 1
    with Image.open(png[0]) as im:
        assert im.size == (32, 32)  # no upsampler for the bundled model ("auto" -> none)
        record = json.loads(im.text["glidekit"])
    assert record["model"] == DEFAULT_MODEL and record["upsampler"] == "none", (record, out)


def test_demo_writes_grids_and_an_inpainting_edit(tmp_path):
    from glidekit.demo import run_demo

    summary = run_demo(out_dir=str(tmp_path / "demo"))
    names = sorted(p.name for p in (tmp_path / "demo").glob("*.png"))
    assert names == sorted(["shapes.png", "inpaint.png"] + (["emoji.png"] if "emoji-64" in BUNDLED else []))
    assert 0.0 <= summary["shapes_accuracy"] <= 1.0 and summary["sampling_s"] > 0
