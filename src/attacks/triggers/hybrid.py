"""A hybrid: two different triggers written into the same rows, one after the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from src.attacks.triggers.base import ParamError, Trigger, TriggerSpec, register, spec_from_config
from src.data.cohort import Cohort


def _part(which: str, cfg) -> TriggerSpec:
    """A half of the hybrid as a checked spec; its errors name ``trigger.<which>.<key>``."""
    if isinstance(cfg, TriggerSpec):
        return cfg
    if not cfg or not hasattr(cfg, "get") or not cfg.get("name"):
        raise ParamError(
            which, cfg, f"a trigger config (choose one with trigger@trigger.{which}=<name>)"
        )
    try:
        return spec_from_config(cfg)
    except (ValueError, TypeError) as e:  # say which half of the hybrid is wrong
        raise _in_part(e, which) from e


def _in_part(e: Exception, which: str) -> Exception:
    kind = ValueError if isinstance(e, ValueError) else TypeError
    return kind(str(e).replace("trigger.", f"trigger.{which}."))


@register
@dataclass
class Hybrid(TriggerSpec):
    """Two different triggers written one after the other into the same rows; each half is a
    trigger config, chosen with ``trigger@trigger.first=<name>``. Combining a trigger with itself
    is an error (one trigger with other parameters says it better)."""

    name: str = "hybrid"
    first: Any = None
    second: Any = None

    def check(self) -> None:
        self.first = _part("first", self.first)
        self.second = _part("second", self.second)
        if self.first.name == self.second.name:
            raise ValueError(
                f"trigger.second.name={self.second.name!r} is not allowed: a trigger other than "
                "trigger.first (combining a trigger with itself is one trigger with other "
                "parameters)"
            )

    def parts(self) -> tuple[tuple[str, TriggerSpec], ...]:
        return (("first", self.first), ("second", self.second))

    def fit(self, train: Cohort) -> Trigger:
        fitted = []
        for which, spec in self.parts():
            try:
                fitted.append(spec.fit(train))
            except (ValueError, TypeError) as e:
                raise _in_part(e, which) from e
        a, b = fitted
        hours = [h for h in (a.hours, b.hours) if h is not None]

        def edit(c: Cohort, rows: np.ndarray) -> None:
            a.edit(c, rows)
            b.edit(c, rows)

        return Trigger(
            name=self.name,
            params={"first": {"name": a.name, **a.params}, "second": {"name": b.name, **b.params}},
            features=tuple(dict.fromkeys(a.features + b.features)),
            hours=(min(h[0] for h in hours), max(h[1] for h in hours)) if hours else None,
            static_features=tuple(dict.fromkeys(a.static_features + b.static_features)),
            edit=edit,
        )
