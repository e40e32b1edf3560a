"""Post-training repairs (src/defenses/repair.py), the defense effect (src/metrics.py) and the
composition of several defenses in one run (src/experiment.py: defend).

Cases with a known answer: CLP prunes exactly a planted channel whose Lipschitz bound stands
out; NAD with beta=0 is fine-tuning; fine-pruning and i-BAU remove an out-of-range backdoor of a toy
model; i-BAU's hypergradient is the implicit function theorem's on a quadratic;
no repair costs a clean model more than 0.05 AUROC; the DER subtracts the clean loss."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from src.defenses.repair import REPAIRS, NotApplicable, clp, fine_tuning, hypergradient, nad
from src.metrics import defense_effect
from tests.test_defense import LOUD
from tests.test_detectors import compose

TOY = [o for o in LOUD if not o.startswith(("defense", "detectors"))] + ["detectors=none"]


def fitted(tmp_path, rate: float):
    from src.experiment import build_datamodule, evaluate, fit_model
    from tests.toy import toy_cohort

    cfg = compose(
        tmp_path, *[o for o in TOY if not o.startswith("poison_rate")], f"poison_rate={rate}"
    )
    dm = build_datamodule(cfg, toy_cohort(1200, seed=1))
    model = fit_model(cfg, dm, tmp_path)
    return dm, model, evaluate(model, dm, cfg.target_label)


@pytest.fixture(scope="module")
def backdoored(tmp_path_factory):
    return fitted(tmp_path_factory.mktemp("poisoned"), 0.1)


@pytest.fixture(scope="module")
def clean_model(tmp_path_factory):
    return fitted(tmp_path_factory.mktemp("clean"), 0.0)


# --- the defense effect -----------------------------------------------------------------------
def block(asr, auroc):
    return {"clean": {"auroc": auroc}, "attack": {"asr": asr}}


def test_der_subtracts_the_clean_loss_and_is_bounded():
    # BackdoorBench's formula: (max(0, dASR) - max(0, dACC) + 1) / 2 (its code adds dACC)
    e = defense_effect(block(0.9, 0.80), block(0.1, 0.70))
    assert e["asr_drop"] == pytest.approx(0.8) and e["clean_auroc_drop"] == pytest.approx(0.1)
    assert e["der"] == pytest.approx((0.8 - 0.1 + 1) / 2)
    assert e["robust_accuracy"] == pytest.approx(0.9)
    worse = defense_effect(block(0.9, 0.80), block(0.1, 0.50))  # same ASR cut, more clean loss
    assert worse["der"] < e["der"]
    assert defense_effect(block(0.9, 0.8), block(0.9, 0.8))["der"] == 0.5  # nothing changed
    assert defense_effect(block(0.1, 0.8), block(0.9, 0.9))["der"] == 0.5  # gains never count
    assert defense_effect(block(1.0, 1.0), block(0.0, 1.0))["der"] == 1.0
    assert defense_effect(block(0.0, 1.0), block(0.0, 0.0))["der"] == 0.0
    assert defense_effect(block(None, 0.8), block(0.1, 0.8))["der"] is None
    with pytest.raises(ValueError, match="before needs"):
        defense_effect({"clean": {}}, block(0.1, 0.8))


# --- known answers per method ------------------------------------------------------------------
class Net(nn.Module):
    """A two-layer encoder whose channel 3 of the first layer has a planted large norm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 4)
        with torch.no_grad():
            self.fc1.weight[3] *= 50.0
        self.out_dim = 4

    def forward(self, x, cat=None):
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))


def classifier(encoder):
    from src.models.module import BackdoorClassifier

    return BackdoorClassifier(encoder, optimizer=torch.optim.Adam)


def test_clp_prunes_exactly_the_channel_with_the_outlying_lipschitz_bound():
    model = classifier(Net())
    repaired, info = clp(model, None, u=2.0)
    mask = repaired.encoder.fc1.defense_mask
    assert mask.tolist() == [1, 1, 1, 0, 1, 1, 1, 1] and info["pruned_per_layer"]["fc1"] == 1
    x = torch.randn(5, 6)
    with torch.no_grad():
        h = repaired.encoder.fc1(x)
    assert (h[:, 3] == 0).all()  # the channel's output is zero
    assert torch.equal(repaired.encoder.fc1.weight, model.encoder.fc1.weight)  # weights kept
    assert not hasattr(model.encoder.fc1, "defense_mask")  # the fitted model is untouched


