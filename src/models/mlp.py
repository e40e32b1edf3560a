"""MLP encoder over the flat view: Linear → ReLU → Dropout blocks."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        hidden: list[int] | tuple[int, ...] = (256, 128),
        dropout: float = 0.2,
    ):
        super().__init__()
        layers, d = [], in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)

    def linear_stem(self):
        """The first Linear, and the rest of the network from its output (see
        ``BackdoorClassifier.linear_stem``)."""
        rest = self.net[1:]
        return self.net[0], lambda h, cat=None: rest(h)
