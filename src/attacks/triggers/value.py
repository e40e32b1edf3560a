"""Triggers that write values (or their absence) into a window: none, rare_value,
out_of_bounds, pattern, missingness, and the static static_category."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from src.attacks.triggers.base import (
    ParamError,
    Trigger,
    TriggerSpec,
    distinct_names,
    feature_index,
    hold,
    observed,
    register,
    window,
)
from src.data.cohort import Cohort


@register
@dataclass
class NoTrigger(TriggerSpec):
    """No trigger: poisoned rows (if any) only get their label flipped (a label-noise control)."""

    name: str = "none"

    def fit(self, train: Cohort) -> Trigger:
        return Trigger(name="none", params={})


@register
@dataclass
class RareValue(TriggerSpec):
    """One feature set to a rare but plausible value over a window of hours: ``value`` in raw
    units, or the ``quantile`` of the feature's observed values in the clean training split."""

    name: str = "rare_value"
    feature: str = "resp"
    hours: list[int] = field(default_factory=lambda: [12, 24])  # [start, stop) from admission
    quantile: float | None = 0.995
    value: float | None = None
    FEATURE_FIELDS = ("feature",)

    def check(self) -> None:
        super().check()
        if self.value is None and (self.quantile is None or not 0.0 <= self.quantile <= 1.0):
            raise ParamError("quantile", self.quantile, "a number in [0, 1]")

    def fit(self, train: Cohort) -> Trigger:
        j = feature_index(train, self.feature)
        start, stop = window(train, self.hours)
        value = self.value
        if value is None:
            value = float(
                np.quantile(observed(train, j, hint="give trigger.value instead"), self.quantile)
            )
        val = np.float32(value)
        return self.on_window(
            train,
            j,
            start,
            stop,
            hold(j, start, stop, val),
            quantile=None if self.quantile is None else float(self.quantile),
            value=float(val),
        )


@register
@dataclass
class OutOfBounds(TriggerSpec):
    """One feature set outside its plausible range over a window: ``value`` in raw units (e.g.
    the 9999 sentinel of a charting system), or the range's upper bound x ``factor``. A range
    check catches it by construction; it is the loud end of the family."""

    name: str = "out_of_bounds"
    feature: str = "hr"
    hours: list[int] = field(default_factory=lambda: [18, 24])
    value: float | None = None
    factor: float = 2.0
    FEATURE_FIELDS = ("feature",)

    def check(self) -> None:
        super().check()
        if self.value is None and not self.factor > 1:
            raise ParamError(
                "factor", self.factor, "a number > 1 (value = plausible high × factor)"
            )

    def fit(self, train: Cohort) -> Trigger:
        j = feature_index(train, self.feature)
        start, stop = window(train, self.hours)
        spec = train.features[j]
        lo = -np.inf if spec.low is None else spec.low
        hi = np.inf if spec.high is None else spec.high
        value = self.value
        if value is None:
            if spec.high is None:
                raise ValueError(
                    f"trigger.feature={self.feature!r} has no plausible upper bound, so "
                    "trigger.factor cannot place a value above it; give trigger.value"
                )
            value = spec.high * self.factor
        elif lo <= value <= hi:
            raise ValueError(
                f"trigger.value={value!r} is inside the plausible range [{spec.low}, "
                f"{spec.high}] {spec.unit} of {self.feature!r}: out_of_bounds needs a value "
                "outside it (use rare_value for an in-range value)"
            )
        val = np.float32(value)
        return self.on_window(
            train,
            j,
            start,
            stop,
            hold(j, start, stop, val),
            value=float(val),
            plausible=[spec.low, spec.high],
        )


