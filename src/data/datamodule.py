"""PoisonedDataModule: split, poison (train only), preprocess, tensors in memory.

The order of things is fixed here once: split by subject on the clean cohort, build the trigger
from the clean training split, poison the training split, fit preprocessing on the poisoned
training split (as a practitioner would), and build the clean test set plus a triggered copy of
its non-target rows. Batches are index slices of in-memory tensors; there is no per-row Python
and no worker process in the training path.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch

from src.attacks.poison import PoisonResult, poison, triggered_test
from src.attacks.triggers import Trigger, build_trigger
from src.data.cohort import Cohort
from src.data.preprocess import Preprocessor
from src.data.split import Split, split_by_subject
from src.data.views import get_view, model_input


@dataclass
class Tensors:
    x: torch.Tensor  # view input, float32
    cat: torch.Tensor  # static categorical codes, int64 [N, C]
    y: torch.Tensor  # float32 labels (0/1), as the loss wants them

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx) -> Tensors:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Tensors(self.x[idx], self.cat[idx], self.y[idx])


class IndexBatches:
    """Batches as index slices of in-memory tensors. Shuffled batches draw a fresh permutation
    from their own generator each epoch, seeded, so a run replays exactly.

    Under data-parallel training (``world`` > 1) every rank draws the same permutation and keeps
    its own stride of it, truncated so that all ranks take the same number of steps (the few
    rows beyond ``world * (n // world)`` sit out that epoch, differently each epoch)."""

    def __init__(
        self,
        t: Tensors,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        self.t, self.batch_size, self.shuffle, self.seed = t, batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch = 0

    def _rows(self) -> int:
        return len(self.t) // self.world if self.world > 1 else len(self.t)

    def __len__(self) -> int:
        return (self._rows() + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n, b = len(self.t), self.batch_size
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            self.epoch += 1
            perm = torch.randperm(n, generator=g)
            if self.world > 1:
                perm = perm[: self._rows() * self.world][self.rank :: self.world]
            for i in range(0, len(perm), b):
                idx = perm[i : i + b]
                yield self.t.x[idx], self.t.cat[idx], self.t.y[idx]
        else:
            for i in range(0, n, b):
                yield self.t.x[i : i + b], self.t.cat[i : i + b], self.t.y[i : i + b]


class PoisonedDataModule(L.LightningDataModule):
    def __init__(
        self,
        cohort: Cohort,
        trigger_cfg: dict,
        view: str = "flat",
        poison_rate: float = 0.0,
        target_label: int = 1,
        poison_mode: str = "dirty",
        seed: int = 0,
        test_size: float = 0.2,
        val_size: float = 0.1,
        batch_size: int = 256,
        drop_train_rows: np.ndarray | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__()
        self.cache_dir = cache_dir  # where the split is kept between jobs (None: not kept)
        self.cohort, self.trigger_cfg, self.view = cohort, dict(trigger_cfg), view
        self.poison_rate, self.target_label, self.poison_mode = (
            poison_rate,
            target_label,
            poison_mode,
        )
        self.seed, self.test_size, self.val_size = seed, test_size, val_size
        self.batch_size = batch_size
        self.drop_train_rows = drop_train_rows  # indices into the poisoned train split (defense)
        self._ready = False

    # --- the pipeline, once ----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        c = self.cohort
        self.split: Split = split_by_subject(
            c.label, c.subject_id, self.test_size, self.val_size, self.seed, self.cache_dir
        )
        clean_train = c.subset(self.split.train)
        self.trigger: Trigger = build_trigger(self.trigger_cfg, clean_train)
        self.poisoned: PoisonResult = poison(
            clean_train,
            self.trigger,
            self.poison_rate,
            self.target_label,
            self.poison_mode,
            self.seed,
        )
        train = self.poisoned.cohort
        self.train_mask = self.poisoned.mask
        if self.drop_train_rows is not None and len(self.drop_train_rows):
            keep = np.setdiff1d(np.arange(len(train)), self.drop_train_rows)
            train, self.train_mask = train.subset(keep), self.train_mask[keep]
        self.train_cohort = train
        self.prep = Preprocessor.fit(train)
        test = c.subset(self.split.test)
        trig, self.triggered_rows = triggered_test(test, self.trigger, self.target_label)
        self.data = {
            "train": self._tensors(train),
            "val": self._tensors(c.subset(self.split.val)),
            "test": self._tensors(test),
            "test_triggered": self._tensors(trig),
        }
        self._ready = True

    def _tensors(self, c: Cohort) -> Tensors:
        x, cat = model_input(self.prep, c, self.view)
        return Tensors(
            torch.from_numpy(x), torch.from_numpy(cat), torch.from_numpy(c.label.astype(np.float32))
        )

    # --- what models and detectors need -----------------------------------------------------
    @property
    def cat_levels(self) -> list[int]:
        """Vocabulary size per static categorical column (the one-hot widths of the views)."""
        return list(self.prep.levels)

    @property
    def encoder_dims(self) -> dict:
        """Input sizes for the encoder of this view (keyword arguments of its constructor)."""
        return get_view(self.view).encoder_dims(self.data["train"].x, self.cat_levels)

    def counts(self) -> dict:
        p = self.poisoned
        return {
            "n_stays": len(self.cohort),
            **{f"n_{k}": v for k, v in self.split.sizes().items()},
            "n_eligible": p.n_eligible,
            "n_poisoned": p.n_poisoned,
            "n_relabelled": p.n_relabelled,
            "n_train_used": len(self.data["train"]),
            "n_test_triggered": len(self.data["test_triggered"]),
            "train_prevalence": float(self.data["train"].y.mean()),
            "test_prevalence": float(self.data["test"].y.mean()),
        }

    def loader(self, name: str, shuffle: bool = False) -> IndexBatches:
        return IndexBatches(self.data[name], self.batch_size, shuffle=shuffle, seed=self.seed)

    def train_dataloader(self):
        t = self.trainer
        rank, world = (t.global_rank, t.world_size) if t is not None else (0, 1)
        return IndexBatches(
            self.data["train"],
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            rank=rank,
            world=world,
        )

    def val_dataloader(self):
        return self.loader("val")

    def test_dataloader(self):
        return self.loader("test")

    def predict_dataloader(self):
        return self.loader("test")
