"""The trigger family, each acting on a Cohort in raw clinical units (src/attacks/triggers/base.py
says what a trigger is). Every module of this package is imported here, so each class it
registers is known by name; a trigger elsewhere is found through the ``_target_`` of its YAML.

- value.py: none, rare_value, out_of_bounds, pattern, missingness, static_category
- additive.py: temporal, frequency_domain, correlation, distribution_shift
- hybrid.py: two triggers in the same rows
"""

import importlib
import pkgutil

from src.attacks.triggers.base import (
    REGISTRY,
    ParamError,
    Trigger,
    TriggerSpec,
    build_trigger,
    register,
    spec_from_config,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "REGISTRY",
    "ParamError",
    "Trigger",
    "TriggerSpec",
    "build_trigger",
    "register",
    "spec_from_config",
]
