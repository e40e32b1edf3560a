"""The installed package carries everything a run needs, conf/ included."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_of_src_and_hydra_plugins_is_listed_for_installation():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("src", "hydra_plugins")  # hydra_plugins: the sweeper conf/run.yaml selects
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert "src.conf" in listed


def test_conf_ships_every_yaml_through_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"]["src.conf"] == "conf"
    assert "**/*.yaml" in cfg["package-data"]["src.conf"]
    assert (ROOT / "conf" / "run.yaml").is_file()
