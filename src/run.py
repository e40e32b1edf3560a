"""Entry point: ``python -m src.run [overrides]`` (one run) or ``python -m src.run -m ...`` (a sweep).

Nothing but wiring: find conf/, compose, check the config, hand it to ``run_experiment``. Heavy
imports wait inside the function, so ``--help`` and ``--cfg job`` answer at once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import ConfigError, validate


def conf_dir() -> str:
    """conf/ of the checkout, or the copy shipped inside the installed package (src/conf)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "run.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/run.yaml beside {here} or inside it")


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="run")
def main(cfg: DictConfig) -> dict | None:
    try:
        validate(cfg)
    except ConfigError as e:
        logging.getLogger("src.run").error("bad config: %s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from src.experiment import run_experiment

    return run_experiment(cfg)


if __name__ == "__main__":
    main()
