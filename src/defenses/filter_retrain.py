"""Filter and retrain: drop the training rows a detector flagged, retrain from scratch with the
same config and seed, and measure the clean metrics and the backdoor again.

The retrain sees the same split, the same poisoned training split minus the flagged rows (its
preprocessing is refitted on what remains, as a practitioner would), the same weight
initialisation and batch seed. It does not run the detectors again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


def filter_retrain(
    dm, model, retrain: Callable[[np.ndarray], dict], detector: str = "spectral_signature"
) -> dict:
    """Drop the rows ``detector`` flagged on ``model``'s training split and call
    ``retrain(drop_rows)``, the experiment's own build-fit-evaluate step (so this module knows
    nothing of the order of a run), which returns ``training``, ``clean``, ``attack`` and
    ``n_poison_left``."""
    name = detector
    flags = (getattr(model, "detection_flags", None) or {}).get(name)
    if flags is None:
        ran = ", ".join(getattr(model, "detection_flags", {}) or {}) or "none"
        raise ValueError(
            f"defense.filter_retrain.detector={name!r} produced no flags in this run (detectors "
            f"that ran and flagged: {ran}); add it to detectors= or choose one of "
            "those"
        )
    drop = np.flatnonzero(flags)
    n_poison_removed = int(dm.train_mask[drop].sum())
    log.info(
        "defense filter_retrain: removing %d training rows flagged by %s (%d of them poisoned)",
        len(drop),
        name,
        n_poison_removed,
    )
    return {
        "detector": name,
        "n_removed": int(len(drop)),
        "n_poison_removed": n_poison_removed,
        **retrain(drop),
    }


def own_logs(cfg):
    """The same config with each logger writing beside the first fit's log, not over it."""
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(cfg):
        for lg in (cfg.get("logger") or {}).values():
            if "name" in lg:
                lg.name = f"{lg.name}_defense"
    return cfg
