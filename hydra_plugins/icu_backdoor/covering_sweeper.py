"""``hydra/sweeper=covering``: Hydra's basic grid sweeper, with a cheaper check before launch.

Before launching a batch the basic sweeper composes every job's config once to catch errors
early, one after the other in the launching process; each job composes its own again when it
runs. Composing takes about 0.26 s here, so a 48-job grid spent 12.6 s before its first job,
serial even under the joblib launcher. This sweeper composes a covering subset instead: a few
jobs such that every ``key=value`` of the batch occurs in one of them (a greedy cover, 4 for
the 2 x 4 x 3 x 2 grid). That still catches a misspelt key or group option before any
job runs. What it no longer checks up front is a combination that composes only as a whole:
such a job then fails when its turn comes, as it would under a launcher that never validates.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

log = logging.getLogger(__name__)


# Plain typing, no "from __future__ import annotations": Hydra runs plugin modules without
# registering them in sys.modules, where dataclasses would look string annotations up, and
# OmegaConf reads these types to check the sweeper's config.
@dataclass
class CoveringSweeperConf:
    _target_: str = "hydra_plugins.icu_backdoor.covering_sweeper.CoveringSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="covering", node=CoveringSweeperConf, provider="icu_backdoor"
)


def covering_jobs(batch: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    """A few jobs of ``batch`` that together hold every ``key=value`` of it, in grid order.

    Greedy set cover: each pick is the job with the most values no earlier pick had (the
    earliest on ties). A full grid then needs as many picks as its longest list of values:
    4 for the 2 x 4 x 3 x 2 grid, where taking every job that brings anything new took 8."""
    unseen = {o for job in batch for o in job}
    picked: list[int] = []
    while unseen:
        best = max(range(len(batch)), key=lambda i: (len(unseen.intersection(batch[i])), -i))
        picked.append(best)
        unseen.difference_update(batch[best])
    return [batch[i] for i in sorted(picked)]


class CoveringSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        tic = time.perf_counter()
        picked = covering_jobs(batch)
        super().validate_batch_is_legal(picked)
        log.info(
            "composed %d of %d job configs to check the batch, in %.1f s",
            len(picked),
            len(batch),
            time.perf_counter() - tic,
        )
