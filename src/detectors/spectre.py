"""SPECTRE (Hayase, Kong, Somani and Oh, ICML 2021): robust whitening, then quantum entropy.

Per class: project the centred penultimate features onto their top ``k`` principal directions,
estimate mean and covariance robustly (``robust="trim"``: iterated trimming of the rows with the
largest Mahalanobis distance, a simple form of the paper's filtering, linear in n;
``robust="mcd"``: sklearn's MinCovDet, fitted on a subsample of at most ``mcd_max_rows`` rows),
whiten with that estimate, and score each row with the quantum-entropy (QUE) score

    tau_i = z_i^T Q z_i / tr(Q),  Q = exp(alpha * (S - I) / (||S||_2 - 1)),

where S is the covariance of the whitened rows: after robust whitening the clean rows look
isotropic, so the direction the poison adds dominates S and Q. Alpha = 0 gives the squared norm
(Mahalanobis), large alpha the spectral-signature projection. The top
``eps_multiplier * expected_rate`` of each class is flagged (the oracle bound the paper uses).
"""

from __future__ import annotations

import numpy as np
import torch

from src.detectors.base import (
    Detection,
    DetectorInputs,
    as_float_tensor,
    classes,
    flag_top,
    top_components,
)


def spectre(
    inputs: DetectorInputs,
    k: int = 32,
    alpha: float = 4.0,
    eps_multiplier: float = 1.5,
    robust: str = "trim",
    trim_iters: int = 5,
    mcd_max_rows: int = 20_000,
    min_rows: int = 40,
) -> Detection:
    if robust not in ("trim", "mcd"):
        raise ValueError(f"spectre.robust={robust!r} is not allowed: one of trim, mcd")
    feats = as_float_tensor(inputs.features).double()
    n = len(inputs)
    scores, flags = np.zeros(n), np.zeros(n, dtype=bool)
    frac = eps_multiplier * inputs.expected_rate
    info: dict = {"flag_fraction": frac, "robust": robust}
    for _, idx in classes(inputs.labels, min_rows, info):
        f = feats[idx]
        f = f - f.mean(0)
        kk = min(k, f.shape[1], len(idx) // 4)
        z = f @ top_components(f, kk)
        if robust == "mcd":
            mu, cov = _mcd(z, mcd_max_rows, inputs.seed)
        else:
            mu, cov = _trimmed(z, min(max(frac, 0.05), 0.5), trim_iters)
        w = _whiten(z - mu, cov)
        s = que_scores(w, alpha)
        scores[idx] = s
        flags[idx] = flag_top(s, frac)
    return Detection(scores, flags, info)


def que_scores(w: torch.Tensor, alpha: float) -> np.ndarray:
    n, k = w.shape
    s = (w.T @ w) / n
    top = torch.linalg.eigvalsh(s)[-1]
    q = torch.linalg.matrix_exp(
        alpha * (s - torch.eye(k, dtype=s.dtype)) / torch.clamp(top - 1.0, min=1e-6)
    )
    return (((w @ q) * w).sum(1) / torch.trace(q)).numpy()


def _trimmed(z: torch.Tensor, trim: float, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.ones(len(z), dtype=torch.bool)
    n_keep = max(int(round((1.0 - trim) * len(z))), z.shape[1] + 1)
    for _ in range(iters):
        zk = z[keep]
        mu = zk.mean(0)
        cov = torch.cov(zk.T).reshape(z.shape[1], z.shape[1])
        d = _mahalanobis(z - mu, cov)
        keep = torch.zeros(len(z), dtype=torch.bool)
        keep[torch.topk(d, n_keep, largest=False).indices] = True
    zk = z[keep]
    return zk.mean(0), torch.cov(zk.T).reshape(z.shape[1], z.shape[1])


def _mcd(z: torch.Tensor, max_rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.covariance import MinCovDet

    rng = np.random.default_rng(seed)
    sub = z.numpy() if len(z) <= max_rows else z.numpy()[rng.choice(len(z), max_rows, False)]
    m = MinCovDet(random_state=seed).fit(sub)
    return torch.from_numpy(m.location_), torch.from_numpy(m.covariance_)


def _inv_sqrt(cov: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = torch.clamp(vals, min=vals.max().clamp(min=1e-12) * 1e-8)
    return vecs @ torch.diag(vals.rsqrt()) @ vecs.T


def _whiten(r: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return r @ _inv_sqrt(cov)


def _mahalanobis(r: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return _whiten(r, cov).pow(2).sum(1)
