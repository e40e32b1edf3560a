"""Typed schemas of the config, and the start-up check of a composed config.

The dataclasses are registered in Hydra's ConfigStore and named in the YAML files' defaults lists
(``- run_schema``, ``- data_schema``, ``- model_schema``; each trigger class registers its
own), so a misspelt key, a value of the wrong type or a choice outside an Enum fails at
composition with OmegaConf's message, which names the key. ``validate`` then checks what types
cannot express (ranges, and rules across fields: hours within the window, a feature the cohort
has, the defense's detector among the run's, each detector's parameters), before any data is
touched, and names the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class PoisonMode(StrEnum):  # a StrEnum compares, hashes and prints as its plain string
    dirty = "dirty"  # poisoned rows are relabelled to the target
    clean = "clean"  # only rows already labelled with the target are poisoned


class DataSource(StrEnum):
    synthetic = "synthetic"
    mimiciv = "mimiciv"
    yaib = "yaib"


DEFENSES = ("filter_retrain", "abl", "fine_tuning", "fine_pruning", "nad", "clp", "anp", "ibau")


class ConfigError(ValueError):
    """A config value that is not allowed; the message names key, value and what is allowed."""


@dataclass
class RunSchema:
    """The top level of conf/run.yaml; each group below is typed by its own schema."""

    task_name: str = "run"
    seed: int = 0
    poison_rate: float = 0.1
    poison_mode: PoisonMode = PoisonMode.dirty
    target_label: int = 1
    data: Any = MISSING
    model: Any = MISSING
    trigger: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    detectors: Any = None
    defense: Any = None
    eval_data: Any = None  # a second cohort (cross-hospital transfer), in data's schema
    clean_run: str | None = None  # a finished clean run of this config: explainability drift
    paths: Any = MISSING


@dataclass
class ModelSchema:
    """conf/model/*.yaml: the encoder, its view, its optimizer and its fixed epoch budget."""

    name: str = MISSING
    epochs: int = MISSING
    view: str = "flat"  # a view registered in src/data/views.py (checked by validate)
    encoder: Any = MISSING  # _target_ and the encoder's arguments
    optimizer: Any = MISSING  # _target_, _partial_: true, and its arguments
    scheduler: Any = None


@dataclass
class DataSchema:
    source: DataSource = DataSource.synthetic
    root: str | None = None  # MIMIC-IV root (hosp/, icu/); for synthetic: unused
    path: str | None = None  # YAIB cohort folder (dyn/sta/outc parquet)
    n_stays: int = 58000  # synthetic: stays generated before exclusions
    seed: int = 0  # synthetic generator seed (the data), independent of the run seed
    window_hours: int = 24
    min_stay_hours: int = 30
    min_age: int = 18
    features: list[str] | None = None  # None: every concept the source has
    test_size: float = 0.2
    val_size: float = 0.1
    batch_size: int = 256


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunSchema)
    cs.store(group="data", name="data_schema", node=DataSchema)
    cs.store(group="model", name="model_schema", node=ModelSchema)
    # each trigger class registers its own schema (trigger/<name>_schema) when imported
    import src.attacks.triggers  # noqa: F401


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
    _validate_source(d, "data")
    if d.n_stays < 10:
        _fail("data.n_stays", d.n_stays, "at least 10 stays")
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

    from src.data.views import VIEWS

    if cfg.get("eval_data"):
        _validate_source(cfg.eval_data, "eval_data")

    view = cfg.model.get("view")
    if view not in VIEWS:
        _fail("model.view", view, f"one of {', '.join(VIEWS)}")
    _validate_defense(cfg)
    _validate_detectors(cfg)

    _validate_trigger(cfg.trigger, d, "trigger")


MAX_SEED = 2**32 - 1


def _validate_source(d, key: str) -> None:
    """The data source's folder exists, and its window is at least an hour (``key``: data or
    eval_data, which share the schema)."""
    if d.source == "mimiciv" and not d.root:
        _fail(f"{key}.root", d.root, "the folder of a MIMIC-IV release (holding hosp/ and icu/)")
    if d.source == "yaib" and not d.path:
        _fail(f"{key}.path", d.path, "the folder of a YAIB cohort (dyn, sta, outc parquet)")
    if d.source == "mimiciv" and not Path(str(d.root)).is_dir():
        _fail(f"{key}.root", d.root, "an existing folder of a MIMIC-IV release (hosp/, icu/)")
    if d.source == "yaib" and not Path(str(d.path)).is_dir():
        _fail(f"{key}.path", d.path, "an existing folder of a YAIB cohort (dyn, sta, outc)")
    if d.window_hours < 1:
        _fail(f"{key}.window_hours", d.window_hours, "at least 1 hour")


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
    """The trigger's own checks (its class's ``check``, one place per trigger), then what only
    the run's data config can tell: hours inside the window, names of features and columns the
    cohort will have. Values that need the training split (a category label, a quantile's
    value) are checked when the trigger is fitted, with the same kind of message."""
    from src.attacks.triggers import TriggerSpec, spec_from_config
    from src.attacks.triggers.base import spec_class

    features, columns = _known_names(d)
    if isinstance(t, TriggerSpec):
        cls, raw = type(t), {k: getattr(t, k) for k in type(t).FEATURE_FIELDS}
    else:
        try:
            cls = spec_class(OmegaConf.to_container(t, resolve=True))
        except ValueError as e:
            raise ConfigError(str(e).replace("trigger.", f"{key}.", 1)) from e
        raw = {k: t.get(k) for k in cls.FEATURE_FIELDS}
    for k, value in raw.items():  # names first: what the cohort has decides what else to say
        if value is None:
            continue
        names = [value] if isinstance(value, str) else list(value)
        bad = [f for f in names if features is not None and f not in features]
        if bad:
            shown = value if isinstance(value, str) else names
            _fail(
                f"{key}.{k}",
                shown,
                f"a feature of the cohort ({bad[0]!r} is not one): {', '.join(features)}",
            )
    try:
        spec = spec_from_config(t) if key == "trigger" else t
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e
    for part, sub in spec.parts() if hasattr(spec, "parts") else ():
        _validate_trigger(sub, d, f"{key}.{part}")
    hours = getattr(spec, "hours", None)
    if hours is not None and not hours[1] <= d.window_hours:
        _fail(
            f"{key}.hours",
            list(hours),
            f"[start, stop) with 0 <= start < stop <= data.window_hours={d.window_hours}",
        )
    column = getattr(spec, "column", None)
    if columns is not None and column is not None and column not in columns:
        _fail(f"{key}.column", column, f"a static categorical column: {', '.join(columns)}")


def _validate_detectors(cfg: DictConfig) -> None:
    """Each detector's parameters against its function's: a name it does not take, or a value
    outside one of its declared choices (``src.detectors.base.options``)."""
    import inspect

    from hydra.utils import get_method

    for name, node in (cfg.get("detectors") or {}).items():
        if node is None:
            continue
        target = node.get("_target_")
        try:
            fn = get_method(target)
        except Exception as e:
            _fail(f"detectors.{name}._target_", target, f"an importable function ({e})")
        accepted = [p for p in inspect.signature(fn).parameters if p != "inputs"]
        for key, value in node.items():
            if key.startswith("_"):
                continue
            if key not in accepted:
                _fail(
                    f"detectors.{name}.{key}",
                    value,
                    f"a parameter of {target}: {', '.join(accepted)}",
                )
            allowed = getattr(fn, "choices", {}).get(key)
            if allowed is not None and value not in allowed:
                _fail(f"detectors.{name}.{key}", value, f"one of {', '.join(map(str, allowed))}")


def _validate_defense(cfg: DictConfig) -> None:
    """Each defense is a known one with known parameters; filter-and-retrain needs the flags of
    a detector that runs; CLP needs channels to prune."""
    import inspect

    from src.defenses.abl import ISOLATION, abl
    from src.defenses.repair import REPAIRS

    defenses = cfg.get("defense") or {}
    for name, node in defenses.items():
        if node is None:
            continue
        if name not in DEFENSES:
            _fail("defense", name, f"defenses from conf/defense/: {', '.join(DEFENSES)}")
        params = {k: v for k, v in node.items() if not str(k).startswith("_")}
        if name == "filter_retrain":
            flagging = [k for k in (cfg.get("detectors") or {}) if k != "attribution"]
            if params.get("detector") not in flagging:
                _fail(
                    "defense.filter_retrain.detector",
                    params.get("detector"),
                    f"a detector that runs in this config: {', '.join(flagging) or 'none'} "
                    "(choose them with detectors=...)",
                )
            continue
        share = params.pop("clean_share", 1.0)
        if not isinstance(share, int | float) or not 0.0 < share <= 1.0:
            _fail(f"defense.{name}.clean_share", share, "a share of the validation split in (0, 1]")
        fn = abl if name == "abl" else REPAIRS[name]
        known = [
            p
            for p in inspect.signature(fn).parameters
            if p not in ("model", "clean", "train", "seed")
        ]
        for key in params:
            if key not in known:
                _fail(
                    f"defense.{name}.{key}",
                    params[key],
                    f"a parameter of {name}: {', '.join(known)}",
                )
        if name == "abl" and params.get("isolation", ISOLATION[0]) not in ISOLATION:
            _fail("defense.abl.isolation", params["isolation"], f"one of {', '.join(ISOLATION)}")
        if name == "clp" and cfg.model.get("name") == "lstm":
            _fail(
                "defense",
                "clp",
                "a defense that applies to the LSTM (CLP prunes channels of linear and "
                "convolutional layers; the LSTM's gates mix every unit): fine_tuning, "
                "fine_pruning, nad, anp, ibau or filter_retrain",
            )


def to_plain(cfg: DictConfig | dict) -> dict:
    """A resolved plain-dict copy (for results.json and cache keys), choices as strings."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
    return dict(cfg)
