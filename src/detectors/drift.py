"""Explainability drift: how a backdoor changes a model's explanations.

The poisoned model and the clean model of the same cell (poison rate 0, same seed, trigger and
model) explain the same test rows, whose label is not the target, with and without the trigger,
each in its own preprocessing (both views have the same columns). Integrated Gradients (Captum,
zero baseline, as the attribution report) gives A_p and A_c per row. Reported, for the
untriggered and the triggered rows:

- ``cosine``: mean over rows of cos(A_p, A_c); ``l1``: mean of || |A_p|/sum|A_p| - |A_c|/sum|A_c| ||_1
  (0 for identical explanations, at most 2);
- per series feature, importance = mean over rows of |A| summed over the feature's columns
  (values and missing indicators over every hour): ``spearman`` between the two models'
  importances, ``top_k_rank_change`` (the mean absolute rank change of the clean model's top k
  features), and each model's rank of the trigger's features (1 = most important).
"""

from __future__ import annotations

import numpy as np
import torch

from src.detectors.attribution import integrated_gradients


def feature_masks(view: str, feature_names, n_hours, static_num_names, levels) -> np.ndarray:
    """[F, columns]: for each series feature, the input columns that carry it."""
    from src.data.views import Layout, get_view

    layout = Layout(len(feature_names), n_hours, len(static_num_names), levels)
    v = get_view(view)
    return np.stack(
        [
            np.asarray(v.trigger_columns(layout, [j], None, [], []), dtype=bool).reshape(-1)
            for j in range(len(feature_names))
        ]
    )


def _flat(a: torch.Tensor) -> np.ndarray:
    return a.flatten(1).double().numpy()


def _ranks(importance: np.ndarray) -> np.ndarray:
    """1 = most important; ties broken by position."""
    order = np.argsort(-importance, kind="stable")
    ranks = np.empty(len(importance), dtype=np.int64)
    ranks[order] = np.arange(1, len(importance) + 1)
    return ranks


def compare(
    a_p: np.ndarray,
    a_c: np.ndarray,
    masks: np.ndarray,
    feature_names: list[str],
    trigger_features,
    top_k: int = 5,
) -> dict:
    """Drift between two attribution matrices of the same rows and columns."""
    from scipy.stats import spearmanr

    norm_p = np.linalg.norm(a_p, axis=1)
    norm_c = np.linalg.norm(a_c, axis=1)
    ok = (norm_p > 0) & (norm_c > 0)
    cos = (a_p[ok] * a_c[ok]).sum(1) / (norm_p[ok] * norm_c[ok])
    m_p = np.abs(a_p) / np.maximum(np.abs(a_p).sum(1, keepdims=True), 1e-12)
    m_c = np.abs(a_c) / np.maximum(np.abs(a_c).sum(1, keepdims=True), 1e-12)
    imp_p = (np.abs(a_p) @ masks.T.astype(np.float64)).mean(0)
    imp_c = (np.abs(a_c) @ masks.T.astype(np.float64)).mean(0)
    r_p, r_c = _ranks(imp_p), _ranks(imp_c)
    top = np.argsort(r_c)[: min(top_k, len(r_c))]
    rho = spearmanr(imp_p, imp_c).statistic if np.ptp(imp_p) and np.ptp(imp_c) else None
    return {
        "cosine": float(cos.mean()) if len(cos) else None,
        "l1": float(np.abs(m_p - m_c).sum(1).mean()),
        "spearman": None if rho is None or rho != rho else float(rho),
        "top_k": int(len(top)),
        "top_k_rank_change": float(np.abs(r_p[top] - r_c[top]).mean()),
        "trigger_rank_poisoned": {
            f: int(r_p[feature_names.index(f)]) for f in trigger_features if f in feature_names
        },
        "trigger_rank_clean": {
            f: int(r_c[feature_names.index(f)]) for f in trigger_features if f in feature_names
        },
    }


def explanation_drift(
    poisoned_forward,
    clean_forward,
    poisoned_inputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    clean_inputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    masks: np.ndarray,
    feature_names: list[str],
    trigger_features,
    n_rows: int = 256,
    n_steps: int = 32,
    seed: int = 0,
) -> dict:
    """``*_inputs``: {"clean": (x, cat), "triggered": (x, cat)} of the same rows in each model's
    own preprocessing."""
    n = len(poisoned_inputs["clean"][0])
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_rows]
    out = {"n_rows": int(len(rows)), "n_steps": n_steps}
    for name in ("clean", "triggered"):
        xp, cp = poisoned_inputs[name]
        xc, cc = clean_inputs[name]
        a_p = _flat(integrated_gradients(poisoned_forward, xp[rows], cp[rows], n_steps))
        a_c = _flat(integrated_gradients(clean_forward, xc[rows], cc[rows], n_steps))
        out[name] = compare(a_p, a_c, masks, feature_names, trigger_features)
    return out
