"""load_cohort: the cache key covers exactly the cohort-defining config; the second load is a
cache hit; synthetic and real MIMIC-IV take the same extraction path."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from src.data import sources
from src.data.sources import cohort_key, load_attrition, load_cohort, load_cohort_with_attrition

CFG = {
    "source": "synthetic",
    "root": None,
    "path": None,
    "n_stays": 400,
    "seed": 3,
    "window_hours": 24,
    "min_stay_hours": 30,
    "min_age": 18,
    "features": None,
    "test_size": 0.2,
    "val_size": 0.1,
    "batch_size": 64,
    "name": "synthetic",
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_second_load_hits_the_cache(cache, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="src.data")
    t0 = time.perf_counter()
    first = load_cohort(CFG, cache)
    t_first = time.perf_counter() - t0
    assert "generating synthetic MIMIC-IV" in caplog.text and "extracting cohort" in caplog.text
    caplog.clear()

    def no_extract(*a, **k):
        raise AssertionError("extracted again instead of loading from the cache")

    monkeypatch.setattr("src.data.mimiciv.extract.extract", no_extract)
    t0 = time.perf_counter()
    second = load_cohort(dict(CFG, batch_size=8, test_size=0.5, name="other"), cache)
    t_second = time.perf_counter() - t0
    assert "loaded cohort from cache" in caplog.text
    assert t_second < t_first  # typically ~0.1 s against seconds; never a timed test
    np.testing.assert_array_equal(first.series, second.series)
    np.testing.assert_array_equal(first.label, second.label)
    # atomic writes leave no temporary folders behind
    leftovers = [p for p in cache.rglob(".*")]
    assert leftovers == []


def test_attrition_is_stored_and_consistent(cache):
    cohort, attrition = load_cohort_with_attrition(CFG, cache)
    assert load_attrition(CFG, cache) == attrition
    excluded = sum(v for k, v in attrition.items() if k.startswith("excluded_"))
    assert attrition["icu_stays"] == 400 and attrition["icu_stays"] - excluded == len(cohort)
    assert attrition["n_positive"] == int(cohort.label.sum())
    path = cache / "cohorts" / f"{cohort_key(CFG)}.attrition.json"
    assert path.is_file()


def test_key_covers_only_cohort_defining_keys():
    base = cohort_key(CFG)
    assert cohort_key(dict(CFG, batch_size=1, test_size=0.9, val_size=0.3, name="x")) == base
    assert cohort_key(dict(CFG, root="/ignored/for/synthetic")) == base
    for change in (
        {"seed": 4},
        {"n_stays": 401},
        {"window_hours": 12},
        {"min_age": 16},
        {"min_stay_hours": 24},
        {"features": ["hr", "map"]},
    ):
        assert cohort_key(dict(CFG, **change)) != base, change


def test_cache_version_is_part_of_the_key(monkeypatch):
    base = cohort_key(CFG)
    monkeypatch.setattr(sources, "CACHE_VERSION", sources.CACHE_VERSION + 1)
    assert cohort_key(CFG) != base


def test_omegaconf_config_and_feature_subset(cache):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(dict(CFG, features=["hr", "lact", "urine"]))
    cohort = load_cohort(cfg, cache)
    assert cohort.feature_names == ["hr", "lact", "urine"]
    # the tables were generated once and reused
    assert len(list((cache / "synthetic-mimiciv").iterdir())) == 1


def test_mimiciv_source_reads_a_root_like_synthetic(cache, tmp_path):
    tables = next((cache / "synthetic-mimiciv").iterdir())
    real = load_cohort(dict(CFG, source="mimiciv", root=str(tables)), tmp_path)
    syn = load_cohort(CFG, cache)
    np.testing.assert_array_equal(real.series, syn.series)
    assert cohort_key(dict(CFG, source="mimiciv", root=str(tables))).startswith("mimiciv-")


def test_bad_sources_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dyn\.parquet not found"):
        load_cohort({"source": "yaib", "path": str(tmp_path)}, tmp_path)
    with pytest.raises(ValueError, match="data.path is required"):
        load_cohort({"source": "yaib", "path": None}, tmp_path)
    with pytest.raises(ValueError, match="not one of synthetic, mimiciv, yaib"):
        load_cohort({"source": "eicu"}, tmp_path)
    with pytest.raises(ValueError, match="data.root is required"):
        load_cohort({"source": "mimiciv", "root": None}, tmp_path)
    with pytest.raises(FileNotFoundError, match="patients"):
        (tmp_path / "m" / "hosp").mkdir(parents=True)
        load_cohort({"source": "mimiciv", "root": str(tmp_path / "m")}, tmp_path)


@pytest.mark.parametrize("part", ["series.parquet", "static.parquet", "meta.json"])
def test_a_truncated_cohort_cache_is_rebuilt_with_the_same_numbers(cache, caplog, part):
    first = load_cohort(CFG, cache)
    entry = sources.cohort_path(CFG, cache)
    f = entry / part
    f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 3)])
    caplog.set_level(logging.WARNING, logger="src.data")
    again = load_cohort(CFG, cache)
    assert "cannot be read" in caplog.text and "building it again" in caplog.text
    np.testing.assert_array_equal(first.series, again.series)
    np.testing.assert_array_equal(first.label, again.label)
    assert not [p for p in entry.parent.iterdir() if ".damaged-" in p.name]
    load_cohort(CFG, cache)  # healed: read from the cache again


def test_a_truncated_events_cache_file_is_rebuilt_with_the_same_numbers(tmp_path, caplog):
    import shutil

    cache = tmp_path / "cache"
    first = load_cohort(CFG, cache)
    day = max((cache / "events").rglob("*.parquet"), key=lambda p: p.stat().st_size)
    day.write_bytes(day.read_bytes()[: day.stat().st_size // 2])
    shutil.rmtree(sources.cohort_path(CFG, cache))  # so the cohort is extracted again
    caplog.set_level(logging.WARNING, logger="src.data")
    again = load_cohort(CFG, cache)
    assert "events cache" in caplog.text and "rebuilding it" in caplog.text
    np.testing.assert_array_equal(first.series, again.series)
    np.testing.assert_array_equal(first.label, again.label)
