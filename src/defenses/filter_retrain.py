"""Filter and retrain: drop the training rows a detector flagged, retrain from scratch with the
same config and seed, and measure the clean metrics and the backdoor again.

The retrain sees the same split, the same poisoned training split minus the flagged rows (its
preprocessing is refitted on what remains, as a practitioner would), the same weight
initialisation and batch seed. It does not run the detectors again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def filter_retrain(cfg, cohort, dm, model, out: Path) -> dict:
    from src.experiment import build_datamodule, evaluate, fit_model

    name = cfg.defense.detector
    flags = (getattr(model, "detection_flags", None) or {}).get(name)
    if flags is None:
        ran = ", ".join(getattr(model, "detection_flags", {}) or {}) or "none"
        raise ValueError(
            f"defense.detector={name!r} produced no flags in this run (detectors "
            f"that ran and flagged: {ran}); add it to detectors= or choose one of "
            "those"
        )
    drop = np.flatnonzero(flags)
    n_poison_removed = int(dm.train_mask[drop].sum())
    log.info(
        "defense %s: removing %d training rows flagged by %s (%d of them poisoned)",
        cfg.defense.name,
        len(drop),
        name,
        n_poison_removed,
    )
    dm2 = build_datamodule(cfg, cohort, drop_train_rows=drop)
    model2 = fit_model(_own_logs(cfg), dm2, out, ckpt_dir=out / "defense_checkpoints", detect=False)
    return {
        "name": cfg.defense.name,
        "detector": name,
        "n_removed": int(len(drop)),
        "n_poison_removed": n_poison_removed,
        "n_poison_left": int(dm2.train_mask.sum()),
        "training": model2.fit_info,
        **evaluate(model2, dm2, cfg.target_label),
    }


def _own_logs(cfg):
    """The same config with each logger writing beside the first fit's log, not over it."""
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(cfg):
        for lg in (cfg.get("logger") or {}).values():
            if "name" in lg:
                lg.name = f"{lg.name}_defense"
    return cfg
