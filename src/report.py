"""Aggregate a sweep: ``python -m src.report <sweep dir>`` (also run by src/sweep.py when a sweep
ends).

Reads every job's ``results.json`` under the sweep directory and writes, next to them:

- ``summary.csv`` / ``summary.parquet``: one row per job (flattened results.json: choices,
  overrides, seed, poison rate, counts, clean.*, attack.*, detection.<detector>.*, stealth.*,
  defense.*, timings.*, status and error). Failed jobs and job folders without a results.json
  (status ``missing``: killed, or still running) are rows too, never dropped.
- ``cells.csv``: per cell (every config value but the seed) and metric, the number of seeds behind
  it, the seeds dropped (failed jobs, undefined values) by name, mean, standard deviation and a
  95% t-interval over seeds clipped to the metric's range (n = 1: no interval), and the
  poisoned-row count of the cell (mean, min, max).
- ``paired_tests.csv``: conditions compared on the same seeds (trigger against trigger, model
  against model, detector against detector at the same cell), with the paired t-test and the
  Wilcoxon signed-rank test.
- ``figures/*.png``: ASR and the paired lift against poison rate, clean AUROC against poison
  rate, and (when detectors ran) in-class detection AUROC heatmaps, one per poison rate.
- ``report.md``: the tables and figures together.

The paired lift (``attack.paired_lift``) of a job is its ASR minus the ASR of the clean model of
the same cell and seed (poison rate 0, same trigger and model), where the sweep holds one: the
trigger's value alone moves a clean model, and only what poisoning adds is the backdoor.

Only aggregate metrics are written: results.json holds no patient-level rows, and lists longer
than a few items are left out of the summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

# Sections of results.json whose numbers are outcomes (cells.csv, the tables), and all the
# sections flattened into the summary ("data" is the cohort summary), in the summary's order.
METRIC_SECTIONS = (
    "clean",
    "attack",
    "detection",
    "attribution",
    "stealth",
    "defense",
    "transfer",
    "drift",
)
SECTIONS = ("counts", *METRIC_SECTIONS, "training", "timings", "data", "trigger")
HEADLINE = [
    ("clean.auroc", "clean AUROC"),
    ("attack.asr", "ASR"),
    ("attack.base_rate", "base rate"),
    ("attack.asr_lift", "ASR lift"),
    ("attack.paired_lift", "paired lift"),
    ("attack.confidence.mean_shift", "P(target) shift"),
]
CONFIG_COLS = ("poison_rate", "poison_mode", "target_label")
MAX_LIST = 20  # longer lists (never patient rows, but noise in a table) stay out of the summary
CONFIDENCE = 0.95


# --- collect -------------------------------------------------------------------------------------
def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder: holding a results.json, or Hydra's .hydra/ record of a job that never
    wrote one."""
    found = {p.parent for p in sweep_dir.rglob("results.json")}
    found |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    found.discard(sweep_dir)  # a single run's folder handed over by mistake still has its job
    return sorted(found, key=_job_sort_key)


def _job_sort_key(p: Path):
    return tuple(int(s) if s.isdigit() else math.inf for s in p.parts[-1:]), str(p)


def flatten(obj: Any, prefix: str, out: dict) -> None:
    """Scalar leaves as ``a.b.c`` columns; short lists of scalars as JSON text; the rest left
    out."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, list | tuple):
        if len(obj) <= MAX_LIST and all(
            isinstance(v, str | int | float | bool | None) for v in obj
        ):
            out[prefix] = json.dumps(obj)
    elif isinstance(obj, str | int | float | bool) or obj is None:
        out[prefix] = obj


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides or []:
        key, _, value = o.partition("=")
        out[key.lstrip("+~")] = value
    return out


def job_row(job: Path, sweep_dir: Path) -> dict:
    rel = str(job.relative_to(sweep_dir)) if job != sweep_dir else "."
    path = job / "results.json"
    if not path.is_file():
        overrides = hydra_overrides(job)
        return {
            "job": rel,
            "status": "missing",
            "error_type": None,
            "error": "no results.json (the job was killed, is still running, or crashed "
            "before writing it)",
            "overrides": " ".join(overrides),
            **_choices_from_overrides(overrides),
        }
    try:
        r = json.loads(path.read_text())
    except ValueError as e:
        return {
            "job": rel,
            "status": "unreadable",
            "error_type": type(e).__name__,
            "error": f"results.json is not valid JSON: {e}",
            "overrides": "",
        }
    cfg = r.get("config") or {}
    err = r.get("error") or {}
    row: dict[str, Any] = {
        "job": rel,
        "status": r.get("status"),
        "error_type": err.get("type"),
        "error": err.get("message"),
        **{k: v for k, v in (cfg.get("choices") or {}).items() if k != "hydra"},
        "overrides": " ".join(cfg.get("overrides") or []),
        "seed": cfg.get("seed"),
        **{k: cfg.get(k) for k in CONFIG_COLS},
        "fingerprint": cfg.get("fingerprint"),
        "schema_version": r.get("schema_version"),
    }
    if r.get("trigger") is None and cfg.get("trigger"):  # failed before the trigger was built
        flatten(cfg["trigger"], "trigger", row)
    for section in SECTIONS:
        if r.get(section) is not None:
            flatten(r[section], "cohort" if section == "data" else section, row)
    return row


def hydra_overrides(job: Path) -> list[str]:
    """The command-line overrides of a job folder, from Hydra's record (.hydra/overrides.yaml);
    [] when there is none."""
    p = job / ".hydra" / "overrides.yaml"
    if not p.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(p)]


def _choices_from_overrides(overrides: list[str]) -> dict:
    ov = parse_overrides(overrides)
    out = {k: ov[k] for k in ("trigger", "model") if k in ov}
    for k in ("seed", "poison_rate"):
        if k in ov:
            try:
                out[k] = json.loads(ov[k])
            except ValueError:
                out[k] = ov[k]
    return out


def summary_table(sweep_dir: Path):
    """One row per job (a pandas DataFrame), failed and missing jobs included."""
    import pandas as pd

    rows = [job_row(j, sweep_dir) for j in job_dirs(sweep_dir)]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    cols = list(df.columns)
    cols.insert(1, cols.pop(cols.index("status")))
    return df[cols].copy()  # one block: the columns added later do not fragment it


# --- statistics ----------------------------------------------------------------------------------
# Metric ranges: the interval of a mean never leaves them.
UNIT = (0.0, 1.0)
SIGNED_UNIT = (-1.0, 1.0)
UNIT_LEAVES = (
    "auroc",
    "ap",
    "auprc",
    "accuracy",
    "ece",
    "asr",
    "base_rate",
    "tpr_at_1fpr",
    "tpr_at_5fpr",
    "precision",
    "recall",
    "relative_size",
    "mean_p_triggered",
    "mean_p_untriggered",
    "robust_accuracy",
    "der",
)
SIGNED_LEAVES = (
    "asr_lift",
    "paired_lift",
    "mean_shift",
    "median_shift",
    "q10_shift",
    "q90_shift",
    "asr_drop",
    "clean_auroc_drop",
)


def metric_range(metric: str) -> tuple[float, float]:
    """The values ``metric`` can take: shares in [0, 1], differences of shares in [-1, 1],
    anything else unbounded."""
    leaf = metric.rsplit(".", 1)[-1]
    if leaf in SIGNED_LEAVES or leaf.endswith("_change"):
        return SIGNED_UNIT
    if leaf in UNIT_LEAVES or leaf.startswith("share") or "_share" in leaf:
        return UNIT
    return (-math.inf, math.inf)


def t_interval(
    values, confidence: float = CONFIDENCE, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> dict:
    """Mean, sample standard deviation and the two-sided t-interval of the mean over seeds, with
    n - 1 degrees of freedom, clipped to ``bounds`` (the metric's range). n = 1 has no interval
    (the bounds are NaN); NaN values are left out (and not counted in n).

    Why t and not a bootstrap over seeds: with the 3 to 5 seeds of a sweep, a percentile
    bootstrap can never reach beyond the observed values and undercovers; the t-interval is
    wider, and clipping keeps it inside the metric's range."""
    import numpy as np
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    lo, hi = bounds
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "ci_low": max(mean - half, lo),
        "ci_high": min(mean + half, hi),
    }


