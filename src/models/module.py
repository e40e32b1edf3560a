"""BackdoorClassifier: any encoder plus a linear head for binary in-hospital mortality.

Encoders are plain ``nn.Module``s taking ``(x, cat)`` and exposing ``out_dim``; they know nothing
of poisoning. ``embed()`` gives the penultimate features (the encoder's output) that the
activation-based detectors read.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import BinaryAUROC


@torch.no_grad()
def row_losses(model, x, cat, y, batch_size: int = 4096):
    """Each row's binary cross-entropy under ``model`` (logits over ``(x, cat)``), in eval mode
    and in batches, as a float64 numpy array: the loss-based detectors' raw score (ABL's
    isolation, confusion training)."""
    import numpy as np

    model.eval()
    out = [
        F.binary_cross_entropy_with_logits(
            model(x[s : s + batch_size], cat[s : s + batch_size]),
            y[s : s + batch_size],
            reduction="none",
        )
        for s in range(0, len(y), batch_size)
    ]
    return torch.cat(out).double().numpy() if out else np.zeros(0)


class BackdoorClassifier(L.LightningModule):
    def __init__(self, encoder: nn.Module, optimizer: Callable, scheduler: Callable | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, 1)
        self._optimizer, self._scheduler = optimizer, scheduler
        self.val_auroc = BinaryAUROC()

    def embed(self, x: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, cat)

    def forward(self, x: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """Logits of death, shape [B]."""
        return self.head(self.embed(x, cat)).squeeze(-1)

    def linear_stem(self):
        """``(stem, rest)`` when the encoder's first operation on ``x`` is one affine map (it
        defines ``linear_stem``, as the MLP and the TCN do): ``stem(x)`` is that map's output and
        ``rest(h, cat)`` the logits from it, so ``rest(stem(x), cat) == self(x, cat)``. An
        average of inputs maps to the average of their stem outputs, so STRIP blends there, at
        a fraction of the cost. None for other encoders, and where the encoder's
        ``linear_stem()`` answers None (a stem no narrower than the input saves nothing)."""
        split = getattr(self.encoder, "linear_stem", None)
        pair = split() if split is not None else None
        if pair is None:
            return None
        first, rest = pair
        return first, lambda h, cat: self.head(rest(h, cat)).squeeze(-1)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # Batches are tuples of tensors; skip Lightning's generic collection walk when they
        # already sit on the device (the CPU case), a measurable share of a small model's step.
        if all(t.device == device for t in batch):
            return batch
        return tuple(t.to(device, non_blocking=True) for t in batch)

    def on_train_epoch_start(self):
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_n = 0

    def training_step(self, batch, batch_idx):
        x, cat, y = batch
        loss = F.binary_cross_entropy_with_logits(self(x, cat), y)
        # summed here, logged once per epoch: self.log on every step costs more than a small
        # model's step (see benchmarks/bench_training.py)
        self._loss_sum += loss.detach() * len(y)
        self._loss_n += len(y)
        return loss

    def on_train_epoch_end(self):
        if self._loss_n:
            self.log("train_loss", self._loss_sum / self._loss_n)

    def validation_step(self, batch, batch_idx):
        x, cat, y = batch
        logits = self(x, cat)
        self.log(
            "val_loss",
            F.binary_cross_entropy_with_logits(logits, y),
            on_epoch=True,
            batch_size=len(y),
        )
        self.val_auroc.update(logits, y.long())
        self.log("val_auroc", self.val_auroc, on_epoch=True, prog_bar=True)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, cat, _ = batch
        return torch.sigmoid(self(x, cat))

    def configure_optimizers(self):
        opt = self._optimizer(self.parameters())
        if self._scheduler is None:
            return opt
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": self._scheduler(opt), "monitor": "val_loss"},
        }

    @torch.no_grad()
    def predict_proba(self, batches) -> torch.Tensor:
        """Probabilities of death over batches, in eval mode (no trainer needed)."""
        was = self.training
        self.eval()
        out = torch.cat([torch.sigmoid(self(x, cat)) for x, cat, _ in batches])
        self.train(was)
        return out

    @torch.no_grad()
    def embed_all(self, batches) -> torch.Tensor:
        """Penultimate features over batches, in eval mode (for detectors)."""
        was = self.training
        self.eval()
        out = torch.cat([self.embed(x, cat) for x, cat, _ in batches])
        self.train(was)
        return out
