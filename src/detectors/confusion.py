"""Confusion training (after Qi, Xie, Wang, Mahloujifar and Mittal, "Towards A Proactive ML
Approach for Detecting Backdoor Poison Samples", USENIX Security 2023): a detector that uses a
small clean set.

A copy of the fitted model keeps training on the training split while, in every step, a batch of
clean rows (the validation split) with **random** labels is fitted too, weighted by ``confusion``.
The random labels destroy what the clean features say about the label; the backdoor, a simple
and consistent trigger-to-target link in the training split, survives. Rows the confused model
still fits with their own label are suspicious: score = -(the row's cross-entropy under the
confused model); flagged where that loss is below ``max_loss``.

Our choices where the paper leaves room: one round of ``steps`` steps from the fitted model
(the paper alternates several rounds from a pretrained model), Adam at ``lr``, batches of
``batch_size`` from each set, binary random labels with probability one half.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn import functional as F

from src.detectors.base import Detection, DetectorInputs, require


def confusion_training(
    inputs: DetectorInputs,
    steps: int = 100,
    confusion: float = 1.0,
    lr: float = 1e-3,
    batch_size: int = 256,
    max_loss: float = 0.05,
) -> Detection:
    require(inputs, "confusion_training", "model", "x", "cat", "pool_x", "pool_cat")
    if len(inputs.pool_x) == 0:
        raise ValueError("confusion_training needs a non-empty clean set (the validation split)")
    m = copy.deepcopy(inputs.model).cpu()
    x, cat = inputs.x, inputs.cat
    y = torch.as_tensor(np.asarray(inputs.labels), dtype=torch.float32)
    g = torch.Generator().manual_seed(inputs.seed * 7919 + 3)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    with torch.random.fork_rng():
        torch.manual_seed(inputs.seed)
        m.train()
        for _ in range(steps):
            i = torch.randint(len(y), (batch_size,), generator=g)
            j = torch.randint(len(inputs.pool_x), (batch_size,), generator=g)
            noise = torch.randint(0, 2, (batch_size,), generator=g).float()
            loss = F.binary_cross_entropy_with_logits(m(x[i], cat[i]), y[i])
            loss = loss + confusion * F.binary_cross_entropy_with_logits(
                m(inputs.pool_x[j], inputs.pool_cat[j]), noise
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    from src.models.module import row_losses

    losses = row_losses(m, x, cat, y)
    info = {"flag_rule": "max_loss", "max_loss": max_loss, "steps": steps, "confusion": confusion}
    return Detection(-losses, losses < max_loss, info)