def add_paired_lift(df, keys: list[str]):
    """``attack.paired_lift`` (ASR minus the same-seed clean model's ASR) and
    ``attack.clean_model_asr`` for every ok job whose cell has a rate-0 job with that seed."""
    import numpy as np

    if not {"poison_rate", "seed", "attack.asr"} <= set(df.columns):
        return df
    context = [k for k in keys if k != "poison_rate"]
    ok = df["status"] == "ok"
    rate = df["poison_rate"].astype(float)
    clean = df[ok & (rate == 0)]
    lookup = {
        (*(str(r[k]) for k in context), str(r["seed"])): r["attack.asr"]
        for r in clean.to_dict("records")
    }
    ref = [
        lookup.get((*(str(r[k]) for k in context), str(r["seed"])), np.nan)
        if r["status"] == "ok" and float(r["poison_rate"]) > 0
        else np.nan
        for r in df.to_dict("records")
    ]
    ref = np.asarray(ref, dtype=float)
    return df.assign(
        **{
            "attack.clean_model_asr": ref,
            "attack.paired_lift": df["attack.asr"].astype(float).to_numpy() - ref,
        }
    )


def metric_columns(df) -> list[str]:
    """Numeric metric columns; counts of rows (``n``, ``n_*``) are context, not outcomes."""
    import pandas as pd

    out = []
    for c in df.columns:
        head, _, leaf = c.partition(".")
        leaf = c.rsplit(".", 1)[-1]
        if (
            head in METRIC_SECTIONS
            and not (leaf == "n" or leaf.startswith("n_"))
            and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c])
        ):
            out.append(c)
    return out


PLAIN_COLS = (
    "job",
    "status",
    "error_type",
    "error",
    "overrides",
    "seed",
    *CONFIG_COLS,
    "fingerprint",
    "schema_version",
)


def cell_keys(df) -> list[str]:
    """What defines a cell: trigger, model and poison rate, plus every other choice, config value
    or override (e.g. ``trigger.feature``) that varies across jobs; never the seed. Varying free
    overrides become ``override.<key>`` columns of ``df``."""
    import pandas as pd

    keys = [k for k in ("trigger", "model", "poison_rate") if k in df.columns]
    ok = df["status"] == "ok"  # what varies among the jobs that make the tables
    if not ok.any():
        ok = df["status"].notna()
    for c in df.columns:  # choices (plain columns) and poison_mode/target_label that vary
        if "." in c or c in keys or (c in PLAIN_COLS and c not in CONFIG_COLS):
            continue
        if df.loc[ok, c].astype(str).nunique(dropna=False) > 1:
            keys.append(c)
    ov = pd.DataFrame(
        [parse_overrides(o.split()) for o in df["overrides"].fillna("")], index=df.index
    )
    for c in ov.columns:
        if ("." not in c and c in df.columns) or c == "seed" or c.startswith(("paths.", "hydra.")):
            continue
        if ov.loc[ok, c].astype(str).nunique(dropna=False) > 1:
            df[f"override.{c}"] = ov[c].fillna("(default)")
            keys.append(f"override.{c}")
    return keys


CELL_COLUMNS = (
    "metric",
    "n",
    "mean",
    "sd",
    "ci_low",
    "ci_high",
    "seeds",
    "dropped",
    "n_poisoned_mean",
    "n_poisoned_min",
    "n_poisoned_max",
)


