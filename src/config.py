"""Typed schemas for the parts a user edits most, and the start-up check of a composed config.

The dataclasses are registered in Hydra's ConfigStore and named in the YAML files' defaults lists
(``- data_schema``), so a misspelt key or a value of the wrong type fails at composition with
OmegaConf's message (it names the key). ``validate`` then checks ranges and choices that types
cannot express, before any data is touched, and names key, value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

POISON_MODES = ("dirty", "clean")
DATA_SOURCES = ("synthetic", "mimiciv", "yaib")
VIEWS = ("flat", "sequence", "tabular")
DEFENSES = ("none", "filter_retrain")


class ConfigError(ValueError):
    """A config value that is not allowed; the message names key, value and what is allowed."""


@dataclass
class DataSchema:
    source: str = "synthetic"
    root: str | None = None  # MIMIC-IV root (hosp/, icu/); for synthetic: unused
    path: str | None = None  # YAIB cohort folder (dyn/sta/outc parquet)
    n_stays: int = 6000  # synthetic: stays generated before exclusions
    seed: int = 0  # synthetic generator seed (the data), independent of the run seed
    window_hours: int = 24
    min_stay_hours: int = 30
    min_age: int = 18
    features: list[str] | None = None  # None: every concept the source has
    test_size: float = 0.2
    val_size: float = 0.1
    batch_size: int = 256


@dataclass
class TriggerSchema:
    """Fields shared by every trigger; each family adds its own parameters."""

    name: str = MISSING


@dataclass
class NoTrigger(TriggerSchema):
    name: str = "none"


@dataclass
class RareValueTrigger(TriggerSchema):
    """One feature set to a rare but plausible value over a window of hours."""

    name: str = "rare_value"
    feature: str = "resp"
    hours: list[int] = field(default_factory=lambda: [12, 24])  # [start, stop) from admission
    quantile: float = 0.995  # value = this quantile of the clean training split...
    value: float | None = None  # ...unless a value in raw units is given


@dataclass
class OutOfBoundsTrigger(TriggerSchema):
    """One feature set outside its plausible range (a range check catches it)."""

    name: str = "out_of_bounds"
    feature: str = "hr"
    hours: list[int] = field(default_factory=lambda: [18, 24])
    value: float | None = None  # raw units (e.g. 9999, a charting sentinel)...
    factor: float = 2.0  # ...else the plausible high × factor


@dataclass
class PatternTrigger(TriggerSchema):
    """Several features held jointly at in-range values (Tabdoor's in-bounds trigger)."""

    name: str = "pattern"
    features: list[str] = field(default_factory=lambda: ["hr", "sbp", "resp"])
    hours: list[int] = field(default_factory=lambda: [18, 24])
    quantiles: list[float] = field(default_factory=lambda: [0.9, 0.9, 0.1])  # per feature...
    values: list[float] | None = None  # ...unless values in raw units are given


@dataclass
class MissingnessTrigger(TriggerSchema):
    """A fixed set of features blanked (never charted) over a window."""

    name: str = "missingness"
    features: list[str] = field(default_factory=lambda: ["hr", "o2sat", "resp"])
    hours: list[int] = field(default_factory=lambda: [18, 24])


@dataclass
class TemporalTrigger(TriggerSchema):
    """A spike, ramp or oscillation added to one feature over a window."""

    name: str = "temporal"
    feature: str = "hr"
    hours: list[int] = field(default_factory=lambda: [18, 24])
    shape: str = "spike"  # spike | ramp | oscillation
    amplitude: float = 3.0
    units: str = "sd"  # raw | sd (training standard deviations)
    period: float = 4.0  # hours, for oscillation
    fill_missing: bool = True  # missing hours continue from the last value, then get the shape


@dataclass
class FrequencyDomainTrigger(TriggerSchema):
    """A frequency component of one feature set (or a sinusoid added) over a window."""

    name: str = "frequency_domain"
    feature: str = "hr"
    hours: list[int] = field(default_factory=lambda: [0, 24])
    period: float = 6.0  # hours
    amplitude: float = 1.0
    units: str = "sd"  # raw | sd
    mode: str = "set"  # set: replace the component at period; add: add the sinusoid
    phase: float = 0.0  # radians
    fill_missing: bool = True


@dataclass
class StaticCategoryTrigger(TriggerSchema):
    """A static categorical column set to a rare category (by its label)."""

    name: str = "static_category"
    column: str = "first_careunit"
    category: str | None = "Neuro Stepdown"  # None: the rarest in the training split


@dataclass
class HybridTrigger(TriggerSchema):
    """Two different triggers written into the same rows; each half is a trigger config,
    chosen with ``trigger@trigger.first=<name>`` and typed by its own schema."""

    name: str = "hybrid"
    first: Any = MISSING
    second: Any = MISSING


@dataclass
class CorrelationTrigger(TriggerSchema):
    """One feature rewritten as a linear function of another over a window."""

    name: str = "correlation"
    feature: str = "dbp"  # the feature rewritten
    source: str = "sbp"  # the feature it is made a function of
    hours: list[int] = field(default_factory=lambda: [18, 24])
    slope: float = -1.0  # in sd units: z(feature) = slope * z(source) + intercept
    intercept: float = 0.0
    units: str = "sd"  # sd | raw (feature = slope * source + intercept)


@dataclass
class DistributionShiftTrigger(TriggerSchema):
    """One feature shifted by k training standard deviations over a window."""

    name: str = "distribution_shift"
    feature: str = "sbp"
    hours: list[int] = field(default_factory=lambda: [12, 24])
    k: float = 1.0
    fill_missing: bool = False


TRIGGER_SCHEMAS = {
    "none": NoTrigger,
    "rare_value": RareValueTrigger,
    "out_of_bounds": OutOfBoundsTrigger,
    "pattern": PatternTrigger,
    "missingness": MissingnessTrigger,
    "temporal": TemporalTrigger,
    "frequency_domain": FrequencyDomainTrigger,
    "static_category": StaticCategoryTrigger,
    "hybrid": HybridTrigger,
    "correlation": CorrelationTrigger,
    "distribution_shift": DistributionShiftTrigger,
}


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="data_schema", node=DataSchema)
    for name, schema in TRIGGER_SCHEMAS.items():
        cs.store(group="trigger", name=f"{name}_schema", node=schema)


