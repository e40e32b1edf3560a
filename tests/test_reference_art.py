"""Our spectral signatures and activation clustering against IBM ART's on the same arrays, under
ART's conventions (adversarial-robustness-toolbox, a test-only dependency pinned in the lock):

- art/defences/detector/poison/spectral_signature_defense.py,
  ``SpectralSignatureDefense.spectral_signature_scores``: |R v| with v the top right singular
  vector of the centred R (our ``projection="uncentered_abs"``);
- art/defences/detector/poison/activation_defence.py, ``cluster_activations`` and
  ``reduce_dimensionality`` (PCA to 10 dims, k-means with 2 clusters), and
  clustering_analyzer.py, ``ClusteringAnalyzer.analyze_by_size``. Its
  ``analyze_by_relative_size`` fails under numpy 2 for a class with no small cluster (``x in
  empty_array``), so its rule is restated here: a cluster is poison when
  ``round(size / class size, 2) < round(size_threshold, 2)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.defences.detector.poison.activation_defence import (
    cluster_activations,
    reduce_dimensionality,
)
from art.defences.detector.poison.clustering_analyzer import ClusteringAnalyzer
from art.defences.detector.poison.spectral_signature_defense import SpectralSignatureDefense

from src.detectors.base import DetectorInputs
from src.detectors.clustering import activation_clustering, reduce_features
from src.detectors.spectral import spectral_signature


def planted(seed: int, n: int = 1500, d: int = 24, share: float = 0.1, shift: float = 8.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    f = rng.standard_normal((n, d)) + 3.0  # mean far from 0: the two conventions differ
    f[labels == 1, :3] += 1.0
    truth = np.zeros(n, bool)
    truth[rng.choice(np.flatnonzero(labels == 1), int(share * (labels == 1).sum()), False)] = True
    direction = rng.standard_normal(d)
    f[truth] += shift * direction / np.linalg.norm(direction)
    inputs = DetectorInputs(
        torch.from_numpy(f), labels, expected_poisoned=int(truth.sum()), target_label=1, seed=seed
    )
    return inputs, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spectral_scores_equal_arts_per_class(seed):
    inputs, _ = planted(seed)
    ours = spectral_signature(inputs, projection="uncentered_abs").scores
    f = inputs.features.numpy()
    for c in (0, 1):
        rows = inputs.labels == c
        art = SpectralSignatureDefense.spectral_signature_scores(f[rows]).ravel()
        np.testing.assert_allclose(ours[rows], art, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pca_reduction_equals_arts_up_to_sign(seed):
    inputs, _ = planted(seed)
    f = inputs.features.numpy()[inputs.labels == 1]
    ours = reduce_features(torch.from_numpy(f), np.arange(len(f)), 10, "pca", seed)
    art = reduce_dimensionality(f, nb_dims=10, reduce="PCA")
    np.testing.assert_allclose(np.abs(ours), np.abs(art), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clusters_and_verdicts_equal_arts(seed):
    inputs, truth = planted(seed)
    f = inputs.features.numpy()
    separated = [f[inputs.labels == c] for c in (0, 1)]
    np.random.seed(seed)  # noqa: NPY002  # ART's KMeans draws from numpy's global generator
    art_clusters, _ = cluster_activations(separated, nb_clusters=2, nb_dims=10, reduce="PCA")
    ours = activation_clustering(inputs)
    analyzer = ClusteringAnalyzer()
    _, by_size, _ = analyzer.analyze_by_size(art_clusters)
    for c in (0, 1):
        rows = inputs.labels == c
        art_small = by_size[c].astype(int).argmax()  # ART's 'smaller' cluster of the class
        art_is_small = art_clusters[c] == art_small
        if c == 1:  # a planted split; class 0 is Gaussian noise, where k-means optima differ
            # our ranking score puts exactly ART's smaller cluster on the positive side
            np.testing.assert_array_equal(ours.scores[rows] > 0, art_is_small)
        shares = np.round(np.bincount(art_clusters[c]) / rows.sum(), 2)
        art_verdict = bool((shares < round(0.35, 2)).any())
        assert ours.info["classes"][str(c)]["judged_poisoned"] == art_verdict
        if art_verdict:
            np.testing.assert_array_equal(ours.flags[rows], art_is_small)
    assert ours.info["classes"]["1"]["judged_poisoned"]
    assert ours.flags[truth].all()
