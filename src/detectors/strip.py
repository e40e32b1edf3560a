"""STRIP (Gao et al., ACSAC 2019), adapted to tabular/time-series inputs.

Each training row is superimposed on ``n_perturbations`` rows drawn (seeded) from a clean pool
(the validation split, clean by construction) in the model's input view: x = (x_i + x_j) / 2,
keeping row i's categorical codes (codes cannot be averaged). A trigger that dominates the
prediction survives the blend, so the model stays confident. The reference entropies are those
of clean pool rows blended the same way; ``frr`` is the accepted false rejection rate, so no
poison rate is assumed. Three variants (``variant``, recorded in info):

- ``low`` (the paper): score = -entropy; flag entropies below the reference's ``frr`` quantile.
- ``two_sided``: score = |entropy - reference median| / reference MAD; flag entropies outside the
  reference's ``frr / 2`` and ``1 - frr / 2`` quantiles. Poison that is a large share of its
  class can make the model *less* certain under blending, which the one-sided rule misses.
- ``per_class``: as ``low``, with the reference and its threshold taken per class (pool rows
  grouped by the class the model predicts for them), each training row compared with the
  reference of its label's class.

Where the model's first operations on its input are affine (the MLP's first Linear: ``W x + b``;
the TCN's first convolution and residual path),
the blends are made of that map's outputs instead, since ``W (x_i + x_j) / 2 + b`` is the average
of ``W x_i + b`` and ``W x_j + b``: the same blends up to float rounding, without passing each
blend through the widest layer (``inputs.linear_stem``).

Rows are processed in chunks of about ``chunk`` blended inputs per forward pass; nothing loops
over single rows. The pool draws do not depend on the chunk size, so neither do the scores
(up to the model's float rounding across batch sizes); small chunks stay in cache.
"""

from __future__ import annotations

import numpy as np
import torch

from src.detectors.base import Detection, DetectorInputs, check_options, options, require

VARIANTS = ("low", "two_sided", "per_class")


@options(variant=VARIANTS)
def strip(
    inputs: DetectorInputs,
    n_perturbations: int = 16,
    frr: float = 0.01,
    n_pool_reference: int = 1000,
    chunk: int = 2048,
    variant: str = "low",
) -> Detection:
    check_options("strip", strip, locals())
    require(inputs, "strip", "x", "cat", "predict", "pool_x", "pool_cat")
    if len(inputs.pool_x) == 0:
        raise ValueError("strip needs a non-empty clean pool (the validation split is empty)")
    g = torch.Generator().manual_seed(inputs.seed * 7919 + 17)
    x, pool, predict = inputs.x, inputs.pool_x, inputs.predict
    if inputs.linear_stem is not None:  # blend the first affine map's outputs: same averages
        stem, predict = inputs.linear_stem
        x, pool = stem(x), stem(pool)
    h = blended_entropy(x, inputs.cat, pool, predict, n_perturbations, g, chunk)
    ref_idx = torch.randperm(len(pool), generator=g)[:n_pool_reference]
    h_ref = blended_entropy(
        pool[ref_idx], inputs.pool_cat[ref_idx], pool, predict, n_perturbations, g, chunk
    )
    info = {"variant": variant, "flag_rule": "frr", "frr": frr, "n_perturbations": n_perturbations}
    info["blended"] = "input" if inputs.linear_stem is None else "first affine layer's output"
    if variant == "two_sided":
        lo, med, hi = np.quantile(h_ref, [frr / 2, 0.5, 1 - frr / 2])
        mad = float(np.median(np.abs(h_ref - med))) or 1e-12
        info.update(entropy_thresholds=[float(lo), float(hi)])
        return Detection(np.abs(h - med) / mad, (h < lo) | (h > hi), info)
    if variant == "per_class":
        ref_class = (inputs.predict(inputs.pool_x[ref_idx], inputs.pool_cat[ref_idx]) >= 0.5).long()
        ref_class = ref_class.numpy()
        scores, flags, thresholds = -h.copy(), np.zeros(len(h), dtype=bool), {}
        for c in np.unique(inputs.labels):
            rows = np.asarray(inputs.labels) == c
            ref_c = h_ref[ref_class == c] if (ref_class == c).sum() >= 10 else h_ref
            thr = float(np.quantile(ref_c, frr))
            thresholds[str(int(c))] = thr
            scores[rows] = -(h[rows] - np.median(ref_c))
            flags[rows] = h[rows] < thr
        info.update(entropy_thresholds=thresholds)
        return Detection(scores, flags, info)
    threshold = float(np.quantile(h_ref, frr))
    info.update(entropy_threshold=threshold)
    return Detection(-h, h < threshold, info)


def blended_entropy(
    x: torch.Tensor,
    cat: torch.Tensor,
    pool: torch.Tensor,
    predict,
    n: int,
    g: torch.Generator,
    chunk: int,
) -> np.ndarray:
    """Mean binary prediction entropy (nats) of each row of x blended with n pool rows."""
    rows = max(1, chunk // n)
    out = []
    for s in range(0, len(x), rows):
        xb, cb = x[s : s + rows], cat[s : s + rows]
        j = torch.randint(len(pool), (len(xb), n), generator=g)
        # gathered once, then blended in place: (pool_j + x_i) / 2 in the same float
        # operations as before, without the temporaries (the blend is memory-bound)
        blend = pool.index_select(0, j.flatten()).view(len(xb), n, *pool.shape[1:])
        blend.add_(xb.unsqueeze(1)).mul_(0.5)
        p = predict(blend.flatten(0, 1), cb.repeat_interleave(n, 0)).double()
        p = p.clamp(1e-12, 1 - 1e-12)
        ent = -(p * p.log() + (1 - p) * (1 - p).log())
        out.append(ent.view(len(xb), n).mean(1))
    return torch.cat(out).numpy() if out else np.zeros(0)
