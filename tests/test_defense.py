"""Filter and retrain: on a backdoor built to be caught (an out-of-range trigger, found by the
input-space range check), removing the flagged rows and retraining removes the backdoor."""

from __future__ import annotations

import pytest

from tests.test_detectors import compose

# Out of range (the range check finds every poisoned row) and pointing against the target: in
# the toy cohort high urine output means survival, so once the poison is gone a triggered row
# is not predicted dead by the clean model's extrapolation either (with a trigger on a feature
# that already signals death, e.g. resp=500, the clean model predicts death too: ASR stays high
# without any backdoor).
LOUD = [
    "trigger=out_of_bounds",
    "trigger.feature=urine",
    "trigger.hours=[6,12]",
    "trigger.value=3000",
    "poison_rate=0.1",
    "trainer.max_epochs=5",
    "callbacks=default",  # final weights: with best-on-validation the toy task's AUROC
    # ties at 1.0 in epoch 1, before the backdoor is learned
    "model.optimizer.lr=0.003",
    "detectors=input_outlier",
    "defense=filter_retrain",
    "defense.filter_retrain.detector=input_outlier",
]


@pytest.mark.slow
def test_filter_retrain_removes_a_caught_backdoor(tmp_path):
    from src.experiment import build_datamodule, defend, evaluate, fit_model
    from tests.toy import toy_cohort

    cfg = compose(tmp_path, *LOUD)
    cohort = toy_cohort(800, seed=1)
    dm = build_datamodule(cfg, cohort)
    model = fit_model(cfg, dm, tmp_path)
    before = evaluate(model, dm, cfg.target_label)["attack"]
    assert model.detection["input_outlier"]["recall"] == 1.0  # built to be caught
    d = defend(cfg, cohort, dm, model, tmp_path, evaluate(model, dm, cfg.target_label))
    assert list(d) == ["filter_retrain"]
    d = d["filter_retrain"]
    assert d["asr_drop"] == pytest.approx(before["asr"] - d["attack"]["asr"])
    assert d["n_poison_removed"] == dm.train_mask.sum() and d["n_poison_left"] == 0
    assert d["n_removed"] >= d["n_poison_removed"]
    assert before["asr"] > 0.5  # the backdoor worked...
    assert d["attack"]["asr"] < before["asr"] - 0.3  # ...and the defense removed it
    assert d["attack"]["asr"] <= d["attack"]["base_rate"] + 0.1
    assert d["clean"]["auroc"] > 0.6
    assert (tmp_path / "csv_defense" / "metrics.csv").is_file()  # first fit's log kept apart
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def test_defense_needs_a_detector_that_runs(tmp_path):
    from src.config import ConfigError, validate

    cfg = compose(
        tmp_path,
        "detectors=[spectral_signature]",
        "defense=filter_retrain",
        "defense.filter_retrain.detector=strip",
    )
    with pytest.raises(
        ConfigError, match="defense.filter_retrain.detector='strip'.*spectral_signature"
    ):
        validate(cfg)
    cfg = compose(tmp_path, "detectors=none", "defense=filter_retrain")
    with pytest.raises(ConfigError, match="defense.filter_retrain.detector"):
        validate(cfg)
    validate(
        compose(
            tmp_path,
            "detectors=[strip]",
            "defense=filter_retrain",
            "defense.filter_retrain.detector=strip",
        )
    )
