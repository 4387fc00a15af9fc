"""Parity of glidekit's noised CLIP with the reference vectors (tests/vectors/README.md s.10, s.11).

Every configuration value comes from the vector file; only key names are hard-coded. Also checks
that the official-size model has exactly the official state-dict layout (tests/data/keys/).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from glidekit.config import NoisedCLIPConfig
from glidekit.models.clip import AttentionResblock, CLIPImageEncoder, CLIPTextEncoder, NoisedCLIP
from tests.parity.vectors import files, ids, load

ATOL = RTOL = 1e-5  # README s.11: CLIP raw outputs, embeddings, cond_fn.grad

KEYS_DIR = Path(__file__).resolve().parent.parent / "data" / "keys"


CLIP_FILES = files("clip")


def _no_files() -> None:
    if os.environ.get("GLIDEKIT_PARITY_DIR"):
        pytest.skip("no CLIP vector file in $GLIDEKIT_PARITY_DIR")
    pytest.fail("no CLIP vector file in tests/vectors/ (clip.pt is part of the public set)")


def assert_close(name: str, a: torch.Tensor, ref: torch.Tensor) -> float:
    """Elementwise |a - ref| <= ATOL + RTOL |ref|; returns the worst error/budget ratio."""
    assert a.shape == ref.shape, f"{name}: shape {tuple(a.shape)} != {tuple(ref.shape)}"
    assert a.dtype == ref.dtype, f"{name}: dtype {a.dtype} != {ref.dtype}"
    ratio = ((a - ref).abs() / (ATOL + RTOL * ref.abs())).max().item()
    assert ratio <= 1.0, f"{name}: worst |a-ref| is {ratio:.3g} x the tolerance"
    return ratio


def build(v: dict) -> NoisedCLIP:
    cfg = NoisedCLIPConfig(**v["config"])
    model = NoisedCLIP(cfg).eval()
    model.image_encoder.load_state_dict(v["image_encoder_state_dict"], strict=True)
    model.text_encoder.load_state_dict(v["text_encoder_state_dict"], strict=True)
    return model


def clip_tokens(v: dict, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP tokens of `prompts`: from the file's `inputs` where a prompt appears there, else from
    glidekit's CLIP tokenizer."""
    inputs = v["inputs"]
    rows, missing = [], []
    for p in prompts:
        if p in inputs["prompts"]:
            rows.append(inputs["prompts"].index(p))
        else:
            missing.append(p)
    if not missing:
        return inputs["tokens"][rows], inputs["text_len"][rows]
    try:
        from glidekit.tokenizers import clip_tokenizer
    except ImportError as e:  # pragma: no cover - depends on the tokenizer module being present
        pytest.fail(f"cond_fn prompts {missing!r} are not in inputs and no CLIP tokenizer: {e}")
    tok = clip_tokenizer() if not hasattr(clip_tokenizer, "encode_batch") else clip_tokenizer  # factory or object
    tokens, text_len = tok.encode_batch(prompts, v["config"]["max_text_len"])
    return torch.as_tensor(tokens, dtype=torch.int64), torch.as_tensor(text_len, dtype=torch.int64)


@pytest.fixture(params=CLIP_FILES or [None], ids=ids(CLIP_FILES) or ["none"])
def vec(request) -> dict:
    if request.param is None:
        _no_files()
    return load(request.param)


# ---------------------------------------------------------------------------------------------
# vector parity


def test_logit_scale(vec):
    model = build(vec)
    assert model.logit_scale.dtype == torch.float32
    assert torch.equal(model.logit_scale, vec["logit_scale"])
    assert math.isclose(math.exp(model.logit_scale.item()), vec["config"]["logit_scale"], rel_tol=1e-6)


