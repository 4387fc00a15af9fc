"""`glide sample|inpaint|outpaint|edit|upsample` on tiny local checkpoints, as a new user would."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from glidekit.cli import main
from glidekit.config import from_openai_options
from glidekit.images import read_png_metadata
from glidekit.io import save_checkpoint
from tests.parity.vectors import DEFAULT_DIR

FAST = ["--steps", "3", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name in ("base", "upsample", "base-inpaint", "upsample-inpaint"):
        v = torch.load(DEFAULT_DIR / f"{name}.pt", weights_only=True)
        out[name] = str(save_checkpoint(d / f"{name}.safetensors", v["state_dict"], from_openai_options(v["options"]), kind=name))
    v = torch.load(DEFAULT_DIR / "clip.pt", weights_only=True)  # the tiny parity CLIP, 32 px like the tiny base
    from glidekit.config import NoisedCLIPConfig

    clip_cfg = NoisedCLIPConfig(**v["config"])
    save_checkpoint(d / "tiny-clip-image.safetensors", v["image_encoder_state_dict"], clip_cfg, kind="clip-image")
    save_checkpoint(d / "tiny-clip-text.safetensors", v["text_encoder_state_dict"], clip_cfg, kind="clip-text")
    out["clip"] = str(d / "tiny")  # the stem glide train writes: NAME-clip-image / NAME-clip-text
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "photo.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 6:26] = 255  # white = repaint
    Image.fromarray(mask).save(d / "mask.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(d / "small_mask.png")
    (d / "notes.txt").write_text("not an image")
    out["dir"] = d
    return out


def run(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_user_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glide: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_sample_writes_images_grid_and_metadata(ckpt, tmp_path, capsys):
    code, out, err = run(["sample", "a red circle", "a blue square", "--model", ckpt["base"], "--upsampler", ckpt["upsample"],
                          "--up-steps", "2", "--batch", "2", "--seed", "5", "--grid", "--keep-stages", "--out", tmp_path, *FAST], capsys)
    assert code == 0, err
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "grid.png" in files
    finals = [f for f in files if f.endswith(".png") and not f.endswith("-base.png") and f != "grid.png"]
    assert len(finals) == 4 and len([f for f in files if f.endswith("-base.png")]) == 4
    rec = read_png_metadata(tmp_path / finals[0])
    assert rec["prompt"] == "a red circle" and rec["seed"] == 5 and rec["command"] == "sample"
    assert rec["sampler"]["name"] == "dpm++2m" and rec["sampler"]["steps"] == 3 and rec["guidance"] == 3.0
    assert rec["model"] == ckpt["base"] and len(rec["model_sha256"]) == 16
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_from_png_reproduces_the_image(ckpt, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = run(["sample", "a green triangle", "--model", ckpt["base"], "--upsampler", "none", "--seed", "11",
                          "--sampler", "euler_a", "--out", a, *FAST], capsys)
    assert code == 0, err
    first = next(a.iterdir())
    code, out, err = run(["sample", "--from-png", first, "--out", b, "--quiet"], capsys)
    assert code == 0, err
    again = next(b.iterdir())
    assert np.array_equal(pixels(first), pixels(again))
    assert read_png_metadata(again)["seed"] == 11


def test_from_png_keeps_the_recorded_spacing_and_old_records_mean_linspace(ckpt, tmp_path, capsys):
    from glidekit.images import save_png

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    code, out, err = run(["sample", "a green triangle", "--model", ckpt["base"], "--upsampler", ckpt["upsample"],
                          "--up-steps", "3", "--out", a, *FAST], capsys)
    assert code == 0, err
    first = next(a.iterdir())
    rec = read_png_metadata(first)
    assert rec["up_sampler"]["spacing"] == "logsnr" and rec["sampler"]["spacing"] == "linspace"
    code, out, err = run(["sample", "--from-png", first, "--out", b, "--quiet"], capsys)
    assert code == 0, err
    assert np.array_equal(pixels(first), pixels(next(b.iterdir())))
    # a record from before spacings were recorded was sampled with the solvers' linspace steps
    for key in ("sampler", "up_sampler"):
        del rec[key]["spacing"]
    old = tmp_path / "old.png"
    save_png(Image.open(first), old, rec)
    code, out, err = run(["sample", "--from-png", old, "--out", c, "--quiet"], capsys)
    assert code == 0, err
    assert read_png_metadata(next(c.iterdir()))["up_sampler"]["spacing"] == "linspace"


def test_inpaint_with_a_drawn_mask_keeps_the_rest(ckpt, tmp_path, capsys):
    d = ckpt["dir"]
    code, out, err = run(["inpaint", "a cat", "--model", ckpt["base-inpaint"], "--upsampler", ckpt["upsample-inpaint"],
                          "--up-steps", "2", "--image", d / "photo.png", "--mask", d / "mask.png", "--out", tmp_path, *FAST], capsys)
    assert code == 0, err
    result = pixels(next(tmp_path.iterdir()))
    source = pixels(d / "photo.png")
    repaint = pixels(d / "mask.png")[..., 0] > 127
    assert np.array_equal(result[~repaint], source[~repaint])
    assert np.abs(result[repaint] - source[repaint]).mean() > 5


def test_inpaint_rect_and_white_keeps(ckpt, tmp_path, capsys):
    d = ckpt["dir"]
    code, out, err = run(["inpaint", "a dog", "--model", ckpt["base-inpaint"], "--upsampler", "none", "--image", d / "photo.png",
                          "--rect", "0,0,16,16", "--out", tmp_path / "r", *FAST], capsys)
    assert code == 0, err
    code, out, err = run(["inpaint", "a dog", "--model", ckpt["base-inpaint"], "--upsampler", "none", "--image", d / "photo.png",
                          "--mask", d / "mask.png", "--mask-mode", "white-keeps", "--out", tmp_path / "k", *FAST], capsys)
    assert code == 0, err
    result, source = pixels(next((tmp_path / "k").iterdir())), pixels(d / "photo.png")
    keep = pixels(d / "mask.png")[..., 0] > 127
    assert np.array_equal(result[keep], source[keep])


def test_outpaint_edit_upsample(ckpt, tmp_path, capsys):
    d = ckpt["dir"]
    code, _, err = run(["outpaint", "a beach", "--model", ckpt["base-inpaint"], "--image", d / "photo.png", "--right", "16",
                        "--out", tmp_path / "o", *FAST], capsys)
    assert code == 0, err
    assert Image.open(next((tmp_path / "o").iterdir())).size == (48, 32)
    code, _, err = run(["edit", "a painting", "--model", ckpt["base"], "--image", d / "photo.png", "--strength", "0.5",
                        "--out", tmp_path / "e", *FAST], capsys)
    assert code == 0, err
    code, _, err = run(["upsample", "a photo", "--model", ckpt["upsample"], "--image", d / "photo.png", "--low-res-size", "16",
                        "--out", tmp_path / "u", *FAST], capsys)
    assert code == 0, err
    assert Image.open(next((tmp_path / "u").iterdir())).size == (32, 32)
    # --back-project: the tiny random upsampler's output, corrected, averages back to its 16 px input
    code, _, err = run(["upsample", "a photo", "--model", ckpt["upsample"], "--image", d / "photo.png", "--low-res-size", "16",
                        "--back-project", "3", "--out", tmp_path / "bp", *FAST], capsys)
    assert code == 0, err
    made = next((tmp_path / "bp").iterdir())
    assert read_png_metadata(made)["back_project"] == 3
    low = np.asarray(Image.open(d / "photo.png").convert("RGB").resize((16, 16), Image.BICUBIC), dtype=np.float64)
    raw = pixels(next((tmp_path / "u").iterdir())).astype(np.float64).reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    fixed = pixels(made).astype(np.float64).reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    assert np.abs(fixed - low).mean() < 0.5 * np.abs(raw - low).mean()
    code, _, err = run(["upsample", "a photo", "--model", ckpt["upsample"], "--image", d / "photo.png", "--back-project", "-1",
                        "--out", tmp_path / "neg", *FAST], capsys)
    assert code == 2 and err.count("\n") == 1 and "--back-project must be >= 0" in err and not (tmp_path / "neg").exists()
    # on a base model with no upsampler there is nothing to correct: one line, nothing written
    code, _, err = run(["sample", "a red circle", "--model", ckpt["base"], "--back-project", "1", "--out", tmp_path / "nb",
                        *FAST], capsys)
    assert code == 2 and err.count("\n") == 1 and "--back-project corrects an upsampler's output" in err
    assert not (tmp_path / "nb").exists()


@pytest.mark.parametrize("case", [
    "missing_mask", "mask_other_size", "wrong_model_type", "steps_zero", "negative_guidance", "not_an_image",
    "no_region", "bad_rect", "no_prompt", "bad_strength", "fp16_on_cpu",
])
def test_error_paths_are_one_line_and_write_nothing(case, ckpt, tmp_path, capsys):
    d = ckpt["dir"]
    out = tmp_path / "out"
    inp = ["inpaint", "x", "--model", ckpt["base-inpaint"], "--upsampler", "none", "--image", d / "photo.png", "--out", out, *FAST]
    args, fragment = {
        "missing_mask": (inp + ["--mask", d / "nope.png"], "no such mask file"),
        "mask_other_size": (inp + ["--mask", d / "small_mask.png"], "20x20 but the image is 32x32"),
        "wrong_model_type": (["inpaint", "x", "--model", ckpt["upsample"], "--upsampler", "none", "--image", d / "photo.png",
                              "--mask", d / "mask.png", "--out", out, *FAST], "needs a base model"),
        "steps_zero": (["sample", "x", "--model", ckpt["base"], "--upsampler", "none", "--out", out, "--steps", "0", "--quiet"], "steps"),
        "negative_guidance": (["sample", "x", "--model", ckpt["base"], "--upsampler", "none", "--out", out, "--guidance", "-1", *FAST], "guidance"),
        "not_an_image": (["edit", "x", "--model", ckpt["base"], "--image", d / "notes.txt", "--out", out, *FAST], "not a readable image"),
        "no_region": (inp, "--mask"),
        "bad_rect": (inp + ["--rect", "5,5"], "LEFT,TOP,RIGHT,BOTTOM"),
        "no_prompt": (["sample", "--model", ckpt["base"], "--out", out, *FAST], "give a prompt"),
        "bad_strength": (["edit", "x", "--model", ckpt["base"], "--image", d / "photo.png", "--strength", "1.5", "--out", out, *FAST], "strength"),
        "fp16_on_cpu": (["sample", "x", "--model", ckpt["base"], "--upsampler", "none", "--out", out, "--dtype", "fp16", "--steps", "2", "--quiet", "--device", "cpu"], "fp16"),
    }[case]
    code, _, err = run(args, capsys)
    assert_user_error(code, err, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_sweep_scores_every_point_resumes_and_plots(ckpt, tmp_path, capsys):
    csv_path = tmp_path / "sweep.csv"
    args = ["sweep", "--model", ckpt["base"], "--prompts", "shapes:3:7", "--sampler", "dpm++2m:2", "--sampler", "ddim:3",
            "--guidance", "0,3", "--batch", "2", "--csv", csv_path, "--device", "cpu", "--quiet",
            "--images", tmp_path / "grids"]
    code, out, err = run(args + ["--plot", tmp_path / "acc.png"], capsys)
    assert code == 0, err
    from glidekit.eval.sweep import read_csv

    rows = read_csv(csv_path)
    assert [(r["sampler"], r["steps"], r["guidance"]) for r in rows] == [
        ("dpm++2m", 2, 0.0), ("dpm++2m", 2, 3.0), ("ddim", 3, 0.0), ("ddim", 3, 3.0)]
    for r in rows:
        assert r["n"] == 3 and 0.0 <= r["whole_caption"] <= 1.0 and r["seconds_per_image"] > 0
        assert r["fid"] is None
    assert Image.open(tmp_path / "acc.png").size[0] > 100
    assert Image.open(tmp_path / "acc-steps.png").size[0] > 100  # two step counts: the steps plot too
    assert len(list((tmp_path / "grids").glob("*.png"))) == 4
    # a second run finds every point in the CSV and samples nothing
    code, out, err = run(args, capsys)
    assert code == 0 and "guidance" not in out.split("\n", 1)[1]
    assert read_csv(csv_path) == rows
    # every row names the model file it measured; the CSV of another model is refused, not reused
    from glidekit.download import file_sha256

    assert {r["model"] for r in rows} == {file_sha256(ckpt["base"])[:16]}
    from glidekit.eval.sweep import write_csv

    write_csv(csv_path, [{**r, "model": "0123456789abcdef"} for r in rows])  # as if another file had made them
    code, out, err = run(args, capsys)
    assert code != 0 and "holds rows of another model (0123456789abcdef" in err and len(err.strip().splitlines()) == 1
    assert f"(mv {csv_path} {csv_path}.old)" in err  # the step that measures this model from scratch
    assert {r["model"] for r in read_csv(csv_path)} == {"0123456789abcdef"}  # left as it was
    write_csv(csv_path, [{**r, "model": None} for r in rows])  # a CSV from before rows named their model
    code, out, err = run(args, capsys)
    assert code != 0 and "holds rows of another model (none named" in err and len(err.strip().splitlines()) == 1


def test_sweep_clip_guidance_beside_cfg_with_clip_score(ckpt, tmp_path, capsys):
    """CLIP-guided points turn classifier-free guidance off (GLIDE s.2.4): at CLIP scale 0 the images,
    and so every score, equal the classifier-free point at scale 1; a larger CLIP scale changes them."""
    from glidekit.eval.sweep import read_csv

    csv_path = tmp_path / "sweep.csv"
    args = ["sweep", "--model", ckpt["base"], "--prompts", "shapes:4:3", "--sampler", "dpm++2m:3", "--guidance", "1",
            "--clip-guidance", "0,50", "--clip", ckpt["clip"], "--score-clip", ckpt["clip"], "--batch", "2",
            "--csv", csv_path, "--device", "cpu", "--dtype", "fp32", "--quiet", "--plot", tmp_path / "p.png"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "not OpenAI's CLIP" in out
    rows = {(r["guidance_type"], r["guidance"]): r for r in read_csv(csv_path)}
    assert set(rows) == {("cfg", 1.0), ("clip", 0.0), ("clip", 50.0)}
    for r in rows.values():
        assert 0.0 <= r["clip_score"] <= 100.0
    assert rows[("clip", 0.0)]["clip_score"] == pytest.approx(rows[("cfg", 1.0)]["clip_score"], abs=1e-4)
    assert rows[("clip", 50.0)]["clip_score"] != pytest.approx(rows[("cfg", 1.0)]["clip_score"], abs=1e-3)
    assert Image.open(tmp_path / "p.png").size[0] > 100
    i = args.index("--clip")
    no_clip = args[:i] + args[i + 2:]
    assert_user_error(*run(no_clip, capsys)[::2], "--clip-guidance needs --clip")


def test_eval_caption_metrics_on_generated_pngs(ckpt, tmp_path, capsys):
    from glidekit.data.shapes import ShapesDataset
    from glidekit.images import save_png

    ds = ShapesDataset(32, length=4, seed=2)
    for i in range(len(ds)):
        save_png(ds.render(i), tmp_path / "imgs" / f"{i}.png", metadata={"prompt": ds.spec(i).caption})
    code, out, err = run(["eval", "shapes", tmp_path / "imgs", "--metrics", "shapes,clip_score", "--clip", ckpt["clip"],
                          "--quiet"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["shapes"]["whole_caption"] == 1.0 and res["fake"]["n"] == 4
    assert res["clip_score"]["n"] == 4 and "not OpenAI's CLIP" in res["clip_score"]["definition"]
    assert res["clip_score"]["clip"] == ckpt["clip"]
    assert_user_error(*run(["eval", "shapes", tmp_path / "imgs", "--metrics", "clip_score"], capsys)[::2], "needs --clip")
    assert_user_error(*run(["eval", "shapes", tmp_path / "imgs", "--metrics", "fid,is"], capsys)[::2], "unknown metric(s) is")
    assert_user_error(*run(["eval", "nowhere/", tmp_path / "imgs"], capsys)[::2], "unknown dataset 'nowhere/'")


def test_sweep_bad_input_is_one_line(ckpt, tmp_path, capsys):
    base = ["sweep", "--model", ckpt["base"], "--csv", tmp_path / "s.csv", "--device", "cpu"]
    assert_user_error(*run(base + ["--sampler", "dpm++2m"], capsys)[::2], "NAME:STEPS")
    assert_user_error(*run(base + ["--guidance", "a,b"], capsys)[::2], "comma-separated")
    assert_user_error(*run(base + ["--prompts", "nope.txt"], capsys)[::2], "neither shapes:N")
    assert not (tmp_path / "s.csv").exists()


def test_score_reads_prompts_from_png_metadata(ckpt, tmp_path, capsys):
    from glidekit.data.shapes import ShapesDataset
    from glidekit.images import save_png

    ds = ShapesDataset(64, length=6, seed=2)
    for i in range(len(ds)):
        save_png(ds.render(i), tmp_path / "imgs" / f"{i}.png", metadata={"prompt": ds.spec(i).caption})
    code, out, err = run(["score", tmp_path / "imgs"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n"] == 6 and summary["whole_caption"] == 1.0  # the dataset's own renders
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "bare.png")
    assert_user_error(*run(["score", tmp_path / "imgs"], capsys)[::2], "bare.png has no glidekit metadata")
    (tmp_path / "imgs" / "bare.png").unlink()
    save_png(ds.render(0), tmp_path / "imgs" / "other.png", metadata={"prompt": "a big red circle on top"})
    for args in (["score", tmp_path / "imgs"], ["eval", "shapes", tmp_path / "imgs", "--metrics", "shapes"]):
        assert_user_error(*run(args, capsys)[::2], "1 of 7 images", "outside the shapes grammar", "'a big red circle on top'")


def test_sweep_diversity_and_tradeoff_plot(tmp_path):
    from glidekit.eval.sweep import mean_pairwise_distance, plot

    assert mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
    assert mean_pairwise_distance(np.zeros((4, 8))) == 0.0
    rows = [{"sampler": "dpm++2m", "steps": 20, "guidance": g, "precision": 0.5 + g / 20, "recall": 0.6 - g / 20}
            for g in (0.0, 1.0, 3.0, 5.0)]
    path = plot(rows, tmp_path / "t.png", "precision", x="recall")
    assert Image.open(path).size[0] > 100


def test_upsampler_auto_follows_base_models_with_a_second_stage(monkeypatch):
    import argparse

    from glidekit import cli

    loaded = []
    monkeypatch.setattr(cli, "_load", lambda source, device, dtype: loaded.append(source) or source)
    pairs = (("base", "upsample"), ("base-inpaint", "upsample-inpaint"), ("emoji-64", "emoji-upsample"), ("shapes", None),
             ("emoji-64-inpaint", None), ("mine.safetensors", None))
    for model, want in pairs:
        args = argparse.Namespace(model=model, upsampler="auto")
        assert cli._load_upsampler(args, "cpu", None) == want
        assert args.upsampler == (want or "none")  # the PNG record names what ran
    args = argparse.Namespace(model="shapes", upsampler="up.safetensors")
    assert cli._load_upsampler(args, "cpu", None) == "up.safetensors"
