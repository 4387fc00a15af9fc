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


def test_model_card_follows_a_fine_tune_back_to_its_first_run(tmp_path):
    """scripts/bundle_model.py: a run whose init_from is another run's checkpoint is stage 2 of a
    recipe; the card lists both commands and each stage's steps and time."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bundle_model", Path(__file__).parents[1] / "scripts" / "bundle_model.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)

    def run(name, batch, init_from, rate):
        folder = tmp_path / name
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"batch_size": batch, "init_from": init_from}))
        logs = [{"step": s, "loss": 0.1, "time": 1000.0 + 10 * s, "samples_per_s": rate} for s in range(0, 301, 50)]
        (folder / "log.jsonl").write_text("\n".join(json.dumps(r) for r in logs) + "\n")
        (tmp_path / f"{name}.args").write_text(f"batch_size={batch} out_dir={folder}\n")
        return folder

    first = run("first", 32, "", 20.0)
    second = run("second", 16, str(first / "checkpoints" / "step-0000200" / "model.safetensors"), 30.0)
    stages = bundle._stages(second, 300, "shapes-32")
    assert [(s["steps"], s["batch"], s["rate"]) for s in stages] == [(200, 32, 20.0), (300, 16, 30.0)]
    assert stages[0]["hours"] == pytest.approx(2000 / 3600) and stages[1]["hours"] == pytest.approx(3000 / 3600)
    assert stages[0]["recipe"] == "batch_size=32 out_dir=runs/first"  # the machine's folders do not leak into cards
    assert len(bundle._stages(first, 300, "shapes-32")) == 1


def test_model_path_is_the_file_load_model_reads(tmp_path, monkeypatch):
    from glidekit.config import PRESETS
    from glidekit.io import model_path

    assert model_path(DEFAULT_MODEL) == bundled_path(DEFAULT_MODEL)
    monkeypatch.setenv("GLIDEKIT_CACHE", str(tmp_path))
    from glidekit.download import cache_dir

    assert model_path("base") == cache_dir() / PRESETS["base"].filename
    assert model_path(tmp_path / "mine.safetensors") == tmp_path / "mine.safetensors"
