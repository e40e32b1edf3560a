"""What a trigger is, how one is registered, and the helpers the family shares.

A trigger is two objects:

- a ``TriggerSpec``: a dataclass whose fields are the trigger's parameters, checked in
  ``check`` (called on construction, so before any data is touched), registered with
  ``@register`` (which also stores it in Hydra's ConfigStore as ``trigger/<name>_schema``);
- the ``Trigger`` that ``spec.fit(clean_train)`` returns: concrete values (a training quantile
  turned into a number), the cells it may change, and the edit that writes it into rows.

Adding a trigger is one such class (in a module of this package, or anywhere importable) and
one YAML in ``conf/trigger/`` whose ``_target_`` names the class.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from src.data.cohort import Cohort

SHAPES = ("spike", "ramp", "oscillation")
UNITS = ("raw", "sd")


@dataclass(frozen=True)
class Trigger:
    """A fitted trigger: resolved parameters and the edit that writes it into chosen rows."""

    name: str
    params: dict  # resolved parameters (concrete values), JSON-able, for results.json
    features: tuple[str, ...] = ()  # series features it may change
    hours: tuple[int, int] | None = None  # [start, stop) hours it may change
    static_features: tuple[str, ...] = ()  # static columns it may change
    edit: Callable[[Cohort, np.ndarray], None] = field(default=lambda c, r: None, repr=False)

    def apply(self, cohort: Cohort, rows: np.ndarray | None = None) -> Cohort:
        """A copy of ``cohort`` with the trigger written into ``rows`` (all rows if None)."""
        out = cohort.copy()
        rows = np.arange(len(out)) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.size:
            self.edit(out, rows)
        return out


class ParamError(ValueError):
    """A trigger parameter that is not allowed; the message names key, value and what is."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"trigger.{key}={value!r} is not allowed: {allowed}")


@dataclass
class TriggerSpec:
    """The parameters of one trigger. Subclasses add fields (with defaults) and override
    ``check`` (calling ``super().check()``) and ``fit``."""

    _target_: str = ""  # the class, as Hydra names it in the YAML
    name: str = ""
    # fields whose values are feature names / a static column: the start-up check looks them up
    FEATURE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Every parameter that can be judged without data. Here: numbers are finite (inf or nan
        written into a record would silently be another trigger), hours are [start, stop)."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            values = v if isinstance(v, list | tuple) else [v]
            for x in values:
                if isinstance(x, int | float) and not isinstance(x, bool) and not math.isfinite(x):
                    raise ParamError(f.name, v, "finite numbers (no inf or nan)")
        hours = getattr(self, "hours", None)
        if hours is not None:
            h = list(hours)
            if len(h) != 2 or not all(isinstance(x, int) for x in h) or not 0 <= h[0] < h[1]:
                raise ParamError("hours", h, "[start, stop) whole hours, 0 <= start < stop")

    def fit(self, train: Cohort) -> Trigger:
        raise NotImplementedError

    def on_window(self, train: Cohort, j: int, start: int, stop: int, edit, **params) -> Trigger:
        """The fitted trigger of one series feature (``self.feature``, index ``j``) over hours
        [start, stop): it declares exactly that feature and window, and its parameters begin
        with the feature, its unit and the hours."""
        return Trigger(
            name=self.name,
            params={
                "feature": self.feature,
                "unit": train.features[j].unit,
                "hours": [start, stop],
                **params,
            },
            features=(self.feature,),
            hours=(start, stop),
            edit=edit,
        )

    @classmethod
    def parameters(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name not in ("_target_", "name")]


REGISTRY: dict[str, type[TriggerSpec]] = {}


def register(cls: type[TriggerSpec]) -> type[TriggerSpec]:
    """Make a trigger known by its ``name``: to ``build_trigger`` and, as the typed schema
    ``trigger/<name>_schema``, to Hydra's ConfigStore (a misspelt key then fails at composition)."""
    from hydra.core.config_store import ConfigStore

    name = cls.__dataclass_fields__["name"].default
    if not name:
        raise TypeError(f"{cls.__name__} needs a default for its name field")
    REGISTRY[name] = cls
    ConfigStore.instance().store(group="trigger", name=f"{name}_schema", node=cls)
    return cls


def spec_class(cfg: dict) -> type[TriggerSpec]:
    """The class of a trigger config: its ``_target_`` if it has one, else its registered
    ``name``."""
    target = cfg.get("_target_")
    if target:
        from hydra.utils import get_class

        cls = get_class(target)
        if not (isinstance(cls, type) and issubclass(cls, TriggerSpec)):
            raise ValueError(f"trigger._target_={target!r} is not a TriggerSpec")
        return cls
    name = cfg.get("name")
    if name not in REGISTRY:
        raise ValueError(
            f"trigger.name={name!r} is not a trigger; available: {', '.join(sorted(REGISTRY))}"
        )
    return REGISTRY[name]


