"""LSTM encoder over the sequence view ``[B, T, in_features]``, pooled to one vector per stay."""

from __future__ import annotations

import torch
from torch import nn

POOLS = ("last", "mean_last")


class LSTM(nn.Module):
    """``pool="last"``: the final hidden state (both directions' final states when
    bidirectional); ``pool="mean_last"``: the mean over hours concatenated with it, so an event
    early in the window reaches the head without having to survive every later step."""

    def __init__(
        self,
        in_features: int,
        n_steps: int | None = None,
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.1,
        pool: str = "mean_last",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(
                f"model.encoder.pool={pool!r} is not allowed: one of {', '.join(POOLS)}"
            )
        if hidden < 1 or layers < 1:
            raise ValueError(
                f"model.encoder.hidden={hidden!r} and model.encoder.layers={layers!r} "
                "must be positive integers"
            )
        self.pool = pool
        self.rnn = nn.LSTM(
            in_features,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        d = hidden * (2 if bidirectional else 1)
        self.out_dim = d * (2 if pool == "mean_last" else 1)

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
        seq, (h, _) = self.rnn(x)
        # h: [layers * directions, B, hidden]; the top layer's final state of each direction
        # (the backward direction's "final" state is the one that has read hour 0 last)
        dirs = 2 if self.rnn.bidirectional else 1
        last = torch.cat(list(h[-dirs:]), dim=-1)
        out = last if self.pool == "last" else torch.cat([seq.mean(1), last], dim=-1)
        return self.drop(out)