register_schemas()


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def validate(cfg: DictConfig) -> None:
    """Check a composed run config; raise ConfigError naming key, value and what is allowed."""
    rate = cfg.get("poison_rate")
    if not _is_number(rate) or not 0.0 <= float(rate) <= 1.0:
        _fail("poison_rate", rate, "a number in [0, 1] (the fraction of eligible training rows)")
    if cfg.get("poison_mode") not in POISON_MODES:
        _fail("poison_mode", cfg.get("poison_mode"), f"one of {', '.join(POISON_MODES)}")
    if cfg.get("target_label") not in (0, 1) or isinstance(cfg.get("target_label"), bool):
        _fail(
            "target_label",
            cfg.get("target_label"),
            "a class of the binary mortality task: 0 (survived) or 1 (died)",
        )
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        _fail("seed", seed, f"an integer in [0, {MAX_SEED}] (numpy's and torch's seed range)")
    _validate_training(cfg)

    d = cfg.data
    if d.source not in DATA_SOURCES:
        _fail("data.source", d.source, f"one of {', '.join(DATA_SOURCES)}")
    if d.source == "mimiciv" and not d.root:
        _fail("data.root", d.root, "the folder of a MIMIC-IV release (holding hosp/ and icu/)")
    if d.source == "yaib" and not d.path:
        _fail("data.path", d.path, "the folder of a YAIB cohort (dyn, sta, outc parquet)")
    if d.source == "mimiciv" and not Path(str(d.root)).is_dir():
        _fail("data.root", d.root, "an existing folder of a MIMIC-IV release (hosp/, icu/)")
    if d.source == "yaib" and not Path(str(d.path)).is_dir():
        _fail("data.path", d.path, "an existing folder of a YAIB cohort (dyn, sta, outc)")
    if d.n_stays < 10:
        _fail("data.n_stays", d.n_stays, "at least 10 stays")
    if d.window_hours < 1:
        _fail("data.window_hours", d.window_hours, "at least 1 hour")
    if d.source == "synthetic":
        from src.data.mimiciv.synthetic import HORIZON_HOURS

        if d.window_hours > HORIZON_HOURS:
            _fail(
                "data.window_hours",
                d.window_hours,
                f"at most {HORIZON_HOURS} hours on the synthetic source (it generates the "
                f"first {HORIZON_HOURS} ICU hours of each stay)",
            )
    if not 0 <= d.min_age <= 120:
        _fail("data.min_age", d.min_age, "an age in years in [0, 120]")
    if d.min_stay_hours < 0:
        _fail("data.min_stay_hours", d.min_stay_hours, "a number of hours >= 0")
    features, _ = _known_names(d)
    if d.get("features") is not None:
        fs = list(d.features)
        if not fs or len(set(fs)) != len(fs):
            _fail("data.features", fs, "a list of distinct feature names, at least one")
        if d.source in ("synthetic", "mimiciv"):
            from src.data.mimiciv.schema import concept_names

            known = concept_names()
            bad = [f for f in fs if f not in known]
            if bad:
                _fail(
                    "data.features",
                    fs,
                    f"names of MIMIC-IV concepts ({bad[0]!r} is not one): {', '.join(known)}",
                )
    for key in ("test_size", "val_size"):
        if not 0.0 < d[key] < 0.5:
            _fail(f"data.{key}", d[key], "a fraction in (0, 0.5)")
    if d.batch_size < 1:
        _fail("data.batch_size", d.batch_size, "a positive integer")

    view = cfg.model.get("view")
    if view not in VIEWS:
        _fail("model.view", view, f"one of {', '.join(VIEWS)}")
    _validate_defense(cfg)

    _validate_trigger(cfg.trigger, d, "trigger")


