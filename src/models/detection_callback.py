"""DetectionCallback: after fit, run the configured detectors on the training split of the model
that will be evaluated (the checkpoint callback's best_model_path: final weights by default,
best-on-validation with callbacks=early_stopping), score them against the ground-truth poison mask, store
the results on the module and log them.

Results land on the LightningModule: ``detection`` ({name: the in-class detection metrics with
a ``pooled`` block (src/metrics.py: detection_report), the detector's parameters, timing_s and
info, or {"skipped": reason}}), ``attribution`` (the Trigger Attribution Ratio report, or None) and
``detection_flags`` ({name: bool array over the training split}, for the defense). Lightning
forbids ``self.log`` in ``on_fit_end``, so metrics go to the trainer's loggers directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import lightning as L
import numpy as np
import torch

from src.detectors.base import Detection, DetectorInputError, DetectorInputs

log = logging.getLogger(__name__)


class DetectionCallback(L.Callback):
    def __init__(self, detectors: Mapping, seed: int = 0, batch_size: int = 4096):
        self.detectors = detectors  # name -> config node with _target_ (and _partial_: true)
        self.seed, self.batch_size = seed, batch_size

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        load_best_weights(trainer, pl_module)
        dm = trainer.datamodule
        inputs = build_inputs(pl_module, dm, self.seed, self.batch_size)
        detection, attribution, flags = run_detectors(self.detectors, inputs, dm.train_mask)
        pl_module.detection, pl_module.attribution = detection, attribution
        pl_module.detection_flags = flags
        metrics = {
            f"detect/{name}/{k}": float(v)
            for name, d in detection.items()
            for k, v in d.items()
            if k in ("auroc", "ap", "tpr_at_1fpr", "tpr_at_5fpr", "precision", "recall", "timing_s")
            and v is not None
        }
        if attribution and "tar_ratio" in attribution:
            metrics.update(
                {
                    f"attribution/{k}": float(attribution[k])
                    for k in ("tar_triggered", "tar_clean", "tar_ratio")
                }
            )
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
            lg.save()


def load_best_weights(trainer: L.Trainer, module: L.LightningModule) -> str:
    """Load the best checkpoint's weights (weights only) into ``module``; '' if there is none."""
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") if ckpt else ""
    if best:
        state = torch.load(best, map_location=module.device, weights_only=True)["state_dict"]
        module.load_state_dict(state)
    return best


def run_detectors(
    detectors: Mapping, inputs: DetectorInputs, truth: np.ndarray
) -> tuple[dict, dict | None, dict]:
    """Instantiate and run each detector; score it against ``truth`` (the poison mask), within
    the target class (the headline) and pooled over all rows."""
    from hydra.utils import instantiate

    from src.metrics import detection_report

    detection, flags, attribution = {}, {}, None
    for name, node in (detectors or {}).items():
        if node is None:  # detectors.<name>=null switches one off
            continue
        fn = instantiate(node) if not callable(node) else node
        params = _params(node)
        t0 = time.perf_counter()
        try:
            out = fn(inputs)
        except DetectorInputError as e:
            log.warning("detector %s skipped: %s", name, e)
            detection[name] = {"skipped": str(e)}
            continue
        timing = round(time.perf_counter() - t0, 4)
        if not isinstance(out, Detection):  # the attribution report
            attribution = {**out, "timing_s": timing}
            continue
        skipped = out.info.get("skipped_classes", [])
        if skipped and sum(s["n"] for s in skipped) == len(inputs):
            reason = "; ".join(f"class {s['class']}: {s['n']} rows, {s['reason']}" for s in skipped)
            log.warning("detector %s skipped: every class too small (%s)", name, reason)
            detection[name] = {"skipped": f"every class too small ({reason})"}
            continue
        for s in skipped:
            log.warning(
                "detector %s: class %s skipped (%s rows, %s)", name, s["class"], s["n"], s["reason"]
            )
        detection[name] = {
            **detection_report(out.scores, out.flags, truth, inputs.labels, inputs.target_label),
            "params": params,
            "oracle": out.info.get("flag_rule") == "oracle",
            "timing_s": timing,
            "info": out.info,
        }
        flags[name] = np.asarray(out.flags, dtype=bool)
    return detection, attribution, flags


def _params(node) -> dict:
    """The detector's configured parameters (the config node less Hydra's keys)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict):
        return {}
    return {k: v for k, v in node.items() if not k.startswith("_")}


def build_inputs(model, dm, seed: int, batch_size: int = 4096) -> DetectorInputs:
    """Everything a detector may read, from a fitted model and a set-up PoisonedDataModule."""
    from src.data.datamodule import IndexBatches, Tensors
    from src.detectors.attribution import trigger_columns

    device = model.device
    train, val = dm.data["train"], dm.data["val"]

    def predict(x: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        t = Tensors(x.to(device), cat.to(device), torch.zeros(len(x), device=device))
        return model.predict_proba(IndexBatches(t, batch_size)).cpu()

    def forward(x: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        return model(x.to(device), cat.to(device))

    linear_stem, split = None, model.linear_stem()
    if split is not None:
        first, rest = split

        @torch.no_grad()
        def stem(x: torch.Tensor) -> torch.Tensor:
            # at least one chunk, so that no rows give a [0, width] tensor rather than no list
            chunks = range(0, max(len(x), 1), batch_size)
            return torch.cat([first(x[s : s + batch_size].to(device)).cpu() for s in chunks])

        @torch.no_grad()
        def predict_stem(h: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(rest(h.to(device), cat.to(device))).cpu()

        linear_stem = (stem, predict_stem)

    model.eval()  # IG calls forward directly: dropout off
    c = dm.train_cohort
    test = dm.data["test"].subset(dm.triggered_rows)
    trig = dm.data["test_triggered"]
    cols = trigger_columns(
        dm.view,
        dm.trigger,
        c.feature_names,
        c.n_hours,
        c.static_num_names,
        c.static_cat_names,
        dm.cat_levels,
    )
    return DetectorInputs(
        features=model.embed_all(dm.loader("train")).cpu(),
        labels=train.y.long().numpy(),
        expected_poisoned=int(dm.poisoned.n_poisoned),
        target_label=int(dm.target_label),
        seed=seed,
        x=train.x,
        cat=train.cat,
        predict=predict,
        linear_stem=linear_stem,
        pool_x=val.x,
        pool_cat=val.cat,
        pool_features=model.embed_all(dm.loader("val")).cpu(),
        pool_labels=val.y.long().numpy(),
        model=model,
        raw_series=c.series,
        raw_static=c.static_num,
        feature_specs=list(c.features),
        forward=forward,
        test_x=test.x,
        test_cat=test.cat,
        triggered_x=trig.x,
        triggered_cat=trig.cat,
        trigger_columns=cols,
    )
