"""Entry point: ``python -m src.run [overrides]`` (one run) or ``python -m src.run -m ...`` (a sweep).

Nothing but wiring: find conf/, compose, check the config, hand it to ``run_experiment``. Heavy
imports wait inside the function, so ``--help`` and ``--cfg job`` answer at once.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import ConfigError, validate


def register_sweeper() -> None:
    """Make ``hydra/sweeper=covering`` (conf/run.yaml's default) known to Hydra. Hydra finds
    plugins by listing the ``hydra_plugins`` folders on sys.path, which misses an editable
    install run from outside the checkout; importing the module registers its config and this
    registers its class, wherever the package lives."""
    from hydra.core.plugins import Plugins

    # Hydra's scan first: it re-executes its own plugin modules, and a sweeper class built on
    # BasicSweeper before that would no longer be a subclass of it.
    plugins = Plugins.instance()
    from hydra_plugins.icu_backdoor.covering_sweeper import CoveringSweeper

    plugins.register(CoveringSweeper)


register_sweeper()


def conf_dir() -> str:
    """conf/ of the checkout, or the copy shipped inside the installed package (src/conf)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "run.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/run.yaml beside {here} or inside it")


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="run")
def main(cfg: DictConfig) -> dict | None:
    from src import sweep

    # In a sweep one bad job must not stop the others: it is recorded (results.json with status
    # failed) and the sweep goes on; a job already finished with the same config is skipped.
    multirun = sweep.is_multirun()
    try:
        validate(cfg)
    except ConfigError as e:
        logging.getLogger("src.run").error("bad config: %s", e)
        print(f"error: {e}", file=sys.stderr)
        if multirun:
            sweep.record_failure(cfg, e)
            return None
        sys.exit(2)
    from src.experiment import run_experiment

    if not multirun:
        try:
            return run_experiment(cfg)
        except Exception as e:  # one line, not Hydra's stack: the traceback is in results.json
            logging.getLogger("src.run").debug("run failed", exc_info=True)
            where = Path(str(cfg.paths.output_dir)) / "results.json"
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
            print(f"         the traceback is in {where} (error.traceback)", file=sys.stderr)
            sys.exit(1)
    done = sweep.finished_results(cfg)
    if done is not None:
        return done
    try:
        return run_experiment(cfg)
    except Exception as e:  # results.json already says failed; KeyboardInterrupt still stops
        logging.getLogger("src.run").exception("job failed, the sweep goes on: %s", e)
        return None


def check_output_dir(argv: list[str]) -> None:
    """Create the run's (or sweep's) output folder named on the command line before Hydra does,
    so that an unwritable one ends in one line naming it (exit 2), not in Hydra's stack. Folders
    with interpolations (the default ``outputs/${now:...}``) are left to Hydra; their first fixed
    part is created."""
    if any(a.startswith(("--help", "-h", "--cfg", "-c", "--info", "--hydra-help")) for a in argv):
        return  # nothing will be written
    key = "hydra.sweep.dir" if any(a in ("-m", "--multirun") for a in argv) else "hydra.run.dir"
    default = "multirun" if key == "hydra.sweep.dir" else "outputs"
    value = next((a.split("=", 1)[1] for a in argv if a.startswith(f"{key}=")), default)
    fixed = Path(value.split("${", 1)[0]) if "${" in value else Path(value)
    if str(fixed) in ("", "."):
        return
    try:
        fixed.mkdir(parents=True, exist_ok=True)
        if not os.access(fixed, os.W_OK):
            raise PermissionError(f"no write permission on {fixed}")
    except OSError as e:
        print(
            f"error: {key}={value} is not allowed: a folder this user can create and write "
            f"({type(e).__name__}: {e})",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    check_output_dir(sys.argv[1:])
    main()