def spec_from_config(cfg) -> TriggerSpec:
    """The checked TriggerSpec of a trigger config (a dict or DictConfig)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, TriggerSpec):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cls = spec_class(cfg)
    params = {k: v for k, v in cfg.items() if k != "_target_"}
    allowed = cls.parameters()
    unknown = [k for k in params if k not in (*allowed, "name")]
    if unknown:
        name = params.get("name")
        raise ValueError(
            f"trigger.{unknown[0]} is not a parameter of trigger {name!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    return cls(**params)


def build_trigger(cfg, train: Cohort) -> Trigger:
    """A fitted Trigger from its config (``name`` or ``_target_`` plus the parameters)."""
    return spec_from_config(cfg).fit(train)


# --- helpers for the family --------------------------------------------------------------------
def feature_index(cohort: Cohort, name: str, key: str = "trigger.feature") -> int:
    if name not in cohort.feature_names:
        raise ValueError(
            f"{key}={name!r} is not a feature of this cohort; available: "
            f"{', '.join(cohort.feature_names)}"
        )
    return cohort.feature_index(name)


def window(cohort: Cohort, hours) -> tuple[int, int]:
    start, stop = (int(h) for h in hours)
    if not 0 <= start < stop <= cohort.n_hours:
        raise ValueError(
            f"trigger.hours={[start, stop]} is outside the observation window [0, {cohort.n_hours})"
        )
    return start, stop


def observed(
    train: Cohort, j: int, hint: str = "choose another feature or give values in raw units"
) -> np.ndarray:
    x = train.series[:, :, j]
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError(
            f"trigger.feature={train.feature_names[j]!r} is never observed in the "
            f"training split, so its training statistics are undefined; {hint}"
        )
    return x


def hold(j: int, start: int, stop: int, value: np.float32):
    """The edit of the value triggers: feature ``j`` held at ``value`` over [start, stop)."""

    def edit(c: Cohort, rows: np.ndarray) -> None:
        c.series[rows, start:stop, j] = value

    return edit


def train_sd(train: Cohort, j: int) -> float:
    sd = float(np.std(observed(train, j)))
    return sd if sd > 0 else 1.0  # a constant feature: one SD is one raw unit


def scale(train: Cohort, j: int, units: str) -> float:
    """Raw units per unit of ``amplitude``: 1, or one training SD of feature ``j``."""
    return 1.0 if units == "raw" else train_sd(train, j)


def filled(c: Cohort, rows: np.ndarray, j: int, stop: int, fallback: float) -> np.ndarray:
    """Feature ``j`` of ``rows`` over hours ``[0, stop)``, forward filled within each stay and
    then ``fallback`` where nothing was measured yet: the level an attacker writing a missing
    hour would continue from."""
    x = c.series[rows, :stop, j]
    seen = ~np.isnan(x)
    last = np.maximum.accumulate(np.where(seen, np.arange(stop), 0), axis=1)
    out = np.take_along_axis(x, last, axis=1)
    return np.where(np.isnan(out), np.float32(fallback), out)


def add(
    c: Cohort,
    rows: np.ndarray,
    j: int,
    start: int,
    stop: int,
    delta: np.ndarray,
    fill_missing: bool,
    fallback: float,
) -> None:
    """Add ``delta`` (per hour of the window) to feature ``j``. A missing hour where ``delta`` is
    not zero is filled from the stay's last value first when ``fill_missing`` (so every triggered
    stay carries the whole shape), else stays missing; hours where ``delta`` is zero never change."""
    win = c.series[rows, start:stop, j]
    if fill_missing:
        win = np.where(delta != 0, filled(c, rows, j, stop, fallback)[:, start:], win)
    c.series[rows, start:stop, j] = (win + delta).astype(np.float32)


def shift_edit(train: Cohort, j: int, start: int, stop: int, delta: np.ndarray, fill_missing: bool):
    """The edit of the additive triggers: ``delta`` added over [start, stop) by ``add``, with
    the training median as the fill for hours with no earlier measurement in the stay."""
    median = float(np.median(observed(train, j)))

    def edit(c: Cohort, rows: np.ndarray) -> None:
        add(c, rows, j, start, stop, delta, fill_missing, median)

    return edit


def distinct_names(key: str, names) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    if not names or len(set(names)) != len(names):
        raise ParamError(key, names, "a list of distinct feature names, at least one")
    return names


def choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ParamError(key, value, f"one of {', '.join(allowed)}")
