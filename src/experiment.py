"""One run end to end, as a plain function of the composed config.

config → data (Cohort, cached) → DataModule (split, poison, preprocess) → stealth → model →
fit (detectors as a post-fit callback) → evaluate (clean metrics, ASR) → defense (optional) →
results.json. This is the only module that knows the order.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig

from src.allocator import keep_freed_memory
from src.config import to_plain
from src.results import Timer, failure, print_summary, skeleton, write_json_atomic

log = logging.getLogger(__name__)


def run_experiment(cfg: DictConfig) -> dict:
    """Run one experiment; write ``results.json`` into ``cfg.paths.output_dir`` (also when it
    fails, with ``status: failed``) and return the results dict."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    import_frozen()
    keep_freed_memory()
    results = skeleton(cfg)
    clock = Timer()
    try:
        _run(cfg, out, results, clock)
        results["status"] = "ok"
    except BaseException as e:  # KeyboardInterrupt too: a stopped run is recorded, not lost
        results["status"] = "failed"
        results["error"] = failure(e)
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
    process; without the freeze, every full collection (several during a run, one at exit)
    walks all of them again. Frozen objects are never collected, which costs nothing for
    modules and classes."""
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
QUIET_WARNINGS = (
    r".*overridden `transfer_batch_to_device`.*",
    r".*LeafSpec.*is deprecated.*",
    # a machine with SLURM installed (the tests' one-node cluster) is not a job inside SLURM
    r".*The `srun` command is available on your system but is not used.*",
)


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
    from src.sweep import is_multirun

    if not is_multirun():  # a sweep draws it once per cell in its report, not per job
        from src.report import plot_confidence

        conf = results["attack"]["confidence"]
        plot_confidence(
            [
                (
                    f"{cfg.model.name}, {dm.trigger.name}, rate {cfg.poison_rate:g}, seed {cfg.seed}",
                    conf["hist_triggered"],
                    conf["hist_untriggered"],
                )
            ],
            out / "figures" / "confidence_shift.png",
        )

    if cfg.poison_rate > 0:
        results["drift"] = drift_against_clean(cfg, cohort, model, dm, out)
        clock.lap("drift_s")

    if cfg.get("eval_data"):
        results["transfer"] = evaluate_elsewhere(cfg, model, dm)
        clock.lap("transfer_s")

    if cfg.get("defense"):
        before = {"clean": results["clean"], "attack": results["attack"]}
        results["defense"] = defend(cfg, cohort, dm, model, out, before)
        clock.lap("defense_s")

    log_final(getattr(model, "trainer_", None), results, out)


FINAL_SECTIONS = ("clean", "attack", "detection", "attribution", "defense", "transfer")


def log_final(trainer, results: dict, out: Path) -> None:
    """Hand the run's final numbers to every logger of the fit (Lightning's): the config as
    hyperparameters, each number of FINAL_SECTIONS as ``final/<path>``, and for TensorBoard the
    run's figures as images; a tracker then shows what results.json holds."""
    import math

    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

    from src.report import flatten

    loggers = list(getattr(trainer, "loggers", None) or [])
    if not loggers:
        return
    flat: dict = {}
    for section in FINAL_SECTIONS:
        if results.get(section) is not None:
            flatten(results[section], section, flat)
    metrics = {
        "final/" + k.replace(".", "/"): float(v)
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    params: dict = {}
    flatten(results.get("config") or {}, "", params)
    params = {k: v for k, v in params.items() if v is not None}
    step = int(getattr(trainer, "global_step", 0))
    for lg in loggers:
        lg.log_hyperparams(params)
        lg.log_metrics(metrics, step=step)
        if isinstance(lg, TensorBoardLogger):
            _figures_to_tensorboard(lg.experiment, out / "figures", step)
        if isinstance(lg, MLFlowLogger):
            _artifacts_to_mlflow(lg, results, out)
        lg.save()


def make_logger(node, out: Path):
    """Instantiate one logger of ``cfg.logger``. MLflow's experiment and run names default to
    the sweep (one experiment per sweep folder, one run per job) and the job."""
    from hydra.utils import instantiate

    if not str(node.get("_target_", "")).endswith("MLFlowLogger"):
        return instantiate(node)
    from hydra.core.hydra_config import HydraConfig

    from src.sweep import is_multirun

    extra = {}
    multirun = is_multirun()
    job = HydraConfig.get().job if HydraConfig.initialized() else None
    if node.get("experiment_name") is None:
        extra["experiment_name"] = Path(out).parent.name if multirun else "icu-backdoor"
    if node.get("run_name") is None:
        extra["run_name"] = (
            f"{job.num}: {job.override_dirname or 'defaults'}"
            if multirun and job is not None
            else Path(out).name
        )
    uri = str(node.get("tracking_uri") or "")
    if uri.startswith("sqlite:///"):  # SQLite makes the file, not its folder
        Path(uri.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return instantiate(node, **extra)


def _artifacts_to_mlflow(lg, results: dict, out: Path) -> None:
    client, run = lg.experiment, lg.run_id
    client.log_dict(run, results, "results.json")
    for f in [out / ".hydra" / "config.yaml", *sorted((out / "figures").glob("*.png"))]:
        if f.is_file():
            client.log_artifact(run, str(f), "figures" if f.suffix == ".png" else None)


def _figures_to_tensorboard(writer, folder: Path, step: int) -> None:
    import numpy as np
    from PIL import Image

    for png in sorted(folder.glob("*.png")):
        image = np.asarray(Image.open(png).convert("RGB"))
        writer.add_image(f"figures/{png.stem}", image, step, dataformats="HWC")
    writer.flush()


def defend(cfg: DictConfig, cohort, dm, model, out: Path, before: dict) -> dict:
    """Every defense of ``cfg.defense`` (one results block each), in the order given. A
    post-training repair starts from the same fitted ``model`` every time and uses the clean
    set (the validation split, or ``clean_share`` of it); filter-and-retrain trains anew, through
    the retrain step handed to it, so the order of a run stays in this module. ``before`` holds
    the undefended model's ``clean`` and ``attack`` blocks."""
    from hydra.utils import instantiate

    from src.defenses.filter_retrain import filter_retrain, own_logs
    from src.defenses.repair import NotApplicable
    from src.metrics import defense_effect

    def retrain(drop_rows) -> dict:
        """The same run without ``drop_rows`` of the training split: same split, seed and
        initialisation; preprocessing refitted on what remains; no detectors."""
        dm2 = build_datamodule(cfg, cohort, drop_train_rows=drop_rows)
        model2 = fit_model(
            own_logs(cfg), dm2, out, ckpt_dir=out / "defense_checkpoints", detect=False
        )
        return {
            "n_poison_left": int(dm2.train_mask.sum()),
            "training": model2.fit_info,
            **evaluate(model2, dm2, cfg.target_label, seed=cfg.seed),
        }

    blocks: dict = {}
    for name, node in (cfg.get("defense") or {}).items():
        if node is None:  # defense.<name>=null switches one off
            continue
        plain = to_plain(node)
        params = {k: v for k, v in plain.items() if not k.startswith("_")}
        t0 = time.perf_counter()
        if name == "filter_retrain":
            block = filter_retrain(dm, model, retrain, detector=params["detector"])
            used = 0
        elif name == "abl":
            block = anti_backdoor_learning(cfg, dm, params)
            used = 0
        else:
            share = float(params.pop("clean_share", 1.0))
            clean = dm.data["val"].subset(clean_rows(len(dm.data["val"]), share, cfg.seed))
            fn = instantiate({k: v for k, v in plain.items() if k != "clean_share"})
            try:
                repaired, info = fn(model, clean, seed=cfg.seed)
            except NotApplicable as e:
                log.warning("defense %s skipped: %s", name, e)
                blocks[name] = {"skipped": str(e)}
                continue
            used = info.pop("clean_rows_used", len(clean))
            block = {"info": info, **evaluate(repaired, dm, cfg.target_label, seed=cfg.seed)}
            params["clean_share"] = share
        block.update(defense_effect(before, block))
        block.update(
            params=params,
            clean_rows_used=used,
            seconds=round(time.perf_counter() - t0, 3),
        )
        log.info(
            "defense %s: ASR %s -> %s, clean AUROC %s -> %s (%.1f s)",
            name,
            _fmt(before["attack"].get("asr")),
            _fmt(block["attack"].get("asr")),
            _fmt(before["clean"].get("auroc")),
            _fmt(block["clean"].get("auroc")),
            block["seconds"],
        )
        blocks[name] = block
    return blocks


def anti_backdoor_learning(cfg: DictConfig, dm, params: dict) -> dict:
    """ABL (src/defenses/abl.py) on a fresh model of this config, seeded as the first fit; its
    isolation score is scored against the poison mask like a detector."""
    import lightning as L

    from src.defenses.abl import abl
    from src.metrics import detection_report

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    fresh = build_model(cfg, dm)
    if params.get("epochs") is None:
        params["epochs"] = int(cfg.model.get("epochs") or cfg.trainer.max_epochs)
    trained, scores, isolated, info = abl(fresh, dm.data["train"], seed=cfg.seed, **params)
    train_labels = dm.data["train"].y.numpy().astype(int)
    return {
        "info": info,
        **evaluate(trained, dm, cfg.target_label, seed=cfg.seed),
        "detection": detection_report(
            scores, isolated, dm.train_mask, train_labels, cfg.target_label
        ),
    }


def clean_rows(n: int, share: float, seed: int):
    """The rows of the clean set a repair may use: all of them, or a seeded ``share``."""
    import numpy as np

    if share >= 1.0:
        return np.arange(n)
    k = max(1, int(round(share * n)))
    return np.sort(np.random.default_rng([seed, 21]).choice(n, size=k, replace=False))


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


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
    (src/models/detection_callback.py) and leave ``model.detection``."""
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
        from src.models.detection_callback import DetectionCallback

        callbacks.append(DetectionCallback(cfg.detectors, seed=cfg.seed))
    loggers = [make_logger(c, out) for c in (cfg.get("logger") or {}).values()]
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


def clean_checkpoint(cfg: DictConfig, out: Path) -> Path | None:
    """The weights of this cell's clean model: ``clean_run`` (a finished run folder), or in a
    sweep the finished job with the same overrides but poison_rate=0."""
    import json

    from src.sweep import is_multirun

    def read(folder: Path) -> dict:
        try:
            return json.loads((folder / "results.json").read_text())
        except (OSError, ValueError):
            return {}

    def checkpoint(folder: Path, r: dict) -> Path | None:
        ckpt = (r.get("training") or {}).get("checkpoint")
        ok = r.get("status") == "ok" and (r.get("config") or {}).get("poison_rate") == 0
        return folder / ckpt if ok and ckpt and (folder / ckpt).is_file() else None

    def without_rate(overrides) -> list:
        return [o for o in overrides or [] if not o.startswith("poison_rate=")]

    if cfg.get("clean_run"):
        return checkpoint(Path(cfg.clean_run), read(Path(cfg.clean_run)))
    if not is_multirun():
        return None
    from hydra.core.hydra_config import HydraConfig

    from src.report import hydra_overrides

    # each sibling's overrides from Hydra's small record, so a job of a large sweep does not
    # read every other job's results.json; only a match's is read
    mine = without_rate(HydraConfig.get().overrides.task)
    for job in sorted(p.parent.parent for p in out.parent.glob("*/.hydra/overrides.yaml")):
        if without_rate(hydra_overrides(job)) == mine:
            found = checkpoint(job, read(job))
            if found is not None:
                return found
    return None


def drift_against_clean(cfg: DictConfig, cohort, model, dm, out: Path) -> dict:
    """Explainability drift (src/detectors/drift.py) between this model and the clean model of
    its cell, on the same test rows; skipped, with the reason, when no clean model is found."""
    import torch
    from omegaconf import OmegaConf

    from src.detectors.drift import explanation_drift, feature_masks

    ckpt = clean_checkpoint(cfg, out)
    if ckpt is None:
        return {
            "skipped": "no finished clean model of this cell: give clean_run=<run folder of the "
            "same config at poison_rate=0>, or sweep poison_rate=0 first (sequentially)"
        }
    cfg0 = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg0.poison_rate = 0.0
    dm0 = build_datamodule(cfg0, cohort)
    clean = build_model(cfg0, dm0)
    clean.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    clean.eval()
    model.eval()

    def inputs(d) -> dict:
        test = d.data["test"].subset(d.triggered_rows)
        trig = d.data["test_triggered"]
        return {"clean": (test.x, test.cat), "triggered": (trig.x, trig.cat)}

    c = dm.train_cohort
    masks = feature_masks(dm.view, c.feature_names, c.n_hours, c.static_num_names, dm.cat_levels)
    result = explanation_drift(
        lambda x, k: model(x, k),
        lambda x, k: clean(x, k),
        inputs(dm),
        inputs(dm0),
        masks,
        c.feature_names,
        dm.trigger.features,
        seed=cfg.seed,
    )
    if hasattr(model.encoder, "transformer"):  # the TabTransformer: attention over its tokens
        from src.detectors.drift import attention_shift

        result["attention"] = attention_shift(
            model.encoder,
            clean.encoder,
            inputs(dm),
            inputs(dm0),
            c.static_cat_names,
            dm.trigger.static_features,
        )
    return {"clean_checkpoint": str(ckpt), **result}


def evaluate_elsewhere(cfg: DictConfig, model, dm) -> dict:
    """The trained model on every stay of a second cohort (``cfg.eval_data``), aligned to the
    training cohort by name (src/data/align.py) and preprocessed as the training split was:
    clean metrics, and the trigger written into its non-target stays (ASR, confidence)."""
    import numpy as np
    import torch

    from src.data.align import align
    from src.data.datamodule import IndexBatches, Tensors
    from src.data.sources import load_cohort
    from src.data.views import model_input
    from src.metrics import attack_report, clean_metrics

    other, report = align(load_cohort(cfg.eval_data, Path(cfg.paths.cache_dir)), dm.cohort)
    if report["missing_features"]:
        log.warning(
            "eval_data lacks %d of the model's features (treated as not measured): %s",
            len(report["missing_features"]),
            ", ".join(report["missing_features"]),
        )

    def proba(c) -> torch.Tensor:
        x, cat = model_input(dm.prep, c, dm.view)
        t = Tensors(torch.from_numpy(x), torch.from_numpy(cat), torch.zeros(len(x)))
        return model.predict_proba(IndexBatches(t, cfg.data.batch_size))

    p = proba(other)
    rows = np.flatnonzero(other.label != cfg.target_label)
    p_trig = proba(dm.trigger.apply(other.subset(rows)))
    return {
        "source": to_plain(cfg.eval_data).get("source"),
        "n_stays": len(other),
        "prevalence": float(other.label.mean()) if len(other) else None,
        "alignment": report,
        "trigger_features_missing": [
            f for f in dm.trigger.features if f in report["missing_features"]
        ],
        "clean": clean_metrics(p, other.label, seed=cfg.seed),
        "attack": attack_report(p_trig, p[rows], cfg.target_label),
    }


def evaluate(model, dm, target_label: int, seed: int = 0) -> dict:
    """Clean metrics on the clean test set; ASR and base rate on its non-target rows (with
    intervals over test rows: the AUROC's bootstrap is seeded with ``seed``)."""
    from src.metrics import attack_report, clean_metrics

    p_test = model.predict_proba(dm.loader("test"))
    p_trig = model.predict_proba(dm.loader("test_triggered"))
    return {
        "clean": clean_metrics(p_test, dm.data["test"].y, seed=seed),
        "attack": attack_report(p_trig, p_test[dm.triggered_rows], target_label),
    }
