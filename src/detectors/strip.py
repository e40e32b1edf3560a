"""STRIP (Gao et al., ACSAC 2019), adapted to tabular/time-series inputs.

Each training row is superimposed on ``n_perturbations`` rows drawn (seeded) from a clean pool
(the validation split, clean by construction) in the model's input view: x = (x_i + x_j) / 2,
keeping row i's categorical codes (codes cannot be averaged). A trigger that dominates the
prediction survives the blend, so the model stays confident: low mean prediction entropy is
suspicious, score = -entropy. The flag follows the paper: the threshold is the ``frr`` quantile
of the entropies of clean pool rows blended the same way (``frr`` = accepted false rejection
rate), so no poison rate is assumed. Rows are processed in chunks of about ``chunk`` blended
inputs per forward pass; nothing loops over single rows.
"""

from __future__ import annotations

import numpy as np
import torch

from src.detectors.base import Detection, DetectorInputs, require


def strip(
    inputs: DetectorInputs,
    n_perturbations: int = 16,
    frr: float = 0.01,
    n_pool_reference: int = 1000,
    chunk: int = 16384,
) -> Detection:
    require(inputs, "strip", "x", "cat", "predict", "pool_x", "pool_cat")
    if len(inputs.pool_x) == 0:
        raise ValueError("strip needs a non-empty clean pool (the validation split is empty)")
    g = torch.Generator().manual_seed(inputs.seed * 7919 + 17)
    h = blended_entropy(
        inputs.x, inputs.cat, inputs.pool_x, inputs.predict, n_perturbations, g, chunk
    )
    ref_idx = torch.randperm(len(inputs.pool_x), generator=g)[:n_pool_reference]
    h_ref = blended_entropy(
        inputs.pool_x[ref_idx],
        inputs.pool_cat[ref_idx],
        inputs.pool_x,
        inputs.predict,
        n_perturbations,
        g,
        chunk,
    )
    threshold = float(np.quantile(h_ref, frr))
    return Detection(
        -h,
        h < threshold,
        {"entropy_threshold": threshold, "frr": frr, "n_perturbations": n_perturbations},
    )


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
        blend = (xb.unsqueeze(1) + pool[j]) / 2  # [b, n, ...]
        p = predict(blend.flatten(0, 1), cb.repeat_interleave(n, 0)).double()
        p = p.clamp(1e-12, 1 - 1e-12)
        ent = -(p * p.log() + (1 - p) * (1 - p).log())
        out.append(ent.view(len(xb), n).mean(1))
    return torch.cat(out).numpy() if out else np.zeros(0)
