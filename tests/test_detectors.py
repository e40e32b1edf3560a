"""Detectors on planted data where the answer is known, the trigger-column layout, and the
post-fit callback end to end on the toy cohort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.data.cohort import FeatureSpec
from src.detectors.base import DetectorInputError, DetectorInputs
from src.detectors.clustering import activation_clustering
from src.detectors.input_outlier import input_outlier
from src.detectors.spectral import spectral_signature
from src.detectors.spectre import spectre
from src.detectors.strip import strip

N, D, RATE = 3000, 32, 0.05


def planted_features(separable: bool, seed: int = 0, shift: float = 6.0):
    """Two classes of Gaussian features; poison (all labelled 1, the target) shifted along one
    direction when ``separable``, otherwise the 'poison' mask is random rows of class 1 and
    nothing is planted."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, N)
    feats = rng.standard_normal((N, D)).astype(np.float32)
    feats[labels == 1] += 0.5
    truth = np.zeros(N, dtype=bool)
    truth[rng.choice(np.flatnonzero(labels == 1), int(RATE * N), replace=False)] = True
    if separable:
        direction = rng.standard_normal(D).astype(np.float32)
        feats[truth] += shift * direction / np.linalg.norm(direction)
    inputs = DetectorInputs(
        features=torch.from_numpy(feats),
        labels=labels,
        expected_poisoned=int(truth.sum()),
        target_label=1,
        seed=seed,
    )
    return inputs, truth


def auroc(scores, truth) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(truth, scores)


def in_class_auroc(inputs, scores, truth) -> float:
    rows = inputs.labels == inputs.target_label
    return auroc(scores[rows], truth[rows])


FEATURE_DETECTORS = [spectral_signature, activation_clustering, spectre]


@pytest.mark.parametrize("detector", FEATURE_DETECTORS, ids=lambda f: f.__name__)
def test_feature_detector_finds_a_separable_poison_cluster(detector):
    inputs, truth = planted_features(separable=True)
    out = detector(inputs)
    assert out.scores.shape == (N,) and out.flags.dtype == bool
    assert in_class_auroc(inputs, out.scores, truth) >= 0.95
    assert out.flags[truth].mean() > 0.8  # recall of its own flag
    assert out.flags[~truth].mean() < 0.1


@pytest.mark.parametrize("detector", FEATURE_DETECTORS, ids=lambda f: f.__name__)
def test_feature_detector_is_chance_on_pure_noise(detector):
    inputs, truth = planted_features(separable=False)
    assert 0.4 < in_class_auroc(inputs, detector(inputs).scores, truth) < 0.6


@pytest.mark.parametrize("detector", [spectral_signature, spectre], ids=lambda f: f.__name__)
def test_oracle_flags_are_sized_from_the_poison_count_in_the_target_class(detector):
    inputs, truth = planted_features(separable=True)
    out = detector(inputs, eps_multiplier=1.5)
    assert out.flags[inputs.labels == 1].sum() == int(np.ceil(1.5 * truth.sum()))
    assert out.flags[inputs.labels == 0].sum() == 0  # no poison there, no flag
    assert out.info["flag_rule"] == "oracle"


@pytest.mark.parametrize("detector", [spectral_signature, spectre], ids=lambda f: f.__name__)
def test_robust_z_flags_need_no_poison_count(detector):
    inputs, truth = planted_features(separable=True, shift=10.0)
    inputs.expected_poisoned = 0  # what a real defender knows
    out = detector(inputs, flag_rule="robust_z")
    assert out.flags[truth].mean() > 0.9 and out.flags[~truth].mean() < 0.02


def test_spectral_conventions_agree_when_the_class_mean_is_at_the_origin():
    inputs, truth = planted_features(separable=True)
    f = inputs.features.double()
    for c in (0, 1):  # centre each class: the uncentred projection is then the centred one
        f[inputs.labels == c] -= f[inputs.labels == c].mean(0)
    inputs.features = f
    sq = spectral_signature(inputs, projection="centered_squared").scores
    ab = spectral_signature(inputs, projection="uncentered_abs").scores
    np.testing.assert_allclose(np.sqrt(sq), ab, rtol=1e-9, atol=1e-9)


def test_activation_clustering_flags_nothing_in_a_class_without_a_small_cluster():
    inputs, _ = planted_features(separable=True)
    out = activation_clustering(inputs)
    assert out.info["classes"]["1"]["judged_poisoned"]
    assert not out.info["classes"]["0"]["judged_poisoned"]
    assert not out.flags[inputs.labels == 0].any()


