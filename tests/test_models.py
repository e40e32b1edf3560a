"""Encoders (MLP, LSTM, TCN, TabTransformer) on the views the DataModule builds from the toy cohort."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from src.data.datamodule import PoisonedDataModule
from src.models.lstm import LSTM
from src.models.module import BackdoorClassifier
from src.models.tab_transformer import TabTransformer
from src.models.tcn import TCN, receptive_field
from src.run import conf_dir
from tests.conftest import compose_config
from tests.toy import toy_cohort

MODELS = sorted(p.stem for p in (Path(conf_dir()) / "model").glob("*.yaml"))  # one per YAML
TRIGGER = {
    "name": "rare_value",
    "feature": "hr",
    "hours": [8, 12],
    "quantile": 0.995,
    "value": None,
}


def compose_run(*overrides, out: Path | None = None):
    return compose_config(*overrides, out=out or "/nonexistent")


@pytest.fixture(scope="module")
def cohort():
    return toy_cohort(n=300, hours=12)


def datamodule(cohort, view: str, **kw) -> PoisonedDataModule:
    dm = PoisonedDataModule(cohort, TRIGGER, view=view, poison_rate=0.1, batch_size=64, **kw)
    dm.setup()
    return dm


@pytest.mark.parametrize("name", MODELS)
def test_config_composes_instantiates_and_gives_forward_and_embed_shapes(name, cohort):
    cfg = compose_run(f"model={name}")
    assert cfg.model.name == name
    dm = datamodule(cohort, cfg.model.view)
    enc = instantiate(cfg.model.encoder, **dm.encoder_dims)
    model = BackdoorClassifier(enc, instantiate(cfg.model.optimizer))
    x, cat, _ = next(iter(dm.loader("train")))
    assert model(x, cat).shape == (len(x),)
    emb = model.embed_all(dm.loader("test"))
    assert emb.shape == (len(dm.data["test"]), enc.out_dim)
    assert torch.isfinite(emb).all()
    p = model.predict_proba(dm.loader("test"))
    assert p.shape == (len(dm.data["test"]),) and ((p > 0) & (p < 1)).all()
    opt = model.configure_optimizers()
    assert isinstance(
        opt if isinstance(opt, torch.optim.Optimizer) else opt["optimizer"], torch.optim.Optimizer
    )


def test_view_shapes_reach_the_encoders(cohort):
    seq, tab = datamodule(cohort, "sequence"), datamodule(cohort, "tabular")
    n_feat = len(cohort.features)
    d = seq.encoder_dims
    assert d["n_steps"] == 12 and seq.data["train"].x.shape[1:] == (12, d["in_features"])
    assert d["in_features"] >= 2 * n_feat  # values + indicators, then statics
    t = tab.encoder_dims
    assert t["n_num"] == tab.data["train"].x.shape[1] and t["cardinalities"] == [3, 4]
    assert tab.data["train"].cat.shape[1] == len(t["cardinalities"])


@pytest.mark.parametrize(
    "bidirectional, pool, factor",
    [(False, "last", 1), (False, "mean_last", 2), (True, "last", 2), (True, "mean_last", 4)],
)
def test_lstm_out_dim_matches_output(bidirectional, pool, factor):
    enc = LSTM(7, hidden=5, layers=2, bidirectional=bidirectional, pool=pool)
    out = enc(torch.randn(3, 6, 7), None)
    assert out.shape == (3, enc.out_dim) and enc.out_dim == 5 * factor


def test_lstm_rejects_unknown_pool():
    with pytest.raises(ValueError, match="pool='max'.*last, mean_last"):
        LSTM(4, pool="max")


def test_tcn_hour_t_depends_only_on_hours_up_to_t():
    torch.manual_seed(0)
    enc = TCN(6, n_steps=16, channels=[8, 8, 8], levels=3, kernel_size=3).eval()
    x = torch.randn(2, 16, 6)
    base = enc.features(x)
    assert base.shape == (2, 16, 8)
    for t in (0, 5, 10, 14):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 5
        out = enc.features(x2)
        assert torch.equal(out[:, : t + 1], base[:, : t + 1]), f"hour {t} saw the future"
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])  # later hours did change
    # and the encoder output is the last hour, which sees the first one
    x3 = x.clone()
    x3[:, 0] += 5
    assert torch.equal(enc(x, None), base[:, -1]) and not torch.allclose(
        enc(x3, None), enc(x, None)
    )


def test_tcn_receptive_field_too_small_names_window_kernel_levels_and_field():
    assert receptive_field(3, 2) == 13
    with pytest.raises(ValueError) as e:
        TCN(4, n_steps=24, levels=2, kernel_size=3)
    msg = str(e.value)
    for part in ("n_steps=24", "kernel_size=3", "levels=2", "receptive field 13", "levels=3"):
        assert part in msg, msg
    TCN(4, n_steps=13, levels=2, kernel_size=3)  # exactly covering is enough


def test_tcn_downsamples_residual_only_when_channels_change():
    enc = TCN(5, n_steps=8, channels=[5, 7, 7], levels=3, kernel_size=2)
    assert [b.downsample is not None for b in enc.blocks] == [False, True, False]
    assert enc(torch.randn(2, 8, 5), None).shape == (2, 7) and enc.out_dim == 7


def test_tab_transformer_unseen_categories_map_to_unknown():
    torch.manual_seed(0)
    enc = TabTransformer(3, [3, 4], dim=16, heads=2, mlp_hidden=[8]).eval()
    x = torch.randn(4, 3)
    known = torch.tensor([[0, 1], [0, 3], [2, 0], [1, 2]])
    unseen = known.clone()
    unseen[0, 0], unseen[1, 1], unseen[2, 1] = 3, 99, -5  # >= cardinality and negative
    as_zero = known.clone()
    as_zero[0, 0], as_zero[1, 1], as_zero[2, 1] = 0, 0, 0
    out = enc(x, unseen)
    assert out.shape == (4, 8) and torch.isfinite(out).all()
    assert torch.equal(out, enc(x, as_zero))
    assert not torch.allclose(enc(x, known)[:2], out[:2])  # the codes do matter


def test_tab_transformer_without_categoricals():
    enc = TabTransformer(5, [], mlp_hidden=[6, 4])
    assert enc(torch.randn(3, 5), torch.zeros(3, 0, dtype=torch.long)).shape == (3, 4)


def test_tab_transformer_column_embedding_tells_columns_apart():
    # the same code in two columns of equal cardinality starts from different tokens
    enc = TabTransformer(0, [3, 3], dim=16, shared_dim=4, heads=2, mlp_hidden=[4])
    assert enc.col_embed.shape == (2, 4) and enc.cat_embed.embedding_dim == 12
    with pytest.raises(ValueError, match="shared_dim=16"):
        TabTransformer(2, [3], dim=16, shared_dim=16)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_same_seed_gives_identical_predictions_and_features(name, cohort, tmp_path):
    from src.experiment import fit_model

    preds, feats = [], []
    for run in ("a", "b"):
        cfg = compose_run(
            f"model={name}",
            "logger=none",
            "detectors=none",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "seed=1",
            out=tmp_path / run,
        )
        dm = datamodule(cohort, cfg.model.view, seed=1)
        model = fit_model(cfg, dm, tmp_path / run, detect=False)
        preds.append(model.predict_proba(dm.loader("test")))
        feats.append(model.embed_all(dm.loader("train")))  # what the detectors read
    assert torch.equal(preds[0], preds[1]) and torch.equal(feats[0], feats[1])
    assert preds[0].std() > 0  # a model that learned nothing would compare equal trivially


@pytest.mark.parametrize(
    "trainer, keys",
    [
        ("gpu", {"accelerator": "gpu", "devices": 1, "deterministic": "warn"}),
        ("ddp", {"accelerator": "gpu", "devices": "auto", "strategy": "ddp"}),
    ],
)
def test_gpu_trainer_configs_compose(trainer, keys):
    # composed only: there is no GPU here, so these configs have never been run
    cfg = compose_run(f"trainer={trainer}")
    assert {k: cfg.trainer[k] for k in keys} == keys
    assert cfg.trainer.max_epochs == compose_run().trainer.max_epochs  # loop settings shared