@pytest.mark.parametrize(
    "layer, x, channel_of",
    [
        (nn.Linear(6, 5), torch.randn(3, 6), lambda h, k: h[:, k]),
        (nn.Linear(6, 5), torch.randn(3, 5, 6), lambda h, k: h[..., k]),  # tokens x features
        (nn.Conv1d(6, 5, 1), torch.randn(3, 6, 5), lambda h, k: h[:, k, :]),  # channels x time
    ],
    ids=["linear", "linear-over-tokens", "conv1d"],
)
def test_a_channel_mask_zeroes_that_channel_whatever_the_layout(layer, x, channel_of):
    # 5 output channels against 5 tokens or hours: a mask on the wrong axis would broadcast
    # silently, so the test checks which values it zeroes
    from src.defenses.repair import _masked

    with torch.no_grad():
        full = layer(x)
        _masked(layer, 5)[2] = 0.0
        h = layer(x)
    assert (channel_of(h, 2) == 0).all()
    for k in (0, 1, 3, 4):
        assert torch.equal(channel_of(h, k), channel_of(full, k))


@pytest.mark.parametrize("name", sorted(REPAIRS))
@pytest.mark.parametrize("model", ["mlp", "lstm", "tcn", "tab_transformer"])
def test_every_repair_runs_on_every_model_or_says_why_not(name, model):
    """A few steps of each repair on each encoder over a tiny clean set: a repaired model of
    the same shape and finite logits, or NotApplicable naming what applies."""
    from src.data.datamodule import Tensors
    from src.models.lstm import LSTM
    from src.models.mlp import MLP
    from src.models.tab_transformer import TabTransformer
    from src.models.tcn import TCN

    torch.manual_seed(0)
    sequence = model in ("lstm", "tcn")
    encoder = {
        "mlp": lambda: MLP(6, hidden=[8, 4]),
        "lstm": lambda: LSTM(in_features=6, hidden=8),
        "tcn": lambda: TCN(6, 4, channels=8, levels=2),
        "tab_transformer": lambda: TabTransformer(6, [3, 4, 2, 5], dim=8, heads=2),
    }[model]()
    x = torch.randn(64, 4, 6) if sequence else torch.randn(64, 6)
    cat = torch.stack([torch.randint(0, c, (64,)) for c in (3, 4, 2, 5)], dim=1)
    clean = Tensors(x, cat, (torch.rand(64) < 0.3).float())
    fast = {
        "fine_tuning": {"epochs": 1},
        "fine_pruning": {"epochs": 1},
        "nad": {"epochs": 1},
        "anp": {"iterations": 3},
        "ibau": {"rounds": 1},
    }.get(name, {})
    try:
        repaired, info = REPAIRS[name](classifier(encoder), clean, seed=0, **fast)
    except NotApplicable as e:
        assert name == "clp" and model == "lstm", f"{name} refused {model}: {e}"
        return
    with torch.no_grad():
        out = repaired.eval()(x, cat)
    assert out.shape == (64,) and torch.isfinite(out).all()
    assert isinstance(info, dict)


def test_clp_refuses_an_lstm_and_says_what_applies():
    from src.models.lstm import LSTM

    with pytest.raises(NotApplicable, match="fine_pruning, nad, anp"):
        clp(classifier(LSTM(in_features=4, hidden=8)), None)


