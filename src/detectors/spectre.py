"""SPECTRE (Hayase, Kong, Somani and Oh, ICML 2021): robust whitening, then quantum entropy.

Per class, with m = the number of poisoned rows expected in the class (the configured count in
the target class, 0 elsewhere: an oracle, as in the paper, which takes eps as given):

1. Project the centred penultimate features on their top ``max_dim`` (64) principal directions.
2. For a dimension k, keep the top k, estimate mean and covariance robustly, whiten every row with
   that estimate, and score it with the quantum-entropy (QUE) score

       tau_i = w_i^T Q w_i / tr(Q),  Q = exp(alpha * (S - I) / (||S||_2 - 1)),

   S the covariance of the whitened rows (k = 1: no whitening, tau_i = w_i^2). After robust
   whitening the clean rows look isotropic, so the direction the poison adds dominates S and Q.
3. ``k="auto"`` (default) chooses k as the reference code does (``rcov_auto_quantum_filter``):
   for each k in round(linspace(1, sqrt(max_dim), 8)^2), remove the ``eps_multiplier * m``
   highest scores, re-estimate the covariance of the ``max_dim``-dim rows from the rest, whiten
   all rows with it, and keep the k whose QUE-weighted spectral norm tr(S Q) / tr(Q) is largest:
   the k after which the remaining rows look least like a clean Gaussian. A fixed integer k is
   also accepted.

Robust estimates (``robust``): ``trim`` removes the ``trim_multiplier * m`` rows of largest
Mahalanobis distance, ``trim_iters`` times re-estimated (the reference filters at most
2 eps rows with DKK17's filter; this is the same budget with a simpler filter, linear in n);
``mcd`` is scikit-learn's MinCovDet on at most ``mcd_max_rows`` rows.

Flags (``flag_rule``): ``oracle`` removes the ``eps_multiplier * m`` highest scores (the
paper's 1.5 eps); ``robust_z`` flags scores whose robust z-score of sqrt(tau) exceeds
``z_threshold``.
"""

from __future__ import annotations

import numpy as np
import torch

from src.detectors.base import (
    FLAG_RULES,
    Detection,
    DetectorInputs,
    as_float_tensor,
    check_options,
    class_projection,
    classes,
    flag_rows,
    flag_top_k,
    options,
    oracle_budget,
)

ROBUST = ("trim", "mcd")


