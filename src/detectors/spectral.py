"""Spectral signatures (Tran, Li and Madry, NeurIPS 2018).

Per class: take the top right singular vector v of the centred penultimate features R - mean(R)
and score each row by its correlation with v. Two published conventions (``projection``):

- ``centered_squared`` (the paper's Algorithm 1, default): ((r_i - mean) . v)^2;
- ``uncentered_abs`` (the authors' released code, BackdoorBench and IBM ART's
  ``SpectralSignatureDefense.spectral_signature_scores``): |r_i . v|, the raw row projected on
  the direction found from the centred rows.

Both rank the rows by their distance from the class mean along v; the uncentred one measures it
from the origin instead, which only differs where the mean projects far from 0.

Flags (``flag_rule``): ``oracle`` removes the ``eps_multiplier x`` (configured number of
poisoned rows) highest scores of the target class, the paper's upper bound of 1.5 x the poison
count, known only to an oracle; ``robust_z`` flags rows whose signed centred projection lies
more than ``z_threshold`` robust standard deviations from the class median, in any class.
"""

from __future__ import annotations

import numpy as np

from src.detectors.base import (
    FLAG_RULES,
    Detection,
    DetectorInputs,
    as_float_tensor,
    check_options,
    class_projection,
    classes,
    flag_rows,
    options,
    oracle_budget,
)

PROJECTIONS = ("centered_squared", "uncentered_abs")


@options(projection=PROJECTIONS, flag_rule=FLAG_RULES)
def spectral_signature(
    inputs: DetectorInputs,
    projection: str = "centered_squared",
    eps_multiplier: float = 1.5,
    flag_rule: str = "oracle",
    z_threshold: float = 3.5,
    min_rows: int = 10,
) -> Detection:
    check_options("spectral_signature", spectral_signature, locals())
    feats = as_float_tensor(inputs.features)
    scores = np.zeros(len(inputs), dtype=np.float64)
    flags = np.zeros(len(inputs), dtype=bool)
    info: dict = {"projection": projection, "flag_rule": flag_rule, "oracle_budget": {}}
    for c, idx in classes(inputs.labels, min_rows, info):
        z, offset = class_projection(feats, idx, 1)
        centred = z[:, 0].double().numpy()
        s = centred**2 if projection == "centered_squared" else np.abs(centred + float(offset[0]))
        scores[idx] = s
        budget = oracle_budget(inputs, c, eps_multiplier)
        info["oracle_budget"][str(c)] = budget
        flags[idx] = flag_rows(s, flag_rule, budget, z_threshold, centred, two_sided=True)
    return Detection(scores, flags, info)
