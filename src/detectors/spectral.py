"""Spectral signatures (Tran, Li and Madry, NeurIPS 2018).

Per class: centre the penultimate features, take the top right singular vector v of the centred
matrix, score each row by its squared projection <r_i, v>^2, and remove (flag) the
``eps_multiplier * expected_rate`` highest-scoring share of the class. The paper assumes an upper
bound on the number of poisoned rows is known (1.5 x the true count); here that bound is the
configured poison_rate, an oracle assumption a real defender does not have.
"""

from __future__ import annotations

import numpy as np

from src.detectors.base import (
    Detection,
    DetectorInputs,
    as_float_tensor,
    classes,
    flag_top,
    top_components,
)


def spectral_signature(
    inputs: DetectorInputs, eps_multiplier: float = 1.5, min_rows: int = 10
) -> Detection:
    feats = as_float_tensor(inputs.features)
    scores = np.zeros(len(inputs), dtype=np.float64)
    flags = np.zeros(len(inputs), dtype=bool)
    info: dict = {"flag_fraction": eps_multiplier * inputs.expected_rate}
    for _, idx in classes(inputs.labels, min_rows, info):
        r = feats[idx]
        r = r - r.mean(0)
        v = top_components(r, 1)[:, 0]
        s = (r @ v).double().pow(2).numpy()
        scores[idx] = s
        flags[idx] = flag_top(s, eps_multiplier * inputs.expected_rate)
    return Detection(scores, flags, info)
