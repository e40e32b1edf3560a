"""Choose training rows, write the trigger into them, relabel; keep the ground-truth mask.

``poison_rate`` is the fraction of *eligible* training rows: all rows in ``dirty`` mode (they are
relabelled to ``target_label``), only rows already labelled ``target_label`` in ``clean`` mode.
The count is ``round(rate * eligible)``, reported next to the rate; a positive rate that rounds
to zero rows is an error, never a silent clean run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from src.attacks.triggers import Trigger
from src.data.cohort import Cohort


@dataclass
class PoisonResult:
    cohort: Cohort  # the training split with the poison written in
    mask: np.ndarray  # bool [N_train], ground truth: True where a row was poisoned
    rows: np.ndarray  # indices of the poisoned rows (sorted)
    n_eligible: int
    n_poisoned: int
    n_relabelled: int  # poisoned rows whose label actually changed


def poison_count(rate: float, n_eligible: int) -> int:
    # half up, not Python's half-to-even: 0.5 rows is one row, 2.5 rows three (the 1e-9 absorbs
    # float products such as 0.15 * 10 = 1.4999999999999998)
    n = math.floor(rate * n_eligible + 0.5 + 1e-9)
    if rate > 0 and n == 0:
        raise ValueError(
            f"poison_rate={rate} of {n_eligible} eligible training rows rounds to 0 poisoned "
            f"rows; poisoning one row here needs poison_rate >= 0.5/{n_eligible} "
            f"(e.g. {1 / n_eligible:.2g}; use poison_rate=0 for a clean run)"
        )
    return n


def poison(
    train: Cohort,
    trigger: Trigger,
    rate: float,
    target_label: int,
    mode: str = "dirty",
    seed: int = 0,
) -> PoisonResult:
    if mode == "dirty":
        eligible = np.arange(len(train))
    elif mode == "clean":
        eligible = np.flatnonzero(train.label == target_label)
    else:
        raise ValueError(f"poison_mode={mode!r} is not allowed: one of dirty, clean")
    n = poison_count(rate, len(eligible))
    rng = np.random.default_rng([seed, 0x5EED])  # own stream: split and init do not shift it
    rows = np.sort(rng.choice(eligible, size=n, replace=False)) if n else np.array([], np.int64)
    out = trigger.apply(train, rows)
    n_relabelled = int((out.label[rows] != target_label).sum())
    out.label[rows] = target_label
    mask = np.zeros(len(train), dtype=bool)
    mask[rows] = True
    return PoisonResult(out, mask, rows, len(eligible), n, n_relabelled)


def triggered_test(test: Cohort, trigger: Trigger, target_label: int) -> tuple[Cohort, np.ndarray]:
    """The test rows whose true label is not the target, with the trigger applied (for ASR), and
    their indices into ``test`` (the same rows untriggered give the base rate)."""
    rows = np.flatnonzero(test.label != target_label)
    return trigger.apply(test.subset(rows)), rows
