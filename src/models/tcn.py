"""Temporal convolutional network over the sequence view, after Bai, Kolter and Koltun (2018),
"An Empirical Evaluation of Generic Convolutional and Recurrent Networks for Sequence Modeling".

Residual blocks of two dilated causal convolutions (weight norm optional), dilation doubling per
level, a 1x1 convolution on the residual path where the channel count changes. Causal: padding
on the left only, so the features at hour t depend on hours <= t and nothing later. The encoder
output is the last hour's features, which therefore must see the whole window: the receptive
field ``1 + 2 (kernel_size - 1) (2^levels - 1)`` is checked against ``n_steps`` at construction.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def receptive_field(kernel_size: int, levels: int) -> int:
    """Hours the last output sees: two convolutions per level, dilation 2^i at level i."""
    return 1 + 2 * (kernel_size - 1) * (2**levels - 1)


class CausalConv1d(nn.Conv1d):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int):
        super().__init__(c_in, c_out, kernel_size, dilation=dilation)
        self.left = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pad the past only (Bai et al. pad both sides and chomp the end; same result, less work)
        return super().forward(F.pad(x, (self.left, 0)))


class TemporalBlock(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        dilation: int,
        dropout: float,
        weight_norm: bool,
    ):
        super().__init__()
        convs = [
            CausalConv1d(c_in, c_out, kernel_size, dilation),
            CausalConv1d(c_out, c_out, kernel_size, dilation),
        ]
        if weight_norm:
            from torch.nn.utils.parametrizations import weight_norm as wn

            convs = [wn(c) for c in convs]
        self.conv1, self.conv2 = convs
        self.drop = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(F.relu(self.conv1(x)))
        out = self.drop(F.relu(self.conv2(out)))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """What ``forward`` computes from x by affine maps alone: the first convolution before
        its ReLU and the residual path, stacked on the channel axis."""
        res = x if self.downsample is None else self.downsample(x)
        return torch.cat([self.conv1(x), res], dim=1)

    def from_stem(self, h: torch.Tensor) -> torch.Tensor:
        """``forward`` from ``stem(x)``, in the same operations: ``from_stem(stem(x)) ==
        forward(x)``."""
        c = self.conv1.out_channels
        out = self.drop(F.relu(h[:, :c]))
        out = self.drop(F.relu(self.conv2(out)))
        return F.relu(out + h[:, c:])


class TCN(nn.Module):
    def __init__(
        self,
        in_features: int,
        n_steps: int,
        channels: int | list[int] = 64,
        levels: int = 3,
        kernel_size: int = 3,
        dropout: float = 0.1,
        weight_norm: bool = True,
    ):
        super().__init__()
        if isinstance(channels, int):
            channels = [channels] * levels
        channels = list(channels)
        if len(channels) != levels:
            raise ValueError(
                f"model.encoder.channels={channels!r} has {len(channels)} entries "
                f"but model.encoder.levels={levels}: give one per level or one int"
            )
        if kernel_size < 2:
            raise ValueError(
                f"model.encoder.kernel_size={kernel_size!r} is not allowed: at "
                "least 2 (a kernel of 1 never looks back)"
            )
        rf = receptive_field(kernel_size, levels)
        if rf < n_steps:
            need = next(k for k in range(1, 64) if receptive_field(kernel_size, k) >= n_steps)
            raise ValueError(
                f"TCN receptive field {rf} h < window n_steps={n_steps} h (kernel_size="
                f"{kernel_size}, levels={levels}; receptive field = 1 + 2*(kernel_size-1)*"
                f"(2^levels-1)): the last hour would not see the start of the window. Use "
                f"model.encoder.levels={need} or a larger model.encoder.kernel_size."
            )
        self.receptive_field = rf
        blocks, c = [], in_features
        for i, c_out in enumerate(channels):
            blocks.append(TemporalBlock(c, c_out, kernel_size, 2**i, dropout, weight_norm))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = c

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-hour features ``[B, T, out_dim]``; hour t depends only on input hours <= t."""
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
        return self.blocks(x.transpose(1, 2))[:, :, -1]

    def linear_stem(self):
        """The first block's affine maps of the input (its first causal convolution and its
        residual path), and the rest of the network from their output (see
        ``BackdoorClassifier.linear_stem``). They read every input channel, so STRIP's blends
        of their narrower output skip the widest convolutions."""
        first, later = self.blocks[0], self.blocks[1:]
        if first.downsample is None:  # the residual is x itself: the stem would be wider
            return None

        def rest(h: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
            return later(first.from_stem(h))[:, :, -1]

        return lambda x: first.stem(x.transpose(1, 2)), rest