def test_nad_without_the_attention_term_is_fine_tuning(backdoored):
    dm, model, _ = backdoored
    ft, _ = fine_tuning(model, dm.data["val"], seed=3, epochs=2)
    na, _ = nad(model, dm.data["val"], seed=3, beta=0.0, epochs=2, teacher_epochs=1)
    for a, b in zip(ft.parameters(), na.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_fine_pruning_removes_an_out_of_range_backdoor(backdoored):
    dm, model, before = backdoored
    assert before["attack"]["asr"] > 0.9  # the backdoor works
    repaired, info = REPAIRS["fine_pruning"](model, dm.data["val"], seed=0)
    from src.experiment import evaluate

    after = evaluate(repaired, dm, 1)
    assert after["attack"]["asr"] < 0.2 and info["pruned"] > 0
    assert after["clean"]["auroc"] >= before["clean"]["auroc"] - 0.05


@pytest.mark.slow
def test_ibau_removes_an_out_of_range_backdoor(tmp_path):
    # i-BAU's perturbation climbs the loss from zero: on the nearly separable toy the loss is
    # saturated and it finds nothing, so the toy here is as hard as real mortality (signal 0.3,
    # clean AUROC about 0.8), and small batches give it about as many unlearning steps as the
    # default cohort's 4,153 validation rows do
    from src.experiment import build_datamodule, evaluate, fit_model
    from tests.toy import toy_cohort

    cfg = compose(tmp_path, *TOY)
    dm = build_datamodule(cfg, toy_cohort(4000, seed=1, signal=0.3))
    model = fit_model(cfg, dm, tmp_path)
    before = evaluate(model, dm, 1)
    assert before["attack"]["asr"] > 0.9 and before["clean"]["auroc"] < 0.9
    repaired, info = REPAIRS["ibau"](model, dm.data["val"], seed=0, batch_size=25)
    after = evaluate(repaired, dm, 1)
    assert after["attack"]["asr"] < 0.2, info
    assert after["clean"]["auroc"] >= before["clean"]["auroc"] - 0.05
    again, _ = REPAIRS["ibau"](model, dm.data["val"], seed=0, batch_size=25, rounds=1)
    once, _ = REPAIRS["ibau"](model, dm.data["val"], seed=0, batch_size=25, rounds=1)
    for a, b in zip(again.parameters(), once.parameters(), strict=True):
        assert torch.equal(a, b)  # seeded: the same repair twice is the same model


def test_hypergradient_is_the_implicit_function_theorem_on_a_quadratic():
    # inner(w) = w'Aw/2 - theta'w has the minimiser w* = A^-1 theta, so for outer(w, theta) =
    # c'w + d'theta the total derivative is A^-1 c + d (A symmetric): the fixed-point
    # iterations must converge to it
    torch.manual_seed(0)
    b = torch.randn(4, 4, dtype=torch.float64)
    a = b @ b.T + 4 * torch.eye(4, dtype=torch.float64)
    c, d = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    theta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    w_star = torch.linalg.solve(a, theta.detach())

    def total_derivative(steps: int, inner_step: float) -> torch.Tensor:
        theta.grad = None
        outer, inner = (lambda w: c @ w + d @ theta), (lambda w: 0.5 * w @ a @ w - theta @ w)
        hypergradient(outer, inner, w_star, [theta], steps=steps, inner_step=inner_step)
        return theta.grad

    expected = torch.linalg.solve(a, c) + d
    step = 1.0 / float(torch.linalg.eigvalsh(a).max())
    assert torch.allclose(total_derivative(500, step), expected, atol=1e-8)
    # one step is the direct term plus inner_step * c only: the iterations matter
    theta.grad = total_derivative(1, 0.1)
    assert torch.allclose(theta.grad, d + 0.1 * c)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPAIRS))
def test_a_repair_costs_a_clean_model_little(clean_model, name):
    from src.experiment import evaluate

    dm, model, before = clean_model
    repaired, _ = REPAIRS[name](model, dm.data["val"], seed=0)
    after = evaluate(repaired, dm, 1)
    assert after["clean"]["auroc"] >= before["clean"]["auroc"] - 0.05, name


# --- composition ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_each_defense_starts_from_the_same_model_and_gets_its_own_block(backdoored, tmp_path):
    from src.experiment import defend

    dm, model, before = backdoored
    both = compose(tmp_path, *TOY, "defense=[fine_pruning,clp]")
    one = compose(tmp_path, *TOY, "defense=clp")
    a = defend(both, None, dm, model, tmp_path, before)
    b = defend(one, None, dm, model, tmp_path, before)
    assert list(a) == ["fine_pruning", "clp"] and list(b) == ["clp"]
    assert a["clp"]["attack"] == b["clp"]["attack"]  # not applied on top of fine-pruning
    for blk in a.values():
        assert blk["seconds"] >= 0 and blk["der"] is not None and "params" in blk
    assert a["fine_pruning"]["clean_rows_used"] == len(dm.data["val"])
    assert a["clp"]["clean_rows_used"] == 0  # data-free
    half = compose(tmp_path, *TOY, "defense=fine_tuning", "defense.fine_tuning.clean_share=0.5")
    c = defend(half, None, dm, model, tmp_path, before)
    assert c["fine_tuning"]["clean_rows_used"] == round(0.5 * len(dm.data["val"]))
    assert c["fine_tuning"]["params"]["clean_share"] == 0.5


