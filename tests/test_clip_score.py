"""CLIP score with a glidekit-trained noised CLIP, CLIP name resolution, dataset features for eval."""

import numpy as np
import pytest
import torch

from glidekit.config import NoisedCLIPConfig
from glidekit.errors import CheckpointError, ConfigError
from glidekit.eval.clip_score import clip_score, clip_similarities
from glidekit.io import clip_pair, load_noised_clip, save_checkpoint
from glidekit.models.clip import NoisedCLIP
from glidekit.tokenizers import clip_tokenizer
from tests.parity.vectors import DEFAULT_DIR


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    v = torch.load(DEFAULT_DIR / "clip.pt", weights_only=True)
    cfg = NoisedCLIPConfig(**v["config"])
    save_checkpoint(d / "ema-clip-image.safetensors", v["image_encoder_state_dict"], cfg, kind="clip-image")
    save_checkpoint(d / "ema-clip-text.safetensors", v["text_encoder_state_dict"], cfg, kind="clip-text")
    return d


def test_clip_pair_resolves_stems_either_file_and_official_names(clip_files, tmp_path):
    image, text = str(clip_files / "ema-clip-image.safetensors"), str(clip_files / "ema-clip-text.safetensors")
    assert clip_pair(clip_files / "ema") == (image, text)
    assert clip_pair(image) == (image, text) and clip_pair(text) == (image, text)
    assert clip_pair("clip") == ("clip-image", "clip-text")  # OpenAI's pair by name
    with pytest.raises(CheckpointError, match="no noised CLIP"):
        clip_pair(tmp_path / "nothing")


def test_clip_score_is_100_max_cos_of_the_t0_embeddings(clip_files):
    clip = load_noised_clip(clip_files / "ema")
    assert isinstance(clip, NoisedCLIP) and not clip.training
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 64, 64, generator=g) * 2 - 1  # resized (area) to the CLIP's 32 px
    prompts = ["a red circle", "a blue square", "a cat", "", "a green triangle on the left"]
    cos = clip_similarities(clip, images, prompts, batch_size=2)
    with torch.no_grad():
        tokens, lens = clip_tokenizer().encode_batch(prompts, clip.config.max_text_len)
        x = torch.nn.functional.interpolate(images, (32, 32), mode="area")
        want = (clip.image_embeddings(x, torch.zeros(5, dtype=torch.long)) * clip.text_embeddings(tokens, lens)).sum(-1)
    np.testing.assert_allclose(cos, want.double().numpy(), atol=1e-6)
    # the same batches as `cos`: float32 kernels may round differently with another batch size
    # (here a 3e-7 relative change on an AVX2-only CPU); batch independence is the check above
    res = clip_score(clip, images, prompts, name="tiny", batch_size=2)
    assert res["clip_score"] == pytest.approx(float(np.mean(100 * np.maximum(cos, 0))), abs=1e-9)
    assert res["n"] == 5 and res["clip"] == "tiny" and "not OpenAI's CLIP" in res["definition"]
    # uint8 HxWx3 arrays (files read from disk) give the same numbers as the [-1, 1] tensor they encode
    pixels = [((im.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy() for im in images]
    quantised = torch.stack([torch.from_numpy(p).permute(2, 0, 1).float() for p in pixels]) / 127.5 - 1
    np.testing.assert_allclose(clip_similarities(clip, pixels, prompts), clip_similarities(clip, quantised, prompts), atol=1e-6)
    with pytest.raises(ConfigError, match="one prompt per image"):
        clip_score(clip, images, prompts[:2])


def test_mismatched_encoders_are_refused(clip_files, tmp_path):
    v = torch.load(DEFAULT_DIR / "clip.pt", weights_only=True)
    other = NoisedCLIPConfig(**{**v["config"], "logit_scale": 50.0})
    save_checkpoint(tmp_path / "x-clip-image.safetensors", v["image_encoder_state_dict"], other, kind="clip-image")
    (tmp_path / "x-clip-text.safetensors").write_bytes((clip_files / "ema-clip-text.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="not one CLIP"):
        load_noised_clip(tmp_path / "x")


class MeanExtractor:
    identity = "mean-v1"

    def __init__(self):
        self.images = 0

    def __call__(self, images):
        self.images += len(images)
        return images.float().mean(dim=(2, 3)).double().numpy()


def test_dataset_features_read_the_first_n_items_and_cache(tmp_path, monkeypatch):
    from glidekit.data import build_dataset
    from glidekit.eval.features import dataset_features

    monkeypatch.setenv("GLIDEKIT_CACHE", str(tmp_path / "cache"))
    ex = MeanExtractor()
    f = dataset_features("shapes", 32, n=7, batch_size=3, progress=False, extractor=ex)
    ds = build_dataset("shapes", 32)
    want = torch.stack([ds[i]["image"] for i in range(7)]).mean(dim=(2, 3)).double().numpy()
    np.testing.assert_allclose(f, want)
    assert ex.images == 7
    again = dataset_features("shapes", 32, n=7, progress=False, extractor=ex)
    assert ex.images == 7 and np.array_equal(f, again)  # from the cache
    dataset_features("shapes", 32, n=8, progress=False, extractor=ex)
    assert ex.images == 15  # another count is another entry


def test_retrieval_accuracy_counts_own_or_equal_captions(clip_files, monkeypatch):
    from glidekit.eval import clip_score as C

    clip = load_noised_clip(clip_files / "ema")
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    captions = ["a red circle", "a blue square", "a red circle", "a cat"]
    acc = C.retrieval_accuracy(clip, images, captions)
    with torch.no_grad():
        tokens, lens = clip_tokenizer().encode_batch(captions, clip.config.max_text_len)
        sim = clip.image_embeddings(images, torch.zeros(4, dtype=torch.long)) @ clip.text_embeddings(tokens, lens).T
    want = sum(captions[j] == captions[i] for i, j in enumerate(sim.argmax(1).tolist())) / 4
    assert acc == want
    # t > 0: the images the CLIP sees are q(x_t | x_0) with the seeded noise, at timestep t
    from glidekit.diffusion import gaussian as G
    from glidekit.diffusion.schedule import Schedule

    seen = []
    real = clip.image_embeddings
    monkeypatch.setattr(clip, "image_embeddings", lambda x, t: seen.append((x, t)) or real(x, t))
    C.retrieval_accuracy(clip, images, captions, t=500, seed=3)
    k = torch.full((4,), 500, dtype=torch.long)
    sched = Schedule.create(clip.config.beta_schedule, clip.config.n_timesteps)
    noised = G.q_sample(sched, images, k, torch.randn(images.shape, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(seen[0][1], k) and torch.allclose(seen[0][0], noised)
