"""The README's Python example runs (on a tiny local checkpoint instead of the 385M download)."""

import re
from pathlib import Path

import torch

from glidekit.config import from_openai_options
from glidekit.io import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs(tmp_path):
    v = torch.load(ROOT / "tests" / "vectors" / "base.pt", weights_only=True)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, v["state_dict"], from_openai_options(v["options"]), kind="base")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0]
    assert 'load_model("base")' in code
    code = code.replace('load_model("base")', f"load_model({str(ckpt)!r})").replace("progress=True", "progress=False")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    samples = scope["samples"]
    size = v["options"]["image_size"]
    assert samples.shape == (1, 3, size, size)
    assert samples.abs().max() <= 1.0 and torch.isfinite(samples).all()


def test_readme_pipeline_example_runs(tmp_path):
    paths = {}
    for name in ("base", "upsample"):
        v = torch.load(ROOT / "tests" / "vectors" / f"{name}.pt", weights_only=True)
        paths[name] = save_checkpoint(tmp_path / f"{name}.safetensors", v["state_dict"], from_openai_options(v["options"]), kind=name)
    code = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[1]
    for name, path in paths.items():
        assert f'GlideModel.load("{name}")' in code
        code = code.replace(f'GlideModel.load("{name}")', f"GlideModel.load({str(path)!r})")
    code = code.replace('SamplerSpec("dpm++2m", 20)', 'SamplerSpec("dpm++2m", 3)')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].images.shape == (1, 3, 32, 32)
    assert set(scope["result"].stages) == {"base", "upsample"}