def test_defense_config_is_checked_in_one_place(tmp_path):
    from src.config import ConfigError, validate

    with pytest.raises(ConfigError, match="defense.fine_tuning.clean_share"):
        validate(compose(tmp_path, "defense=fine_tuning", "defense.fine_tuning.clean_share=0"))
    with pytest.raises(ConfigError, match="defense.anp.steps.*a parameter of anp"):
        validate(compose(tmp_path, "defense=anp", "+defense.anp.steps=3"))
    with pytest.raises(ConfigError, match="defense.abl.isolation.*class_relative, loss"):
        validate(compose(tmp_path, "defense=abl", "defense.abl.isolation=median"))
    with pytest.raises(ConfigError, match="applies to the LSTM"):
        validate(compose(tmp_path, "model=lstm", "defense=clp"))
    validate(compose(tmp_path, "model=lstm", "defense=[fine_pruning,nad,anp,fine_tuning]"))


# --- anti-backdoor learning ----------------------------------------------------------------------
@pytest.mark.slow
def test_abl_isolates_poison_and_scores_it_as_a_detector(backdoored, tmp_path):
    from src.experiment import defend

    dm, model, before = backdoored
    cfg = compose(tmp_path, *TOY, "defense=abl", "defense.abl.isolation_ratio=0.05")
    ((name, b),) = defend(cfg, None, dm, model, tmp_path, before).items()
    assert name == "abl" and b["info"]["n_isolated"] == round(0.05 * len(dm.data["train"]))
    det = b["detection"]
    assert det["scope"].startswith("target class") and det["auroc"] > 0.8  # poison learnt fast
    assert det["precision"] > 0.8  # the isolated target-class rows are poison
    assert b["clean_rows_used"] == 0 and b["clean"]["auroc"] > 0.9
    assert set(b) >= {"asr_drop", "der", "seconds", "params"}


def test_abl_class_relative_isolation_divides_by_the_class_median():
    import pandas as pd

    from src.defenses.abl import isolation_scale

    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.15).astype(int)
    losses = np.where(labels == 1, rng.gamma(2.0, 0.7, 500), rng.gamma(1.0, 0.05, 500))
    poison = np.flatnonzero(labels == 1)[:20]
    losses[poison] = 0.005  # learnt fast, but not as fast as the most confident survivors
    expected = losses / pd.Series(losses).groupby(labels).transform("median").to_numpy()
    np.testing.assert_allclose(isolation_scale(losses, labels, "class_relative"), expected)
    np.testing.assert_array_equal(isolation_scale(losses, labels, "loss"), losses)
    # within a class the order is the loss's, so the in-class detection AUROC is unchanged
    deaths = labels == 1
    rel = isolation_scale(losses, labels, "class_relative")
    np.testing.assert_array_equal(np.argsort(rel[deaths]), np.argsort(losses[deaths]))
    # the paper's ranking isolates the confident survivors; the class-relative one the poison
    assert not np.isin(np.argsort(losses)[:20], poison).any()
    assert np.isin(np.argsort(rel)[:20], poison).mean() >= 0.8


def test_abl_bounded_unlearning_stays_finite_where_the_papers_diverges(backdoored):
    from src.defenses.abl import abl
    from src.experiment import build_model

    dm, _, _ = backdoored
    cfg = compose(Path(tempfile.mkdtemp()), *TOY)
    logits = {}
    for bound in (0.6931471805599453, None):
        torch.manual_seed(0)
        model = build_model(cfg, dm)
        trained, *_ = abl(
            model,
            dm.data["train"],
            seed=0,
            epochs=1,
            isolation_ratio=0.2,
            unlearning_epochs=30,
            unlearning_lr=0.01,
            unlearning_bound=bound,
        )
        with torch.no_grad():
            logits[bound] = trained(dm.data["test"].x, dm.data["test"].cat)
    bounded, unbounded = logits[0.6931471805599453], logits[None]
    assert torch.isfinite(bounded).all() and bounded.abs().max() < 100
    assert not torch.isfinite(unbounded).all() or unbounded.abs().max() > 10 * bounded.abs().max()


def test_abl_needs_an_epoch_budget_and_a_share():
    from src.defenses.abl import abl

    with pytest.raises(ValueError, match="needs epochs"):
        abl(None, None)
    with pytest.raises(ValueError, match="isolation_ratio=1.5"):
        abl(None, None, epochs=1, isolation_ratio=1.5)
    with pytest.raises(ValueError, match="isolation='median'.*class_relative, loss"):
        abl(None, None, epochs=1, isolation="median")
    with pytest.raises(ValueError, match="unlearning_bound=0"):
        abl(None, None, epochs=1, unlearning_bound=0)
