"""A SLURM launcher that gives each grid cell the resources it needs.

Hydra's submitit launcher submits a sweep as one array job: every job gets the same wall time,
CPUs and memory, so a grid of MLP and TCN jobs is sized for the TCN. ``CellSlurmLauncher`` groups
the jobs by the value of one key of their overrides (``resource_key``, the model by default),
submits one array per group with ``resources[value]`` laid over the launcher's own settings, and
returns the results in the sweep's order with the sweep's job numbers (so folders, resume and
the report are as with the plain launcher). A value without an entry keeps the launcher's
settings; with the key not swept, the run config's value picks the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def cell_value(overrides: Sequence[str], key: str, default: str | None) -> str | None:
    """The value ``overrides`` give ``key`` (``key=v``, ``+key=v``, ``++key=v``), else ``default``."""
    for o in overrides:
        k, _, v = o.partition("=")
        if k.lstrip("+~") == key:
            return v
    return default


class CellSlurmLauncher(SlurmLauncher):
    def __init__(self, resources=None, resource_key: str = "model", **params) -> None:
        super().__init__(**params)
        if OmegaConf.is_config(resources):
            resources = OmegaConf.to_container(resources, resolve=True)
        self.resources: dict = dict(resources or {})
        self.resource_key = resource_key
        allowed = set(self.params)
        for value, res in self.resources.items():
            unknown = sorted(set(res or {}) - allowed)
            if unknown:
                raise ValueError(
                    f"hydra.launcher.resources.{value}: {', '.join(unknown)} not launcher "
                    f"settings (allowed: {', '.join(sorted(allowed))})"
                )

    def groups(self, job_overrides: Sequence[Sequence[str]]) -> dict[str | None, list[int]]:
        """Positions of the jobs per value of ``resource_key``, in the sweep's order."""
        default = None
        if self.config is not None:
            default = OmegaConf.select(self.config, f"{self.resource_key}.name", default=None)
        out: dict[str | None, list[int]] = {}
        for i, ov in enumerate(job_overrides):
            out.setdefault(cell_value(ov, self.resource_key, default), []).append(i)
        return out

    def cell_params(self, value: str | None) -> dict:
        return {**self.params, **(self.resources.get(value) or {})}

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and len(job_overrides) > 0
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        results: list = [None] * len(job_overrides)
        pending = []
        for value, positions in self.groups(job_overrides).items():
            params = self.cell_params(value)
            init = {"folder": params["submitit_folder"]}
            if "max_num_timeout" in params:
                init[f"{self._EXECUTOR}_max_num_timeout"] = params["max_num_timeout"]
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(
                **{
                    k if k in base else f"{self._EXECUTOR}_{k}": v
                    for k, v in params.items()
                    if k not in ("submitit_folder", "max_num_timeout")
                }
            )
            log.info(
                f"{self.resource_key}={value}: {len(positions)} jobs, "
                f"{params.get('cpus_per_task')} CPUs, {params.get('mem_gb')} GB, "
                f"{params.get('timeout_min')} min"
            )
            job_params = []
            for i in positions:
                idx = initial_job_idx + i
                log.info(f"\t#{idx} : {' '.join(filter_overrides(job_overrides[i]))}")
                job_params.append(
                    (
                        list(job_overrides[i]),
                        "hydra.sweep.dir",
                        idx,
                        f"job_id_for_{idx}",
                        Singleton.get_state(),
                    )
                )
            pending.append((positions, executor.map_array(self, *zip(*job_params, strict=True))))
        for positions, jobs in pending:  # every group submitted before waiting on any
            for i, job in zip(positions, jobs, strict=True):
                results[i] = job.results()[0]
        return results
