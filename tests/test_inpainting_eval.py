"""The inpainting benchmark's measures (glidekit.eval.inpainting) and the report section built on them."""

import pytest
import torch

from glidekit.eval import inpainting as I


def test_eval_masks_cut_the_named_holes():
    centre, right = I.eval_mask("centre square", 8), I.eval_mask("right half", 8)
    assert centre.shape == right.shape == (1, 1, 8, 8)
    assert centre[0, 0, 2:6, 2:6].eq(0).all() and centre.sum() == 64 - 16
    assert right[0, 0, :, 4:].eq(0).all() and right[0, 0, :, :4].eq(1).all()


def test_hole_psnr_measures_the_hole_only():
    g = torch.Generator().manual_seed(0)
    original = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    keep = I.eval_mask("right half", 8)
    off = original + 0.2 * (1 - keep)  # 0.1 off on the [0, 1] scale inside the hole: 20 dB
    assert torch.allclose(I.hole_psnr(off, original, keep), torch.tensor([20.0, 20.0]), atol=1e-4)
    wrong_outside = off + 0.9 * keep  # the known pixels do not count
    assert torch.allclose(I.hole_psnr(wrong_outside, original, keep), torch.tensor([20.0, 20.0]), atol=1e-4)
    worse = original + 0.4 * (1 - keep)
    assert (I.hole_psnr(worse, original, keep) < 20).all()


def test_seam_is_the_step_across_the_holes_edge():
    keep = I.eval_mask("right half", 8)
    flat = torch.zeros(1, 3, 8, 8)
    assert I.seam_step(flat, keep).item() == 0
    filled = flat + 0.5 * (1 - keep)  # the hole filled 0.5 brighter: every straddling pair steps 0.5
    assert I.seam_step(filled, keep).item() == pytest.approx(0.5)
    # a horizontal ramp steps 0.25 per pixel everywhere; a fill that continues it is as smooth, one that
    # is shifted is not
    ramp = (torch.arange(8.0) / 4 - 1).view(1, 1, 1, 8).expand(1, 3, 8, 8)
    assert I.seam_ratio(ramp, ramp, keep) == pytest.approx(1.0)
    assert I.seam_ratio(ramp + 0.5 * (1 - keep), ramp, keep) == pytest.approx(3.0)
    centre = I.eval_mask("centre square", 8)  # vertical pairs count too: a top/bottom edge
    vertical = (torch.arange(8.0) / 4 - 1).view(1, 1, 8, 1).expand(1, 3, 8, 8)
    assert I.seam_step(vertical, centre).item() == pytest.approx(0.25 * 8 / 16)  # 8 of 16 pairs step


def test_paired_difference_is_the_mean_gap_with_its_interval():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, half = I.paired_difference(a, a + torch.tensor([0.5, 1.5, 0.5, 1.5]))
    assert mean == pytest.approx(1.0) and half == pytest.approx(1.96 * (1 / 3) ** 0.5 / 2)
    assert I.paired_difference(a, a) == (0.0, 0.0)


def test_inpainting_report_section_on_tiny_models(tmp_path, monkeypatch):
    """The section's table has each hole x (white, base, inpainting model), from real inpainting samples;
    --carry keeps it while both model files are unchanged."""
    import numpy as np

    from glidekit.config import from_openai_options
    from glidekit.eval import features, report
    from glidekit.images import save_png, tensor_to_pils
    from glidekit.io import save_checkpoint
    from tests.parity.vectors import DEFAULT_DIR

    ckpts = {}
    for kind in ("base", "base-inpaint"):
        v = torch.load(DEFAULT_DIR / f"{kind}.pt", weights_only=True)
        ckpts[kind] = save_checkpoint(tmp_path / f"{kind}.safetensors", v["state_dict"], from_openai_options(v["options"]),
                                      kind=kind)
    # eight training "emoji" at the tiny models' 32 px, and features that are their pixels, so the
    # Inception network is not needed to test the section
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    ref = tmp_path / "ref"
    for i, im in enumerate(tensor_to_pils(pixels)):
        save_png(im, ref / f"{i:05d}.png")
    captions, stems = [f"emoji {i}" for i in range(8)], [f"1f60{i}" for i in range(8)]
    monkeypatch.setattr(report, "_emoji_reference", lambda folder, size: (ref, captions, pixels, stems))
    calls = []

    class Pixels:
        def __call__(self, images):
            calls.append(images.shape[0])
            return images.float().flatten(1).numpy().astype(np.float64)

    monkeypatch.setattr(features, "InceptionFeatures", Pixels)
    monkeypatch.setattr(features, "folder_features", lambda path, extractor, progress: pixels.flatten(1).double().numpy())
    out = tmp_path / "docs" / "results.md"

    def run(*extra, inpaint_model=ckpts["base-inpaint"], samples="3"):
        return report.main(["--out", str(out), "--skip", "shapes", "--skip", "emoji", "--skip", "upsample", "--emoji-model", str(ckpts["base"]),
                            "--inpaint-model", str(inpaint_model), "--emoji-samples", "6", "--inpaint-samples", samples,
                            "--batch", "2", *extra])

    assert run() == 0
    text = out.read_text()
    table = [ln for ln in text.splitlines() if ln.startswith(("| centre square", "| right half"))]
    assert len(table) == 6
    white = [ln for ln in table if "hole left white" in ln]
    assert len(white) == 2 and all("re-pasted" in ln or "trained for" in ln for ln in table if ln not in white)
    assert calls == [3] * 6  # each hole x method: the 3 completed images once
    assert "3 training images" in text
    assert "image by image (mean +- the 95 % interval): centre square: PSNR " in text and "; right half: PSNR " in text
    png = tmp_path / "docs" / "results" / "emoji_inpaint.png"
    assert png.stat().st_size > 1000
    # the fills differ between the two models (the inpainting model reads the known pixels as inputs)
    base_row, model_row = (ln for ln in table if ln.startswith("| centre square") and "white" not in ln)
    assert base_row.split("|")[3:] != model_row.split("|")[3:]

    png.unlink()
    assert run("--carry", "inpaint") == 0  # nothing sampled: the grid is not written again
    again = out.read_text()
    assert again[again.index(report.TITLES["inpaint"]):] == text[text.index(report.TITLES["inpaint"]):]
    assert not png.exists()
    assert run("--carry", "inpaint", samples="2") == 2  # measured at other sizes
    save_checkpoint(ckpts["base-inpaint"], {k: t + 1 for k, t in v["state_dict"].items()},
                    from_openai_options(v["options"]), kind="base-inpaint")
    assert run("--carry", "inpaint") == 2  # the inpainting model's file changed
    assert out.read_text() == again
    # a plain base given as the inpainting model is one clear error
    assert run(inpaint_model=ckpts["base"]) == 2


@pytest.mark.parametrize("flag", ["--inpaint-samples", "--emoji-samples", "--prompts", "--batch"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_report_refuses_a_count_below_one_in_one_line(flag, value, tmp_path, capsys):
    """--inpaint-samples 0 ended in a traceback (an empty torch.cat) after loading every model, and -5
    measured 495 images; a count below 1 is now one line before anything loads."""
    from glidekit.eval import report

    with pytest.raises(SystemExit) as e:
        report.main(["--out", str(tmp_path / "r.md"), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} must be at least 1, got {value}" in err and "Traceback" not in err
    assert not (tmp_path / "r.md").exists()
