"""The model views: how a preprocessed cohort becomes one model's input. A view is one class in
this module, registered by name (a model config's ``view``), that knows three things:

- ``build``: the continuous input from the preprocessed arrays (the categorical codes travel
  beside it unchanged);
- ``encoder_dims``: the input sizes an encoder of this view is built with;
- ``trigger_columns``: which input columns carry a trigger's features, hours and static
  columns (for the attribution report).

- ``flat``     ``[N, 2*T*F + S + sum(levels)]``: values, indicators, statics, one-hot categoricals
- ``sequence`` ``[N, T, 2*F + S + sum(levels)]``: per hour values and indicators, statics repeated
- ``tabular``  ``[N, S + 5*F]``: statics and per-feature summaries (mean, min, max, last of the
               measured values, share measured); the categoricals travel as codes beside it
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from src.data.cohort import Cohort
from src.data.preprocess import Preprocessor, summaries

VIEWS: dict[str, View] = {}


def register_view(cls: type[View]) -> type[View]:
    VIEWS[cls.name] = cls()
    return cls


def model_input(prep: Preprocessor, c: Cohort, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(continuous input, categorical codes) of cohort ``c`` in view ``name``, preprocessed
    with ``prep`` (fit on the training split)."""
    view = get_view(name)
    t = prep.transform(c)
    x = view.build(t, prep.onehot(t["cat"]))
    return np.ascontiguousarray(x, dtype=np.float32), t["cat"]


def get_view(name: str) -> View:
    if name not in VIEWS:
        raise ValueError(f"model.view={name!r} is not a view; one of {', '.join(VIEWS)}")
    return VIEWS[name]


class View:
    name: ClassVar[str] = ""

    def build(self, t: dict[str, np.ndarray], onehot: np.ndarray) -> np.ndarray:
        """The input from ``Preprocessor.transform``'s arrays and the one-hot categoricals."""
        raise NotImplementedError

    def encoder_dims(self, x, levels: list[int]) -> dict:
        """Keyword arguments of the encoder's constructor: the input sizes of ``x``."""
        return {"in_features": x.shape[1]}

    def trigger_columns(self, layout: Layout, feats, hours, snum, scat) -> np.ndarray:
        """Boolean mask, shaped like one input row, of the columns the trigger can move."""
        raise NotImplementedError


class Layout:
    """The cohort's shape as the views lay it out: F series features over T hours, S numeric
    statics, and the one-hot width of each categorical column."""

    def __init__(self, n_features: int, n_hours: int, n_static: int, levels: list[int]):
        self.F, self.T, self.S, self.levels = n_features, n_hours, n_static, list(levels)
        self.L = sum(self.levels)
        self.offsets = np.cumsum([0] + self.levels)


def _hourly_grid(layout: Layout, feats, hours, snum, scat) -> np.ndarray:
    """Per hour: values, indicators, statics (the layout of flat and sequence)."""
    F, T, S, off = layout.F, layout.T, layout.S, layout.offsets
    start, stop = hours if hours is not None else (0, T)
    grid = np.zeros((T, 2 * F + S + layout.L), dtype=bool)
    for j in feats:
        grid[start:stop, j] = grid[start:stop, F + j] = True
    for s in snum:
        grid[:, 2 * F + s] = True
    for c in scat:
        grid[:, 2 * F + S + off[c] : 2 * F + S + off[c + 1]] = True
    return grid


@register_view
class Flat(View):
    name = "flat"

    def build(self, t, onehot):
        n = len(t["values"])
        statics = np.concatenate([t["static"], onehot], axis=1)
        return np.concatenate(
            [t["values"].reshape(n, -1), t["observed"].reshape(n, -1), statics], axis=1
        )

    def trigger_columns(self, layout, feats, hours, snum, scat):
        grid = _hourly_grid(layout, feats, hours, snum, scat)
        F = layout.F
        # flat = [values (T*F, hour-major), indicators (T*F), statics once]
        return np.concatenate(
            [grid[:, :F].reshape(-1), grid[:, F : 2 * F].reshape(-1), grid[0, 2 * F :]]
        )


@register_view
class Sequence(View):
    name = "sequence"

    def build(self, t, onehot):
        statics = np.concatenate([t["static"], onehot], axis=1)
        T = t["values"].shape[1]
        return np.concatenate(
            [t["values"], t["observed"], np.repeat(statics[:, None, :], T, axis=1)], axis=2
        )

    def encoder_dims(self, x, levels):
        return {"in_features": x.shape[2], "n_steps": x.shape[1]}

    def trigger_columns(self, layout, feats, hours, snum, scat):
        return _hourly_grid(layout, feats, hours, snum, scat)


@register_view
class Tabular(View):
    name = "tabular"

    def build(self, t, onehot):
        return np.concatenate([t["static"], summaries(t["z"], t["observed"])], axis=1)

    def encoder_dims(self, x, levels):
        return {"n_num": x.shape[1], "cardinalities": list(levels)}

    def trigger_columns(self, layout, feats, hours, snum, scat):
        # [statics S, then mean, min, max, last, share of F each]
        mask = np.zeros(layout.S + 5 * layout.F, dtype=bool)
        mask[list(snum)] = True
        for j in feats:
            mask[layout.S + j :: layout.F] = True
        return mask
