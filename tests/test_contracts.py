"""Contract tests generated from conf/detectors/*.yaml, in the manner of scikit-learn's
``parametrize_with_checks``: every detector a config file names is instantiated from its YAML
and must honour the detector contract on one shared input, whatever its method. A detector added
as one module and one YAML is checked here without editing this file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from src.data.cohort import FeatureSpec
from src.detectors.base import Detection, DetectorInputs
from src.run import conf_dir
from tests.conftest import compose_config

FILES = sorted(p.stem for p in (Path(conf_dir()) / "detectors").glob("*.yaml"))
N, D = 600, 16


def entries() -> dict[str, dict]:
    """Every detector entry any detectors/*.yaml composes to, by its name in the config."""
    from omegaconf import OmegaConf

    out = {}
    for f in FILES:
        for name, node in (compose_config(f"detectors={f}").detectors or {}).items():
            out[name] = OmegaConf.to_container(node)
    return out


ENTRIES = entries()


class Linear(torch.nn.Module):
    """A fitted model's stand-in for detectors that train a copy (confusion training)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 1)

    def forward(self, x, cat=None):
        return self.lin(x).squeeze(-1)


def full_inputs(seed: int = 0) -> tuple[DetectorInputs, np.ndarray]:
    """One input with everything any detector may read; poison planted in class 1."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(N, generator=g) < 0.3).long().numpy()
    truth = np.zeros(N, bool)
    truth[np.flatnonzero(labels == 1)[:30]] = True
    feats = torch.randn(N, D, generator=g)
    feats[torch.from_numpy(truth)] += 5.0
    x = torch.randn(N, 8, generator=g)
    x[torch.from_numpy(truth), 0] = 4.0
    cat = torch.zeros(N, 1, dtype=torch.long)
    series = np.random.default_rng(seed).normal(80, 10, (N, 6, 2)).astype(np.float32)
    series[truth, 3:, 0] = 400.0
    specs = [
        FeatureSpec("hr", "bpm", "vital", 0, 300),
        FeatureSpec("resp", "/min", "vital", 0, 120),
    ]
    cols = np.zeros(8, bool)
    cols[0] = True
    trig = x.clone()
    trig[:, 0] = 4.0
    w = torch.randn(8, generator=g)

    def forward(xb, cb):
        return xb @ w + 3.0 * xb[:, 0]

    inputs = DetectorInputs(
        features=feats,
        labels=labels,
        expected_poisoned=int(truth.sum()),
        target_label=1,
        seed=seed,
        x=x,
        cat=cat,
        predict=lambda xb, cb: torch.sigmoid(forward(xb, cb)),
        pool_x=torch.randn(200, 8, generator=g),
        pool_cat=torch.zeros(200, 1, dtype=torch.long),
        pool_features=torch.randn(200, D, generator=g),
        pool_labels=(torch.rand(200, generator=g) < 0.3).long().numpy(),
        model=Linear(),
        raw_series=series,
        raw_static=None,
        feature_specs=specs,
        forward=forward,
        test_x=x[:100],
        test_cat=cat[:100],
        triggered_x=trig[:100],
        triggered_cat=cat[:100],
        trigger_columns=cols,
    )
    return inputs, truth


def test_every_detector_file_composes_to_named_entries():
    assert FILES and ENTRIES
    for f in FILES:
        for name, node in (compose_config(f"detectors={f}").detectors or {}).items():
            assert node["_target_"].startswith("src.detectors."), (f, name)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_detector_contract(name):
    """Scores: one finite float per row; flags: one bool per row; info: JSON; the same seed
    gives the same output; the report (attribution) is a JSON dict of numbers in [0, 1]."""
    fn = instantiate(ENTRIES[name])
    inputs, truth = full_inputs()
    out = fn(inputs)
    if not isinstance(out, Detection):  # the attribution report
        assert isinstance(out, dict) and json.dumps(out)
        assert 0.0 <= out["tar_triggered"] <= 1.0 and 0.0 <= out["tar_clean"] <= 1.0
        return
    assert out.scores.shape == (N,) and np.isfinite(out.scores).all()
    assert out.flags.shape == (N,) and out.flags.dtype == bool
    json.dumps(out.info)
    again = instantiate(ENTRIES[name])(inputs)
    np.testing.assert_array_equal(out.scores, again.scores)
    np.testing.assert_array_equal(out.flags, again.flags)
    if isinstance(out.info.get("oracle_budget"), dict):  # a per-class oracle budget: the
        # poison count of the target class, and nothing elsewhere
        assert not out.flags[inputs.labels != inputs.target_label].any()


# --- defenses: every conf/defense/*.yaml composes to registered functions with known parameters
DEFENSE_FILES = sorted(
    p.stem for p in (Path(conf_dir()) / "defense").glob("*.yaml") if p.stem != "none"
)


@pytest.mark.parametrize("stem", DEFENSE_FILES)
def test_defense_contract(stem):
    import inspect

    from hydra.utils import get_method

    from src.config import DEFENSES, validate
    from tests.conftest import compose_config

    extra = ["detectors=[spectral_signature]"] if stem == "filter_retrain" else []
    cfg = compose_config(f"defense={stem}", *extra)
    validate(cfg)
    (name,) = cfg.defense  # one file, one defense, named as the file
    assert name == stem and name in DEFENSES
    node = cfg.defense[name]
    fn = get_method(node._target_)
    assert node._partial_ and fn.__name__ == name
    sig = inspect.signature(fn).parameters
    for key in node:
        if not key.startswith("_") and key != "clean_share":
            assert key in sig, f"{stem}.yaml sets {key}, which {name} does not take"
            assert node[key] == sig[key].default, f"{stem}.yaml: {key} differs from the code"