def test_encoders_and_embeddings(vec):
    model = build(vec)
    i = vec["inputs"]
    with torch.no_grad():
        assert_close("image_encoder_raw", model.image_encoder(i["images"], i["timesteps"]), vec["image_encoder_raw"])
        assert_close("text_encoder_raw", model.text_encoder(i["tokens"], i["text_len"]), vec["text_encoder_raw"])
        assert_close(
            "image_embeddings", model.image_embeddings(i["images"], i["timesteps"]), vec["image_embeddings"]
        )
        assert_close("text_embeddings", model.text_embeddings(i["tokens"], i["text_len"]), vec["text_embeddings"])


def test_cond_fn_grad(vec):
    model = build(vec)
    c = vec["cond_fn"]
    tokens, text_len = clip_tokens(vec, c["prompts"])
    fn = model.cond_fn(tokens, text_len, c["grad_scale"])
    x = c["x"].clone()
    with torch.no_grad():  # samplers call cond_fn under no_grad
        grad = fn(x, c["t"])
    assert torch.equal(x, c["x"]), "cond_fn modified its input"
    assert not grad.requires_grad
    assert_close("cond_fn.grad", grad, c["grad"])


def test_rows_are_independent(vec):
    """Each row's embedding depends only on that row (checks batching and per-row t/text_len)."""
    model = build(vec)
    i = vec["inputs"]
    with torch.no_grad():
        full_img = model.image_encoder(i["images"], i["timesteps"])
        full_txt = model.text_encoder(i["tokens"], i["text_len"])
        for r in range(i["images"].shape[0]):
            img = model.image_encoder(i["images"][r : r + 1], i["timesteps"][r : r + 1])
            txt = model.text_encoder(i["tokens"][r : r + 1], i["text_len"][r : r + 1])
            torch.testing.assert_close(img[0], full_img[r], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(txt[0], full_txt[r], atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# architecture


def read_key_listing(name: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in (KEYS_DIR / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, _dtype = line.split("\t")
        out.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return out


@pytest.mark.parametrize(
    "cls, listing, n_params",
    [(CLIPImageEncoder, "clip-image-enc.txt", 86_443_776), (CLIPTextEncoder, "clip-text-enc.txt", 71_679_488)],
    ids=["image", "text"],
)
def test_official_size_layout(cls, listing, n_params):
    with torch.device("meta"):
        model = cls(NoisedCLIPConfig())
    assert sum(p.numel() for p in model.parameters()) == n_params
    got = [(k, tuple(t.shape)) for k, t in model.state_dict().items()]
    assert got == read_key_listing(listing)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())


def test_noised_clip_state_dict_is_the_two_encoders_plus_logit_scale():
    cfg = NoisedCLIPConfig()
    with torch.device("meta"):
        model = NoisedCLIP(cfg)
    keys = set(model.state_dict())
    image = {"image_encoder." + k for k, _ in read_key_listing("clip-image-enc.txt")}
    text = {"text_encoder." + k for k, _ in read_key_listing("clip-text-enc.txt")}
    assert keys == image | text | {"logit_scale"}


def test_fresh_init_is_sane():
    """Training from scratch: finite weights, zero biases, LN at identity, unit-scale outputs."""
    torch.manual_seed(0)
    cfg = NoisedCLIPConfig(
        image_size=16, patch_size=4, n_vocab=100, n_embd=32, n_head_text=2, n_head_state_text=16,
        n_xf_blocks_text=2, n_head_image=2, n_head_state_image=16, n_xf_blocks_image=2,
    )  # fmt: skip
    model = NoisedCLIP(cfg)
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        if name.endswith(".b") and ".ln." not in name:
            assert (p == 0).all(), name
        if name.endswith("ln.g"):
            assert (p == 1).all(), name
        if name.endswith("ln.b"):
            assert (p == 0).all(), name
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    t = torch.tensor([0, 10, 500, 999])
    tokens = torch.randint(0, 100, (4, cfg.max_text_len))
    text_len = torch.tensor([1, 5, 40, 77])
    zi, zt = model.image_encoder(images, t), model.text_encoder(tokens, text_len)
    for z in (zi, zt):
        assert torch.isfinite(z).all()
        assert 0.1 < z.std().item() < 10
    loss = (model.image_embeddings(images, t) * model.text_embeddings(tokens, text_len)).sum()
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "w_voc" not in n)


def test_grad_checkpointing_matches():
    torch.manual_seed(1)
    cfg = NoisedCLIPConfig(
        image_size=8, patch_size=4, n_vocab=50, n_embd=16, n_head_text=2, n_head_state_text=8,
        n_xf_blocks_text=2, n_head_image=2, n_head_state_image=8, n_xf_blocks_image=2,
    )  # fmt: skip
    enc = CLIPImageEncoder(cfg)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    t = torch.tensor([3, 700])
    enc(x, t).square().sum().backward()
    ref = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.grad_checkpointing = True
    enc(x, t).square().sum().backward()
    for g, r in zip((p.grad for p in enc.parameters()), ref):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("causal, length", [(False, 257), (True, 77), (False, 33), (True, 32)])
def test_padding_to_block_multiple_changes_nothing(causal, length):
    """The reference pads q/k/v to a multiple of 32 tokens and masks padded keys with -1e10;
    glidekit attends over the real tokens only. Show the two agree."""
    torch.manual_seed(2)
    width, heads = 64, 4
    attn = AttentionResblock(width, heads, causal=causal, proj_std=0.02)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, length, width)

    def padded_reference(x: torch.Tensor) -> torch.Tensor:
        n, L, _ = x.shape
        Lp = -(-L // 32) * 32
        h = attn.ln(x)
        q, k, v = (F.pad(f(h), (0, 0, 0, Lp - L)) for f in (attn.f_q, attn.f_k, attn.f_v))
        split = lambda t: t.view(n, Lp, heads, width // heads).permute(0, 2, 1, 3)  # noqa: E731
        s = math.sqrt(1 / math.sqrt(width // heads))
        w = torch.einsum("bhqd,bhkd->bhqk", split(q) * s, split(k) * s)
        allowed = torch.zeros(Lp, Lp, dtype=torch.bool)
        allowed[:, :L] = True
        if causal:
            allowed &= torch.ones(Lp, Lp, dtype=torch.bool).tril()
        w = w + torch.where(allowed, 0.0, -1e10)
        p = torch.softmax(w.float(), -1)
        # the masked (padded or future) keys get a weight of exactly 0 ...
        assert (p.masked_fill(allowed, 0) == 0).all()
        a = torch.einsum("bhqk,bhkd->bhqd", p, split(v))
        a = a.permute(0, 2, 1, 3).reshape(n, Lp, width)[:, :L]
        return x + attn.f_c(a)

    # ... so the results differ only by float32 rounding of the different-length reductions
    with torch.no_grad():
        torch.testing.assert_close(attn(x), padded_reference(x), atol=1e-5, rtol=1e-5)


def test_cond_fn_broadcasts_one_prompt_and_ignores_kwargs():
    torch.manual_seed(3)
    cfg = NoisedCLIPConfig(
        image_size=8, patch_size=4, n_vocab=50, n_embd=16, n_head_text=2, n_head_state_text=8,
        n_xf_blocks_text=1, n_head_image=2, n_head_state_image=8, n_xf_blocks_image=1,
    )  # fmt: skip
    model = NoisedCLIP(cfg)
    tokens = torch.randint(0, 50, (1, cfg.max_text_len))
    text_len = torch.tensor([6])
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([5, 5, 5])
    g1 = model.cond_fn(tokens, text_len, 2.0)(x, t, tokens=None, mask=None)
    g3 = model.cond_fn(tokens.expand(3, -1), text_len.expand(3), 2.0)(x, t)
    torch.testing.assert_close(g1, g3)
    with pytest.raises(ValueError):
        model.cond_fn(tokens.expand(2, -1), text_len.expand(2), 2.0)(x, t)
