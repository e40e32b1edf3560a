"""results.json: its schema version, the skeleton every run starts from, the record of a failed
run, the strict-JSON atomic write, the timer, and the one-screen summary.

Every run writes exactly one results.json (docs/results.md), also when it fails; a sweep reads
them back (src/sweep.py, src/report.py). Keys are stable within SCHEMA_VERSION.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.config import to_plain

SCHEMA_VERSION = "1.0"  # bump on any incompatible change of results.json


def config_fingerprint(cfg: DictConfig) -> str:
    """A hash of the whole resolved config except ``paths`` (where the cache lives does not change
    a result), so a resumed sweep re-runs a job whose config changed under the same overrides."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that needs Hydra (called outside it): hash it unresolved
        plain = OmegaConf.to_container(cfg, resolve=False)
    out = str(plain.get("paths", {}).get("output_dir") or "")
    plain.pop("paths", None)
    plain = _without_prefix(plain, out) if out else plain
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_prefix(node, prefix: str):
    """``node`` with every string under the job's output folder made relative to it
    (``trainer.default_root_dir``, ``callbacks.*.dirpath``, ``logger.*.save_dir``): a sweep
    folder moved elsewhere keeps its fingerprints, and resumes."""
    if isinstance(node, dict):
        return {k: _without_prefix(v, prefix) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_prefix(v, prefix) for v in node]
    if isinstance(node, str) and (node == prefix or node.startswith(prefix.rstrip("/") + "/")):
        return "<output_dir>" + node[len(prefix.rstrip("/")) :]
    return node


def skeleton(cfg: DictConfig) -> dict:
    """A results.json with every section present (null until filled) and status running."""
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
            "fingerprint": config_fingerprint(cfg),  # a resumed sweep skips a job only on a match
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
        "drift": None,
        "transfer": None,
        "defense": None,
    }


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
    from src.allocator import applied

    env["malloc"] = applied()  # reported only: run_experiment sets it before anything runs
    return env


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write via a temporary file and a rename: a reader never sees half a results.json."""
    from src.atomic import atomic_file

    with atomic_file(path) as f:
        json.dump(strict_json(obj), f, indent=2, default=_json_default, allow_nan=False)
        f.write("\n")


def strict_json(o):
    """``o`` with every NaN or infinite float replaced by None: results.json is strict JSON
    (null for an undefined number), which jq and databases read."""
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
    """What strict_json leaves that json cannot write (numpy values it has already unwrapped)."""
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
    conf = a.get("confidence") or {}
    if conf.get("n"):
        lines.append(
            f"         P(target) {conf['mean_p_untriggered']:.3f} -> {conf['mean_p_triggered']:.3f}"
            f" with the trigger (shift: mean {conf['mean_shift']:+.3f}, median "
            f"{conf['median_shift']:+.3f}; figures/confidence_shift.png)"
        )
    tr = r.get("transfer")
    if tr:
        ta = tr["attack"]
        lines.append(
            f"transfer {tr['source']} ({tr['n_stays']} stays, prevalence {_f(tr['prevalence'])}; "
            f"{len(tr['alignment']['missing_features'])} features not measured there): "
            f"AUROC {_f(tr['clean']['auroc'])}{_ci(tr['clean'].get('auroc_ci'))}  "
            f"ASR {_f(ta['asr'])}{_ci(ta.get('asr_ci'))}  base rate {_f(ta['base_rate'])}"
        )
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
    for name, d in (r.get("defense") or {}).items():
        if "skipped" in d:
            lines.append(f"defense  {name}: skipped ({d['skipped']})")
            continue
        lines.append(
            f"defense  {name:14s} ASR {_f(d['attack']['asr'])} (drop {_f(d['asr_drop'])})  "
            f"clean AUROC {_f(d['clean']['auroc'])} (drop {_f(d['clean_auroc_drop'])})  "
            f"DER {_f(d['der'])}  {d['seconds']:.1f} s"
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


def failure(exc: BaseException) -> dict:
    """The ``error`` block of a failed run (call it inside the ``except``)."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": traceback.format_exc(limit=20),
    }


def failed_results(cfg: DictConfig, exc: BaseException) -> dict:
    """A whole results.json for a run that failed before it could start (a config value
    refused by ``validate`` in a sweep job)."""
    return {**skeleton(cfg), "status": "failed", "error": failure(exc), "timings": {"total_s": 0.0}}
