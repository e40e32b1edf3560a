"""Data sources to Cohort, cached.

``load_cohort(data_cfg, cache_dir)`` is the one entry point: ``data_cfg.source`` picks

- ``synthetic``: a synthetic MIMIC-IV (``n_stays``, ``seed``) generated once into
  ``cache_dir/synthetic-mimiciv/<hash>/`` and read by the same extractor as real data;
- ``mimiciv``: a MIMIC-IV root (``root``; layout in ``src.data.mimiciv.extract``);
- ``yaib``: a YAIB / ricu cohort folder (``path``; dyn, sta, outc parquet; ``src.data.yaib``).

The extracted Cohort is cached in ``cache_dir/cohorts/<source>-<hash>/`` (``Cohort.save``, atomic)
with its attrition in ``cache_dir/cohorts/<source>-<hash>.attrition.json`` (written first, so a
cohort in the cache always has one). The hash covers only the keys that define the cohort plus
``CACHE_VERSION`` (and for real MIMIC-IV the size and mtime of its tables), so split sizes, batch
size or a run name never trigger a new extraction. Bump ``CACHE_VERSION`` whenever extraction
logic changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

from src.atomic import atomic_dir, atomic_file, discard
from src.data.cohort import Cohort

log = logging.getLogger("src.data")

CACHE_VERSION = 2  # 2: float32 bin sums (1-ulp changes in about 0.01% of cells)
SOURCES = ("synthetic", "mimiciv", "yaib")
DEFAULTS = {"window_hours": 24, "min_stay_hours": 30, "min_age": 18, "features": None}


def _plain(data_cfg) -> dict:
    """A plain dict from a DictConfig or any mapping (interpolations resolved)."""
    if isinstance(data_cfg, Mapping) and not hasattr(data_cfg, "_get_node"):
        return dict(data_cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(data_cfg, resolve=True)  # type: ignore[return-value]


def _need(cfg: dict, key: str, why: str):
    if cfg.get(key) is None:
        raise ValueError(f"data.{key} is required for data.source={cfg.get('source')!r} ({why})")
    return cfg[key]


def cohort_identity(data_cfg) -> dict:
    """The keys that define the cohort (and nothing else), normalised."""
    from src.data.mimiciv import extract as ex
    from src.data.mimiciv.synthetic import GENERATOR_VERSION

    cfg = _plain(data_cfg)
    source = cfg.get("source")
    if source not in SOURCES:
        raise ValueError(f"data.source={source!r} is not one of {', '.join(SOURCES)}")
    ident: dict = {"source": source, "cache_version": CACHE_VERSION}
    if source == "yaib":
        from src.data.yaib import file_paths

        path = Path(_need(cfg, "path", "the YAIB cohort folder")).expanduser().resolve()
        ident["path"] = str(path)
        ident["window_hours"] = int(cfg.get("window_hours", DEFAULTS["window_hours"]))
        feats = cfg.get("features")
        ident["features"] = list(feats) if feats is not None else None
        ident["files"] = {k: _stat(p) for k, p in file_paths(path).items()}
        return ident
    for k, default in DEFAULTS.items():
        v = cfg.get(k, default)
        ident[k] = list(v) if k == "features" and v is not None else v
    ident["window_hours"] = int(ident["window_hours"])
    ident["min_stay_hours"] = float(ident["min_stay_hours"])
    ident["min_age"] = float(ident["min_age"])
    if source == "synthetic":
        ident["n_stays"] = int(_need(cfg, "n_stays", "how many ICU stays to generate"))
        ident["seed"] = int(cfg.get("seed") or 0)
        ident["generator_version"] = GENERATOR_VERSION
    else:
        root = ex.resolve_root(_need(cfg, "root", "the MIMIC-IV folder holding hosp/ and icu/"))
        ident["root"] = str(root.resolve())
        # the tables' size and mtime, so replacing the data invalidates the cache
        ident["tables"] = {name: _stat(ex.table_path(root, name)) for name in ex.TABLES}
    return ident


def _stat(p: Path) -> list:
    st = p.stat()
    return [p.name, st.st_size, st.st_mtime_ns]


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def cohort_key(data_cfg) -> str:
    ident = cohort_identity(data_cfg)
    return f"{ident['source']}-{_hash(ident)}"


def cohort_path(data_cfg, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "cohorts" / cohort_key(data_cfg)


def _attrition_path(cohort_dir: Path) -> Path:
    return cohort_dir.with_name(cohort_dir.name + ".attrition.json")


def synthetic_tables(n_stays: int, seed: int, cache_dir: str | Path) -> Path:
    """Folder of the synthetic MIMIC-IV tables for ``(n_stays, seed)``; generated (into a
    temporary folder, then renamed) unless already there."""
    from src.data.mimiciv.synthetic import GENERATOR_VERSION, generate

    base = Path(cache_dir) / "synthetic-mimiciv"
    path = base / f"n{n_stays}-s{seed}-{_hash([n_stays, seed, GENERATOR_VERSION])}"
    if path.is_dir():
        log.info("synthetic MIMIC-IV tables found in %s", path)
        return path
    t0 = time.perf_counter()
    log.info("generating synthetic MIMIC-IV: %d ICU stays, seed %d", n_stays, seed)
    with atomic_dir(path) as tmp:
        generate(tmp, n_stays=n_stays, seed=seed)
    log.info("generated synthetic MIMIC-IV in %.1f s into %s", time.perf_counter() - t0, path)
    return path


def load_cohort_with_attrition(data_cfg, cache_dir: str | Path) -> tuple[Cohort, dict]:
    """The Cohort for ``data_cfg`` and its attrition summary, from the cache when present."""
    from src.data.mimiciv.extract import extract

    cfg = _plain(data_cfg)
    ident = cohort_identity(cfg)
    path = Path(cache_dir) / "cohorts" / f"{ident['source']}-{_hash(ident)}"
    if path.is_dir():
        t0 = time.perf_counter()
        try:
            cohort = Cohort.load(path)
            attrition = _read_json(_attrition_path(path))
        except Exception as e:  # truncated or damaged: it can be rebuilt from its source
            log.warning(
                "cached cohort %s cannot be read (%s: %s): removing it and building it again",
                path,
                type(e).__name__,
                e,
            )
            _remove_entry(path)
        else:
            log.info(
                "loaded cohort from cache %s: %d stays, prevalence %.3f, in %.2f s",
                path,
                len(cohort),
                cohort.summary()["prevalence"],
                time.perf_counter() - t0,
            )
            return cohort, attrition
    if ident["source"] == "yaib":
        from src.data.yaib import load_yaib

        cohort, attrition = load_yaib(
            ident["path"], window_hours=ident["window_hours"], features=ident["features"]
        )
        return _store(
            path, cohort, {**attrition, "cohort_key": path.name, "cohort_identity": ident}
        )
    if ident["source"] == "synthetic":
        root = synthetic_tables(ident["n_stays"], ident["seed"], cache_dir)
    else:
        root = Path(ident["root"])
    t0 = time.perf_counter()
    log.info(
        "extracting cohort from %s (window %d h, min stay %g h, min age %g)",
        root,
        ident["window_hours"],
        ident["min_stay_hours"],
        ident["min_age"],
    )
    cohort, attrition = extract(
        root,
        window_hours=ident["window_hours"],
        min_stay_hours=ident["min_stay_hours"],
        min_age=ident["min_age"],
        features=ident["features"],
        cache_dir=cache_dir,
    )
    attrition = {**attrition, "cohort_key": path.name, "cohort_identity": ident}
    _store(path, cohort, attrition)
    log.info("extracted and cached cohort in %.1f s: %s", time.perf_counter() - t0, path)
    return cohort, attrition


def _store(path: Path, cohort: Cohort, attrition: dict) -> tuple[Cohort, dict]:
    """Cache ``cohort`` at ``path``, its attrition first (a cached cohort always has one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(_attrition_path(path)) as fh:
        json.dump(attrition, fh, indent=1)
    cohort.save(path)
    log.info(
        "attrition: %s",
        json.dumps({k: v for k, v in attrition.items() if k not in ("cohort_identity",)}),
    )
    return cohort, attrition


def _remove_entry(path: Path) -> None:
    discard(path, "cached cohort")
    _attrition_path(path).unlink(missing_ok=True)


def load_cohort(data_cfg, cache_dir: str | Path) -> Cohort:
    """The Cohort for ``data_cfg`` (see the module docstring)."""
    return load_cohort_with_attrition(data_cfg, cache_dir)[0]


def load_attrition(data_cfg, cache_dir: str | Path) -> dict:
    """Attrition summary of the cached cohort for ``data_cfg`` (counts excluded per criterion);
    empty when the cohort has not been extracted yet."""
    return _read_json(_attrition_path(cohort_path(data_cfg, cache_dir)))


def _read_json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}
