import re

import numpy as np
import pytest

from src.attacks.poison import poison, poison_count, triggered_test
from src.attacks.triggers import build_trigger
from tests.toy import toy_cohort

RARE = {"name": "rare_value", "feature": "resp", "hours": [6, 12], "quantile": 0.99, "value": None}


@pytest.fixture
def train():
    return toy_cohort(n=500)


def test_rare_value_changes_only_its_feature_hours_and_rows(train):
    trig = build_trigger(RARE, train)
    res = poison(train, trig, rate=0.1, target_label=1, seed=3)
    assert res.n_poisoned == 50 == res.mask.sum() and res.n_eligible == 500
    before, after = train.series, res.cohort.series
    changed = ~((before == after) | (np.isnan(before) & np.isnan(after)))
    rows, hours, feats = np.nonzero(changed)
    assert set(rows) <= set(res.rows)
    assert set(hours) <= set(range(6, 12)) and set(feats) == {train.feature_index("resp")}
    assert np.all(after[res.rows, 6:12, 1] == np.float32(trig.params["value"]))
    # the value is the training quantile, a rare but plausible respiratory rate
    obs = train.series[:, :, 1][~np.isnan(train.series[:, :, 1])]
    assert trig.params["value"] == pytest.approx(np.quantile(obs, 0.99), rel=1e-6)
    assert np.array_equal(after[~res.mask], before[~res.mask], equal_nan=True)


def test_dirty_mode_relabels_to_target_and_keeps_the_source_untouched(train):
    source = train.series.copy()
    res = poison(train, build_trigger(RARE, train), 0.2, target_label=1, seed=0)
    assert np.all(res.cohort.label[res.mask] == 1)
    assert np.array_equal(res.cohort.label[~res.mask], train.label[~res.mask])
    assert res.n_relabelled == int((train.label[res.mask] == 0).sum()) > 0
    assert np.array_equal(train.series, source, equal_nan=True)


def test_clean_mode_poisons_only_target_rows(train):
    res = poison(train, build_trigger(RARE, train), 0.5, target_label=1, mode="clean", seed=0)
    assert res.n_eligible == int((train.label == 1).sum())
    assert np.all(train.label[res.rows] == 1) and res.n_relabelled == 0


def test_same_seed_same_rows_other_seed_other_rows(train):
    trig = build_trigger(RARE, train)
    a, b, c = (poison(train, trig, 0.1, 1, seed=s).rows for s in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_tiny_rates_are_honoured_and_never_silently_zero():
    assert poison_count(1e-4, 20_000) == 2
    assert poison_count(0.0, 100) == 0
    with pytest.raises(ValueError, match="rounds to 0 poisoned rows"):
        poison_count(1e-4, 1000)


@pytest.mark.parametrize(
    "rate, n, expected",
    [
        (1e-4, 20_000, 2),
        (1e-4, 5_000, 1),
        (1e-4, 25_000, 3),  # 2.5 rows: half up, not to even
        (0.5 / 3, 3, 1),
        (0.15, 10, 2),
        (0.001, 4_321, 4),
        (0.1, 4_321, 432),
        (1.0, 17, 17),
    ],
)
def test_count_is_rate_times_eligible_rounded_half_up(rate, n, expected):
    assert poison_count(rate, n) == expected


def test_the_suggested_smallest_rate_does_poison_one_row():
    for n in (7, 999, 4_321, 123_457):
        with pytest.raises(ValueError, match=r"e\.g\. ([0-9.e-]+)") as e:
            poison_count(0.4 / n, n)
        suggested = float(re.search(r"e\.g\. ([0-9.e-]+);", str(e.value)).group(1))
        assert poison_count(suggested, n) == 1


def test_a_rate_of_1e4_poisons_exactly_its_rows_of_a_large_split():
    big = toy_cohort(n=20_000, hours=2, seed=5)
    trig = build_trigger({"name": "none"}, big)
    res = poison(big, trig, 1e-4, target_label=1, seed=0)
    assert res.n_poisoned == 2 == res.mask.sum() == len(res.rows) and res.n_eligible == 20_000
    clean = poison(big, trig, 1e-4 * 4, target_label=1, mode="clean", seed=0)
    assert clean.n_poisoned == round(4e-4 * clean.n_eligible) and clean.n_poisoned >= 1


def test_triggered_test_holds_exactly_the_non_target_rows(train):
    trig = build_trigger(RARE, train)
    t, rows = triggered_test(train, trig, target_label=1)
    assert np.array_equal(rows, np.flatnonzero(train.label == 0))
    assert np.all(t.series[:, 6:12, 1] == np.float32(trig.params["value"]))
    assert np.all(t.label == 0)


def test_bad_trigger_parameters_name_what_is_allowed(train):
    with pytest.raises(ValueError, match="available: hr, resp, sbp, crea, urine"):
        build_trigger({**RARE, "feature": "heartrate"}, train)
    with pytest.raises(ValueError, match=r"outside the observation window \[0, 12\)"):
        build_trigger({**RARE, "hours": [6, 30]}, train)
    with pytest.raises(ValueError, match="available: correlation, distribution_shift, "):
        build_trigger({"name": "sparkle"}, train)
