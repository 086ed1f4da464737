"""The network of the sequential recommender: self-attention over a user's recent items.

SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): item embeddings plus
learned positions, causal self-attention blocks (pre-norm, as in the paper's released code, which
normalises the queries before attention), a final layer norm, and scores that are the dot product of
the last hidden state with the same item embeddings (input and output tables are shared). Trained
here with the full softmax over the catalogue at every position, the cross-entropy loss RecBole's
SASRec uses by default, rather than the paper's one sampled negative.

What is transfer-specific is the item side: an item vector is ``proj(scale * base[i]) + delta[i]``,
where ``base`` holds pretrained rows (EmbeddingTables factors or content embeddings of titles),
``proj`` maps their width onto the model's, and ``delta`` is a residual table. ``item_training``
says which of those learn (see :class:`SequentialConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from transferkit.common.config import check_settings, setting

__all__ = ["ITEM_TRAINING", "SASRecNet", "SequentialConfig"]

ITEM_TRAINING = ("frozen", "partial", "finetune")


@dataclass
class SequentialConfig:
    """Settings of the sequential model (the loop's settings live in ``TrainConfig``).

    Example:
        >>> SequentialConfig(dim=32, layers=1).heads
        2
    """

    dim: int = setting(64, "Width of item vectors and hidden states.", ge=1)
    layers: int = setting(2, "Self-attention blocks.", ge=1)
    heads: int = setting(2, "Attention heads per block (must divide dim).", ge=1)
    max_len: int = setting(50, "Most recent items a user is represented by (longer histories are cut into "
                                "windows of this length for training).", ge=2)
    train_windows: str = setting("latest", "latest: each user trains on their latest max_len + 1 items, as in "
                                           "the SASRec paper; all: the whole history, cut into windows of that "
                                           "length from its end (more data per epoch, slower).",
                                 choices=("latest", "all"))
    dropout: float = setting(0.2, "Dropout on embeddings, attention and feed-forward outputs.", ge=0, lt=1)
    item_training: str = setting("finetune", "With pretrained item rows: frozen (rows fixed; the projection and "
                                              "the attention learn), partial (rows fixed plus a residual table "
                                              "that starts at zero and learns), finetune (the rows learn too). "
                                              "Ignored when training from scratch.", choices=ITEM_TRAINING)
    seed: int = setting(0, "Seed of the random initialisation.")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim}): change heads or dim")


class SASRecNet(nn.Module):
    """Causal self-attention over item sequences (column index + 1; 0 pads on the left).

    Args:
        n_items: catalogue size.
        config: the architecture.
        base: optional (n_items, width) pretrained item rows; None trains a random table (scratch).
    """

    def __init__(self, n_items: int, config: SequentialConfig, base: np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        d = config.dim
        self.proj = None
        mode = "scratch" if base is None else config.item_training
        self.mode = mode
        if base is None:
            self.delta = nn.Parameter(torch.randn(n_items, d, generator=gen) * 0.02)
        else:
            rows = torch.as_tensor(np.asarray(base), dtype=torch.float32)
            if rows.shape[0] != n_items or not torch.isfinite(rows).all():
                raise ValueError(f"base must be finite with one row per item: got {tuple(rows.shape)} for "
                                 f"{n_items} items")
            if mode == "finetune":
                self.base = nn.Parameter(rows.clone())
            else:
                self.register_buffer("base", rows.clone())
            # pretrained rows come at any scale (ALS factors, unit-norm sentence embeddings): bring their
            # root-mean-square entry to the random table's, so one learning rate suits every start
            rms = float(rows.pow(2).mean().sqrt()) or 1.0
            self.register_buffer("scale", torch.tensor(0.02 * math.sqrt(d / rows.shape[1]) / rms))
            if rows.shape[1] != d:
                self.proj = nn.Linear(rows.shape[1], d, bias=False)
                nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(rows.shape[1]), generator=gen)
                with torch.no_grad():  # keep the rows' scale through the projection
                    self.proj.weight.mul_(math.sqrt(rows.shape[1] / d))
            self.delta = nn.Parameter(torch.zeros(n_items, d)) if mode == "partial" else None
        self.position = nn.Parameter(torch.randn(config.max_len, d, generator=gen) * 0.02)
        self.dropout = nn.Dropout(config.dropout)
        # torch's default initialisation draws from the global generator: seed it for this model, so that
        # the same seed gives the same start (and leave the caller's generator as it was)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            layer = nn.TransformerEncoderLayer(d, config.heads, dim_feedforward=d, dropout=config.dropout,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
            for p in self.blocks.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        self.norm = nn.LayerNorm(d)

    @property
    def n_items(self) -> int:
        return (self.delta if self.delta is not None else self.base).shape[0]

    def item_vectors(self) -> torch.Tensor:
        """(n_items, dim): the vectors items are read and scored with."""
        if self.mode == "scratch":
            return self.delta
        rows = self.base * self.scale
        vec = self.proj(rows) if self.proj is not None else rows
        return vec + self.delta if self.delta is not None else vec

    def encode(self, seqs: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, max_len, dim) hidden states of left-padded sequences; position t sees items <= t."""
        items = self.item_vectors() if items is None else items
        table = torch.cat([items.new_zeros(1, items.shape[1]), items])
        pad = seqs == 0
        x = table[seqs] * math.sqrt(items.shape[1]) + self.position[-seqs.shape[1]:]
        x = self.dropout(x) * (~pad).unsqueeze(-1)
        length = seqs.shape[1]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seqs.device), 1)
        # a fully padded prefix row would attend to nothing (NaN): let padded queries see themselves
        mask = (causal.unsqueeze(0) | pad.unsqueeze(1)) & ~torch.eye(length, dtype=torch.bool, device=seqs.device)
        mask = mask.repeat_interleave(self.config.heads, 0)
        h = self.blocks(x, mask=mask)
        return self.norm(h)

    def forward(self, seqs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the next item at every non-padded position (targets 0 are skipped)."""
        items = self.item_vectors()
        h = self.encode(seqs, items)
        keep = targets > 0
        logits = h[keep] @ items.T
        return nn.functional.cross_entropy(logits, targets[keep] - 1)

    def last_state(self, seqs: torch.Tensor) -> torch.Tensor:
        """(batch, dim) state after each sequence's last item: the user's query vector."""
        return self.encode(seqs)[:, -1]
