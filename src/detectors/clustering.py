"""Activation clustering (Chen et al., 2018, arXiv:1811.03728).

Per class: reduce the penultimate features to ``n_components`` dimensions (PCA, or FastICA as in
the paper) and split them in two with k-means (scikit-learn's ``KMeans``, k-means++ seeding,
``n_init`` starts, seeded; a class of more than ``max_fit_rows`` rows is fitted on a seeded
sample of them, then every row goes to its nearest centre). Then two choices, each named in the config and recorded in info:

- ``rule``, whether the class is judged poisoned:
  - ``relative_size`` (default; the paper's): the suspicious cluster holds at most
    ``size_threshold`` (0.35) of the class;
  - ``silhouette`` (the paper's other criterion): the two-cluster split fits, its silhouette
    score reaches ``silhouette_threshold``, whatever the cluster sizes.
- ``orient``, which of the two clusters is suspicious:
  - ``smaller`` (default): the smaller one, as the paper and ART assume;
  - ``distance``: the cluster whose median activation lies closest to another class's median
    (after ART's ``analyze_by_distance``, which calls a cluster poison when it is nearer
    another class than its own; measured here in the full activation space, and against the
    other classes only, since the poison pulls its own class's median towards itself). It does
    not assume the poison is a minority of its class, which dirty-label poisoning of a rare
    outcome breaks (the poison can be half of the class or more).

Every row gets a ranking score, whether or not its class is judged poisoned: its distance to the
clean cluster's centre minus its distance to the suspicious one's, so the suspicious cluster's
core ranks first. Flags: the suspicious cluster of a class judged poisoned (the rule needs no
knowledge of the poison rate).
"""

from __future__ import annotations

import numpy as np
import torch

from src.detectors.base import (
    Detection,
    DetectorInputs,
    as_float_tensor,
    check_options,
    class_projection,
    classes,
    options,
)

REDUCTIONS = ("pca", "ica")
RULES = ("relative_size", "silhouette")
ORIENTS = ("smaller", "distance")


@options(reduction=REDUCTIONS, rule=RULES, orient=ORIENTS)
def activation_clustering(
    inputs: DetectorInputs,
    n_components: int = 10,
    reduction: str = "pca",
    rule: str = "relative_size",
    size_threshold: float = 0.35,
    silhouette_threshold: float = 0.10,
    orient: str = "smaller",
    n_init: int = 1,
    max_fit_rows: int = 100_000,
    silhouette_sample: int = 2000,
    min_rows: int = 20,
) -> Detection:
    check_options("activation_clustering", activation_clustering, locals())
    feats = as_float_tensor(inputs.features)
    n = len(inputs)
    scores, flags = np.zeros(n), np.zeros(n, dtype=bool)
    info: dict = {"rule": rule, "orient": orient, "flag_rule": rule, "classes": {}}
    medians = _class_medians(feats, inputs.labels) if orient == "distance" else {}
    for c, idx in classes(inputs.labels, min_rows, info):
        z = reduce_features(feats, idx, n_components, reduction, inputs.seed)
        assign, centres = two_means(z, inputs.seed, n_init, max_fit_rows)
        sizes = np.bincount(assign, minlength=2)
        if orient == "smaller":
            suspicious = int(np.argmin(sizes))
        else:
            suspicious = _closest_to_other_class(feats[idx].numpy(), assign, c, medians)
        d = [np.linalg.norm(z - centres[j].astype(z.dtype), axis=1) for j in (0, 1)]
        scores[idx] = d[1 - suspicious].astype(np.float64) - d[suspicious]
        rel = float(sizes[suspicious] / len(idx))
        # the silhouette (on a sample of rows) only where the rule reads it
        sil = (
            _silhouette(z, assign, silhouette_sample, inputs.seed) if rule == "silhouette" else None
        )
        if rule == "relative_size":
            poisoned = rel <= size_threshold
        else:
            poisoned = sil is not None and sil >= silhouette_threshold
        if poisoned:
            flags[idx] = assign == suspicious
        info["classes"][str(c)] = {
            "relative_size": rel,
            "silhouette": sil,
            "judged_poisoned": bool(poisoned),
        }
    return Detection(scores, flags, info)


def two_means(
    z: np.ndarray, seed: int, n_init: int = 1, max_fit_rows: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's k-means with two clusters: (assignments, centres [2, k]). A class larger
    than ``max_fit_rows`` is fitted on a seeded sample of that many rows and every row is then
    assigned to its nearest centre: two centres in 10 dimensions are pinned down long before
    100k rows, and the fit no longer grows with the class."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=2, n_init=n_init, random_state=seed)
    if len(z) <= max_fit_rows:
        km.fit(z)
        return km.labels_.astype(np.int64), km.cluster_centers_
    rows = np.random.default_rng(seed).choice(len(z), max_fit_rows, replace=False)
    km.fit(z[np.sort(rows)])
    return km.predict(z).astype(np.int64), km.cluster_centers_


def reduce_features(feats, idx, k: int, reduction: str, seed: int) -> np.ndarray:
    """Rows ``idx`` of ``feats``, centred and projected on their top ``k`` principal directions
    (PCA through the d x d scatter matrix, linear in the rows), or FastICA's ``k``
    components."""
    feats = as_float_tensor(feats)
    k = min(k, feats.shape[1], len(idx))
    if reduction == "ica":
        from sklearn.decomposition import FastICA

        f = feats[torch.as_tensor(idx)].double().numpy()
        return FastICA(n_components=k, random_state=seed, max_iter=400).fit_transform(f)
    return class_projection(feats, idx, k)[0].numpy()  # float32 rows: k-means runs in float32


def _class_medians(feats, labels) -> dict[int, np.ndarray]:
    f = feats.numpy()
    return {int(c): np.median(f[labels == c], axis=0) for c in np.unique(labels)}


def _closest_to_other_class(f: np.ndarray, assign: np.ndarray, c: int, medians: dict) -> int:
    """The cluster whose median is nearest the median of another class."""
    others = [m for k, m in medians.items() if k != c]
    if not others:
        return int(np.argmin(np.bincount(assign, minlength=2)))
    dist = [
        min(np.linalg.norm(np.median(f[assign == j], axis=0) - m) for m in others) for j in (0, 1)
    ]
    return int(np.argmin(dist))


def _silhouette(z: np.ndarray, labels: np.ndarray, sample: int, seed: int) -> float | None:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return None
    return float(silhouette_score(z, labels, sample_size=min(sample, len(z)), random_state=seed))