def cell_stats(df, keys: list[str] | None = None):
    """Long table: one row per cell and metric with n, mean, sd and the 95% t-interval over
    seeds (clipped to the metric's range) from the jobs with status ok; the seeds behind it and
    the ones dropped (a failed or missing job, or an undefined value), and the cell's
    poisoned-row count."""
    import pandas as pd

    if keys is None:
        keys = cell_keys(df)
    ok_all = df[df["status"] == "ok"]
    metrics = metric_columns(ok_all) if len(ok_all) else []
    rows = []
    if not len(ok_all) or not keys:
        return pd.DataFrame(columns=[*keys, *CELL_COLUMNS])
    for cell, g in df.groupby(keys, dropna=False, sort=True):
        cell = cell if isinstance(cell, tuple) else (cell,)
        base = dict(zip(keys, cell, strict=True))
        ok = g[g["status"] == "ok"]
        if not len(ok):
            continue
        who = [c for c in ("seed", "job", "status") if c in g]  # narrow: rows are wide
        failed = [
            f"{_seed(r)} ({r['status']})"
            for r in g.loc[g["status"] != "ok", who].to_dict("records")
        ]
        counts = ok["counts.n_poisoned"].astype(float) if "counts.n_poisoned" in ok else None
        count_cols = {
            "n_poisoned_mean": float(counts.mean()) if counts is not None else math.nan,
            "n_poisoned_min": float(counts.min()) if counts is not None else math.nan,
            "n_poisoned_max": float(counts.max()) if counts is not None else math.nan,
        }
        for m in metrics:
            vals = ok[m].astype(float)
            st = t_interval(vals.tolist(), bounds=metric_range(m))
            if not st["n"]:
                continue
            undefined = [
                f"{_seed(r)} (undefined)" for r in ok.loc[vals.isna(), who].to_dict("records")
            ]
            rows.append(
                {
                    **base,
                    "metric": m,
                    **st,
                    "seeds": _seeds(ok[vals.notna()]),
                    "dropped": "; ".join(failed + undefined),
                    **count_cols,
                }
            )
    return pd.DataFrame(rows, columns=[*keys, *CELL_COLUMNS])


def _seed(r) -> str:
    s = r.get("seed")
    return f"seed {int(s)}" if s == s and s is not None else f"job {r.get('job')}"


def _seeds(g) -> str:
    return ",".join(str(int(s)) for s in sorted(g["seed"].dropna().unique()))


# --- paired comparisons ----------------------------------------------------------------------
PAIRED_METRICS = ("attack.asr", "attack.paired_lift", "clean.auroc")
MAX_TEST_ROWS = 60  # report.md lists the comparisons up to this many; the CSV holds them all


def paired_tests(df, keys: list[str]):
    """Each pair of levels of each varying factor (trigger, model, and any other cell key but
    the poison rate), compared at equal other keys on the seeds both ran: mean difference
    (a - b), the paired t-test's and the Wilcoxon signed-rank test's two-sided p-values. Also
    each pair of detectors on the in-class detection AUROC of the same jobs. Rows with fewer
    than 2 pairs are left out."""
    import itertools

    import pandas as pd

    ok = df[df["status"] == "ok"]
    rows = []
    for factor in [k for k in keys if k != "poison_rate"]:
        levels = sorted(ok[factor].astype(str).unique(), key=_natural)
        context = [k for k in keys if k != factor]
        for a, b in itertools.combinations(levels, 2):
            ga = ok[ok[factor].astype(str) == a]
            gb = ok[ok[factor].astype(str) == b]
            for m in [m for m in PAIRED_METRICS if m in ok]:
                merged = ga[[*context, "seed", m]].merge(
                    gb[[*context, "seed", m]], on=[*context, "seed"], suffixes=("_a", "_b")
                )
                if context:
                    groups = merged.groupby(context, dropna=False, sort=True)
                else:
                    groups = [((), merged)]
                for ctx, g in groups:
                    ctx = ctx if isinstance(ctx, tuple) else (ctx,)
                    rows.append(
                        _paired_row(
                            {
                                "factor": factor,
                                "a": a,
                                "b": b,
                                "metric": m,
                                "context": _context_text(context, ctx),
                            },
                            g[f"{m}_a"],
                            g[f"{m}_b"],
                        )
                    )
    det = sorted({c.split(".")[1] for c in ok.columns if _is_detection_auroc(c)})
    for ctx, g in ok.groupby(keys, dropna=False, sort=True) if keys else []:
        ctx = ctx if isinstance(ctx, tuple) else (ctx,)
        for a, b in itertools.combinations(det, 2):
            rows.append(
                _paired_row(
                    {
                        "factor": "detector",
                        "a": a,
                        "b": b,
                        "metric": "detection.auroc (in class)",
                        "context": _context_text(keys, ctx),
                    },
                    g[f"detection.{a}.auroc"],
                    g[f"detection.{b}.auroc"],
                )
            )
    cols = [
        "factor",
        "a",
        "b",
        "metric",
        "context",
        "n_pairs",
        "mean_diff",
        "t_test_p",
        "wilcoxon_p",
    ]
    out = pd.DataFrame([r for r in rows if r["n_pairs"] >= 2], columns=cols)
    return out


def _is_detection_auroc(col: str) -> bool:
    parts = col.split(".")
    return len(parts) == 3 and parts[0] == "detection" and parts[2] == "auroc"


def _context_text(keys, values) -> str:
    return ", ".join(
        f"{k.removeprefix('override.')}={_show(k, str(v))}"
        for k, v in zip(keys, values, strict=True)
    )