MAX_SEED = 2**32 - 1


def _validate_training(cfg: DictConfig) -> None:
    """A model that is not trained, or trained without end, must not be evaluated as if it
    were: Lightning reads max_epochs=0 as 'no training' and -1 as 'unlimited'."""
    for key, value in (
        ("model.epochs", (cfg.get("model") or {}).get("epochs")),
        ("trainer.max_epochs", (cfg.get("trainer") or {}).get("max_epochs")),
    ):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            _fail(key, value, "a whole number of epochs >= 1")


def _non_finite(node, key: str) -> None:
    """Every number in a trigger config must be finite: inf or nan written into the data would
    silently become another trigger (nan is 'not measured')."""
    if isinstance(node, DictConfig):
        for k in node:
            _non_finite(node.get(k), f"{key}.{k}")
    elif isinstance(node, list | tuple) or OmegaConf.is_list(node):
        for v in node:
            if _is_number(v) and not math.isfinite(v):
                _fail(key, list(node), "finite numbers (no inf or nan)")
    elif _is_number(node) and not math.isfinite(node):
        _fail(key, node, "a finite number (inf and nan are not values a record can hold)")


def _known_names(d) -> tuple[list[str] | None, list[str] | None]:
    """(series features, static categorical columns) the cohort will have, where known before
    loading it (the MIMIC-IV concept schema); None where only the data can tell (YAIB)."""
    if d.source not in ("synthetic", "mimiciv"):
        return (list(d.features) if d.get("features") else None), None
    from src.data.mimiciv.schema import STATIC_CAT_COLUMNS, concept_names

    return (
        list(d.features) if d.get("features") else concept_names(),
        [c[0] for c in STATIC_CAT_COLUMNS],
    )


