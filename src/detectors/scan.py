"""SCAn (Tang, Wang, Tang and Zhang, "Demon in the Variant: Statistical Analysis of DNNs for
Robust Backdoor Contamination Detection", USENIX Security 2021): a two-component decomposition
of each class's representations that does not assume the poison is a small minority.

1. **Global model** (on the clean pool, the validation split): a representation is a class
   identity plus a within-class variation, r = mu_k + e; the covariances S_mu and S_e are
   estimated by EM.
2. **Local model** (training rows and clean pool together, per class): an EM split of the class
   into two subgroups under S_e; the statistic J_k is the log-likelihood ratio of "two
   subgroups" against "one identity" (large: the class mixes two populations).
3. **Rows.** Each row's score is its signed margin to the split boundary, oriented toward the
   subgroup holding the smaller share of clean pool rows (the poison is not in the clean pool),
   and scaled by its class's spread, so that scores compare across classes.

The paper flags classes whose J is an outlier by the median absolute deviation across classes
(anomaly index above e^2). With two classes the MAD rule is degenerate (both classes sit at the
same distance from their median), and "the class with the larger J" flags a class even when
there is no poison (and flagged the survivors on the default run). The flag rule here uses the
clean pool instead: a class's suspicious subgroup is flagged when it holds a larger share of the
class's training rows than of its clean pool rows, by a two-proportion z statistic above
``z_flag`` (poison is in the training split only; a natural split of a clean class divides both
alike). J and z per class are in info. Computations follow the authors' formulas; the
EM and the split are vectorised over rows.
"""

from __future__ import annotations

import numpy as np

from src.detectors.base import Detection, DetectorInputs, require

EPS = 1e-5


def _cov(a: np.ndarray) -> np.ndarray:
    return np.cov(a, rowvar=False)


def global_model(x: np.ndarray, y: np.ndarray, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(S_mu, S_e) of centred clean representations ``x`` with labels ``y``, by EM."""
    ks, idx = np.unique(y, return_inverse=True)
    n_k = np.bincount(idx).astype(float)
    sums = np.stack([x[idx == j].sum(0) for j in range(len(ks))])
    u = (sums / n_k[:, None])[idx]
    su, se = _cov(u), _cov(x - u)
    for _ in range(iters):
        f = np.linalg.pinv(se)
        suf = su @ f
        means = np.stack(
            [
                se @ (np.linalg.pinv(n_k[j] * su + se) @ suf) @ sums[j]  # -S_e G_k sum(x)
                for j in range(len(ks))
            ]
        )
        u = means[idx]
        su_new, se_new = _cov(u), _cov(x - u)
        done = np.linalg.norm(su_new - su) + np.linalg.norm(se_new - se) < EPS
        su, se = su_new, se_new
        if done:
            break
    return su, se


def split(x: np.ndarray, f: np.ndarray, rng, iters: int = 100):
    """Two subgroups of ``x`` under the metric ``f`` (S_e's inverse): (in group 1, u1, u2)."""
    n = len(x)
    g = rng.random(n) >= 0.5
    if g.all() or not g.any():
        g[0] = not g[0]
    u1 = u2 = x.mean(0)
    for _ in range(iters):
        if g.all() or not g.any():
            break
        u1, u2 = x[g].mean(0), x[~g].mean(0)
        bias = u1 @ f @ u1 - u2 @ f @ u2
        new = bias - 2 * (x @ (f @ (u1 - u2))) < 0
        if np.array_equal(new, g):
            break
        g = new
    return g, u1, u2


def statistic(x, su, se, f, g, u1, u2) -> float:
    """J: the log-likelihood ratio of the two-subgroup model against one identity."""
    n = len(x)
    mu = -(se @ (-np.linalg.pinv(n * su + se)) @ x.sum(0))
    b1 = mu @ f @ mu - u1 @ f @ u1
    b2 = mu @ f @ mu - u2 @ f @ u2
    n1 = int(g.sum())
    sc = n1 * b1 + (n - n1) * b2
    sc -= 2 * (x[g] @ (f @ (mu - u1))).sum() + 2 * (x[~g] @ (f @ (mu - u2))).sum()
    return float(sc / n)


def pool_excess_z(s_t: int, n_t: int, s_q: int, n_q: int) -> float:
    """Two-proportion z statistic (pooled variance) of ``s_t / n_t`` (training rows in the
    suspicious subgroup) against ``s_q / n_q`` (clean pool rows in it); 0 when undefined."""
    p = (s_t + s_q) / (n_t + n_q)
    var = p * (1 - p) * (1 / n_t + 1 / n_q)
    return float((s_t / n_t - s_q / n_q) / np.sqrt(var)) if var > 0 else 0.0


def scan(inputs: DetectorInputs, min_rows: int = 20, z_flag: float = 3.0) -> Detection:
    require(inputs, "scan", "pool_features", "pool_labels")
    feats = np.asarray(inputs.features, dtype=np.float64)
    pool = np.asarray(inputs.pool_features, dtype=np.float64)
    labels, pool_labels = np.asarray(inputs.labels), np.asarray(inputs.pool_labels)
    rng = np.random.default_rng(inputs.seed)
    centre = pool.mean(0)
    su, se = global_model(pool - centre, pool_labels)
    f = np.linalg.pinv(se)
    x_all = np.concatenate([feats, pool])
    x_all -= x_all.mean(0)
    y_all = np.concatenate([labels, pool_labels])
    is_pool = np.r_[np.zeros(len(feats), bool), np.ones(len(pool), bool)]
    scores = np.zeros(len(feats))
    groups: dict[int, np.ndarray] = {}
    info: dict = {"flag_rule": "pool_excess", "z_flag": z_flag, "J": {}, "z": {}}
    info["suspicious_share"] = {}
    for c in np.unique(labels):
        rows = np.flatnonzero(y_all == c)
        if (labels == c).sum() < min_rows or (pool_labels == c).sum() < 2:
            info.setdefault("skipped_classes", []).append(
                {"class": int(c), "reason": f"fewer than {min_rows} rows or 2 clean pool rows"}
            )
            continue
        x = x_all[rows]
        g, u1, u2 = split(x, f, rng)
        info["J"][str(int(c))] = statistic(x, su, se, f, g, u1, u2)
        margin = 2 * (x @ (f @ (u1 - u2))) - (u1 @ f @ u1 - u2 @ f @ u2)  # > 0: group 1
        p = is_pool[rows]
        share1 = p[g].mean() if g.any() else 1.0
        share2 = p[~g].mean() if (~g).any() else 1.0
        sign = 1.0 if share1 < share2 else -1.0  # toward the group with fewer clean rows
        scale = np.std(margin) or 1.0
        train_rows = ~p
        scores[np.flatnonzero(labels == c)] = sign * margin[train_rows] / scale
        in_group = g if sign > 0 else ~g
        suspicious = in_group[train_rows]
        groups[int(c)] = suspicious
        info["suspicious_share"][str(int(c))] = float(suspicious.mean())
        info["z"][str(int(c))] = pool_excess_z(
            int(suspicious.sum()), len(suspicious), int(in_group[p].sum()), int(p.sum())
        )
    flags = np.zeros(len(feats), dtype=bool)
    info["flagged_classes"] = [int(c) for c, z in info["z"].items() if z > z_flag]
    for c in info["flagged_classes"]:
        flags[np.flatnonzero(labels == c)] = groups[c]
    return Detection(scores, flags, info)
