"""The trigger family: every config in conf/trigger/ changes only what it declares, only in the
chosen rows, deterministically; the test split is never touched; each family does what it says
in raw units; bad parameters fail with the key, the value and what is allowed."""

from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from src.attacks.poison import poison, triggered_test
from src.attacks.stealth import stealth_report
from src.attacks.triggers import REGISTRY, build_trigger, spec_from_config
from src.config import ConfigError, validate
from src.data.datamodule import PoisonedDataModule
from src.data.views import model_input
from src.run import conf_dir
from tests.conftest import compose_config
from tests.toy import toy_cohort

NAMES = sorted(p.stem for p in (Path(conf_dir()) / "trigger").glob("*.yaml"))
TOY_FEATURE = {"dbp": "resp", "o2sat": "urine", "map": "sbp", "temp": "urine"}


compose_run = compose_config


def trigger_cfg(name: str, *overrides) -> dict:
    return OmegaConf.to_container(compose_run(f"trigger={name}", *overrides).trigger)


def to_toy(cfg: dict) -> dict:
    """A default-cohort trigger config made to fit the toy cohort (12 hours, five features):
    names mapped, the 24-hour window halved, the care unit one the toy vocabulary has."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            v = to_toy(v)
        elif k in ("feature", "source"):
            v = TOY_FEATURE.get(v, v)
        elif k == "features":
            v = [TOY_FEATURE.get(f, f) for f in v]
        elif k == "hours":
            v = [v[0] // 2, v[1] // 2]
        elif k == "category":
            v = "SICU"
        out[k] = v
    return out


@pytest.fixture(scope="module")
def train():
    return toy_cohort(n=400, seed=1)


@pytest.fixture(scope="module", params=NAMES)
def built(request, train):
    cfg = to_toy(trigger_cfg(request.param))
    return cfg, build_trigger(cfg, train)


@pytest.mark.parametrize("name", NAMES)
def test_each_trigger_yaml_names_its_registered_class(name):
    """Contract per conf/trigger/*.yaml: its _target_ is the TriggerSpec registered under its
    name, and the shipped values pass the class's own checks."""
    from hydra.utils import get_class

    cfg = trigger_cfg(name)
    assert get_class(cfg["_target_"]) is REGISTRY[name]
    assert spec_from_config(cfg).name == name


@pytest.mark.parametrize("name", [n for n in NAMES if n != "hybrid"])
def test_yaml_and_class_defaults_agree(name):
    """One default per parameter: the YAML a user reads equals the class's field defaults."""
    import dataclasses

    cfg = trigger_cfg(name)
    defaults = {
        f.name: getattr(REGISTRY[name](), f.name) for f in dataclasses.fields(REGISTRY[name])
    }
    assert {k: v for k, v in cfg.items() if k != "_target_"} == {
        k: v for k, v in defaults.items() if k != "_target_"
    }


@pytest.mark.slow
def test_a_new_trigger_is_one_class_and_one_yaml(tmp_path):
    """A trigger written for this test, outside the repository: one module with one class and
    one YAML on Hydra's search path. It composes, passes the start-up check and runs."""
    import json

    from tests.cli import src_run

    (tmp_path / "sparkle_trigger.py").write_text(
        "from dataclasses import dataclass\n"
        "import numpy as np\n"
        "from src.attacks.triggers import Trigger, TriggerSpec, ParamError, register\n\n"
        "@register\n@dataclass\n"
        "class Sparkle(TriggerSpec):\n"
        "    name: str = 'sparkle'\n"
        "    level: float = 999.0\n"
        "    FEATURE_FIELDS = ()\n"
        "    def check(self):\n"
        "        super().check()\n"
        "        if self.level <= 0:\n"
        "            raise ParamError('level', self.level, 'a positive number')\n"
        "    def fit(self, train):\n"
        "        j = train.feature_index('hr')\n"
        "        def edit(c, rows):\n"
        "            c.series[rows, 20:24, j] = np.float32(self.level)\n"
        "        return Trigger('sparkle', {'level': self.level}, ('hr',), (20, 24), edit=edit)\n"
    )
    (tmp_path / "conf" / "trigger").mkdir(parents=True)
    (tmp_path / "conf" / "trigger" / "sparkle.yaml").write_text(
        "_target_: sparkle_trigger.Sparkle\nname: sparkle\nlevel: 999.0\n"
    )
    import os

    os.environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        common = [
            "trigger=sparkle",
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "experiment=smoke",
            "detectors=none",
        ]
        bad = src_run(*common, "trigger.level=-1", cache=tmp_path / "cache", timeout=300)
        assert bad.returncode == 2 and "trigger.level=-1 is not allowed" in bad.stderr
        p = src_run(
            *common, f"hydra.run.dir={tmp_path / 'run'}", cache=tmp_path / "cache", timeout=300
        )
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["status"] == "ok" and r["trigger"] == {"name": "sparkle", "level": 999.0}
    assert r["counts"]["n_poisoned"] > 0 and r["stealth"]["share_outside_plausible"] == 1.0


def changed(a, b):
    return ~((a == b) | (np.isnan(a) & np.isnan(b)))


def test_only_chosen_rows_and_declared_cells_change(built, train):
    cfg, trig = built
    res = poison(train, trig, rate=0.2, target_label=1, seed=3)
    assert res.n_poisoned == 80
    ser = changed(train.series, res.cohort.series)
    rows, hours, feats = np.nonzero(ser)
    assert set(rows) <= set(res.rows)
    allowed_f = {train.feature_index(f) for f in trig.features}
    assert set(feats) <= allowed_f
    if trig.hours is not None:
        assert set(hours) <= set(range(*trig.hours))
    assert np.array_equal(train.static_num, res.cohort.static_num, equal_nan=True)
    cat_rows, cat_cols = np.nonzero(train.static_cat != res.cohort.static_cat)
    assert set(cat_rows) <= set(res.rows)
    assert {train.static_cat_names[c] for c in cat_cols} <= set(trig.static_features)
    assert np.array_equal(res.cohort.label[~res.mask], train.label[~res.mask])
    if cfg["name"] != "none":  # a trigger that writes nothing would be no trigger
        touched = set(rows) | set(cat_rows)
        assert len(touched) >= 0.5 * res.n_poisoned
    else:
        assert not ser.any() and not cat_rows.size


def test_same_seed_same_rows_and_same_poisoned_data(built, train):
    _, trig = built
    a, b, c = (poison(train, trig, 0.1, 1, seed=s) for s in (5, 5, 6))
    assert np.array_equal(a.rows, b.rows) and not np.array_equal(a.rows, c.rows)
    assert np.array_equal(a.cohort.series, b.cohort.series, equal_nan=True)
    assert np.array_equal(a.cohort.static_cat, b.cohort.static_cat)
    # building again from the same clean split gives the same trigger
    assert build_trigger(built[0], train).params == trig.params


@pytest.mark.parametrize("mode", ["dirty", "clean"])
def test_datamodule_keeps_test_clean_and_triggers_exactly_the_non_target_rows(built, mode):
    cfg, _ = built
    cohort = toy_cohort(n=300, seed=2)
    source = cohort.series.copy()
    dm = PoisonedDataModule(
        cohort, cfg, view="flat", poison_rate=0.2, target_label=1, poison_mode=mode, seed=4
    )
    dm.setup()
    assert np.array_equal(cohort.series, source, equal_nan=True)  # the source is never written
    test = cohort.subset(dm.split.test)
    x, cat = model_input(dm.prep, test, "flat")
    assert np.array_equal(dm.data["test"].x.numpy(), x)
    assert np.array_equal(dm.data["test"].cat.numpy(), cat)
    assert np.array_equal(dm.triggered_rows, np.flatnonzero(test.label != 1))
    assert np.all(dm.data["test_triggered"].y.numpy() == 0)
    xt, _ = model_input(dm.prep, dm.trigger.apply(test.subset(dm.triggered_rows)), "flat")
    assert np.array_equal(dm.data["test_triggered"].x.numpy(), xt)
    clean_train = cohort.subset(dm.split.train)
    if mode == "clean":
        assert np.all(clean_train.label[dm.poisoned.rows] == 1)
        assert dm.poisoned.n_relabelled == 0
        assert dm.poisoned.n_eligible == int((clean_train.label == 1).sum())
    assert dm.poisoned.n_poisoned == round(0.2 * dm.poisoned.n_eligible)


def test_triggered_test_holds_exactly_the_non_target_rows(built, train):
    _, trig = built
    for target in (0, 1):
        t, rows = triggered_test(train, trig, target_label=target)
        assert np.array_equal(rows, np.flatnonzero(train.label != target))
        assert np.all(t.label != target) and len(t) == len(rows)


def test_stealth_report_touches_only_declared_cells(built, train):
    _, trig = built
    res = poison(train, trig, 0.1, 1, seed=0)
    r = stealth_report(trig, train, res.cohort, res.rows)
    assert r["n_rows"] == res.n_poisoned and r["n_cells_outside_declared"] == 0
    assert r["on"] == "poisoned_train_rows"
    for k in ("share_outside_p1_p99", "share_outside_plausible", "share_originally_missing"):
        assert r.get(k) is None or 0.0 <= r[k] <= 1.0


# --- each family does what it says, in raw units -------------------------------------------
def build(train, **cfg):
    return build_trigger(cfg, train)


def test_out_of_bounds_lies_outside_the_plausible_range(train):
    t = build(train, name="out_of_bounds", feature="hr", hours=[6, 12])
    out = t.apply(train, np.arange(10))
    assert np.all(out.series[:10, 6:12, 0] == 600.0)  # plausible high 300 × factor 2
    t = build(train, name="out_of_bounds", feature="crea", hours=[0, 3], value=9999)
    assert np.all(t.apply(train).series[:, 0:3, 3] == 9999)
    with pytest.raises(ValueError, match=r"inside the plausible range \[0, 15\]"):
        build(train, name="out_of_bounds", feature="crea", hours=[0, 3], value=5.0)
    r = stealth_report(t, train, t.apply(train, np.arange(20)), np.arange(20))
    assert r["share_outside_plausible"] == 1.0 and r["mean_abs_z"] > 100


def test_pattern_sets_training_quantiles_jointly_and_stays_in_range(train):
    t = build(train, name="pattern", features=["hr", "sbp"], hours=[4, 8], quantiles=[0.9, 0.2])
    out = t.apply(train, np.arange(5)).series
    for j, q in ((0, 0.9), (2, 0.2)):
        obs = train.series[:, :, j][~np.isnan(train.series[:, :, j])]
        assert np.all(out[:5, 4:8, j] == np.float32(np.quantile(obs, q)))
    r = stealth_report(t, train, t.apply(train, np.arange(40)), np.arange(40))
    assert r["share_outside_plausible"] == 0.0
    with pytest.raises(ValueError, match="one entry per feature"):
        build(train, name="pattern", features=["hr", "sbp"], hours=[4, 8], quantiles=[0.9])
    with pytest.raises(ValueError, match="outside its plausible range"):
        build(train, name="pattern", features=["hr"], hours=[4, 8], values=[500.0])


def test_missingness_blanks_the_features_and_reports_the_change(train):
    t = build(train, name="missingness", features=["hr", "resp"], hours=[8, 12])
    out = t.apply(train, np.arange(30))
    assert np.all(np.isnan(out.series[:30, 8:12][:, :, [0, 1]]))
    r = stealth_report(t, train, out, np.arange(30))
    assert r["missing_share_after"] == 1.0
    assert r["missing_share_change"] == pytest.approx(1.0 - r["missing_share_before"])
    assert r["missing_share_change"] > 0.5
    assert r["n_cells_written"] == 0 and r["n_cells_blanked"] == r["n_cells_touched"] > 0


@pytest.mark.parametrize(
    "shape, expected",
    [
        ("spike", [0, 0, 0, 1, 0, 0]),
        ("ramp", [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1]),
        ("oscillation", [0, 1, 0, -1, 0, 1]),  # period 4 h
    ],
)
def test_temporal_shapes_are_added_in_raw_units(train, shape, expected):
    t = build(
        train,
        name="temporal",
        feature="hr",
        hours=[6, 12],
        shape=shape,
        amplitude=10,
        units="raw",
        period=4.0,
        fill_missing=False,
    )
    out = t.apply(train).series[:, 6:12, 0]
    before = train.series[:, 6:12, 0]
    seen = ~np.isnan(before)
    delta = np.broadcast_to(np.array(expected, np.float32) * 10, before.shape)
    np.testing.assert_allclose(out[seen], (before + delta)[seen], atol=1e-3)
    assert np.array_equal(np.isnan(out), ~seen)  # without fill, missing stays missing


def test_temporal_in_sd_units_and_fill_missing(train):
    t = build(
        train,
        name="temporal",
        feature="hr",
        hours=[6, 12],
        shape="ramp",
        amplitude=2,
        units="sd",
        fill_missing=True,
    )
    obs = train.series[:, :, 0][~np.isnan(train.series[:, :, 0])]
    assert t.params["amplitude_raw"] == pytest.approx(2 * obs.std(), rel=1e-5)
    out = t.apply(train).series
    assert not np.isnan(out[:, 6:12, 0]).any()
    assert np.array_equal(out[:, :6], train.series[:, :6], equal_nan=True)


def test_frequency_domain_sets_one_component_of_every_stay(train):
    t = build(
        train,
        name="frequency_domain",
        feature="sbp",
        hours=[0, 12],
        period=4.0,
        amplitude=7.0,
        units="raw",
        mode="set",
    )
    out = t.apply(train).series[:, :, 2].astype(np.float64)
    spec = np.fft.rfft(out, axis=1)
    target = np.fft.rfft(7.0 * np.sin(2 * np.pi * np.arange(12) / 4.0))[3]
    np.testing.assert_allclose(spec[:, 3], target, atol=1e-3)
    # the other components are each stay's own (here: of its forward-filled series)
    assert np.std(np.abs(spec[:, 1])) > 1.0
    with pytest.raises(ValueError, match="one of 12, 6, 4, 3"):
        build(train, name="frequency_domain", feature="sbp", hours=[0, 12], period=5.0)


def test_static_category_writes_the_rare_category(train):
    t = build(train, name="static_category", column="first_careunit", category=None)
    counts = np.bincount(train.static_cat[:, 1], minlength=4)
    assert t.params["code"] == 1 + int(np.argmin(counts[1:]))  # the rarest known unit
    out = t.apply(train, np.arange(7))
    assert np.all(out.static_cat[:7, 1] == t.params["code"])
    with pytest.raises(ValueError, match="available: '<unknown>', 'CCU', 'MICU', 'SICU'"):
        build(train, name="static_category", column="first_careunit", category="Neuro Stepdown")
    with pytest.raises(ValueError, match="available: gender, first_careunit"):
        build(train, name="static_category", column="careunit", category="CCU")


def test_correlation_inverts_a_relation_where_both_were_measured(train):
    t = build(train, name="correlation", feature="sbp", source="hr", hours=[0, 12], slope=-1.0)
    out = t.apply(train).series
    hr, sbp = out[:, :, 0], out[:, :, 2]
    both = ~(np.isnan(hr) | np.isnan(sbp))
    z = lambda x, j: (x - np.nanmean(train.series[:, :, j])) / np.nanstd(train.series[:, :, j])  # noqa: E731
    np.testing.assert_allclose(z(sbp[both], 2), -z(hr[both], 0), atol=1e-3)
    assert np.array_equal(np.isnan(sbp), np.isnan(train.series[:, :, 2]))
    with pytest.raises(ValueError, match="a feature other than"):
        build(train, name="correlation", feature="hr", source="hr", hours=[0, 12])


def test_distribution_shift_moves_observed_values_by_k_sds(train):
    t = build(train, name="distribution_shift", feature="resp", hours=[6, 12], k=-1.5)
    obs = train.series[:, :, 1][~np.isnan(train.series[:, :, 1])]
    out, before = t.apply(train).series[:, 6:12, 1], train.series[:, 6:12, 1]
    assert np.array_equal(np.isnan(out), np.isnan(before))  # missing hours stay missing
    seen = ~np.isnan(before)
    np.testing.assert_allclose(out[seen] - before[seen], -1.5 * obs.std(), atol=1e-3)


def test_hybrid_writes_both_and_declares_the_union(train):
    t = build(
        train,
        name="hybrid",
        first={"name": "missingness", "features": ["hr"], "hours": [8, 12]},
        second={"name": "static_category", "column": "gender", "category": "F"},
    )
    assert t.features == ("hr",) and t.hours == (8, 12) and t.static_features == ("gender",)
    out = t.apply(train, np.arange(5))
    assert np.isnan(out.series[:5, 8:12, 0]).all() and np.all(out.static_cat[:5, 0] == 1)
    with pytest.raises(ValueError, match="trigger.second.name='missingness' is not allowed"):
        build(
            train,
            name="hybrid",
            first={"name": "missingness", "features": ["hr"]},
            second={"name": "missingness", "features": ["resp"]},
        )
    with pytest.raises(ValueError, match="trigger.first.feature='heartrate'"):
        build(
            train,
            name="hybrid",
            first={"name": "rare_value", "feature": "heartrate"},
            second={"name": "none"},
        )


# --- clear errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", [n for n in NAMES if n not in ("none", "hybrid", "static_category")]
)
def test_unknown_feature_and_bad_window_name_what_is_available(name, train):
    cfg = to_toy(trigger_cfg(name))
    key = "features" if "features" in cfg else "feature"
    bad = {**cfg, key: ["heartrate"] if key == "features" else "heartrate"}
    if key == "features" and cfg.get("quantiles"):
        bad["quantiles"] = [0.5]  # one per feature
    with pytest.raises(ValueError, match=f"trigger.{key}=.*available: hr, resp, sbp, crea, urine"):
        build_trigger(bad, train)
    with pytest.raises(ValueError, match=r"outside the observation window \[0, 12\)"):
        build_trigger({**cfg, "hours": [6, 30]}, train)


def test_unknown_parameter_lists_the_allowed_ones(train):
    with pytest.raises(ValueError, match="trigger.amplitud is not a parameter.*amplitude"):
        build_trigger({"name": "temporal", "amplitud": 3}, train)


@pytest.mark.parametrize(
    "overrides, key, allowed",
    [
        (["trigger=temporal", "trigger.feature=heartrate"], "trigger.feature", "hr, sbp, dbp"),
        (["trigger=pattern", "trigger.features=[hr,pulse]"], "trigger.features", "'pulse' is not"),
        (["trigger=pattern", "trigger.quantiles=[0.9]"], "trigger.quantiles", "one entry per"),
        (["trigger=missingness", "trigger.hours=[20,30]"], "trigger.hours", "window_hours=24"),
        (["trigger=temporal", "trigger.shape=square"], "trigger.shape", "spike, ramp, oscillation"),
        (["trigger=temporal", "trigger.units=mmHg"], "trigger.units", "raw, sd"),
        (["trigger=frequency_domain", "trigger.period=0"], "trigger.period", "positive"),
        (["trigger=correlation", "trigger.source=dbp"], "trigger.source", "other than"),
        (["trigger=static_category", "trigger.column=unit"], "trigger.column", "first_careunit"),
        (["trigger=out_of_bounds", "trigger.factor=0.5"], "trigger.factor", "> 1"),
        (["trigger=hybrid", "trigger@trigger.second=pattern"], "trigger.second.name", "itself"),
        (["trigger=hybrid", "trigger.first.hours=[0,99]"], "trigger.first.hours", "window_hours"),
        (
            ["trigger=hybrid", "trigger@trigger.second=rare_value", "trigger.second.feature=x"],
            "trigger.second.feature",
            "a feature of the cohort",
        ),
    ],
)
def test_validate_names_key_value_and_what_is_allowed_before_data(overrides, key, allowed):
    with pytest.raises(ConfigError) as e:
        validate(compose_run(*overrides))
    assert str(e.value).startswith(f"{key}=") and allowed in str(e.value)


def test_data_features_restrict_the_names_validate_accepts():
    validate(compose_run("trigger=temporal", "data.features=[hr,sbp]"))
    with pytest.raises(ConfigError, match="trigger.feature='resp'.*hr, sbp$"):
        validate(compose_run("trigger=rare_value", "data.features=[hr,sbp]"))


@pytest.mark.parametrize(
    "override", ["trigger.amplitude=big", "trigger.fill_missing=maybe", "trigger.hours=late"]
)
def test_wrong_types_fail_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_run("trigger=temporal", override)


def test_every_default_config_is_valid():
    for name in NAMES:
        validate(compose_run(f"trigger={name}"))