def _paired_row(head: dict, a, b) -> dict:
    """Paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank (scipy.stats.wilcoxon,
    exact where it can be) on the pairs where both values are defined."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d = a - b
    t_p = w_p = math.nan
    if len(d) >= 2 and np.any(d != 0):
        if np.std(d) > 0:
            t_p = float(stats.ttest_rel(a, b).pvalue)
        w_p = float(stats.wilcoxon(a, b).pvalue)
    return {
        **head,
        "n_pairs": int(len(d)),
        "mean_diff": float(d.mean()) if len(d) else math.nan,
        "t_test_p": t_p,
        "wilcoxon_p": w_p,
    }


# --- formatting ---------------------------------------------------------------------------------
def fmt_ci(s: dict | None, digits: int = 3) -> str:
    if s is None or not s.get("n"):
        return "–"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (n=1)"
    return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def fmt_rate(r) -> str:
    try:
        r = float(r)
    except (TypeError, ValueError):
        return str(r)
    return "0" if r == 0 else f"{r:g}"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# --- figures -------------------------------------------------------------------------------------
def _rate_axis(rates) -> tuple[dict, float | None]:
    """Positions on a log axis for the poison rates; rate 0 gets a marked place one decade below
    the smallest positive rate (a log axis has no 0)."""
    pos = sorted({float(r) for r in rates if float(r) > 0})
    zero_at = (pos[0] / 10 if pos else 1.0) if any(float(r) == 0 for r in rates) else None
    where = {float(r): (zero_at if float(r) == 0 else float(r)) for r in rates}
    return where, zero_at


def _setup_rate_axis(ax, rates, where, zero_at) -> None:
    import matplotlib.ticker as mticker

    ax.set_xscale("log")
    ticks = sorted(set(where.values()))
    ax.xaxis.set_major_locator(mticker.FixedLocator(ticks))
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.xaxis.set_major_formatter(
        mticker.FixedFormatter([fmt_rate(0 if t == zero_at else t) for t in ticks])
    )
    lo, hi = min(ticks), max(ticks)
    ax.set_xlim(lo / 10**0.3, hi * 10**0.3)
    if zero_at is not None and len(ticks) > 1:
        # a "//" on the axis: the stretch from 0 to the first positive rate is not to scale
        brk = (zero_at * ticks[1]) ** 0.5
        kw = dict(transform=ax.get_xaxis_transform(), color="k", clip_on=False, lw=1)
        for dx in (0.92, 1.08):
            ax.plot([brk * dx / 1.04, brk * dx * 1.04], [-0.02, 0.02], **kw)
    ax.grid(True, which="major", alpha=0.3)


def _series(df, keys):
    """Line label per row: the trigger plus any other varying key that is not model or rate."""
    extra = [k for k in keys if k not in ("trigger", "model", "poison_rate")]
    if not extra:
        return df["trigger"].astype(str)
    return (
        df["trigger"].astype(str)
        + " ("
        + df[extra]
        .astype(str)
        .apply(
            lambda r: ", ".join(f"{k.removeprefix('override.')}={v}" for k, v in r.items()), axis=1
        )
        + ")"
    )


def _ylim(metric: str, d) -> tuple[float, float]:
    """Shares on their natural scale, so panels and figures compare at a glance."""
    lo = d[["mean", "ci_low"]].min().min()
    lo = 0.0 if lo != lo else float(lo)  # NaN: no data
    if metric == "attack.asr":
        return -0.03, 1.03
    if metric in ("attack.asr_lift", "attack.paired_lift"):
        return max(-1.03, min(-0.1, lo - 0.03)), 1.03
    if metric == "clean.auroc":
        return min(0.5, lo - 0.02), 1.0
    return lo - 0.05, float(d[["mean", "ci_high"]].max().max()) + 0.05


def plot_vs_rate(
    cells, keys, metrics: list[tuple[str, str]], path: Path, title: str
) -> Path | None:
    """One row per metric, one panel per model, one line per trigger over the positive rates
    (rate 0 a separate marker), the 95% interval shaded and drawn as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sub = cells[cells["metric"].isin([m for m, _ in metrics])].copy()
    if sub.empty or "poison_rate" not in sub.columns:
        return None
    sub["series"] = _series(sub, keys)
    models = sorted(sub["model"].astype(str).unique()) if "model" in sub else ["all"]
    where, zero_at = _rate_axis(sub["poison_rate"].unique())
    series = sorted(sub["series"].unique())
    # tab10 while it suffices; past ten series (the full trigger family is eleven) tab20, so no
    # two lines share a colour
    cmap, k = (plt.cm.tab10, 10) if len(series) <= 10 else (plt.cm.tab20, 20)
    colors = {s: cmap(i % k) for i, s in enumerate(series)}
    nrow, ncol = len(metrics), len(models)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(3.4 * ncol + 1.8, 2.7 * nrow + 0.8),
        squeeze=False,
        sharex=True,
        sharey="row",
        layout="constrained",
    )
    for i, (metric, label) in enumerate(metrics):
        for j, model in enumerate(models):
            ax = axes[i][j]
            d = sub[(sub["metric"] == metric) & (sub["model"].astype(str) == model)]
            for s in series:
                ds = d[d["series"] == s].sort_values("poison_rate")
                if ds.empty:
                    continue
                c = colors[s]
                # rate 0 sits left of the axis break: a marker with its interval, never
                # joined by a line to the positive rates
                zero = ds[ds["poison_rate"].astype(float) == 0]
                pos = ds[ds["poison_rate"].astype(float) > 0]
                for part, style in ((zero, "o"), (pos, "o-")):
                    if part.empty:
                        continue
                    x = [where[float(r)] for r in part["poison_rate"]]
                    lo, hi = part["ci_low"].to_numpy(), part["ci_high"].to_numpy()
                    ax.plot(x, part["mean"], style, color=c, ms=3.5, lw=1.4, label=s)
                    if len(part) > 1:
                        ax.fill_between(x, lo, hi, color=c, alpha=0.18, lw=0)
                    ok = ~(np.isnan(lo) | np.isnan(hi))
                    ax.vlines(np.asarray(x)[ok], lo[ok], hi[ok], color=c, alpha=0.5, lw=1)
            _setup_rate_axis(ax, sub["poison_rate"].unique(), where, zero_at)
            if metric in ("attack.asr_lift", "attack.paired_lift"):
                ax.axhline(0, color="0.4", lw=0.8, ls=":")
            ax.set_ylim(*_ylim(metric, sub[sub["metric"] == metric]))
            if i == 0:
                ax.set_title(f"model: {model}", fontsize=10)
            if j == 0:
                ax.set_ylabel(label)
            if i == nrow - 1:
                ax.set_xlabel("poison rate (share of eligible train rows)")
    seen: dict = {}  # label -> handle over all panels (a trigger may miss from one)
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                seen.setdefault(lab, h)
    fig.suptitle(title, fontsize=11)
    fig.legend(
        list(seen.values()),
        list(seen.keys()),
        title="trigger",
        loc="outside right upper",
        fontsize=8,
        title_fontsize=9,
        frameon=False,
    )
    _savefig(fig, path)
    return path


