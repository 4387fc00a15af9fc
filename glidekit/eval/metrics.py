"""Sample-quality metrics on feature vectors: FID, KID, improved precision and recall.

All maths is float64. The functions take (N, D) feature arrays (normally the FID Inception
features from `glidekit.eval.features`) and return a dict that states the value, the sample
counts, the feature dimension and whatever else decides the number (kernel, k, subsets, the
feature network and batch size when known). `evaluate` goes from image folders (or feature
arrays) to all three metrics.

Definitions
-----------
- **FID** (Heusel et al. 2017): ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with the
  unbiased (N - 1) sample covariances. ``tr (S_a S_b)^(1/2)`` is computed without a general
  matrix square root: with ``R = S_a^(1/2)`` (symmetric eigendecomposition), ``S_a S_b`` is
  similar to the symmetric PSD matrix ``R S_b R``, so the trace is the sum of the square roots of
  its eigenvalues (``eigvalsh``); when ``S_a`` is positive definite its Cholesky factor ``L``
  plays the role of ``R`` (``L^T S_b L``, same eigenvalues, three times faster). Everything
  stays real; the eigenvalues that rounding makes slightly negative (rank-deficient covariances
  when N <= D) are clipped to 0. This replaces ``scipy.linalg.sqrtm`` and its "discard small
  imaginary parts" step; a clearly negative eigenvalue (not a rounding artefact) is an error.
- **KID** (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimator of the squared
  MMD with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, on `subsets` random subsets
  of `subset_size` samples of each set (drawn without replacement within a subset, with a seeded
  generator). Reported: the mean over subsets and the standard deviation of the subset values
  (ddof = 1; subsets overlap, so this is the spread of one subset's estimate, not the standard
  error of the mean). Being unbiased, it can be slightly negative for equal distributions.
- **Precision / recall** (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models"): each sample of a set gets the radius of a hypersphere, the
  distance to its k-th nearest neighbour within its own set (the sample itself, at distance 0,
  is not counted: the k-th smallest distance to the *other* samples, as the reference code's
  ``kth = k`` over a distance row that includes the self-distance at position 0). Precision is
  the fraction of generated samples inside at least one real hypersphere (distance <= radius),
  recall the fraction of real samples inside at least one generated hypersphere. Distances are
  computed in batches with torch, float64.

Minimum sample counts (`MIN_SAMPLES`)
-------------------------------------
- FID: refused below 100 images per set, warned below 2048. The estimate is strongly biased
  upwards for small N (the bias falls roughly as 1/N; Chong & Forsyth 2020) and a 2048-d
  covariance from fewer than 2048 samples is rank deficient: below 100 the number says nothing
  about the model; below 2048 it is only comparable with scores from the same N. Use >= 10,000
  (50,000 is the usual protocol) for numbers comparable with papers.
- KID: refused below 50 per set. The estimator is unbiased at any size, only noisier, so it is
  the metric to use for small sets; the subset size is lowered to the smaller set size when
  needed (and reported).
- Precision / recall: refused below 100 per set (and necessarily below k + 1). With few samples
  the k-NN radii are large and both values saturate towards 1.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

from ..errors import GlidekitError

MIN_SAMPLES = {"fid": 100, "kid": 50, "precision_recall": 100}
FID_WARN_BELOW = 2048
FID_RECOMMENDED = 10_000
KID_KERNEL = "polynomial (x.y/d + 1)^3"
PR_KERNEL = "k-NN hyperspheres, Euclidean, k-th nearest other sample"


class SmallSampleWarning(UserWarning):
    """A metric computed from a set small enough to make the value hard to compare."""


# -------------------------------------------------------------------------------------------------
# Helpers


def _as_features(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise GlidekitError(f"{name} features must be a 2-D (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise GlidekitError(f"{name} features contain NaN or infinite values")
    return x


def _pair(a, b, metric: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_features(a, "first"), _as_features(b, "second")
    if a.shape[1] != b.shape[1]:
        raise GlidekitError(
            f"{metric}: the two feature sets have different dimensions ({a.shape[1]} and "
            f"{b.shape[1]}); were they computed with the same network?"
        )
    check_sample_count(metric, len(a), len(b))
    return a, b


def check_sample_count(metric: str, *counts: int, k: int | None = None) -> None:
    """Raise a GlidekitError when a set is below the minimum policy for `metric`."""
    minimum = MIN_SAMPLES[metric]
    if metric == "precision_recall" and k is not None:
        minimum = max(minimum, k + 1)
    n = min(counts)
    if n >= minimum:
        return
    if metric == "fid":
        raise GlidekitError(
            f"FID needs at least {minimum} samples per set, got {n}: FID from that many images "
            f"is meaningless (it is biased upwards by an amount that depends on the count); use "
            f">= {FID_RECOMMENDED:,} images per set, or KID for small sets"
        )
    if metric == "kid":
        raise GlidekitError(
            f"KID needs at least {minimum} samples per set, got {n}; its estimate from fewer "
            f"images is too noisy to be useful"
        )
    raise GlidekitError(
        f"precision/recall needs at least {minimum} samples per set, got {n}: with so few "
        f"samples the k-nearest-neighbour radii cover everything and both values saturate"
    )


def _meta(feature_network: str | None, batch_size: int | None) -> dict[str, Any]:
    return {
        "feature_network": feature_network or "unspecified (features given directly)",
        "batch_size": batch_size,
    }


# -------------------------------------------------------------------------------------------------
# FID


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (N - 1) covariance of (N, D) features, float64."""
    x = _as_features(feats, "the")
    if len(x) < 2:
        raise GlidekitError("a covariance needs at least 2 samples")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, real and stable (see the module docstring)."""
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    try:  # S1 = L L^T: S1 S2 is similar to L^T S2 L (3x faster than an eigendecomposition)
        r = np.linalg.cholesky(s1)
        m = r.T @ s2 @ r
    except np.linalg.LinAlgError:  # singular S1 (N <= D): R = S1^(1/2), S1 S2 ~ R S2 R
        r = _psd_sqrt(s1)
        m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    tol = 1e-8 * max(float(np.abs(w).max(initial=0.0)), np.finfo(np.float64).tiny)
    if w.min(initial=0.0) < -tol:
        raise GlidekitError(
            f"covariance product has a negative eigenvalue ({w.min():.3g}); the statistics are "
            f"not valid covariance matrices"
        )
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise GlidekitError(
            f"FID statistics have mismatched shapes: mu {mu1.shape} / {mu2.shape}, sigma "
            f"{sigma1.shape} / {sigma2.shape}"
        )
    diff = mu1 - mu2
    covariance = np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    value = diff @ diff + covariance
    return float(max(value, 0.0))


def fid(
    feats_a, feats_b, *, feature_network: str | None = None, batch_size: int | None = None
) -> dict[str, Any]:
    """FID between two (N, D) feature sets (see the module docstring for the policy)."""
    a, b = _pair(feats_a, feats_b, "fid")
    notes = []
    if min(len(a), len(b)) < FID_WARN_BELOW:
        msg = (
            f"FID from {min(len(a), len(b))} samples (< {FID_WARN_BELOW}) is strongly biased and "
            f"only comparable with FIDs from the same number of samples; use >= "
            f"{FID_RECOMMENDED:,}"
        )
        warnings.warn(msg, SmallSampleWarning, stacklevel=2)
        notes.append(msg)
    mu_a, s_a = gaussian_stats(a)
    mu_b, s_b = gaussian_stats(b)
    diff = mu_a - mu_b
    mean_term = float(diff @ diff)
    value = fid_from_stats(mu_a, s_a, mu_b, s_b)
    return {
        "metric": "fid",
        "fid": value,
        "mean_term": mean_term,
        "covariance_term": value - mean_term,
        "n_a": len(a),
        "n_b": len(b),
        "feature_dim": a.shape[1],
        **_meta(feature_network, batch_size),
        "warnings": notes,
    }


# -------------------------------------------------------------------------------------------------
# KID


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / d + 1)^3, (n, d) x (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2(x, y, unbiased: bool = True) -> float:
    """Squared MMD with the cubic polynomial kernel. `unbiased` drops the k(x_i, x_i) terms of the
    within-set means (Binkowski et al.'s estimator); the biased (V-statistic) version keeps them
    and is kept here to show the difference."""
    x = torch.as_tensor(np.asarray(x, np.float64))
    y = torch.as_tensor(np.asarray(y, np.float64))
    m, n = len(x), len(y)
    if min(m, n) < 2:
        raise GlidekitError(f"MMD^2 needs at least 2 samples per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return float(sxx + syy - 2 * kxy.mean())


def kid(
    feats_a,
    feats_b,
    subsets: int = 100,
    subset_size: int = 1000,
    *,
    seed: int = 0,
    feature_network: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """KID: mean and std of the unbiased MMD^2 over random subsets (Binkowski et al. 2018)."""
    a, b = _pair(feats_a, feats_b, "kid")
    if subsets < 1 or subset_size < 2:
        raise GlidekitError(
            f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}"
        )
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    values = np.empty(subsets)
    for i in range(subsets):
        ia = rng.choice(len(a), m, replace=False)
        ib = rng.choice(len(b), m, replace=False)
        values[i] = mmd2(ta[ia], tb[ib], unbiased=True)
    return {
        "metric": "kid",
        "kid": float(values.mean()),
        "kid_std": float(values.std(ddof=1)) if subsets > 1 else float("nan"),
        "subsets": subsets,
        "subset_size": m,
        "subset_size_requested": subset_size,
        "seed": seed,
        "kernel": KID_KERNEL,
        "estimator": "unbiased MMD^2 (Binkowski et al. 2018)",
        "n_a": len(a),
        "n_b": len(b),
        "feature_dim": a.shape[1],
        **_meta(feature_network, batch_size),
    }


# -------------------------------------------------------------------------------------------------
# Precision and recall


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n, m), float64, clamped at 0."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * (x @ y.T)
    return d.clamp_(min=0)


def knn_radii(x: torch.Tensor, k: int, row_batch: int = 512) -> torch.Tensor:
    """Squared distance of each row of x to its k-th nearest *other* row (the self-distance is
    the 0-th smallest of its row, so this is the (k + 1)-th smallest including it)."""
    out = torch.empty(len(x), dtype=x.dtype)
    for i in range(0, len(x), row_batch):
        d = _sq_dists(x[i : i + row_batch], x)
        rows = torch.arange(len(d))
        d[rows, rows + i] = 0.0  # exactly 0, whatever the rounding of the expansion gave
        out[i : i + row_batch] = d.kthvalue(k + 1, dim=1).values
    return out


def _coverage(
    query: torch.Tensor, ref: torch.Tensor, ref_radii: torch.Tensor, row_batch: int
) -> float:
    """Fraction of query rows within the radius of at least one ref row."""
    inside = 0
    for i in range(0, len(query), row_batch):
        d = _sq_dists(query[i : i + row_batch], ref)
        inside += int((d <= ref_radii[None, :]).any(dim=1).sum())
    return inside / len(query)


def precision_recall(
    real,
    fake,
    k: int = 3,
    *,
    row_batch: int = 512,
    feature_network: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of `fake` against `real`."""
    if k < 1:
        raise GlidekitError(f"precision/recall needs k >= 1, got {k}")
    r, f = _as_features(real, "real"), _as_features(fake, "generated")
    if r.shape[1] != f.shape[1]:
        raise GlidekitError(
            f"precision_recall: the two feature sets have different dimensions ({r.shape[1]} and "
            f"{f.shape[1]}); were they computed with the same network?"
        )
    check_sample_count("precision_recall", len(r), len(f), k=k)
    tr, tf = torch.from_numpy(r), torch.from_numpy(f)
    radii_r, radii_f = knn_radii(tr, k, row_batch), knn_radii(tf, k, row_batch)
    return {
        "metric": "precision_recall",
        "precision": _coverage(tf, tr, radii_r, row_batch),
        "recall": _coverage(tr, tf, radii_f, row_batch),
        "k": k,
        "kernel": PR_KERNEL,
        "n_real": len(r),
        "n_fake": len(f),
        "feature_dim": r.shape[1],
        **_meta(feature_network, batch_size),
    }


# -------------------------------------------------------------------------------------------------
# Folders -> all metrics

METRICS = ("fid", "kid", "precision_recall")


def evaluate(
    real,
    fake,
    metrics: tuple[str, ...] | list[str] = METRICS,
    *,
    batch_size: int = 50,
    progress: bool = True,
    extractor=None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """`metrics` between `real` and `fake`, each an image folder or an (N, D) feature array.

    Folder features use `extractor` (default: the FID Inception, `InceptionFeatures`) and its
    cache. Sample counts are checked against `MIN_SAMPLES` *before* any feature is computed.
    """
    from .features import InceptionFeatures, folder_features, list_images

    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise GlidekitError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")

    sources = {}
    for name, src in (("real", real), ("fake", fake)):
        if isinstance(src, (str, os.PathLike)):
            sources[name] = ("folder", len(list_images(src)))
        else:
            sources[name] = ("features", len(_as_features(src, name)))
    for m in metrics:
        n_real, n_fake = sources["real"][1], sources["fake"][1]
        check_sample_count(m, n_real, n_fake, k=k if m == "precision_recall" else None)

    need_net = any(kind == "folder" for kind, _ in sources.values())
    if extractor is None and need_net:
        extractor = InceptionFeatures(batch_size=batch_size)
    network = extractor.identity if need_net else None
    feats = {}
    for name, src in (("real", real), ("fake", fake)):
        if sources[name][0] == "folder":
            feats[name] = folder_features(src, batch_size, progress, extractor=extractor)
        else:
            feats[name] = _as_features(src, name)
    kw = {"feature_network": network, "batch_size": batch_size if need_net else None}
    result: dict[str, Any] = {
        "real": {"source": str(real) if sources["real"][0] == "folder" else "features",
                 "n": len(feats["real"])},
        "fake": {"source": str(fake) if sources["fake"][0] == "folder" else "features",
                 "n": len(feats["fake"])},
        **_meta(network, kw["batch_size"]),
    }
    if "fid" in metrics:
        result["fid"] = fid(feats["real"], feats["fake"], **kw)
    if "kid" in metrics:
        result["kid"] = kid(
            feats["real"], feats["fake"], kid_subsets, kid_subset_size, seed=seed, **kw
        )
    if "precision_recall" in metrics:
        result["precision_recall"] = precision_recall(feats["real"], feats["fake"], k, **kw)
    return result