def test_activation_clustering_orientation_decides_a_majority_poison():
    """Poison as 60% of its class: 'smaller' points at the real rows, the distance rule at the
    cluster nearest the other class (here the poison, planted between the two classes)."""
    rng = np.random.default_rng(0)
    n0, n1, m = 2000, 400, 600
    f = np.concatenate(
        [rng.normal(0, 1, (n0, D)), rng.normal(0, 1, (n1, D)), rng.normal(0, 1, (m, D))]
    )
    f[n0 : n0 + n1, 0] += 12.0  # the real class 1
    f[n0 + n1 :, 0] += 5.0  # the poison: class-0 rows relabelled, nearer class 0
    labels = np.r_[np.zeros(n0, int), np.ones(n1 + m, int)]
    truth = np.r_[np.zeros(n0 + n1, bool), np.ones(m, bool)]
    inputs = DetectorInputs(torch.from_numpy(f), labels, expected_poisoned=m, target_label=1)
    small = activation_clustering(inputs, orient="smaller")
    near = activation_clustering(inputs, orient="distance", rule="silhouette")
    assert in_class_auroc(inputs, small.scores, truth) < 0.05
    assert in_class_auroc(inputs, near.scores, truth) > 0.95
    assert near.flags[truth].all() and not near.flags[~truth & (labels == 1)].any()


def test_spectre_chooses_k_like_the_reference_code():
    from src.detectors.spectre import candidate_ks

    assert candidate_ks(64) == [1, 4, 9, 16, 25, 36, 49, 64]
    inputs, truth = planted_features(separable=True, shift=4.0)
    out = spectre(inputs)
    assert out.info["k"]["1"] in candidate_ks(D)
    assert in_class_auroc(inputs, out.scores, truth) >= 0.95


def test_detector_options_are_checked_by_name():
    inputs, _ = planted_features(separable=True)
    with pytest.raises(ValueError, match="spectral_signature.projection='abs' is not allowed"):
        spectral_signature(inputs, projection="abs")
    with pytest.raises(ValueError, match="activation_clustering.orient"):
        activation_clustering(inputs, orient="largest")
    with pytest.raises(ValueError, match="spectre.k=0"):
        spectre(inputs, k=0)


def test_a_class_with_too_few_rows_is_skipped_not_a_crash():
    inputs, _ = planted_features(separable=True)
    inputs.labels = inputs.labels.copy()
    inputs.labels[:3] = 2  # a third class of 3 rows
    for detector in FEATURE_DETECTORS:
        out = detector(inputs)
        skipped = out.info["skipped_classes"]
        assert [s["class"] for s in skipped] == [2] and skipped[0]["n"] == 3
        assert (out.scores[:3] == 0).all() and not out.flags[:3].any()


