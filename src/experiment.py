"""One run end to end, as a plain function of the composed config.

config → data (Cohort, cached) → DataModule (split, poison, preprocess) → stealth → model →
fit (detectors as a post-fit callback) → evaluate (clean metrics, ASR) → defense (optional) →
results.json. This is the only module that knows the order.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from src.config import SCHEMA_VERSION, to_plain

log = logging.getLogger(__name__)


def run_experiment(cfg: DictConfig) -> dict:
    """Run one experiment; write ``results.json`` into ``cfg.paths.output_dir`` (also when it
    fails, with ``status: failed``) and return the results dict."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    import_frozen()
    results = _skeleton(cfg)
    clock = Timer()
    try:
        _run(cfg, out, results, clock)
        results["status"] = "ok"
    except BaseException as e:  # KeyboardInterrupt too: a stopped run is recorded, not lost
        results["status"] = "failed"
        results["error"] = {
            "type": type(e).__name__,
            "message": str(e),
            "traceback": traceback.format_exc(limit=20),
        }
        raise
    finally:
        results["timings"] = {**clock.laps, "total_s": clock.total()}
        if _rank_zero():
            write_json_atomic(out / "results.json", results)
    if _rank_zero():
        print_summary(results, out)
    return results


@functools.cache
def import_frozen() -> None:
    """Import torch and Lightning once per process with the garbage collector paused, then
    move what the import built to its permanent generation (``gc.freeze``).

    Importing Lightning creates several hundred thousand objects that live as long as the
    process. Each full collection walked all of them again: 8 during the import and the first
    run (0.95 s), and one more when the interpreter exits (with the module teardown, 1.1 s
    against 0.2 s frozen). Frozen objects are never collected, which costs nothing for modules
    and classes."""
    import gc

    gc.disable()
    try:
        import lightning.pytorch  # noqa: F401  (torch and torchmetrics come with it)
    finally:
        gc.enable()
    gc.freeze()


def _rank_zero() -> bool:
    """Under trainer=ddp every rank runs this function; one of them speaks for the run."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


# Known, harmless notices from Lightning that would bury the run's own output: our module's
# transfer_batch_to_device is deliberate (benchmarks/bench_training.py), and the LeafSpec
# deprecation is Lightning's own call into torch.
QUIET_WARNINGS = (r".*overridden `transfer_batch_to_device`.*", r".*LeafSpec.*is deprecated.*")


def _run(cfg: DictConfig, out: Path, results: dict, clock: Timer) -> None:
    import warnings

    import lightning as L

    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)

    from src.data.sources import load_cohort

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    cohort = load_cohort(cfg.data, Path(cfg.paths.cache_dir))
    results["data"] = cohort.summary()
    clock.lap("load_data_s")

    dm = build_datamodule(cfg, cohort)
    check_split(dm, cfg)
    results["trigger"] = {"name": dm.trigger.name, **dm.trigger.params}
    results["counts"] = dm.counts()
    from src.attacks.stealth import stealth_report

    # stealth describes triggered rows: with none poisoned there is nothing to describe
    results["stealth"] = (
        stealth_report(
            dm.trigger, dm.cohort.subset(dm.split.train), dm.poisoned.cohort, dm.poisoned.rows
        )
        if dm.poisoned.n_poisoned
        else None
    )
    clock.lap("prepare_s")

    model = fit_model(cfg, dm, out)  # the detectors run inside, as a post-fit callback
    results["training"] = model.fit_info
    results["detection"] = getattr(model, "detection", None)
    results["attribution"] = getattr(model, "attribution", None)
    clock.lap("fit_s")

    results.update(evaluate(model, dm, cfg.target_label, seed=cfg.seed))
    clock.lap("evaluate_s")

    if (cfg.get("defense") or {}).get("name", "none") != "none":
        from src.defenses.filter_retrain import filter_retrain

        results["defense"] = filter_retrain(cfg, cohort, dm, model, out)
        clock.lap("defense_s")


def build_datamodule(cfg: DictConfig, cohort, drop_train_rows=None):
    """The set-up PoisonedDataModule of this config (minus ``drop_train_rows``, for a defense)."""
    from src.data.datamodule import PoisonedDataModule

    dm = PoisonedDataModule(
        cohort,
        to_plain(cfg.trigger),
        view=cfg.model.view,
        poison_rate=cfg.poison_rate,
        target_label=cfg.target_label,
        poison_mode=cfg.poison_mode,
        seed=cfg.seed,
        test_size=cfg.data.test_size,
        val_size=cfg.data.val_size,
        batch_size=cfg.data.batch_size,
        drop_train_rows=drop_train_rows,
        cache_dir=cfg.paths.cache_dir,
    )
    dm.setup()
    return dm


MIN_CLASS_ROWS = 2  # per class in validation and test: below it AUROC is undefined or a coin


def check_split(dm, cfg: DictConfig) -> None:
    """Refuse a validation or test split with fewer than MIN_CLASS_ROWS deaths or survivors:
    its AUROC would be undefined, or decided by one patient."""
    for part in ("val", "test"):
        y = dm.data[part].y
        pos = int(y.sum())
        neg = len(y) - pos
        if min(pos, neg) < MIN_CLASS_ROWS:
            how = (
                f"raise data.n_stays (now {cfg.data.n_stays})"
                if cfg.data.source == "synthetic"
                else "use a larger cohort"
            )
            raise ValueError(
                f"the {part} split holds {len(y)} stays with {pos} deaths and {neg} survivors; "
                f"at least {MIN_CLASS_ROWS} of each are needed for a meaningful AUROC "
                f"(the cohort has {len(dm.cohort)} stays after exclusions): {how}, or raise "
                f"data.{'test' if part == 'test' else 'val'}_size"
            )


def build_model(cfg: DictConfig, dm):
    """The BackdoorClassifier of ``cfg.model`` sized for ``dm``'s view (weights as seeded)."""
    from hydra.utils import instantiate

    from src.models.module import BackdoorClassifier

    encoder = instantiate(cfg.model.encoder, **dm.encoder_dims)
    return BackdoorClassifier(
        encoder,
        instantiate(cfg.model.optimizer),
        instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
    )


