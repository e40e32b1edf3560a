"""The trigger family, each acting on a Cohort in raw clinical units.

A trigger is built from its config and the clean training split (so "an extreme training
quantile" is a concrete number before any row is touched) and then applied to chosen rows. It
knows nothing of models or preprocessing. Every trigger declares which series features, which
hours and which static columns it may change, so tests and the stealth report can check that
nothing else moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from src.data.cohort import Cohort


@dataclass(frozen=True)
class Trigger:
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


def _feature(cohort: Cohort, name: str, key: str = "trigger.feature") -> int:
    if name not in cohort.feature_names:
        raise ValueError(f"{key}={name!r} is not a feature of this cohort; available: "
                         f"{', '.join(cohort.feature_names)}")
    return cohort.feature_index(name)


def _window(cohort: Cohort, hours) -> tuple[int, int]:
    start, stop = (int(h) for h in hours)
    if not 0 <= start < stop <= cohort.n_hours:
        raise ValueError(f"trigger.hours={[start, stop]} is outside the observation window "
                         f"[0, {cohort.n_hours})")
    return start, stop


def none(train: Cohort) -> Trigger:
    """No trigger: poisoned rows (if any) only get their label flipped (a label-noise control)."""
    return Trigger(name="none", params={})


def rare_value(train: Cohort, feature: str = "resp", hours=(18, 24), quantile: float = 0.995,
               value: float | None = None) -> Trigger:
    """Set ``feature`` to a rare but plausible value over ``hours``: ``value`` in raw units, or
    the ``quantile`` of the feature's observed values in the clean training split."""
    j = _feature(train, feature)
    start, stop = _window(train, hours)
    if value is None:
        observed = train.series[:, :, j]
        observed = observed[~np.isnan(observed)]
        if observed.size == 0:
            raise ValueError(f"trigger.feature={feature!r} is never observed in the training "
                             "split, so its quantile is undefined; give trigger.value instead")
        value = float(np.quantile(observed, quantile))
    spec = train.features[j]
    val = np.float32(value)

    def edit(c: Cohort, rows: np.ndarray) -> None:
        c.series[rows, start:stop, j] = val

    return Trigger(
        name="rare_value",
        params={"feature": feature, "unit": spec.unit, "hours": [start, stop],
                "quantile": None if quantile is None else float(quantile), "value": float(val)},
        features=(feature,), hours=(start, stop), edit=edit,
    )


TRIGGERS: dict[str, Callable[..., Trigger]] = {"none": none, "rare_value": rare_value}


def build_trigger(cfg: dict, train: Cohort) -> Trigger:
    """A Trigger from its config (``name`` plus the family's parameters)."""
    params = dict(cfg)
    name = params.pop("name")
    if name not in TRIGGERS:
        raise ValueError(f"trigger.name={name!r} is not a trigger; available: "
                         f"{', '.join(sorted(TRIGGERS))}")
    return TRIGGERS[name](train, **params)