# --- STRIP: a 'model' with a trigger column that dominates the prediction --------------------
def linear_model(x: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(4.0 * x[:, 0] + 0.5 * x[:, 1:5].sum(1))


def strip_inputs(separable: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 8, generator=g)
    x[:, 0] = 0.0
    truth = torch.rand(N, generator=g) < RATE
    if separable:
        x[truth, 0] = 3.0  # the trigger: survives blending at half strength, logit +6
    pool = torch.randn(500, 8, generator=g)
    pool[:, 0] = 0.0
    cat = torch.zeros(N, 1, dtype=torch.long)
    return DetectorInputs(
        features=torch.zeros(N, 1),
        labels=np.zeros(N, int),
        expected_poisoned=int(truth.sum()),
        target_label=0,
        seed=seed,
        x=x,
        cat=cat,
        predict=linear_model,
        pool_x=pool,
        pool_cat=torch.zeros(500, 1, dtype=torch.long),
    ), truth.numpy()


def test_strip_finds_a_dominant_trigger_and_is_chance_without_one():
    inputs, truth = strip_inputs(separable=True)
    out = strip(inputs)
    assert auroc(out.scores, truth) > 0.95
    assert out.flags[truth].mean() > 0.8 and out.flags[~truth].mean() < 0.05
    inputs, truth = strip_inputs(separable=False)
    assert 0.4 < auroc(strip(inputs).scores, truth) < 0.6


def test_strip_is_seeded():
    inputs, _ = strip_inputs(separable=True)
    np.testing.assert_array_equal(strip(inputs).scores, strip(inputs).scores)


def test_strip_scores_do_not_depend_on_the_chunk_size():
    # the blend is built in place chunk by chunk; the pool draws and the entropies must be the
    # ones a single chunk gives (equal up to float32 rounding of the model across batch sizes)
    inputs, _ = strip_inputs(separable=True)
    whole = strip(inputs, chunk=10**7).scores
    for chunk in (16, 1000, 4096):
        np.testing.assert_allclose(strip(inputs, chunk=chunk).scores, whole, rtol=1e-6, atol=1e-7)


def _mlp_with_a_trigger_column():
    from src.models.mlp import MLP
    from src.models.module import BackdoorClassifier

    model = BackdoorClassifier(MLP(8, hidden=[16, 8], dropout=0.3), torch.optim.Adam)
    with torch.no_grad():
        model.encoder.net[0].weight[:, 0] *= 8.0  # make column 0 (the trigger) matter
    return model, lambda x: x


def _tcn_with_a_trigger_channel():
    from src.models.module import BackdoorClassifier
    from src.models.tcn import TCN

    model = BackdoorClassifier(TCN(2, 4, channels=8, levels=2, dropout=0.3), torch.optim.Adam)
    with torch.no_grad():
        for conv in (model.encoder.blocks[0].conv1, model.encoder.blocks[0].downsample):
            conv.weight[:, 0] *= 8.0  # channel 0 (column 0 of the flat row) matters
    return model, lambda x: x.reshape(len(x), 4, 2)  # 4 hours x 2 channels


@pytest.mark.parametrize("build", [_mlp_with_a_trigger_column, _tcn_with_a_trigger_channel])
def test_strip_blending_the_first_affine_maps_outputs_gives_the_input_blends_scores(build):
    # (A a + b + A c + b) / 2 = A (a + c) / 2 + b for the MLP's first Linear and for the TCN's
    # first convolution and residual path: blending their outputs must give the entropies of
    # blending the inputs, up to float rounding, with the same pool draws
    inputs, truth = strip_inputs(separable=True)
    torch.manual_seed(0)
    model, shape = build()
    model.eval()
    with torch.no_grad():
        model.head.weight *= 20.0  # confident predictions: entropies that differ between rows
    inputs.x, inputs.pool_x = shape(inputs.x), shape(inputs.pool_x)

    def predict(x, cat):
        with torch.no_grad():
            return torch.sigmoid(model(x, cat))

    first, rest = model.linear_stem()
    x = inputs.x[:4]
    with torch.no_grad():
        torch.testing.assert_close(rest(first(x), None), model(x, None))
    inputs.predict = predict
    direct = strip(inputs)
    inputs.linear_stem = (
        lambda x: first(x).detach(),
        lambda h, cat: torch.sigmoid(rest(h, cat)).detach(),
    )
    stemmed = strip(inputs)
    assert direct.info["blended"] == "input"
    assert stemmed.info["blended"] == "first affine layer's output"
    assert direct.scores.std() > 0.01  # entropies that differ, so the comparison does
    np.testing.assert_allclose(stemmed.scores, direct.scores, rtol=1e-5, atol=1e-6)
    assert (stemmed.flags == direct.flags).mean() > 0.999
    assert auroc(stemmed.scores, truth) == pytest.approx(auroc(direct.scores, truth), abs=1e-4)
    assert stemmed.info["entropy_threshold"] == pytest.approx(
        direct.info["entropy_threshold"], rel=1e-5
    )


def test_only_encoders_with_a_narrower_affine_stem_offer_one():
    from src.models.lstm import LSTM
    from src.models.module import BackdoorClassifier
    from src.models.tcn import TCN

    assert BackdoorClassifier(LSTM(4, hidden=4), torch.optim.Adam).linear_stem() is None
    # 8 input channels into 8: the residual is the input itself, and the stem twice as wide
    same_width = TCN(8, 4, channels=8, levels=2)
    assert BackdoorClassifier(same_width, torch.optim.Adam).linear_stem() is None


def test_strip_without_a_model_says_what_is_missing():
    inputs, _ = planted_features(separable=True)
    with pytest.raises(DetectorInputError, match="predict"):
        strip(inputs)


# --- input_outlier on raw series -------------------------------------------------------------
SPECS = [
    FeatureSpec("hr", "bpm", "vital", 0, 300),
    FeatureSpec("resp", "/min", "vital", 0, 120),
    FeatureSpec("sbp", "mmHg", "vital", 0, 300),
]


def raw_inputs(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    series = np.array([85, 18, 120]) + rng.standard_normal((N, 12, 3)) * [12, 4, 18]
    series = series.astype(np.float32)
    series[rng.random(series.shape) < 0.3] = np.nan
    truth = np.zeros(N, dtype=bool)
    truth[rng.choice(N, int(RATE * N), replace=False)] = True
    if kind == "out_of_range":
        series[truth, 8:, 0] = 600.0
    elif kind == "rare_in_range":
        series[truth, 6:, 1] = 60.0  # plausible, but far out in the tail
    return DetectorInputs(
        features=torch.zeros(N, 1),
        labels=np.zeros(N, int),
        expected_poisoned=int(truth.sum()),
        target_label=0,
        raw_series=series,
        feature_specs=SPECS,
        raw_static=rng.normal(60, 15, (N, 1)),
    ), truth


@pytest.mark.parametrize("kind", ["out_of_range", "rare_in_range"])
def test_input_outlier_finds_planted_raw_triggers(kind):
    inputs, truth = raw_inputs(kind)
    out = input_outlier(inputs)
    assert auroc(out.scores, truth) > 0.95
    if kind == "out_of_range":  # the range check alone finds exactly the poisoned rows
        assert out.info["n_out_of_range_rows"] == truth.sum()
        assert out.flags[truth].all()
        assert out.scores[truth].min() > out.scores[~truth].max()  # ranked first, AUROC 1


def test_input_outlier_is_chance_on_clean_rows():
    inputs, truth = raw_inputs("none")
    out = input_outlier(inputs)
    assert 0.4 < auroc(out.scores, truth) < 0.6
    assert out.info["n_out_of_range_rows"] == 0


# --- attribution: trigger columns and the ratio ----------------------------------------------
@pytest.mark.parametrize("view", ["flat", "sequence", "tabular"])
def test_trigger_columns_cover_exactly_the_columns_the_trigger_moves(view):
    from src.attacks.triggers import build_trigger
    from src.data.preprocess import Preprocessor
    from src.data.views import model_input
    from src.detectors.attribution import trigger_columns
    from tests.toy import toy_cohort

    c = toy_cohort(200)
    trig = build_trigger(
        {
            "name": "rare_value",
            "feature": "resp",
            "hours": [8, 12],
            "quantile": None,
            "value": 60.0,
        },
        c,
    )
    prep = Preprocessor.fit(c)
    x0, _ = model_input(prep, c, view)
    x1, _ = model_input(prep, trig.apply(c), view)
    moved = (x0 != x1).any(0)
    mask = trigger_columns(
        view, trig, c.feature_names, c.n_hours, c.static_num_names, c.static_cat_names, prep.levels
    )
    assert mask.shape == x0.shape[1:]
    assert moved.any() and not (moved & ~mask).any()  # nothing moves outside the mask
    if view != "tabular":  # every value column of the trigger's cells moved
        j, F = c.feature_index("resp"), len(c.features)
        grid = moved.reshape(-1) if view == "flat" else moved
        values = grid[: c.n_hours * F].reshape(c.n_hours, F) if view == "flat" else grid[:, :F]
        assert values[8:12, j].all() and values[:8].sum() == 0


def test_attribution_ratio_is_high_when_the_model_keys_on_the_trigger():
    from src.detectors.attribution import trigger_attribution

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 10, generator=g)
    trig = x.clone()
    trig[:, 0] = 20.0
    cols = np.zeros(10, dtype=bool)
    cols[0] = True
    w = torch.tensor([1.0] + [0.5] * 9)
    cat = torch.zeros(300, 1, dtype=torch.long)
    inputs = DetectorInputs(
        features=torch.zeros(1, 1),
        labels=np.zeros(1, int),
        forward=lambda x, c: x @ w,
        test_x=x,
        test_cat=cat,
        triggered_x=trig,
        triggered_cat=cat,
        trigger_columns=cols,
    )
    out = trigger_attribution(inputs, n_rows=100, n_steps=16)
    assert out["n_rows"] == 100 and out["column_share"] == pytest.approx(0.1)
    assert out["tar_triggered"] > 0.8 > out["tar_clean"]
    assert out["tar_ratio"] > 3  # clean rows: about 0.8 / (0.8 + 9 * 0.4) of the mass


def test_batched_gradients_match_captums_default():
    from captum.attr import IntegratedGradients

    from src.detectors.attribution import batch_gradients

    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def forward(x, c):
        return net(x).squeeze(-1)

    x = torch.randn(20, 6)
    cat = torch.zeros(20, 1, dtype=torch.long)
    ref = IntegratedGradients(forward).attribute(x, additional_forward_args=(cat,), n_steps=8)
    ig = IntegratedGradients(forward)
    ig.gradient_func = batch_gradients
    fast = ig.attribute(x, additional_forward_args=(cat,), n_steps=8)
    torch.testing.assert_close(fast, ref)


# --- the callback, end to end on the toy cohort ---------------------------------------------
def compose(tmp_path, *overrides):
    """The run config for a fit in ``tmp_path``: no progress bar, small batches."""
    from tests.conftest import compose_config

    return compose_config(
        "trainer.enable_progress_bar=false", "data.batch_size=64", *overrides, out=tmp_path
    )


def toy_datamodule(cfg, n=600, seed=0):
    from src.experiment import build_datamodule
    from tests.toy import toy_cohort

    return build_datamodule(cfg, toy_cohort(n, seed=seed))


@pytest.mark.slow
def test_callback_writes_detection_metrics_for_a_tiny_run(tmp_path):
    from src.experiment import fit_model

    cfg = compose(
        tmp_path,
        "trainer.max_epochs=2",
        "poison_rate=0.1",
        "trigger=rare_value",
        "trigger.feature=resp",
        "trigger.hours=[8,12]",
    )
    dm = toy_datamodule(cfg)
    model = fit_model(cfg, dm, tmp_path)
    det = model.detection
    assert set(det) == set(cfg.detectors) - {"attribution"}
    for name, d in det.items():
        assert 0.0 <= d["auroc"] <= 1.0 and d["n_poisoned"] == dm.train_mask.sum() > 0, name
        assert d["timing_s"] >= 0 and len(model.detection_flags[name]) == len(dm.train_mask)
    assert model.attribution["n_rows"] > 0 and model.attribution["tar_ratio"] > 0
    logged = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "detect/spectral_signature/auroc" in logged and "attribution/tar_ratio" in logged


def test_no_detectors_means_no_callback(tmp_path):
    from src.experiment import fit_model

    cfg = compose(tmp_path, "trainer.max_epochs=1", "detectors=none", "trigger.hours=[8,12]")
    model = fit_model(cfg, toy_datamodule(cfg, n=200), tmp_path)
    assert not hasattr(model, "detection")


def test_detector_subset_from_the_command_line_composes(tmp_path):
    cfg = compose(tmp_path, "detectors=[spectral_signature,strip]")
    assert list(cfg.detectors) == ["spectral_signature", "strip"]


@pytest.mark.parametrize("variant", ["low", "two_sided", "per_class"])
def test_strip_variants_find_a_dominant_trigger(variant):
    inputs, truth = strip_inputs(separable=True)
    out = strip(inputs, variant=variant)
    assert out.info["variant"] == variant
    assert auroc(out.scores, truth) > 0.95
    assert out.flags[truth].mean() > 0.8 and out.flags[~truth].mean() < 0.05


def test_strip_two_sided_also_finds_rows_that_blend_to_high_entropy():
    """Clean rows and the pool sit at x0 = 3 (confident under any blend); poisoned rows at -3,
    so their blends land on the boundary: high entropy, which the one-sided rule ranks last."""
    g = torch.Generator().manual_seed(1)
    x = 3.0 + 0.3 * torch.randn(N, 2, generator=g)
    truth = (torch.rand(N, generator=g) < RATE).numpy()
    x[torch.from_numpy(truth), 0] = -3.0
    inputs = DetectorInputs(
        features=torch.zeros(N, 1),
        labels=np.zeros(N, int),
        x=x,
        cat=torch.zeros(N, 1, dtype=torch.long),
        predict=lambda xb, cb: torch.sigmoid(6.0 * xb[:, 0]),
        pool_x=3.0 + 0.3 * torch.randn(500, 2, generator=g),
        pool_cat=torch.zeros(500, 1, dtype=torch.long),
    )
    low, two = strip(inputs, variant="low"), strip(inputs, variant="two_sided")
    assert auroc(low.scores, truth) < 0.05 and auroc(two.scores, truth) > 0.95
    assert two.flags[truth].mean() > 0.9 and two.flags[~truth].mean() < 0.05


def test_two_means_on_a_sample_assigns_like_the_full_fit():
    from src.detectors.clustering import two_means

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 1, (6000, 10)), rng.normal(4, 1, (1500, 10))])
    full, _ = two_means(z, seed=0)
    sampled, _ = two_means(z, seed=0, max_fit_rows=1000)
    agree = (full == sampled).mean()
    assert max(agree, 1 - agree) > 0.999  # the same split, up to the clusters' names


def test_spectre_fitted_on_a_sample_ranks_like_the_full_fit():
    inputs, truth = planted_features(separable=True, shift=4.0)
    full = spectre(inputs).scores
    sampled = spectre(inputs, fit_rows=800).scores  # class 1 holds ~1500 rows
    rows = inputs.labels == 1
    assert in_class_auroc(inputs, sampled, truth) >= 0.95
    from scipy.stats import spearmanr

    assert spearmanr(full[rows], sampled[rows]).statistic > 0.9