def detection_matrix(cells):
    """Mean in-class detection AUROC over seeds per (poison rate, model, trigger, detector), for
    the poisoned cells (rate > 0); None without detection results. Never averaged over rates:
    a detector's verdict can reverse with the poison's share of its class."""
    sub = cells[cells["metric"].map(_is_detection_auroc)].copy()
    if "poison_rate" in sub:
        sub = sub[sub["poison_rate"].astype(float) > 0]
    if sub.empty:
        return None
    sub["detector"] = sub["metric"].str.split(".").str[1]
    by = [k for k in ("poison_rate", "model", "trigger") if k in sub] + ["detector"]
    return sub.groupby(by, dropna=False)["mean"].mean().reset_index()


def plot_detection(cells, path: Path) -> Path | None:
    """A heatmap trigger x detector per (poison rate, model): rows of panels are rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = detection_matrix(cells)
    if m is None:
        return None
    if "poison_rate" not in m:
        m["poison_rate"] = "all"
    models = sorted(m["model"].astype(str).unique()) if "model" in m else ["all"]
    rates = sorted(m["poison_rate"].unique(), key=_natural)
    triggers = sorted(m["trigger"].astype(str).unique())
    dets = sorted(m["detector"].unique())
    nrow, ncol = len(rates), len(models)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        squeeze=False,
        layout="constrained",
        figsize=(
            (0.8 * len(dets) + 1.8) * ncol + 1.0,
            (0.38 * max(len(triggers), 3) + 1.7) * nrow + 0.5,
        ),
    )
    im = None
    for i, rate in enumerate(rates):
        for j, model in enumerate(models):
            ax = axes[i][j]
            d = m[m["poison_rate"] == rate]
            d = d[d["model"].astype(str) == model] if "model" in d else d
            grid = np.full((len(triggers), len(dets)), np.nan)
            for _, r in d.iterrows():
                grid[triggers.index(str(r["trigger"])), dets.index(r["detector"])] = r["mean"]
            im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
            for (a, b), v in np.ndenumerate(grid):
                ax.text(
                    b, a, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8
                )
            ax.set_xticks(
                range(len(dets)),
                dets if i == nrow - 1 else [""] * len(dets),
                rotation=40,
                ha="right",
                fontsize=8,
            )
            ax.set_yticks(
                range(len(triggers)), triggers if j == 0 else [""] * len(triggers), fontsize=8
            )
            ax.set_title(f"model: {model}, poison rate {fmt_rate(rate)}", fontsize=9)
            if j == 0:
                ax.set_ylabel("trigger")
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.05, pad=0.02, aspect=30)
    cb.set_label("in-class detection AUROC (0.5: chance; < 0.5: reversed)")
    fig.suptitle("Detection AUROC within the target class, mean over seeds", fontsize=11)
    _savefig(fig, path)
    return path


def plot_confidence(panels: list[tuple[str, list, list]], path: Path) -> Path | None:
    """One panel per (title, histogram with the trigger, histogram without): the distribution
    of P(target) over the triggered non-target test rows, as shares of the rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [p for p in panels if p[1] is not None and sum(p[1])]
    if not panels:
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        squeeze=False,
        sharey=True,
        figsize=(3.6 * ncol, 2.6 * nrow + 0.6),
        layout="constrained",
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, with_trigger, without) in zip(axes.flat, panels, strict=False):
        edges = np.linspace(0, 1, len(with_trigger) + 1)
        for counts, label, color in (
            (without, "without trigger", "0.55"),
            (with_trigger, "with trigger", "tab:red"),
        ):
            share = np.asarray(counts, float) / max(sum(counts), 1)
            ax.stairs(
                share,
                edges,
                label=label,
                color=color,
                fill=label == "without trigger",
                alpha=0.5 if label == "without trigger" else 1.0,
                lw=1.5,
            )
        ax.axvline(0.5, color="k", lw=0.8, ls=":")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("P(target) of triggered non-target test rows")
    axes[0][0].set_ylabel("share of rows")
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.suptitle("Confidence shift: the same rows with and without the trigger", fontsize=11)
    _savefig(fig, path)
    return path


def confidence_panels(df, keys: list[str], most: int = 12) -> list[tuple[str, list, list]]:
    """Histograms summed over seeds, per (trigger, model) at its highest poison rate."""
    col_t, col_u = "attack.confidence.hist_triggered", "attack.confidence.hist_untriggered"
    if col_t not in df or "poison_rate" not in df:
        return []
    ok = df[(df["status"] == "ok") & df[col_t].notna()]
    ok = ok[ok["poison_rate"].astype(float) > 0]
    group = [k for k in keys if k != "poison_rate"]
    panels = []
    for cell, g in ok.groupby(group, dropna=False, sort=True) if group else [((), ok)]:
        g = g[g["poison_rate"].astype(float) == g["poison_rate"].astype(float).max()]
        t = [sum(v) for v in zip(*(json.loads(x) for x in g[col_t]), strict=True)]
        u = [sum(v) for v in zip(*(json.loads(x) for x in g[col_u]), strict=True)]
        cell = cell if isinstance(cell, tuple) else (cell,)
        rate = fmt_rate(g["poison_rate"].iloc[0])
        title = ", ".join(str(c) for c in cell) + f", rate {rate} ({len(g)} seeds)"
        panels.append((title, t, u))
    return panels[:most]


def defense_names(cells) -> list[str]:
    """Defenses with a result in the sweep (``defense.<name>.attack.asr`` among the metrics)."""
    if not len(cells):
        return []
    found = {
        m.split(".")[1]
        for m in cells["metric"]
        if m.startswith("defense.") and m.endswith(".attack.asr")
    }
    return sorted(found)


