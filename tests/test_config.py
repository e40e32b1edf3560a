"""Configs compose, and bad input fails at start with a message naming key, value and choices."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from src.config import ConfigError, validate
from tests.conftest import compose_config as cfg_with


def test_default_config_is_valid_and_names_every_group():
    cfg = cfg_with()
    validate(cfg)
    for key in ("data", "model", "trigger", "trainer", "logger", "callbacks", "paths"):
        assert key in cfg
    assert cfg.trigger.name == "rare_value" and cfg.model.view == "flat"


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("poison_rate=1.5", "poison_rate", "in [0, 1]"),
        ("poison_rate=-0.1", "poison_rate", "in [0, 1]"),
        ("target_label=2", "target_label", "0 (survived) or 1 (died)"),
        ("trigger.hours=[20,30]", "trigger.hours", "window_hours=24"),
        ("trigger.quantile=2.0", "trigger.quantile", "[0, 1]"),
        ("data.test_size=0.9", "data.test_size", "(0, 0.5)"),
        ("seed=-1", "seed", "[0, 4294967295]"),
        ("seed=8589934592", "seed", "[0, 4294967295]"),
        ("model.epochs=0", "model.epochs", "epochs >= 1"),
        ("trainer.max_epochs=-1", "trainer.max_epochs", "epochs >= 1"),
        ("trigger.value=inf", "trigger.value", "finite"),
        ("trigger.value=nan", "trigger.value", "finite"),
        ("data.window_hours=200", "data.window_hours", "at most 48 hours"),
        ("data.min_age=200", "data.min_age", "[0, 120]"),
        ("data.features=[nosuch]", "data.features", "'nosuch' is not one"),
        ("data.root=/nonexistent/mimiciv", "data.root", "an existing folder"),
    ],
)
def test_out_of_range_values_name_key_value_and_what_is_allowed(override, key, allowed):
    extra = ["data=mimiciv"] if key == "data.root" else []
    with pytest.raises(ConfigError) as e:
        validate(cfg_with(*extra, override))
    msg = str(e.value)
    assert msg.startswith(f"{key}=") and allowed in msg
    assert override.split("=", 1)[1].replace("[", "").replace("]", "").split(",")[0] in msg


def test_unknown_trigger_lists_the_available_ones():
    with pytest.raises(ConfigCompositionException, match="trigger/sparkle") as e:
        cfg_with("trigger=sparkle")
    assert "rare_value" in str(e.value.__cause__ or e.value) or "rare_value" in str(e.value)


def test_misspelt_keys_fail_at_composition():
    with pytest.raises(ConfigCompositionException, match="poison_rat"):
        cfg_with("poison_rat=0.1")
    with pytest.raises(ConfigCompositionException) as e:
        cfg_with("data.n_stay=100")  # typed schema: no such key
    assert "n_stay" in str(e.value.__cause__)


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("poison_mode=sneaky", "poison_mode", "dirty, clean"),
        ("data.source=csv", "data.source", "synthetic, mimiciv, yaib"),
        ("model.epoch=3", "model.epoch", "not in 'ModelSchema'"),
        ("seed=early", "seed", "Integer"),
    ],
)
def test_typed_schemas_refuse_at_composition_naming_the_key(override, key, allowed):
    """Choices are Enums and the top level, data and model are typed: OmegaConf names the key,
    the value and what is allowed."""
    with pytest.raises(ConfigCompositionException) as e:
        cfg_with(override)
    msg = str(e.value.__cause__ or e.value)
    assert f"full_key: {key}" in msg and allowed in msg


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("detectors.strip.variant=three", "detectors.strip.variant", "low, two_sided, per_class"),
        ("+detectors.spectre.robst=trim", "detectors.spectre.robst", "a parameter of"),
        ("detectors.spectral_signature.projection=abs", "detectors.spectral_signature", "one of"),
    ],
)
def test_detector_parameters_are_checked_at_start(override, key, allowed):
    with pytest.raises(ConfigError) as e:
        validate(cfg_with(override))
    assert str(e.value).startswith(key) and allowed in str(e.value)


def test_wrong_types_fail_at_composition():
    with pytest.raises(ConfigCompositionException) as e:
        cfg_with("data.n_stays=many")
    assert isinstance(e.value.__cause__, ValidationError) and "n_stays" in str(e.value.__cause__)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["trigger=pattern", "trigger.values=[nan,100,10]"], "trigger.values"),
        (["trigger=temporal", "trigger.amplitude=nan"], "trigger.amplitude"),
        (["trigger=distribution_shift", "trigger.k=inf"], "trigger.k"),
        (["data.features=[hr,nosuch]", "trigger.feature=hr"], "data.features"),
        (
            ["trigger=hybrid", "trigger@trigger.first=rare_value", "trigger.first.value=-inf"],
            "trigger.first.value",
        ),
    ],
)
def test_non_finite_trigger_values_and_unknown_features_are_refused_at_start(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        validate(cfg_with(*overrides))
