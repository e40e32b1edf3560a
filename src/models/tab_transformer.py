"""TabTransformer over the tabular view, after Huang, Khetan, Cvitkovic and Karnin (2020),
"TabTransformer: Tabular Data Modeling Using Contextual Embeddings".

Each static categorical column gets its own embedding table plus a column embedding (the paper's
"shared embedding": one learned vector per column, concatenated to every category embedding of
that column, so the transformer knows which column a token came from). A transformer encoder
contextualises the categorical tokens only; the continuous features (statics and per-feature
summaries) are layer-normed and concatenated to the flattened contextual embeddings; an MLP
follows. The encoder output is the MLP's last hidden layer (the head's input).

Code 0 is the unknown category; codes outside ``[0, cardinality)`` are mapped to 0 here too, so
a category never seen in training cannot index out of range.
"""

from __future__ import annotations

import torch
from torch import nn


class TabTransformer(nn.Module):
    def __init__(
        self,
        n_num: int,
        cardinalities: list[int],
        dim: int = 32,
        shared_dim: int | None = None,
        depth: int = 2,
        heads: int = 4,
        attn_dropout: float = 0.1,
        mlp_hidden: list[int] | tuple[int, ...] = (128, 64),
        dropout: float = 0.2,
    ):
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if any(c < 1 for c in cards):
            raise ValueError(
                f"cardinalities={cards!r}: every column needs at least the unknown "
                "category (code 0)"
            )
        if not mlp_hidden:
            raise ValueError(
                "model.encoder.mlp_hidden=[] is not allowed: at least one layer "
                "(its width is the encoder's out_dim)"
            )
        self.n_cat = len(cards)
        shared_dim = dim // 8 if shared_dim is None else shared_dim
        if self.n_cat and not 0 <= shared_dim < dim:
            raise ValueError(
                f"model.encoder.shared_dim={shared_dim!r} is not allowed: in [0, dim={dim})"
            )
        if self.n_cat and dim % heads:
            raise ValueError(
                f"model.encoder.dim={dim} must be divisible by model.encoder.heads={heads}"
            )
        if self.n_cat:
            # one table for all columns, addressed with per-column offsets: one gather per batch
            self.register_buffer("card", torch.tensor(cards), persistent=False)
            self.register_buffer(
                "offset", torch.tensor([0, *cards[:-1]]).cumsum(0), persistent=False
            )
            self.cat_embed = nn.Embedding(sum(cards), dim - shared_dim)
            self.col_embed = (
                nn.Parameter(torch.randn(self.n_cat, shared_dim) * 0.02) if shared_dim else None
            )
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=4 * dim, dropout=attn_dropout, batch_first=True
            )
            self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.num_norm = nn.LayerNorm(n_num) if n_num else None
        layers, d = [], self.n_cat * dim + n_num
        if d == 0:
            raise ValueError("TabTransformer needs at least one continuous or categorical input")
        for h in mlp_hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        self.mlp = nn.Sequential(*layers)
        self.out_dim = d

    def contextual(self, cat: torch.Tensor) -> torch.Tensor:
        """Contextual embeddings of the categorical tokens, ``[B, C, dim]``."""
        cat = torch.where((cat >= 0) & (cat < self.card), cat, 0)  # unseen -> unknown
        tok = self.cat_embed(cat + self.offset)
        if self.col_embed is not None:
            tok = torch.cat([tok, self.col_embed.expand(len(cat), -1, -1)], dim=-1)
        return self.transformer(tok)

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        if self.n_cat:
            parts.append(self.contextual(cat).flatten(1))
        if self.num_norm is not None:
            parts.append(self.num_norm(x))
        return self.mlp(torch.cat(parts, dim=1))