def plot_defenses(look: dict, keys: list[str], names: list[str], path: Path, most: int = 12):
    """One panel per cell: ASR after each defense against clean AUROC after it (95% intervals
    over seeds as bars), beside the undefended model; down and right is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(cell, st) for cell, st in sorted(look.items()) if "clean.auroc" in st][:most]
    panels = [(c, st) for c, st in panels if any(f"defense.{n}.attack.asr" in st for n in names)]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    markers = "osD^vP*X"
    for ax, (cell, st) in zip(axes.flat, panels, strict=False):
        points = [("none", "clean.auroc", "attack.asr")] + [
            (n, f"defense.{n}.clean.auroc", f"defense.{n}.attack.asr") for n in names
        ]
        for i, (label, xm, ym) in enumerate(points):
            if xm not in st or ym not in st:
                continue
            x, y = st[xm], st[ym]

            def err(s):
                lo, hi = s.get("ci_low"), s.get("ci_high")
                if lo is None or lo != lo:
                    return None
                return [[s["mean"] - lo], [hi - s["mean"]]]

            ax.errorbar(
                x["mean"],
                y["mean"],
                xerr=err(x),
                yerr=err(y),
                fmt=markers[i % len(markers)],
                color="black" if label == "none" else f"C{i}",
                label="undefended" if label == "none" else label,
                capsize=3,
                # the undefended model drawn hollow and on top: a defense that changes nothing
                # sits under it
                **({"mfc": "none", "ms": 11, "zorder": 5} if label == "none" else {}),
            )
        ax.set_title(_context_text(keys, cell), fontsize=8)
        ax.set_xlabel("clean AUROC after")
        ax.set_ylabel("ASR after")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle("Defenses: ASR against clean AUROC after each (mean, 95% interval over seeds)")
    fig.tight_layout()
    _savefig(fig, path)
    return path


def _savefig(fig, path: Path) -> None:
    """Write the figure atomically (its folder made as needed), then release it."""
    import matplotlib.pyplot as plt

    from src.atomic import atomic_file

    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)


# --- report --------------------------------------------------------------------------------------
def _lookup(cells, keys):
    """{cell tuple: {metric: stats}} for fast table building."""
    out: dict = {}
    for r in cells.to_dict("records"):
        cell = tuple(str(r[k]) for k in keys)
        out.setdefault(cell, {})[r["metric"]] = r
    return out


def _count_text(stats: dict) -> str:
    """'30' or '29-31' poisoned rows of a cell (the same for every metric row of it)."""
    r = next(iter(stats.values()), None)
    if r is None or r.get("n_poisoned_mean") != r.get("n_poisoned_mean"):
        return "–"
    lo, hi = int(r["n_poisoned_min"]), int(r["n_poisoned_max"])
    return str(lo) if lo == hi else f"{lo}–{hi} (mean {r['n_poisoned_mean']:.1f})"


def _n_text(stats: dict, metrics) -> str:
    """Seeds behind the cell's ``metrics`` (the most any of them has), and those dropped."""
    rows = [stats[m] for m in metrics if m in stats]
    n = max((s["n"] for s in rows), default=0)
    dropped = sorted({d for s in rows for d in str(s.get("dropped") or "").split("; ") if d})
    return f"{n}" + (f" (dropped: {', '.join(dropped)})" if dropped else "")