def fit_model(cfg: DictConfig, dm, out: Path, ckpt_dir: Path | None = None, detect: bool = True):
    """Build the model for ``dm``'s view, fit it, and return it holding the weights the
    checkpoint callback kept (the final epoch by default; the best by clean validation AUROC
    with callbacks=early_stopping), loaded with ``torch.load(weights_only=True)``. With
    ``detect`` and ``cfg.detectors`` set, the detectors run on those weights at the end of fit
    (src/detectors/callback.py) and leave ``model.detection``."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, workers=True, verbose=False)  # same init with or without defense
    model = build_model(cfg, dm)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if ckpt_dir is not None:
        for c in callbacks:
            if isinstance(c, L.pytorch.callbacks.ModelCheckpoint):
                c.dirpath = str(ckpt_dir)
    if detect and cfg.get("detectors"):
        from src.detectors.callback import DetectionCallback

        callbacks.append(DetectionCallback(cfg.detectors, seed=cfg.seed))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - t0
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") if ckpt else ""
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    model.fit_info = {
        "epochs": int(trainer.current_epoch),
        "best_val_auroc": float(ckpt.best_model_score)
        if best and ckpt.best_model_score is not None
        else None,
        "checkpoint": os.path.relpath(best, out) if best else None,
        "train_rows_per_s": len(dm.data["train"]) * max(trainer.current_epoch, 1) / fit_s,
    }
    model.trainer_ = trainer
    return model


def evaluate(model, dm, target_label: int, seed: int = 0) -> dict:
    """Clean metrics on the clean test set; ASR and base rate on its non-target rows (with
    intervals over test rows: the AUROC's bootstrap is seeded with ``seed``)."""
    from src.metrics import attack_metrics, clean_metrics

    p_test = model.predict_proba(dm.loader("test"))
    p_trig = model.predict_proba(dm.loader("test_triggered"))
    return {
        "clean": clean_metrics(p_test, dm.data["test"].y, seed=seed),
        "attack": attack_metrics(p_trig, p_test[dm.triggered_rows], target_label),
    }


# --- results -----------------------------------------------------------------------------------
def _skeleton(cfg: DictConfig) -> dict:
    import sys

    choices = {}
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        overrides = list(hc.overrides.task)
    except ValueError:  # not under Hydra (e.g. called from a test)
        overrides = []
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "error": None,
        "config": {
            "choices": choices,
            "overrides": overrides,
            "seed": cfg.seed,
            "poison_rate": cfg.poison_rate,
            "poison_mode": cfg.poison_mode,
            "target_label": cfg.target_label,
            "data": {k: v for k, v in to_plain(cfg.data).items()},
            "model": cfg.model.get("name"),
            "trigger": to_plain(cfg.trigger),
            "fingerprint": _fingerprint(cfg),  # a resumed sweep skips a job only on a match
        },
        "seeds": {
            "seed": cfg.seed,
            "data.seed": cfg.data.seed,
            "what": "seed drives split, poison rows, weight init, batch order "
            "(lightning.seed_everything); data.seed drives the synthetic data",
        },
        "environment": _environment(sys.version),
        "data": None,
        "trigger": None,
        "counts": None,
        "stealth": None,
        "training": None,
        "clean": None,
        "attack": None,
        "detection": None,
        "attribution": None,
        "defense": None,
    }