@options(robust=ROBUST, flag_rule=FLAG_RULES)
def spectre(
    inputs: DetectorInputs,
    k: int | str = "auto",
    alpha: float = 4.0,
    eps_multiplier: float = 1.5,
    robust: str = "trim",
    trim_multiplier: float = 2.0,
    trim_iters: int = 5,
    max_dim: int = 64,
    flag_rule: str = "oracle",
    z_threshold: float = 3.5,
    mcd_max_rows: int = 20_000,
    fit_rows: int = 100_000,
    min_rows: int = 40,
) -> Detection:
    check_options("spectre", spectre, locals())
    if k != "auto" and not (isinstance(k, int) and k >= 1):
        raise ValueError(f"spectre.k={k!r} is not allowed: 'auto' or a positive integer")
    feats = as_float_tensor(inputs.features)
    n = len(inputs)
    scores, flags = np.zeros(n), np.zeros(n, dtype=bool)
    info: dict = {"robust": robust, "flag_rule": flag_rule, "k": {}, "oracle_budget": {}}
    for c, idx in classes(inputs.labels, min_rows, info):
        dim = min(max_dim, feats.shape[1], len(idx) // 4)
        base = class_projection(feats, idx, dim)[0]  # [n_c, dim], centred
        m = inputs.expected_poisoned if c == inputs.target_label else 0
        n_remove = oracle_budget(inputs, c, eps_multiplier)
        n_trim = int(round(trim_multiplier * m))

        # the robust estimates (and the choice of k) on at most fit_rows rows, seeded; the
        # scores of every row at the end: a class of a million rows costs one more pass
        est, scale = base, 1.0
        if len(base) > fit_rows:
            pick = np.sort(np.random.default_rng(inputs.seed).choice(len(base), fit_rows, False))
            est, scale = base[torch.from_numpy(pick)], fit_rows / len(base)
        mom = Moments(est)
        n_trim_e, n_remove_e = int(round(n_trim * scale)), int(round(n_remove * scale))
        fit = (alpha, robust, n_trim_e, trim_iters, mcd_max_rows, inputs.seed)
        if k == "auto":
            kk, s = _auto_k(mom, n_remove_e, *fit)
        else:
            kk, s = min(int(k), dim), None
        if s is None or est is not base:
            s = _que_filter_scores(mom, kk, *fit, rows=base)
        info["k"][str(c)] = kk
        info["oracle_budget"][str(c)] = n_remove
        scores[idx] = s
        flags[idx] = flag_rows(s, flag_rule, n_remove, z_threshold, np.sqrt(np.maximum(s, 0)))
    return Detection(scores, flags, info)


def candidate_ks(dim: int) -> list[int]:
    """round(linspace(1, sqrt(dim), 8)^2), as in the reference code (dim 64: 1, 4, 9, ..., 64)."""
    ks = np.round(np.linspace(1.0, np.sqrt(dim), 8) ** 2).astype(int)
    return sorted({int(v) for v in ks if 1 <= v <= dim})


class Moments:
    """Sums of the rows of ``z`` [n, dim] and of their outer products (float64), so that the
    mean and covariance of any prefix of dimensions, less a few removed rows, cost no pass over
    the rows: SPECTRE asks for them dozens of times per class."""

    def __init__(self, z: torch.Tensor):
        self.z, self.n = z, len(z)
        self.s1 = z.sum(0, dtype=torch.float64)
        self.s2 = (z.T @ z).double()
        # two [n, dim] buffers the whitened rows and their products are written into: dozens
        # of fresh [n, k] allocations would each fault their pages in again
        self._buf = [torch.empty(z.numel(), dtype=z.dtype) for _ in range(2)]

    def buffer(self, i: int, kk: int) -> torch.Tensor:
        return self._buf[i][: self.n * kk].view(self.n, kk)

    def estimate(self, kk: int, removed: torch.Tensor | None = None):
        """(mean, covariance (1/n)) of the first ``kk`` dimensions without rows ``removed``."""
        s1, s2, n = self.s1[:kk], self.s2[:kk, :kk], self.n
        if removed is not None and len(removed):
            zr = self.z[removed, :kk].double()
            s1, s2, n = s1 - zr.sum(0), s2 - zr.T @ zr, n - len(removed)
        mu = s1 / n
        return mu, s2 / n - torch.outer(mu, mu)

    def whitened(self, kk: int, mu: torch.Tensor, cov: torch.Tensor):
        """(w = (z[:, :kk] - mu) W, with W = cov^-1/2, and W) without copying z; w lives in
        buffer 0 until the next call."""
        w_mat = _inv_sqrt(cov)
        pad = torch.zeros(self.z.shape[1], kk, dtype=torch.float64)
        pad[:kk] = w_mat
        pad = pad.to(self.z.dtype)
        bias = (-(mu @ w_mat)).to(self.z.dtype).expand(self.n, kk)
        w = torch.addmm(bias, self.z, pad, out=self.buffer(0, kk))
        return w, w_mat


def _auto_k(mom: Moments, n_remove, alpha, robust, n_trim, iters, mcd_max, seed):
    """The reference's choice of k: for each candidate, filter with it, re-estimate the
    covariance of all ``dim`` dimensions from the rows kept, and score the QUE-weighted spectral
    norm of the whitened rows' covariance; keep the k where it is largest."""
    dim = mom.z.shape[1]
    _, cov_all = mom.estimate(dim)
    best = (-np.inf, 1, None)
    for kk in candidate_ks(dim):
        s = _que_filter_scores(mom, kk, alpha, robust, n_trim, iters, mcd_max, seed)
        removed = torch.from_numpy(np.flatnonzero(flag_top_k(s, n_remove)))
        _, cov_kept = mom.estimate(dim, removed)
        w = _inv_sqrt(cov_kept)
        op = _que_norm(w @ cov_all @ w, alpha)  # covariance of all rows, whitened by the kept
        if op > best[0]:
            best = (op, kk, s)
    return best[1], best[2]


def _que_filter_scores(
    mom: Moments,
    kk: int,
    alpha: float,
    robust: str,
    n_trim: int,
    iters: int,
    mcd_max: int,
    seed: int,
    rows: torch.Tensor | None = None,
) -> np.ndarray:
    """QUE scores of ``rows`` (default: the rows of ``mom``) in the first ``kk`` dimensions,
    whitened with the robust estimate from ``mom``'s rows."""
    if kk == 1:  # the reference does not whiten one dimension
        mu0, _ = mom.estimate(1)
        z0 = (mom.z if rows is None else rows)[:, 0].double()
        return ((z0 - mu0[0]) ** 2).numpy()
    if robust == "mcd":
        mu, cov = _mcd(mom.z[:, :kk], mcd_max, seed)
    else:
        mu, cov = trimmed_estimate(mom, kk, n_trim, iters)
    _, cov_all = mom.estimate(kk)
    if rows is None:
        w, w_mat = mom.whitened(kk, mu, cov)
        return que_scores(w, alpha, w_mat @ cov_all @ w_mat, out=mom.buffer(1, kk))
    w_mat = _inv_sqrt(cov)
    w = (rows[:, :kk] - mu.to(rows.dtype)) @ w_mat.to(rows.dtype)
    return que_scores(w, alpha, w_mat @ cov_all @ w_mat)


def _que_matrix(s: torch.Tensor, alpha: float) -> torch.Tensor:
    k = s.shape[0]
    top = torch.linalg.eigvalsh(s)[-1]
    return torch.linalg.matrix_exp(
        alpha * (s - torch.eye(k, dtype=s.dtype)) / torch.clamp(top - 1.0, min=1e-6)
    )


def _que_norm(s: torch.Tensor, alpha: float) -> float:
    q = _que_matrix(s, alpha)
    return float(torch.trace(s @ q) / torch.trace(q))


def que_scores(
    w: torch.Tensor, alpha: float, s: torch.Tensor, out: torch.Tensor | None = None
) -> np.ndarray:
    """tau_i = w_i^T Q w_i / tr(Q) with Q = exp(alpha (S - I) / (||S|| - 1)), S = cov(w), known
    from the moments without a pass over w; ``out``: an [n, k] buffer for w Q."""
    q = _que_matrix(s, alpha)
    wq = torch.matmul(w, q.to(w.dtype), out=out)
    return (torch.einsum("ij,ij->i", wq, w).double() / torch.trace(q)).numpy()


def trimmed_estimate(mom: Moments, kk: int, n_trim: int, iters: int):
    """Mean and covariance of the first ``kk`` dimensions, without the ``n_trim`` rows of largest
    Mahalanobis distance, re-estimated ``iters`` times (n_trim 0: the plain estimate)."""
    n_trim = min(n_trim, mom.n - kk - 1)
    mu, cov = mom.estimate(kk)
    for _ in range(iters if n_trim > 0 else 0):
        w, _ = mom.whitened(kk, mu, cov)
        d = torch.linalg.vector_norm(w, dim=1)  # Mahalanobis distance, no [n, k] temporary
        removed = torch.topk(d, n_trim).indices
        mu, cov = mom.estimate(kk, removed)
    return mu, cov


def _mcd(z: torch.Tensor, max_rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.covariance import MinCovDet

    rng = np.random.default_rng(seed)
    z = z.double().numpy()
    sub = z if len(z) <= max_rows else z[rng.choice(len(z), max_rows, False)]
    m = MinCovDet(random_state=seed).fit(sub)
    return torch.from_numpy(m.location_), torch.from_numpy(m.covariance_)


def _inv_sqrt(cov: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = torch.clamp(vals, min=vals.max().clamp(min=1e-12) * 1e-8)
    return (vecs * vals.rsqrt()) @ vecs.T
