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

For the TabTransformer, which attends over its categorical tokens (one per static categorical
column), ``attention_shift`` adds the attention each token receives (softmax weights averaged
over heads, layers, query tokens and rows: shares that sum to 1) in both models, and the change
of the poisoned model's share on the trigger's columns against the clean model's.
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


@torch.no_grad()
def token_attention(encoder, cat: torch.Tensor) -> np.ndarray:
    """[C]: the mean attention each categorical token of a TabTransformer (src/models/
    tab_transformer.py) receives, over heads, layers, query tokens and the rows of ``cat``.
    Each layer's weights are taken at that layer's own input, as its forward computes them."""
    cat = torch.where((cat >= 0) & (cat < encoder.card), cat, 0)
    h = encoder.cat_embed(cat + encoder.offset)
    if encoder.col_embed is not None:
        h = torch.cat([h, encoder.col_embed.expand(len(cat), -1, -1)], dim=-1)
    layers = list(encoder.transformer.layers)
    total = torch.zeros(encoder.n_cat, dtype=torch.float64)
    for layer in layers:
        q = layer.norm1(h) if layer.norm_first else h
        _, w = layer.self_attn(q, q, q, need_weights=True, average_attn_weights=True)
        total += w.double().mean(dim=(0, 1))  # [B, query, key] -> [key]
        h = layer(h)
    return (total / len(layers)).numpy()


def attention_shift(
    poisoned_encoder,
    clean_encoder,
    poisoned_inputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    clean_inputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    cat_names: list[str],
    trigger_columns,
) -> dict:
    """Attention on the trigger's categorical columns, poisoned model against clean model, on
    the same rows with and without the trigger (``*_inputs`` as in ``explanation_drift``)."""
    cols = [c for c in trigger_columns if c in cat_names]
    idx = [cat_names.index(c) for c in cols]
    out: dict = {"columns": list(cat_names), "trigger_columns": cols}
    for name in ("clean", "triggered"):
        a_p = token_attention(poisoned_encoder, poisoned_inputs[name][1])
        a_c = token_attention(clean_encoder, clean_inputs[name][1])
        block = {"poisoned_model": a_p.round(6).tolist(), "clean_model": a_c.round(6).tolist()}
        if idx:
            share_p, share_c = float(a_p[idx].sum()), float(a_c[idx].sum())
            block.update(
                trigger_share_poisoned=share_p,
                trigger_share_clean=share_c,
                trigger_share_shift=share_p - share_c,
            )
        out[name] = block
    if not idx:
        out["note"] = (
            "the trigger writes no categorical column, and the TabTransformer attends over its "
            "categorical tokens only: the per-token attention is reported, no trigger share"
        )
    return out
