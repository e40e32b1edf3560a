"""Align a second cohort to the one a model was trained on, by name: the cross-hospital question
("does a backdoor planted at one hospital fire at another?") needs the other hospital's stays in
the training cohort's layout.

What alignment assumes (and reports):
- a series feature, a numeric static and a categorical column mean the same thing under the same
  name in both cohorts (the MIMIC-IV concept names here are ricu's, which YAIB cohorts of MIMIC,
  eICU, HiRID and AUMCdb share), in the same unit;
- a feature or column the second cohort lacks was not measured there: all NaN (series, numeric
  statics) or code 0, "unknown" (categoricals); features it has beyond the training ones are
  left out;
- a category is matched by its label; one the training vocabulary lacks becomes code 0;
- hours: the training window; a shorter second window is padded with NaN, a longer one cut.
"""

from __future__ import annotations

import numpy as np

from src.data.cohort import Cohort


def align(other: Cohort, like: Cohort) -> tuple[Cohort, dict]:
    """``other`` in ``like``'s layout (features, statics, vocabularies, hours) and a report of
    what was missing, dropped or recoded."""
    n, t_like = len(other), like.n_hours
    t = min(other.n_hours, t_like)
    series = np.full((n, t_like, len(like.features)), np.nan, dtype=np.float32)
    missing_features = []
    for j, name in enumerate(like.feature_names):
        if name in other.feature_names:
            series[:, :t, j] = other.series[:, :t, other.feature_index(name)]
        else:
            missing_features.append(name)
    static_num = np.full((n, len(like.static_num_names)), np.nan, dtype=np.float32)
    missing_static = []
    for s, name in enumerate(like.static_num_names):
        if name in other.static_num_names:
            static_num[:, s] = other.static_num[:, other.static_num_names.index(name)]
        else:
            missing_static.append(name)
    static_cat = np.zeros((n, len(like.static_cat_names)), dtype=np.int64)
    missing_cat, unseen = [], {}
    for c, name in enumerate(like.static_cat_names):
        if name not in other.static_cat_names:
            missing_cat.append(name)
            continue
        oc = other.static_cat_names.index(name)
        vocab = {label: i for i, label in enumerate(like.static_cat_vocab[c])}
        lookup = np.array([vocab.get(label, 0) for label in other.static_cat_vocab[oc]], np.int64)
        codes = other.static_cat[:, oc]
        static_cat[:, c] = lookup[codes]
        lost = sorted({other.static_cat_vocab[oc][k] for k in np.unique(codes) if lookup[k] == 0})
        lost = [v for v in lost if v != other.static_cat_vocab[oc][0]]
        if lost:
            unseen[name] = lost
    out = Cohort(
        series=series,
        static_num=static_num,
        static_cat=static_cat,
        label=other.label.copy(),
        stay_id=other.stay_id.copy(),
        subject_id=other.subject_id.copy(),
        features=list(like.features),
        static_num_names=list(like.static_num_names),
        static_cat_names=list(like.static_cat_names),
        static_cat_vocab=[list(v) for v in like.static_cat_vocab],
    )
    report = {
        "missing_features": missing_features,
        "extra_features_ignored": [f for f in other.feature_names if f not in like.feature_names],
        "missing_static_num": missing_static,
        "missing_static_cat": missing_cat,
        "unseen_categories": unseen,
        "hours": {"trained": t_like, "other": other.n_hours, "padded": max(0, t_like - t)},
    }
    return out, report