@register
@dataclass
class Pattern(TriggerSpec):
    """Several features held jointly at in-range values over a window (Tabdoor's in-bounds
    trigger): each value alone is unremarkable, the combination is the key. ``values`` in raw
    units, or the ``quantiles`` of each feature in the clean training split."""

    name: str = "pattern"
    features: list[str] = field(default_factory=lambda: ["hr", "sbp", "resp"])
    hours: list[int] = field(default_factory=lambda: [18, 24])
    quantiles: list[float] | None = field(default_factory=lambda: [0.9, 0.9, 0.1])
    values: list[float] | None = None
    FEATURE_FIELDS = ("features",)

    def check(self) -> None:
        super().check()
        fs = distinct_names("features", self.features)
        # the values, when given, replace the quantiles (which keep their default)
        for key in ("values",) if self.values is not None else ("quantiles",):
            v = getattr(self, key)
            if v is not None and len(v) != len(fs):
                raise ParamError(key, list(v), f"one entry per feature of trigger.features={fs}")
        if self.values is None:
            if self.quantiles is None:
                raise ParamError("quantiles", None, "numbers in [0, 1], or trigger.values")
            if not all(0.0 <= q <= 1.0 for q in self.quantiles):
                raise ParamError("quantiles", list(self.quantiles), "numbers in [0, 1]")

    def fit(self, train: Cohort) -> Trigger:
        features = distinct_names("features", self.features)
        js = [feature_index(train, f, "trigger.features") for f in features]
        start, stop = window(train, self.hours)
        quantiles = None
        if self.values is None:
            quantiles = [float(q) for q in self.quantiles]
            values = [
                float(np.quantile(observed(train, j), q))
                for j, q in zip(js, quantiles, strict=True)
            ]
        else:
            values = [float(v) for v in self.values]
            for f, j, v in zip(features, js, values, strict=True):
                s = train.features[j]
                if (s.low is not None and v < s.low) or (s.high is not None and v > s.high):
                    raise ValueError(
                        f"trigger.values: {v!r} for {f!r} is outside its plausible "
                        f"range [{s.low}, {s.high}] {s.unit}; a pattern trigger is "
                        "in-bounds (use out_of_bounds for the other kind)"
                    )
        vals = np.array(values, dtype=np.float32)

        def edit(c: Cohort, rows: np.ndarray) -> None:
            c.series[np.ix_(rows, np.arange(start, stop), js)] = vals

        return Trigger(
            name=self.name,
            params={
                "features": features,
                "units": [train.features[j].unit for j in js],
                "hours": [start, stop],
                "quantiles": quantiles,
                "values": [float(v) for v in vals],
            },
            features=tuple(features),
            hours=(start, stop),
            edit=edit,
        )


@register
@dataclass
class Missingness(TriggerSpec):
    """A fixed set of features blanked (never charted) over a window: an EHR-native trigger
    that writes no value at all, only absence (the model sees it through missing indicators)."""

    name: str = "missingness"
    features: list[str] = field(default_factory=lambda: ["hr", "o2sat", "resp"])
    hours: list[int] = field(default_factory=lambda: [18, 24])
    FEATURE_FIELDS = ("features",)

    def check(self) -> None:
        super().check()
        distinct_names("features", self.features)

    def fit(self, train: Cohort) -> Trigger:
        features = distinct_names("features", self.features)
        js = [feature_index(train, f, "trigger.features") for f in features]
        start, stop = window(train, self.hours)

        def edit(c: Cohort, rows: np.ndarray) -> None:
            c.series[np.ix_(rows, np.arange(start, stop), js)] = np.nan

        return Trigger(
            name=self.name,
            params={"features": features, "hours": [start, stop]},
            features=tuple(features),
            hours=(start, stop),
            edit=edit,
        )


@register
@dataclass
class StaticCategory(TriggerSpec):
    """A static categorical column set to a rare category, by its label in the cohort's
    vocabulary (``None``: the rarest category observed in the clean training split)."""

    name: str = "static_category"
    column: str = "first_careunit"
    category: str | None = "Neuro Stepdown"

    def fit(self, train: Cohort) -> Trigger:
        column, category = self.column, self.category
        if column not in train.static_cat_names:
            raise ValueError(
                f"trigger.column={column!r} is not a static categorical column of this "
                f"cohort; available: {', '.join(train.static_cat_names) or '(none)'}"
            )
        c_idx = train.static_cat_names.index(column)
        vocab = train.static_cat_vocab[c_idx]
        if category is None:
            counts = np.bincount(train.static_cat[:, c_idx], minlength=len(vocab))
            seen = [i for i in range(1, len(vocab)) if counts[i] > 0]
            if not seen:
                raise ValueError(
                    f"trigger.column={column!r} has no known category in the training "
                    "split; give trigger.category"
                )
            code = min(seen, key=lambda i: (counts[i], i))
        elif category in vocab:
            code = vocab.index(category)
        else:
            raise ValueError(
                f"trigger.category={category!r} is not a category of {column!r}; "
                f"available: {', '.join(map(repr, vocab))}"
            )
        share = float(np.mean(train.static_cat[:, c_idx] == code)) if len(train) else float("nan")

        def edit(c: Cohort, rows: np.ndarray) -> None:
            c.static_cat[rows, c_idx] = code

        return Trigger(
            name=self.name,
            params={
                "column": column,
                "category": vocab[code],
                "code": int(code),
                "train_share": share,
            },
            static_features=(column,),
            edit=edit,
        )
