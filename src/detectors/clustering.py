"""Activation clustering (Chen et al., 2018, arXiv:1811.03728).

Per class: reduce the penultimate features to ``n_components`` dimensions (PCA, or FastICA as in
the paper), split them into two clusters with k-means, and call the smaller cluster poison when
its relative size is at most ``size_threshold`` (the paper's relative-size criterion; 0.35) and,
if ``min_silhouette`` is set, when the split's silhouette score reaches it. Every row also gets a
ranking score: distance to the larger cluster's centre minus distance to the smaller one's, so a
row deep inside the small cluster scores highest, whether or not the class was judged poisoned.
"""

from __future__ import annotations

import numpy as np
import torch

from src.detectors.base import Detection, DetectorInputs, as_float_tensor, classes, top_components


def activation_clustering(
    inputs: DetectorInputs,
    n_components: int = 10,
    reduction: str = "pca",
    size_threshold: float = 0.35,
    min_silhouette: float | None = None,
    silhouette_sample: int = 2000,
    min_rows: int = 20,
) -> Detection:
    if reduction not in ("pca", "ica"):
        raise ValueError(
            f"activation_clustering.reduction={reduction!r} is not allowed: one of pca, ica"
        )
    feats = as_float_tensor(inputs.features)
    n = len(inputs)
    scores, flags = np.zeros(n), np.zeros(n, dtype=bool)
    info: dict = {"classes": {}}
    for c, idx in classes(inputs.labels, min_rows, info):
        z = _reduce(feats[idx], n_components, reduction, inputs.seed)
        assign, centres = two_means(torch.from_numpy(z), inputs.seed)
        sizes = np.bincount(assign, minlength=2)
        small = int(np.argmin(sizes))
        d = np.linalg.norm(z[:, None, :] - centres[None], axis=2)  # [n_c, 2]
        scores[idx] = d[:, 1 - small] - d[:, small]
        rel = float(sizes[small] / len(idx))
        sil = (
            _silhouette(z, assign, silhouette_sample, inputs.seed)
            if min_silhouette is not None
            else None
        )
        poisoned = rel <= size_threshold and (sil is None or sil >= min_silhouette)
        if poisoned:
            flags[idx] = assign == small
        info["classes"][str(c)] = {
            "relative_size": rel,
            "silhouette": sil,
            "judged_poisoned": bool(poisoned),
        }
    return Detection(scores, flags, info)


def two_means(
    z: torch.Tensor, seed: int, n_init: int = 3, iters: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's 2-means with k-means++ seeding, best of ``n_init`` by inertia; vectorised over
    rows (a few passes of an [n, 2] distance matrix), so linear in n."""
    g = torch.Generator().manual_seed(seed)
    best = (float("inf"), None, None)
    for _ in range(n_init):
        c0 = z[torch.randint(len(z), (1,), generator=g)]
        d0 = (z - c0).pow(2).sum(1)
        p = d0 / d0.sum() if d0.sum() > 0 else torch.full_like(d0, 1 / len(z))
        c = torch.cat([c0, z[torch.multinomial(p, 1, generator=g)]])
        assign = None
        for _ in range(iters):
            new = torch.cdist(z, c).argmin(1)
            if assign is not None and torch.equal(new, assign):
                break
            assign = new
            for k in range(2):
                if (assign == k).any():
                    c[k] = z[assign == k].mean(0)
        inertia = float(torch.cdist(z, c).min(1).values.pow(2).sum())
        if inertia < best[0]:
            best = (inertia, assign.numpy().copy(), c.numpy().copy())
    return best[1], best[2]


def _reduce(f, k: int, reduction: str, seed: int) -> np.ndarray:
    f = f - f.mean(0)
    k = min(k, f.shape[1], f.shape[0])
    if reduction == "ica":
        from sklearn.decomposition import FastICA

        return FastICA(n_components=k, random_state=seed, max_iter=400).fit_transform(
            f.double().numpy()
        )
    return (f @ top_components(f, k)).double().numpy()


def _silhouette(z: np.ndarray, labels: np.ndarray, sample: int, seed: int) -> float | None:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return None
    return float(silhouette_score(z, labels, sample_size=min(sample, len(z)), random_state=seed))