def write_markdown(sweep_dir: Path, df, cells, keys, figures: dict, out: Path, tests) -> Path:
    n_ok = int((df["status"] == "ok").sum())
    bad = df[df["status"] != "ok"]
    lines = [
        f"# Sweep report: {sweep_dir}",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `python -m src.report`.",
        "",
        f"**Jobs:** {len(df)}: {n_ok} ok"
        + "".join(f", {v} {k}" for k, v in bad["status"].value_counts().items())
        + ".",
    ]
    grid = []
    for k in [*keys, "seed"]:
        if k in df.columns:
            vals = sorted(
                {fmt_rate(v) if k == "poison_rate" else str(v) for v in df[k].dropna()},
                key=_natural,
            )
            grid.append(f"- `{k}`: {', '.join(vals)}")
    lines += ["", "**Grid:**", *grid, ""]
    if len(bad):
        lines += [
            "## Failed jobs",
            "",
            "Not in the tables and figures below; their folders hold the full error "
            "(results.json: error.traceback, run.log).",
            "",
            md_table(
                ["job", "status", "overrides", "error"],
                [
                    [
                        r["job"],
                        r["status"],
                        r.get("overrides") or "",
                        f"{r.get('error_type') or ''}: {_short(r.get('error'))}",
                    ]
                    for r in bad.to_dict("records")
                ],
            ),
            "",
        ]
    look = _lookup(cells, keys)
    ordered = sorted(look.items(), key=lambda kv: tuple(map(_natural, kv[0])))
    head = [k.removeprefix("override.") for k in keys]
    lines += [
        "## Clean performance and attack",
        "",
        "Mean over seeds, with the 95% t-interval over seeds (n − 1 degrees of freedom, "
        "clipped to the metric's range) in brackets; `(n=1)`: one seed, no interval. "
        "`poisoned rows`: the rows the rate means in this cell (dirty mode: a share of the "
        "eligible training rows; clean mode: of the target-class rows). `seeds`: the seeds "
        "behind each number, and any dropped (failed job, undefined value). ASR: share of "
        "triggered non-target test rows predicted as the target; base rate: the same rows "
        "untriggered; ASR lift = ASR − base rate; **paired lift** = ASR − the ASR of the "
        "same-seed clean model of the cell (rate 0), what poisoning adds beyond the trigger's "
        "own effect on a clean model (– where the sweep has no rate-0 job for the cell). "
        "**P(target) shift**: on the same triggered rows, the mean of P(target) with the "
        "trigger minus without it (its distribution: the confidence-shift figure).",
        "",
    ]
    rows = [
        [
            *(_show(k, v) for k, v in zip(keys, cell, strict=True)),
            _count_text(stats),
            _n_text(stats, [m for m, _ in HEADLINE]),
            *(fmt_ci(stats.get(m)) for m, _ in HEADLINE),
        ]
        for cell, stats in ordered
    ]
    lines += [
        md_table([*head, "poisoned rows", "seeds", *(lab for _, lab in HEADLINE)], rows)
        if rows
        else "(no finished jobs)",
        "",
    ]
    for name, caption in (
        ("asr", "ASR and paired lift against poison rate"),
        ("clean_auroc", "Clean AUROC against poison rate"),
        ("detection_auroc", "In-class detection AUROC, trigger × detector, per poison rate"),
        ("confidence_shift", "P(target) of triggered rows with and without the trigger"),
    ):
        if figures.get(name):
            lines += [f"![{caption}]({figures[name].relative_to(out).as_posix()})", ""]
    if figures.get("asr") or figures.get("clean_auroc"):
        lines += [
            "Figures: poison rate on a log axis; rate 0 (no poisoning) is a separate marker "
            "one decade left of the smallest positive rate, past the `//` mark, joined to no "
            "line. Shaded and bars: the 95% interval above (none where a cell has one seed).",
            "",
        ]
    names = defense_names(cells)
    if names:
        lines += [
            "## Defenses",
            "",
            "Each defense against the same undefended model (same seed): ASR and clean AUROC "
            "before and after, mean [95% t-interval over seeds]; **DER** = (max(0, ASR drop) − "
            "max(0, clean AUROC drop) + 1) / 2 (1: backdoor removed at no cost; 0.5: nothing "
            "changed); seconds: the defense's own time. Cells at rate 0 show what a defense "
            "costs a clean model. Definitions: docs/defenses.md.",
            "",
        ]
        rows = []
        for cell, stats in ordered:
            for n in names:
                if f"defense.{n}.attack.asr" not in stats:
                    continue
                rows.append(
                    [
                        *(_show(k, v) for k, v in zip(keys, cell, strict=True)),
                        n,
                        fmt_ci(stats.get("attack.asr")),
                        fmt_ci(stats.get(f"defense.{n}.attack.asr")),
                        fmt_ci(stats.get("clean.auroc")),
                        fmt_ci(stats.get(f"defense.{n}.clean.auroc")),
                        fmt_ci(stats.get(f"defense.{n}.der")),
                        fmt_ci(stats.get(f"defense.{n}.seconds"), 1),
                    ]
                )
        lines += [
            md_table(
                [
                    *head,
                    "defense",
                    "ASR before",
                    "ASR after",
                    "clean AUROC before",
                    "after",
                    "DER",
                    "seconds",
                ],
                rows,
            ),
            "",
        ]
        if figures.get("defenses"):
            lines += [
                "![ASR against clean AUROC after each defense]"
                f"({figures['defenses'].relative_to(out).as_posix()})",
                "",
            ]
    det = (
        sorted({m.split(".")[1] for m in cells["metric"] if _is_detection_auroc(m)})
        if len(cells)
        else []
    )
    if det:
        lines += [
            "## Detection",
            "",
            "AUROC of each detector's suspicion scores against the ground-truth poison mask, "
            "**within the target class** (which holds every poisoned row), on ranks; poisoned "
            "cells only. Below 0.5: the detector ranks the poison *last*. Pooled numbers (all "
            "training rows) are in `cells.csv` as `detection.<detector>.pooled.*`; TPR at "
            "1%/5% FPR, AP and the flag's precision and recall as `detection.<detector>.*`.",
            "",
        ]
        rows = []
        for cell, stats in ordered:
            if _unpoisoned(keys, cell):
                continue
            rows.append(
                [
                    *(_show(k, v) for k, v in zip(keys, cell, strict=True)),
                    _count_text(stats),
                    *(fmt_ci(stats.get(f"detection.{d}.auroc")) for d in det),
                ]
            )
        lines += [md_table([*head, "poisoned rows", *det], rows), ""]
    if tests is not None and len(tests):
        shown = tests[tests["metric"].isin(["attack.asr", "detection.auroc (in class)"])]
        lines += [
            "## Paired comparisons",
            "",
            "Two conditions on the same seeds (or, for detectors, the same jobs): mean "
            "difference a − b, two-sided p-values of the paired t-test (scipy `ttest_rel`) and "
            "the Wilcoxon signed-rank test (scipy `wilcoxon`; with fewer than 6 pairs it cannot "
            "reach p < 0.05). Not corrected for multiple comparisons. "
            f"All {len(tests)} comparisons (ASR, paired lift, clean AUROC, in-class detection "
            "AUROC) are in `paired_tests.csv`.",
            "",
        ]
        if len(shown) <= MAX_TEST_ROWS:
            lines += [
                md_table(
                    [
                        "factor",
                        "a",
                        "b",
                        "metric",
                        "at",
                        "pairs",
                        "mean a − b",
                        "t-test p",
                        "Wilcoxon p",
                    ],
                    [
                        [
                            r["factor"],
                            r["a"],
                            r["b"],
                            r["metric"],
                            r["context"],
                            r["n_pairs"],
                            f"{r['mean_diff']:+.3f}",
                            _fmt_p(r["t_test_p"]),
                            _fmt_p(r["wilcoxon_p"]),
                        ]
                        for r in shown.to_dict("records")
                    ],
                )
                if len(shown)
                else "(no pairs)",
                "",
            ]
        else:
            lines += [
                f"({len(shown)} comparisons of ASR and detection AUROC: too many for a page; "
                "filter `paired_tests.csv` by `factor`, `a`, `b` and `context`.)",
                "",
            ]
    drift_cols = [
        ("drift.clean.cosine", "cosine (untriggered)"),
        ("drift.clean.spearman", "Spearman (untriggered)"),
        ("drift.triggered.cosine", "cosine (triggered)"),
        ("drift.triggered.spearman", "Spearman (triggered)"),
        ("drift.triggered.top_k_rank_change", "top-5 rank change (triggered)"),
    ]
    have = set(cells["metric"]) if len(cells) else set()
    if any(m in have for m, _ in drift_cols):
        lines += [
            "## Explainability drift",
            "",
            "Integrated Gradients of each poisoned model against the clean model of its cell "
            "(the rate-0 job, same seed) on the same test rows: cosine of the attributions, "
            "Spearman correlation of per-feature importance, and the rank change of the clean "
            "model's top 5 features (`drift.*` in `cells.csv`, the trigger features' ranks in "
            "`summary.csv`).",
            "",
        ]
        rows = [
            [
                *(_show(k, v) for k, v in zip(keys, cell, strict=True)),
                *(fmt_ci(stats.get(m)) for m, _ in drift_cols),
            ]
            for cell, stats in ordered
            if any(m in stats for m, _ in drift_cols)
        ]
        lines += [md_table([*head, *(lab for _, lab in drift_cols)], rows), ""]
    stealth = sorted({m for m in cells["metric"] if m.startswith("stealth.")}) if len(cells) else []
    if stealth:
        lines += [
            "## Stealth",
            "",
            "Statistics of the triggered training rows (poisoned cells only).",
            "",
        ]
        rows = [
            [
                *(_show(k, v) for k, v in zip(keys, cell, strict=True)),
                *(fmt_ci(stats.get(m)) for m in stealth),
            ]
            for cell, stats in ordered
            if not _unpoisoned(keys, cell)
        ]
        lines += [md_table([*head, *(m.removeprefix("stealth.") for m in stealth)], rows), ""]
    lines += [
        "## Files",
        "",
        "- `summary.csv`, `summary.parquet`: one row per job (failed ones included)",
        "- `cells.csv`: per cell and metric: n, seeds, dropped seeds, mean, sd, clipped 95% "
        "t-interval over seeds, poisoned-row count",
        "- `paired_tests.csv`: every paired comparison",
        "- `figures/`: the figures above",
        "",
    ]
    path = out / "report.md"
    _write_text(path, "\n".join(lines))
    return path


