"""Aligning a second cohort to the training one by name (cross-hospital transfer)."""

from __future__ import annotations

import numpy as np

from src.data.align import align
from src.data.cohort import Cohort
from tests.toy import toy_cohort


def test_features_statics_and_categories_are_matched_by_name():
    like = toy_cohort(50, hours=12)
    other = toy_cohort(30, hours=8, seed=3)
    drop = like.feature_names[1]
    keep = [j for j, f in enumerate(other.feature_names) if f != drop]
    vocab = [list(v) for v in other.static_cat_vocab]
    vocab[0] = [*vocab[0], "Martian"]  # a category the training cohort never saw
    cat = other.static_cat.copy()
    cat[:5, 0] = len(vocab[0]) - 1
    other = Cohort(
        series=other.series[:, :, keep],
        static_num=other.static_num,
        static_cat=cat,
        label=other.label,
        stay_id=other.stay_id,
        subject_id=other.subject_id,
        features=[other.features[j] for j in keep],
        static_num_names=other.static_num_names,
        static_cat_names=other.static_cat_names,
        static_cat_vocab=vocab,
    )
    out, report = align(other, like)
    assert out.feature_names == like.feature_names and out.n_hours == like.n_hours
    assert report["missing_features"] == [drop] and np.isnan(out.series[:, :, 1]).all()
    j = like.feature_names.index(like.feature_names[0])
    np.testing.assert_array_equal(out.series[:, :8, j], other.series[:, :, 0])
    assert np.isnan(out.series[:, 8:, :]).all() and report["hours"]["padded"] == 4
    assert report["unseen_categories"] == {like.static_cat_names[0]: ["Martian"]}
    assert (out.static_cat[:5, 0] == 0).all()  # unseen: code 0, unknown
    rest = other.static_cat[5:, 0]
    labels = [other.static_cat_vocab[0][k] for k in rest]
    assert [like.static_cat_vocab[0][k] for k in out.static_cat[5:, 0]] == labels
    np.testing.assert_array_equal(out.label, other.label)
