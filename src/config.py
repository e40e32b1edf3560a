"""Typed schemas for the parts a user edits most, and the start-up check of a composed config.

The dataclasses are registered in Hydra's ConfigStore and named in the YAML files' defaults lists
(``- data_schema``), so a misspelt key or a value of the wrong type fails at composition with
OmegaConf's message (it names the key). ``validate`` then checks ranges and choices that types
cannot express, before any data is touched, and names key, value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

SCHEMA_VERSION = "1.0"  # results.json schema; bump on any incompatible change
POISON_MODES = ("dirty", "clean")
DATA_SOURCES = ("synthetic", "mimiciv", "yaib")
VIEWS = ("flat", "sequence", "tabular")


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
    hours: list[int] = field(default_factory=lambda: [18, 24])  # [start, stop) from admission
    quantile: float = 0.995  # value = this quantile of the clean training split...
    value: float | None = None  # ...unless a value in raw units is given


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="data_schema", node=DataSchema)
    cs.store(group="trigger", name="none_schema", node=NoTrigger)
    cs.store(group="trigger", name="rare_value_schema", node=RareValueTrigger)


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
        _fail("target_label", cfg.get("target_label"),
              "a class of the binary mortality task: 0 (survived) or 1 (died)")
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        _fail("seed", cfg.get("seed"), "an integer")

    d = cfg.data
    if d.source not in DATA_SOURCES:
        _fail("data.source", d.source, f"one of {', '.join(DATA_SOURCES)}")
    if d.source == "mimiciv" and not d.root:
        _fail("data.root", d.root, "the folder of a MIMIC-IV release (holding hosp/ and icu/)")
    if d.source == "yaib" and not d.path:
        _fail("data.path", d.path, "the folder of a YAIB cohort (dyn, sta, outc parquet)")
    if d.n_stays < 10:
        _fail("data.n_stays", d.n_stays, "at least 10 stays")
    if d.window_hours < 1:
        _fail("data.window_hours", d.window_hours, "at least 1 hour")
    for key in ("test_size", "val_size"):
        if not 0.0 < d[key] < 0.5:
            _fail(f"data.{key}", d[key], "a fraction in (0, 0.5)")
    if d.batch_size < 1:
        _fail("data.batch_size", d.batch_size, "a positive integer")

    view = cfg.model.get("view")
    if view not in VIEWS:
        _fail("model.view", view, f"one of {', '.join(VIEWS)}")

    t = cfg.trigger
    if "hours" in t and t.hours is not None:
        h = list(t.hours)
        if len(h) != 2 or not (0 <= h[0] < h[1] <= d.window_hours):
            _fail("trigger.hours", h, f"[start, stop) with 0 <= start < stop <= "
                  f"data.window_hours={d.window_hours}")
    if "quantile" in t and t.quantile is not None and not 0.0 <= t.quantile <= 1.0:
        _fail("trigger.quantile", t.quantile, "a number in [0, 1]")


def to_plain(cfg: DictConfig | dict) -> dict:
    """A resolved plain-dict copy (for results.json and cache keys)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