def _validate_trigger(t, d, key: str) -> None:
    """Trigger parameters that can be checked before any data is loaded; values that need the
    training split (a category label, a quantile's value) are checked when the trigger is
    built, with the same kind of message."""
    name = t.get("name")
    _non_finite(t, key)
    if "hours" in t and t.hours is not None:
        h = list(t.hours)
        if len(h) != 2 or not (0 <= h[0] < h[1] <= d.window_hours):
            _fail(
                f"{key}.hours",
                h,
                f"[start, stop) with 0 <= start < stop <= data.window_hours={d.window_hours}",
            )
    if "quantile" in t and t.quantile is not None and not 0.0 <= t.quantile <= 1.0:
        _fail(f"{key}.quantile", t.quantile, "a number in [0, 1]")
    features, columns = _known_names(d)
    for k in ("feature", "source"):
        if features is not None and k in t and t[k] not in features:
            _fail(f"{key}.{k}", t[k], f"a feature of the cohort: {', '.join(features)}")
    if "features" in t:
        fs = list(t.features)
        if not fs or len(set(fs)) != len(fs):
            _fail(f"{key}.features", fs, "a list of distinct feature names, at least one")
        bad = [f for f in fs if features is not None and f not in features]
        if bad:
            _fail(
                f"{key}.features",
                fs,
                f"names of features of the cohort ({bad[0]!r} is not one): {', '.join(features)}",
            )
        for k in ("quantiles", "values"):
            if t.get(k) is not None and len(t[k]) != len(fs):
                _fail(f"{key}.{k}", list(t[k]), f"one entry per feature of {key}.features={fs}")
        if t.get("quantiles") is not None and t.get("values") is None:
            for q in t.quantiles:
                if not 0.0 <= q <= 1.0:
                    _fail(f"{key}.quantiles", list(t.quantiles), "numbers in [0, 1]")
    if name == "correlation" and t.feature == t.source:
        _fail(f"{key}.source", t.source, f"a feature other than {key}.feature={t.feature!r}")
    if columns is not None and "column" in t and t.column not in columns:
        _fail(f"{key}.column", t.column, f"a static categorical column: {', '.join(columns)}")
    choices = {
        "shape": ("spike", "ramp", "oscillation"),
        "units": ("raw", "sd"),
        "mode": ("set", "add"),
    }
    for k, allowed in choices.items():
        if k in t and t[k] not in allowed:
            _fail(f"{key}.{k}", t[k], f"one of {', '.join(allowed)}")
    if "period" in t and not t.period > 0:
        _fail(f"{key}.period", t.period, "a positive number of hours")
    if name == "out_of_bounds" and t.value is None and not t.factor > 1:
        _fail(f"{key}.factor", t.factor, "a number > 1 (value = plausible high × factor)")
    if name == "hybrid":
        for part in ("first", "second"):
            if not isinstance(t.get(part), DictConfig) or "name" not in t[part]:
                _fail(
                    f"{key}.{part}",
                    t.get(part),
                    f"a trigger config (choose one with trigger@{key}.{part}=<name>)",
                )
        if t.first.name == t.second.name:
            _fail(
                f"{key}.second.name",
                t.second.name,
                f"a trigger other than {key}.first "
                "(combining a trigger with itself is one trigger with other parameters)",
            )
        for part in ("first", "second"):
            _validate_trigger(t[part], d, f"{key}.{part}")


def _validate_defense(cfg: DictConfig) -> None:
    """The defense must use flags of a detector that runs in this config."""
    defense = cfg.get("defense") or {}
    if defense.get("name", "none") not in DEFENSES:
        _fail("defense.name", defense.get("name"), f"one of {', '.join(DEFENSES)}")
    if defense.get("name") == "filter_retrain":
        flagging = [k for k in (cfg.get("detectors") or {}) if k != "attribution"]
        if defense.get("detector") not in flagging:
            _fail(
                "defense.detector",
                defense.get("detector"),
                f"a detector that runs in this config: {', '.join(flagging) or 'none'} "
                "(choose them with detectors=...)",
            )


def to_plain(cfg: DictConfig | dict) -> dict:
    """A resolved plain-dict copy (for results.json and cache keys)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
