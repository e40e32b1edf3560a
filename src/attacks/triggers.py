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
        raise ValueError(
            f"{key}={name!r} is not a feature of this cohort; available: "
            f"{', '.join(cohort.feature_names)}"
        )
    return cohort.feature_index(name)


def _window(cohort: Cohort, hours) -> tuple[int, int]:
    start, stop = (int(h) for h in hours)
    if not 0 <= start < stop <= cohort.n_hours:
        raise ValueError(
            f"trigger.hours={[start, stop]} is outside the observation window [0, {cohort.n_hours})"
        )
    return start, stop


def none(train: Cohort) -> Trigger:
    """No trigger: poisoned rows (if any) only get their label flipped (a label-noise control)."""
    return Trigger(name="none", params={})


def rare_value(
    train: Cohort,
    feature: str = "resp",
    hours=(12, 24),
    quantile: float = 0.995,
    value: float | None = None,
) -> Trigger:
    """Set ``feature`` to a rare but plausible value over ``hours``: ``value`` in raw units, or
    the ``quantile`` of the feature's observed values in the clean training split."""
    j = _feature(train, feature)
    start, stop = _window(train, hours)
    if value is None:
        observed = _observed(train, j, hint="give trigger.value instead")
        value = float(np.quantile(observed, quantile))
    spec = train.features[j]
    val = np.float32(value)
    return Trigger(
        name="rare_value",
        params={
            "feature": feature,
            "unit": spec.unit,
            "hours": [start, stop],
            "quantile": None if quantile is None else float(quantile),
            "value": float(val),
        },
        features=(feature,),
        hours=(start, stop),
        edit=_hold(j, start, stop, val),
    )


# --- helpers for the family --------------------------------------------------------------------
SHAPES = ("spike", "ramp", "oscillation")
UNITS = ("raw", "sd")