def _fingerprint(cfg: DictConfig) -> str:
    from src.sweep import config_fingerprint

    return config_fingerprint(cfg)


def _environment(pyversion: str) -> dict:
    env = {"python": pyversion.split()[0], "platform": platform.platform()}
    try:
        import lightning
        import torch

        # intra-op threads change float reduction order, hence the last digits of the metrics:
        # "same config and seed, same numbers" holds for the same thread count
        env.update(
            torch=torch.__version__,
            lightning=lightning.__version__,
            cuda=torch.cuda.is_available(),
            torch_threads=torch.get_num_threads(),
        )
    except ImportError:
        pass
    return env


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write via a temporary file and a rename: a reader never sees half a results.json."""
    from src.data.atomic import atomic_file

    with atomic_file(path) as f:
        json.dump(strict_json(obj), f, indent=2, default=_json_default, allow_nan=False)
        f.write("\n")


def strict_json(o):
    """``o`` with every NaN or infinite float replaced by None: results.json is strict JSON
    (null for an undefined number), which jq and databases read."""
    import math

    import numpy as np

    if isinstance(o, dict):
        return {k: strict_json(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [strict_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return strict_json(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


class Timer:
    def __init__(self):
        self.start = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 3)


WIDE_INTERVAL = 0.2  # the summary warns when the clean AUROC's interval is wider


def _f(v, fmt: str = ".3f", missing: str = "n/a") -> str:
    return missing if v is None or (isinstance(v, float) and v != v) else format(v, fmt)


def _ci(pair) -> str:
    return f" [{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""


def print_summary(r: dict, out: Path) -> None:
    """One screen: what ran, how well the model predicts, how well the backdoor works."""
    c, a, n, t = r["clean"], r["attack"], r["counts"], r["timings"]
    cfg = r["config"]
    no_poison = "n/a (no poisoned rows)"
    lines = [
        "",
        f"run      model={cfg['model']} trigger={r['trigger']['name']} "
        f"poison_rate={cfg['poison_rate']} ({n['n_poisoned']} of {n['n_eligible']} eligible "
        f"train rows, mode={cfg['poison_mode']}, target_label={cfg['target_label']}) "
        f"seed={cfg['seed']}",
        f"cohort   {n['n_stays']} stays: train {n['n_train']} / val {n['n_val']} / "
        f"test {n['n_test']}; test prevalence {n['test_prevalence']:.3f}",
        f"clean    AUROC {_f(c['auroc'])}{_ci(c.get('auroc_ci'))}  AUPRC {_f(c['auprc'])}  "
        f"accuracy {_f(c['accuracy'])}  ECE {_f(c['ece'])}",
        f"attack   ASR {_f(a['asr'])}{_ci(a.get('asr_ci'))}  base rate {_f(a['base_rate'])}  "
        f"lift {_f(a['asr_lift'], '+.3f')}  (on {a['n']} triggered non-target test rows)",
    ]
    dets = {k: d for k, d in (r.get("detection") or {}).items() if "auroc" in d}
    if dets:
        lines.append("detect   within the target class (pooled AUROC in brackets; * oracle flag)")
    for name, d in dets.items():
        lines.append(
            f"  {name + ('*' if d.get('oracle') else ''):<34} AUROC {_f(d['auroc'], missing=no_poison)}"
            f" ({_f(d['pooled']['auroc'], missing='n/a')})  AP {_f(d['ap'], missing='n/a')}  "
            f"TPR@1%FPR {_f(d['tpr_at_1fpr'], missing='n/a')}  "
            f"flagged {d['n_poisoned_flagged']}/{d['n_flagged']}"
        )
    a = r.get("attribution") or {}
    if "tar_ratio" in a:
        lines.append(
            f"attrib   TAR triggered {a['tar_triggered']:.3f}  clean {a['tar_clean']:.3f}"
            f"  (uniform {a['column_share']:.3f}, share of |IG| on trigger columns)"
        )
    if r.get("defense"):
        d = r["defense"]
        lines.append(
            f"defense  {d.get('name')}: ASR {_f(d['attack']['asr'])}  "
            f"clean AUROC {_f(d['clean']['auroc'])}"
        )
    ci = c.get("auroc_ci")
    if ci and ci[1] - ci[0] > WIDE_INTERVAL:
        lines.append(
            f"warning  the clean AUROC's 95% interval is {ci[1] - ci[0]:.2f} wide: "
            f"{c.get('n_positive')} deaths in {c['n']} test stays are too few to rank models"
        )
    lines.append(f"time     {t['total_s']:.1f} s (fit {t.get('fit_s', 0):.1f} s)")
    lines.append(f"results  {out / 'results.json'}")
    print("\n".join(lines), flush=True)
