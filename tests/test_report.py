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
    # fewer steps than the report's samplers keeps this fast; the code path is the same
    monkeypatch.setattr(report, "SAMPLERS", ("dpm++2m:4", "ddim:3"))
    monkeypatch.setattr(report, "ANCESTRAL", "ancestral:5")
    out = tmp_path / "docs" / "results.md"
    code = report.main(["--out", str(out), "--prompts", "4", "--ancestral-prompts", "2", "--batch", "4",
                        "--skip", "emoji", "--shapes-model", str(ckpt)])
    assert code == 0
    text = out.read_text()
    assert "By guidance scale" in text and "| 8 |" in text and "ancestral | 5 | 2 |" in text
    rows = read_csv(tmp_path / "docs" / "results" / "shapes.csv")
    assert sorted(r["guidance"] for r in rows if r["sampler"] == "dpm++2m" and r["steps"] == 20) == [0, 1, 3, 5, 8]
    assert {(r["sampler"], r["steps"]) for r in rows if r["guidance"] == 3} == {("dpm++2m", 20), ("dpm++2m", 4), ("ddim", 3)}
    assert all(r["n"] == 4 for r in rows)
    assert (tmp_path / "docs" / "results" / "shapes_guidance.png").stat().st_size > 1000


def test_nearest_neighbour_copy_check_flags_copies_only():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(60, 3, 8, 8, generator=g) * 2 - 1
    novel = torch.rand(5, 3, 8, 8, generator=g) * 2 - 1
    copies = train[:3] + 0.01 * torch.randn(3, 3, 8, 8, generator=g)
    nn = report.nearest_neighbours(torch.cat([novel, copies]), train)
    assert nn["copies"] == 3
    assert nn["nn_index"][5:].tolist() == [0, 1, 2]
    assert (nn["ratio"][:5] > 0.5).all()