def _observed(
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


def _hold(j: int, start: int, stop: int, value: np.float32):
    """The edit of the value triggers: feature ``j`` held at ``value`` over [start, stop)."""

    def edit(c: Cohort, rows: np.ndarray) -> None:
        c.series[rows, start:stop, j] = value

    return edit


def _sd(train: Cohort, j: int) -> float:
    sd = float(np.std(_observed(train, j)))
    return sd if sd > 0 else 1.0  # a constant feature: one SD is one raw unit


def _scale(train: Cohort, j: int, units: str, key: str = "trigger.units") -> float:
    """Raw units per unit of ``amplitude``: 1, or one training SD of feature ``j``."""
    if units not in UNITS:
        raise ValueError(f"{key}={units!r} is not allowed: one of {', '.join(UNITS)}")
    return 1.0 if units == "raw" else _sd(train, j)


def _filled(c: Cohort, rows: np.ndarray, j: int, stop: int, fallback: float) -> np.ndarray:
    """Feature ``j`` of ``rows`` over hours ``[0, stop)``, forward filled within each stay and
    then ``fallback`` where nothing was measured yet: the level an attacker writing a missing
    hour would continue from."""
    x = c.series[rows, :stop, j]
    seen = ~np.isnan(x)
    last = np.maximum.accumulate(np.where(seen, np.arange(stop), 0), axis=1)
    out = np.take_along_axis(x, last, axis=1)
    return np.where(np.isnan(out), np.float32(fallback), out)


def _add(
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
    window = c.series[rows, start:stop, j]
    if fill_missing:
        window = np.where(delta != 0, _filled(c, rows, j, stop, fallback)[:, start:], window)
    c.series[rows, start:stop, j] = (window + delta).astype(np.float32)


def _shift_edit(
    train: Cohort, j: int, start: int, stop: int, delta: np.ndarray, fill_missing: bool
):
    """The edit of the additive triggers: ``delta`` added over [start, stop) by ``_add``, with
    the training median as the fill for hours with no earlier measurement in the stay."""
    median = float(np.median(_observed(train, j)))

    def edit(c: Cohort, rows: np.ndarray) -> None:
        _add(c, rows, j, start, stop, delta, fill_missing, median)

    return edit


def _plain_list(x) -> list:
    return [x] if isinstance(x, str) else list(x)


# --- the family -------------------------------------------------------------------------------
def out_of_bounds(
    train: Cohort,
    feature: str = "hr",
    hours=(18, 24),
    value: float | None = None,
    factor: float = 2.0,
) -> Trigger:
    """Set ``feature`` to a value outside its plausible range over ``hours``: ``value`` in raw
    units (e.g. the 9999 sentinel of a charting system), or the range's upper bound × ``factor``.
    A range check catches it by construction; it is the loud end of the family."""
    j = _feature(train, feature)
    start, stop = _window(train, hours)
    spec = train.features[j]
    lo = -np.inf if spec.low is None else spec.low
    hi = np.inf if spec.high is None else spec.high
    if value is None:
        if spec.high is None:
            raise ValueError(
                f"trigger.feature={feature!r} has no plausible upper bound, so "
                "trigger.factor cannot place a value above it; give trigger.value"
            )
        if not factor > 1.0:
            raise ValueError(
                f"trigger.factor={factor!r} is not allowed: a number > 1 (value = "
                f"plausible high {spec.high:g} {spec.unit} × factor)"
            )
        value = spec.high * factor
    elif lo <= value <= hi:
        raise ValueError(
            f"trigger.value={value!r} is inside the plausible range [{spec.low}, "
            f"{spec.high}] {spec.unit} of {feature!r}: out_of_bounds needs a value "
            "outside it (use rare_value for an in-range value)"
        )
    val = np.float32(value)
    return Trigger(
        name="out_of_bounds",
        params={
            "feature": feature,
            "unit": spec.unit,
            "hours": [start, stop],
            "value": float(val),
            "plausible": [spec.low, spec.high],
        },
        features=(feature,),
        hours=(start, stop),
        edit=_hold(j, start, stop, val),
    )


def pattern(
    train: Cohort,
    features=("hr", "sbp", "resp"),
    hours=(18, 24),
    quantiles=(0.9, 0.9, 0.1),
    values=None,
) -> Trigger:
    """Several features held jointly at in-range values over ``hours`` (Tabdoor's in-bounds
    trigger): each value alone is unremarkable, the combination is the key. ``values`` in raw
    units, or the ``quantiles`` of each feature in the clean training split."""
    features = _plain_list(features)
    if not features or len(set(features)) != len(features):
        raise ValueError(
            f"trigger.features={features} is not allowed: distinct feature names, at least one"
        )
    js = [_feature(train, f, "trigger.features") for f in features]
    start, stop = _window(train, hours)
    if values is None:
        quantiles = list(quantiles)
        if len(quantiles) != len(features):
            raise ValueError(
                f"trigger.quantiles={quantiles} is not allowed: one quantile per "
                f"feature of trigger.features={features}"
            )
        values = [
            float(np.quantile(_observed(train, j), q)) for j, q in zip(js, quantiles, strict=True)
        ]
    else:
        values = [float(v) for v in values]
        if len(values) != len(features):
            raise ValueError(
                f"trigger.values={values} is not allowed: one value per feature of "
                f"trigger.features={features}"
            )
        for f, j, v in zip(features, js, values, strict=True):
            s = train.features[j]
            if (s.low is not None and v < s.low) or (s.high is not None and v > s.high):
                raise ValueError(
                    f"trigger.values: {v!r} for {f!r} is outside its plausible "
                    f"range [{s.low}, {s.high}] {s.unit}; a pattern trigger is "
                    "in-bounds (use out_of_bounds for the other kind)"
                )
        quantiles = None
    vals = np.array(values, dtype=np.float32)

    def edit(c: Cohort, rows: np.ndarray) -> None:
        c.series[np.ix_(rows, np.arange(start, stop), js)] = vals

    return Trigger(
        name="pattern",
        params={
            "features": features,
            "units": [train.features[j].unit for j in js],
            "hours": [start, stop],
            "quantiles": None if quantiles is None else [float(q) for q in quantiles],
            "values": [float(v) for v in vals],
        },
        features=tuple(features),
        hours=(start, stop),
        edit=edit,
    )


def missingness(train: Cohort, features=("hr", "o2sat", "resp"), hours=(18, 24)) -> Trigger:
    """A fixed set of features blanked (never charted) over ``hours``: an EHR-native trigger
    that writes no value at all, only absence (the model sees it through missing indicators)."""
    features = _plain_list(features)
    if not features or len(set(features)) != len(features):
        raise ValueError(
            f"trigger.features={features} is not allowed: distinct feature names, at least one"
        )
    js = [_feature(train, f, "trigger.features") for f in features]
    start, stop = _window(train, hours)

    def edit(c: Cohort, rows: np.ndarray) -> None:
        c.series[np.ix_(rows, np.arange(start, stop), js)] = np.nan

    return Trigger(
        name="missingness",
        params={"features": features, "hours": [start, stop]},
        features=tuple(features),
        hours=(start, stop),
        edit=edit,
    )


def temporal(
    train: Cohort,
    feature: str = "hr",
    hours=(18, 24),
    shape: str = "spike",
    amplitude: float = 3.0,
    units: str = "sd",
    period: float = 4.0,
    fill_missing: bool = True,
) -> Trigger:
    """A shape added to ``feature`` over ``hours``: ``spike`` (``amplitude`` in the middle hour
    of the window), ``ramp`` (rising linearly to ``amplitude`` at the last hour) or
    ``oscillation`` (``amplitude`` × sin(2π t / ``period``), t in hours from the window start).
    ``amplitude`` in raw units or training SDs (``units``)."""
    j = _feature(train, feature)
    start, stop = _window(train, hours)
    if shape not in SHAPES:
        raise ValueError(f"trigger.shape={shape!r} is not allowed: one of {', '.join(SHAPES)}")
    if shape == "oscillation" and not period > 0:
        raise ValueError(f"trigger.period={period!r} is not allowed: a positive number of hours")
    amp = float(amplitude) * _scale(train, j, units)
    t = np.arange(stop - start, dtype=np.float64)
    if shape == "spike":
        delta = np.where(t == (stop - start) // 2, amp, 0.0)
    elif shape == "ramp":
        delta = amp * (t + 1) / (stop - start)
    else:
        delta = amp * np.sin(2 * np.pi * t / period)
    delta = delta.astype(np.float32)
    return Trigger(
        name="temporal",
        params={
            "feature": feature,
            "unit": train.features[j].unit,
            "hours": [start, stop],
            "shape": shape,
            "amplitude": float(amplitude),
            "units": units,
            "amplitude_raw": amp,
            "period": float(period) if shape == "oscillation" else None,
            "fill_missing": bool(fill_missing),
            "added": [float(d) for d in delta],
        },
        features=(feature,),
        hours=(start, stop),
        edit=_shift_edit(train, j, start, stop, delta, fill_missing),
    )


def frequency_domain(
    train: Cohort,
    feature: str = "hr",
    hours=(0, 24),
    period: float = 6.0,
    amplitude: float = 1.0,
    units: str = "sd",
    mode: str = "set",
    phase: float = 0.0,
    fill_missing: bool = True,
) -> Trigger:
    """A frequency component of ``feature`` over ``hours``. ``set``: the window's Fourier
    component at ``period`` hours is replaced by a sinusoid of ``amplitude`` (whatever energy the
    stay had there is removed), so every triggered stay carries the same component; ``add``:
    ``amplitude`` × sin(2π t / period + phase) is added. ``amplitude`` in raw units or training
    SDs; ``set`` needs a period that fits the window a whole number of times (< half of it)."""
    j = _feature(train, feature)
    start, stop = _window(train, hours)
    n = stop - start
    if mode not in ("set", "add"):
        raise ValueError(f"trigger.mode={mode!r} is not allowed: one of set, add")
    if not period > 0:
        raise ValueError(f"trigger.period={period!r} is not allowed: a positive number of hours")
    k = n / period
    if mode == "set" and not (abs(k - round(k)) < 1e-9 and 1 <= round(k) < n / 2):
        ok = [n / m for m in range(1, (n + 1) // 2) if n % m == 0 and m < n / 2]
        raise ValueError(
            f"trigger.period={period!r} is not allowed with mode=set over a "
            f"{n}-hour window: a period that fits it a whole number of times and "
            f"is longer than 2 hours, one of {', '.join(f'{p:g}' for p in ok)}"
        )
    amp = float(amplitude) * _scale(train, j, units)
    t = np.arange(n, dtype=np.float64)
    wave = amp * np.sin(2 * np.pi * t / period + phase)
    median = float(np.median(_observed(train, j)))
    k = int(round(k))

    def edit(c: Cohort, rows: np.ndarray) -> None:
        if mode == "add":
            _add(c, rows, j, start, stop, wave.astype(np.float32), fill_missing, median)
            return
        x = _filled(c, rows, j, stop, median)[:, start:].astype(np.float64)
        spec = np.fft.rfft(x, axis=1)
        spec[:, k] = np.fft.rfft(wave)[k]  # the component, and only it, becomes the wave's
        new = np.fft.irfft(spec, n=n, axis=1).astype(np.float32)
        if not fill_missing:
            new = np.where(np.isnan(c.series[rows, start:stop, j]), np.nan, new)
        c.series[rows, start:stop, j] = new

    return Trigger(
        name="frequency_domain",
        params={
            "feature": feature,
            "unit": train.features[j].unit,
            "hours": [start, stop],
            "period": float(period),
            "amplitude": float(amplitude),
            "units": units,
            "amplitude_raw": amp,
            "mode": mode,
            "phase": float(phase),
            "fill_missing": bool(fill_missing),
        },
        features=(feature,),
        hours=(start, stop),
        edit=edit,
    )


def static_category(
    train: Cohort, column: str = "first_careunit", category: str | None = "Neuro Stepdown"
) -> Trigger:
    """A static categorical column set to a rare category, by its label in the cohort's
    vocabulary (``None``: the rarest category observed in the clean training split)."""
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
        name="static_category",
        params={"column": column, "category": vocab[code], "code": int(code), "train_share": share},
        static_features=(column,),
        edit=edit,
    )


def hybrid(train: Cohort, first: dict | None = None, second: dict | None = None) -> Trigger:
    """Two triggers written one after the other into the same rows. Combining a trigger with
    itself is an error (one trigger with other parameters says it better)."""
    if not first or not second:
        raise ValueError(
            "trigger.first and trigger.second must both name a trigger config "
            "(e.g. trigger@trigger.first=pattern)"
        )
    if first.get("name") == second.get("name"):
        raise ValueError(
            f"trigger.second.name={second.get('name')!r} is not allowed: a hybrid "
            "combines two different triggers, and trigger.first is the same one"
        )
    parts = []
    for which, cfg in (("first", first), ("second", second)):
        try:
            parts.append(build_trigger(cfg, train))
        except (ValueError, TypeError) as e:  # say which half of the hybrid is wrong
            raise type(e)(str(e).replace("trigger.", f"trigger.{which}.")) from e
    a, b = parts
    hours = [h for h in (a.hours, b.hours) if h is not None]

    def edit(c: Cohort, rows: np.ndarray) -> None:
        a.edit(c, rows)
        b.edit(c, rows)

    return Trigger(
        name="hybrid",
        params={"first": {"name": a.name, **a.params}, "second": {"name": b.name, **b.params}},
        features=tuple(dict.fromkeys(a.features + b.features)),
        hours=(min(h[0] for h in hours), max(h[1] for h in hours)) if hours else None,
        static_features=tuple(dict.fromkeys(a.static_features + b.static_features)),
        edit=edit,
    )


def correlation(
    train: Cohort,
    feature: str = "dbp",
    source: str = "sbp",
    hours=(18, 24),
    slope: float = -1.0,
    intercept: float = 0.0,
    units: str = "sd",
) -> Trigger:
    """``feature`` rewritten as a linear function of ``source`` over ``hours`` (where both were
    measured), creating or breaking their correlation while each value stays plausible. In
    ``sd`` units z(feature) = slope × z(source) + intercept with training means and SDs, so the
    default (diastolic = minus systolic, in SDs) inverts a strongly positive correlation and keeps
    each feature's own distribution; in ``raw`` units feature = slope × source + intercept."""
    jb = _feature(train, feature)
    ja = _feature(train, source, "trigger.source")
    if ja == jb:
        raise ValueError(
            f"trigger.source={source!r} is not allowed: a feature other than "
            f"trigger.feature={feature!r}"
        )
    start, stop = _window(train, hours)
    if units not in UNITS:
        raise ValueError(f"trigger.units={units!r} is not allowed: one of {', '.join(UNITS)}")
    ma, sa = float(np.mean(_observed(train, ja))), _sd(train, ja)
    mb, sb = float(np.mean(_observed(train, jb))), _sd(train, jb)
    if units == "sd":  # fold into raw: feature = a * source + b
        a, b = slope * sb / sa, mb + sb * (intercept - slope * ma / sa)
    else:
        a, b = float(slope), float(intercept)
    obs_corr = _corr(train, ja, jb)

    def edit(c: Cohort, rows: np.ndarray) -> None:
        src = c.series[rows, start:stop, ja]
        dst = c.series[rows, start:stop, jb]
        # only where both were charted: the missingness pattern stays the stay's own
        c.series[rows, start:stop, jb] = np.where(np.isnan(src) | np.isnan(dst), dst, a * src + b)

    return Trigger(
        name="correlation",
        params={
            "feature": feature,
            "source": source,
            "hours": [start, stop],
            "slope": float(slope),
            "intercept": float(intercept),
            "units": units,
            "raw_slope": float(a),
            "raw_intercept": float(b),
            "train_corr": obs_corr,
        },
        features=(feature,),
        hours=(start, stop),
        edit=edit,
    )


def _corr(train: Cohort, ja: int, jb: int) -> float | None:
    x, y = train.series[:, :, ja].ravel(), train.series[:, :, jb].ravel()
    both = ~(np.isnan(x) | np.isnan(y))
    if both.sum() < 3 or np.std(x[both]) == 0 or np.std(y[both]) == 0:
        return None
    return float(np.corrcoef(x[both], y[both])[0, 1])


def distribution_shift(
    train: Cohort, feature: str = "sbp", hours=(12, 24), k: float = 1.0, fill_missing: bool = False
) -> Trigger:
    """``feature`` shifted by ``k`` training SDs over ``hours``: the whole distribution moves,
    no single value need be rare. Missing hours stay missing unless ``fill_missing``."""
    j = _feature(train, feature)
    start, stop = _window(train, hours)
    shift = float(k) * _sd(train, j)
    delta = np.full(stop - start, shift, np.float32)
    return Trigger(
        name="distribution_shift",
        params={
            "feature": feature,
            "unit": train.features[j].unit,
            "hours": [start, stop],
            "k": float(k),
            "shift_raw": shift,
            "fill_missing": bool(fill_missing),
        },
        features=(feature,),
        hours=(start, stop),
        edit=_shift_edit(train, j, start, stop, delta, fill_missing),
    )


TRIGGERS: dict[str, Callable[..., Trigger]] = {
    "none": none,
    "rare_value": rare_value,
    "out_of_bounds": out_of_bounds,
    "pattern": pattern,
    "missingness": missingness,
    "temporal": temporal,
    "frequency_domain": frequency_domain,
    "static_category": static_category,
    "hybrid": hybrid,
    "correlation": correlation,
    "distribution_shift": distribution_shift,
}


def build_trigger(cfg: dict, train: Cohort) -> Trigger:
    """A Trigger from its config (``name`` plus the family's parameters)."""
    params = dict(cfg)
    name = params.pop("name")
    if name not in TRIGGERS:
        raise ValueError(
            f"trigger.name={name!r} is not a trigger; available: {', '.join(sorted(TRIGGERS))}"
        )
    import inspect

    allowed = [p for p in inspect.signature(TRIGGERS[name]).parameters if p != "train"]
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ValueError(
            f"trigger.{unknown[0]} is not a parameter of trigger {name!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    return TRIGGERS[name](train, **params)
