"""Triggers that move a feature's own values over a window: temporal shapes, a frequency
component, a distribution shift, and a correlation between two features."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from src.attacks.triggers.base import (
    SHAPES,
    UNITS,
    ParamError,
    Trigger,
    TriggerSpec,
    add,
    choice,
    feature_index,
    filled,
    observed,
    register,
    scale,
    shift_edit,
    train_sd,
    window,
)
from src.data.cohort import Cohort


@register
@dataclass
class Temporal(TriggerSpec):
    """A shape added to one feature over a window: ``spike`` (``amplitude`` in the middle hour),
    ``ramp`` (rising linearly to ``amplitude`` at the last hour) or ``oscillation``
    (``amplitude`` x sin(2 pi t / ``period``), t in hours from the window start). ``amplitude``
    in raw units or training SDs (``units``)."""

    name: str = "temporal"
    feature: str = "hr"
    hours: list[int] = field(default_factory=lambda: [18, 24])
    shape: str = "spike"  # spike | ramp | oscillation
    amplitude: float = 3.0
    units: str = "sd"  # raw | sd (training standard deviations)
    period: float = 4.0  # hours, for oscillation
    fill_missing: bool = True  # missing hours continue from the last value, then get the shape
    FEATURE_FIELDS = ("feature",)

    def check(self) -> None:
        super().check()
        choice("shape", self.shape, SHAPES)
        choice("units", self.units, UNITS)
        if not self.period > 0:
            raise ParamError("period", self.period, "a positive number of hours")

    def fit(self, train: Cohort) -> Trigger:
        j = feature_index(train, self.feature)
        start, stop = window(train, self.hours)
        amp = float(self.amplitude) * scale(train, j, self.units)
        t = np.arange(stop - start, dtype=np.float64)
        if self.shape == "spike":
            delta = np.where(t == (stop - start) // 2, amp, 0.0)
        elif self.shape == "ramp":
            delta = amp * (t + 1) / (stop - start)
        else:
            delta = amp * np.sin(2 * np.pi * t / self.period)
        delta = delta.astype(np.float32)
        return self.on_window(
            train,
            j,
            start,
            stop,
            shift_edit(train, j, start, stop, delta, self.fill_missing),
            shape=self.shape,
            amplitude=float(self.amplitude),
            units=self.units,
            amplitude_raw=amp,
            period=float(self.period) if self.shape == "oscillation" else None,
            fill_missing=bool(self.fill_missing),
            added=[float(d) for d in delta],
        )


@register
@dataclass
class FrequencyDomain(TriggerSpec):
    """A frequency component of one feature over a window. ``set``: the window's Fourier
    component at ``period`` hours is replaced by a sinusoid of ``amplitude`` (whatever energy the
    stay had there is removed), so every triggered stay carries the same component; ``add``:
    ``amplitude`` x sin(2 pi t / period + phase) is added. ``amplitude`` in raw units or
    training SDs; ``set`` needs a period that fits the window a whole number of times (< half of
    it)."""

    name: str = "frequency_domain"
    feature: str = "hr"
    hours: list[int] = field(default_factory=lambda: [0, 24])
    period: float = 6.0  # hours
    amplitude: float = 1.0
    units: str = "sd"  # raw | sd
    mode: str = "set"  # set: replace the component at period; add: add the sinusoid
    phase: float = 0.0  # radians
    fill_missing: bool = True
    FEATURE_FIELDS = ("feature",)

    def check(self) -> None:
        super().check()
        choice("units", self.units, UNITS)
        choice("mode", self.mode, ("set", "add"))
        if not self.period > 0:
            raise ParamError("period", self.period, "a positive number of hours")
        n = self.hours[1] - self.hours[0]
        k = n / self.period
        if self.mode == "set" and not (abs(k - round(k)) < 1e-9 and 1 <= round(k) < n / 2):
            ok = [n / m for m in range(1, (n + 1) // 2) if n % m == 0 and m < n / 2]
            raise ValueError(
                f"trigger.period={self.period!r} is not allowed with mode=set over a "
                f"{n}-hour window: a period that fits it a whole number of times and "
                f"is longer than 2 hours, one of {', '.join(f'{p:g}' for p in ok)}"
            )

    def fit(self, train: Cohort) -> Trigger:
        j = feature_index(train, self.feature)
        start, stop = window(train, self.hours)
        n = stop - start
        mode, period, fill_missing = self.mode, self.period, self.fill_missing
        amp = float(self.amplitude) * scale(train, j, self.units)
        t = np.arange(n, dtype=np.float64)
        wave = amp * np.sin(2 * np.pi * t / period + self.phase)
        median = float(np.median(observed(train, j)))
        k = int(round(n / period))

        def edit(c: Cohort, rows: np.ndarray) -> None:
            if mode == "add":
                add(c, rows, j, start, stop, wave.astype(np.float32), fill_missing, median)
                return
            x = filled(c, rows, j, stop, median)[:, start:].astype(np.float64)
            spec = np.fft.rfft(x, axis=1)
            spec[:, k] = np.fft.rfft(wave)[k]  # the component, and only it, becomes the wave's
            new = np.fft.irfft(spec, n=n, axis=1).astype(np.float32)
            if not fill_missing:
                new = np.where(np.isnan(c.series[rows, start:stop, j]), np.nan, new)
            c.series[rows, start:stop, j] = new

        return self.on_window(
            train,
            j,
            start,
            stop,
            edit,
            period=float(period),
            amplitude=float(self.amplitude),
            units=self.units,
            amplitude_raw=amp,
            mode=mode,
            phase=float(self.phase),
            fill_missing=bool(fill_missing),
        )


@register
@dataclass
class Correlation(TriggerSpec):
    """``feature`` rewritten as a linear function of ``source`` over a window (where both were
    measured), creating or breaking their correlation while each value stays plausible. In
    ``sd`` units z(feature) = slope x z(source) + intercept with training means and SDs, so the
    default (diastolic = minus systolic, in SDs) inverts a strongly positive correlation and
    keeps each feature's own distribution; in ``raw`` units feature = slope x source +
    intercept."""

    name: str = "correlation"
    feature: str = "dbp"  # the feature rewritten
    source: str = "sbp"  # the feature it is made a function of
    hours: list[int] = field(default_factory=lambda: [18, 24])
    slope: float = -1.0
    intercept: float = 0.0
    units: str = "sd"  # sd | raw
    FEATURE_FIELDS = ("feature", "source")

    def check(self) -> None:
        super().check()
        choice("units", self.units, UNITS)
        if self.feature == self.source:
            raise ParamError(
                "source", self.source, f"a feature other than trigger.feature={self.feature!r}"
            )

    def fit(self, train: Cohort) -> Trigger:
        jb = feature_index(train, self.feature)
        ja = feature_index(train, self.source, "trigger.source")
        start, stop = window(train, self.hours)
        slope, intercept = self.slope, self.intercept
        ma, sa = float(np.mean(observed(train, ja))), train_sd(train, ja)
        mb, sb = float(np.mean(observed(train, jb))), train_sd(train, jb)
        if self.units == "sd":  # fold into raw: feature = a * source + b
            a, b = slope * sb / sa, mb + sb * (intercept - slope * ma / sa)
        else:
            a, b = float(slope), float(intercept)
        obs_corr = _corr(train, ja, jb)

        def edit(c: Cohort, rows: np.ndarray) -> None:
            src = c.series[rows, start:stop, ja]
            dst = c.series[rows, start:stop, jb]
            # only where both were charted: the missingness pattern stays the stay's own
            c.series[rows, start:stop, jb] = np.where(
                np.isnan(src) | np.isnan(dst), dst, a * src + b
            )

        return Trigger(
            name=self.name,
            params={
                "feature": self.feature,
                "source": self.source,
                "hours": [start, stop],
                "slope": float(slope),
                "intercept": float(intercept),
                "units": self.units,
                "raw_slope": float(a),
                "raw_intercept": float(b),
                "train_corr": obs_corr,
            },
            features=(self.feature,),
            hours=(start, stop),
            edit=edit,
        )


def _corr(train: Cohort, ja: int, jb: int) -> float | None:
    x, y = train.series[:, :, ja].ravel(), train.series[:, :, jb].ravel()
    both = ~(np.isnan(x) | np.isnan(y))
    if both.sum() < 3 or np.std(x[both]) == 0 or np.std(y[both]) == 0:
        return None
    return float(np.corrcoef(x[both], y[both])[0, 1])


@register
@dataclass
class DistributionShift(TriggerSpec):
    """One feature shifted by ``k`` training SDs over a window: the whole distribution moves, no
    single value need be rare. Missing hours stay missing unless ``fill_missing``."""

    name: str = "distribution_shift"
    feature: str = "sbp"
    hours: list[int] = field(default_factory=lambda: [12, 24])
    k: float = 1.0
    fill_missing: bool = False
    FEATURE_FIELDS = ("feature",)

    def fit(self, train: Cohort) -> Trigger:
        j = feature_index(train, self.feature)
        start, stop = window(train, self.hours)
        shift = float(self.k) * train_sd(train, j)
        delta = np.full(stop - start, shift, np.float32)
        return self.on_window(
            train,
            j,
            start,
            stop,
            shift_edit(train, j, start, stop, delta, self.fill_missing),
            k=float(self.k),
            shift_raw=shift,
            fill_missing=bool(self.fill_missing),
        )
