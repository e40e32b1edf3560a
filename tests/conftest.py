"""The one way tests compose the run config: ``compose_config`` (a plain function, cached, for
code that runs outside a test) and the ``compose`` fixture that hands it to tests."""

from __future__ import annotations

import copy
import functools

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from src.run import conf_dir


@functools.cache  # composing is the slow part of many tests; the result is never mutated
def _compose(overrides: tuple[str, ...], hydra: bool):
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return hydra_compose("run", overrides=list(overrides), return_hydra_config=hydra)


def compose_config(*overrides: str, hydra: bool = False, out=None):
    """``conf/run.yaml`` composed with ``overrides``, as ``python -m src.run`` would (``hydra``:
    with the ``hydra`` node, as a sweep's callback sees it; ``out``: the run's output folder)."""
    if out is not None:
        overrides = (f"paths.output_dir={out}", *overrides)
    return copy.deepcopy(_compose(tuple(overrides), hydra))  # a test may change its copy


@pytest.fixture
def compose():
    return compose_config