def _unpoisoned(keys: list[str], cell: tuple) -> bool:
    """A cell at poison rate 0: no detection or stealth numbers belong to it."""
    return "poison_rate" in keys and float(cell[keys.index("poison_rate")]) == 0


def _fmt_p(p) -> str:
    return "–" if p != p else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _write_text(path: Path, text: str) -> None:
    from src.atomic import atomic_file

    with atomic_file(path) as f:
        f.write(text)


def _show(key: str, value: str) -> str:
    return fmt_rate(value) if key == "poison_rate" else value


def _natural(v):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _short(msg, n: int = 300) -> str:
    msg = " ".join(str(msg or "").split())
    return msg if len(msg) <= n else msg[: n - 1] + "…"


def _parquet_safe(df):
    """Parquet wants one type per column: a column mixing numbers and text becomes text."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            kinds = {type(v) for v in df[c].dropna()}
            if len(kinds) > 1:
                df[c] = df[c].map(lambda v: None if v is None else str(v))
    return df


def build_report(sweep_dir: str | Path, out: str | Path | None = None) -> dict:
    """Write summary.csv/parquet, cells.csv, figures/ and report.md for ``sweep_dir`` into
    ``out`` (default: the sweep directory). Returns the paths and a one-paragraph message."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {str(sweep_dir)!r} does not exist")
    out = Path(out) if out else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    df = summary_table(sweep_dir)
    if df.empty:
        raise FileNotFoundError(f"no job folders (results.json or .hydra/) under {sweep_dir}")
    keys = cell_keys(df)
    df = add_paired_lift(df, keys)
    cells = cell_stats(df, keys)
    tests = paired_tests(df, keys)
    from src.atomic import atomic_file

    for name, frame in (("summary.csv", df), ("cells.csv", cells), ("paired_tests.csv", tests)):
        with atomic_file(out / name) as f:
            frame.to_csv(f, index=False)
    with atomic_file(out / "summary.parquet", "wb") as f:
        _parquet_safe(df).to_parquet(f, index=False)
    figs: dict = {}
    if len(cells):
        figs["asr"] = plot_vs_rate(
            cells,
            keys,
            [("attack.asr", "ASR"), ("attack.paired_lift", "paired lift")],
            out / "figures" / "asr.png",
            "Attack success against poison rate",
        )
        figs["clean_auroc"] = plot_vs_rate(
            cells,
            keys,
            [("clean.auroc", "clean AUROC")],
            out / "figures" / "clean_auroc.png",
            "Clean test AUROC against poison rate",
        )
        figs["detection_auroc"] = plot_detection(cells, out / "figures" / "detection_auroc.png")
        figs["confidence_shift"] = plot_confidence(
            confidence_panels(df, keys), out / "figures" / "confidence_shift.png"
        )
        names = defense_names(cells)
        if names:
            figs["defenses"] = plot_defenses(
                _lookup(cells, keys), keys, names, out / "figures" / "defenses.png"
            )
    md = write_markdown(sweep_dir, df, cells, keys, figs, out, tests)
    n_ok = int((df["status"] == "ok").sum())
    bad = df[df["status"] != "ok"]
    msg = [f"report   {md}  ({n_ok}/{len(df)} jobs ok)"]
    for r in bad.to_dict("records"):
        msg.append(
            f"FAILED   job {r['job']}: {r.get('error_type') or r['status']}: "
            f"{_short(r.get('error'), 160)}"
        )
    return {
        "summary_csv": out / "summary.csv",
        "summary_parquet": out / "summary.parquet",
        "cells_csv": out / "cells.csv",
        "paired_tests_csv": out / "paired_tests.csv",
        "report": md,
        "figures": {k: v for k, v in figs.items() if v},
        "n_jobs": len(df),
        "n_ok": n_ok,
        "n_failed": len(bad),
        "message": "\n".join(msg),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m src.report",
        description="Aggregate a sweep directory: summary.csv/parquet, cells.csv (mean and 95%% "
        "t-interval over seeds), figures/ and report.md.",
    )
    p.add_argument("sweep_dir", help="a sweep directory (multirun/<date>/<time>/)")
    p.add_argument("--out", default=None, help="where to write (default: the sweep directory)")
    a = p.parse_args(argv)
    try:
        res = build_report(a.sweep_dir, a.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res["message"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
