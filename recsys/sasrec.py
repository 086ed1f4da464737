"""The network of the sequential recommender: self-attention over a user's recent items.

SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): item embeddings plus
learned positions, causal self-attention blocks (pre-norm, as in the paper's released code, which
normalises the queries before attention), a final layer norm, and scores that are the dot product of
the last hidden state with the same item embeddings (input and output tables are shared). Trained
here with the full softmax over the catalogue at every position, the cross-entropy loss RecBole's
SASRec uses by default, rather than the paper's one sampled negative.

Time (``SequentialConfig.time_features``): order alone cannot tell a user who comes back after two
months from one who pauses for a minute, nor what the catalogue's week looks like. With ``"gap"`` the
state that scores the next item gets a learned vector for the time since the user's previous event
(log2 hours, :data:`GAP_BUCKETS` buckets), with ``"gap+period"`` also one for the calendar period of
the event it predicts (counted back from the end of training; serving uses the latest). Both start at
zero, so a model with them begins as plain SASRec; the time-interval idea follows TiSASRec (Li, Wang &
McAuley, WSDM 2020), added here to the query rather than inside attention.

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

__all__ = ["GAP_BUCKETS", "ITEM_TRAINING", "TIME_FEATURES", "SASRecNet", "SequentialConfig", "gap_buckets",
           "period_buckets"]

ITEM_TRAINING = ("frozen", "partial", "finetune")
TIME_FEATURES = ("none", "gap", "gap+period")
GAP_BUCKETS = 16  # log2(hours + 1) rounded down: 0 = within the hour ... 15 = about four years and more
DAY = 86400.0


def gap_buckets(seconds: np.ndarray) -> np.ndarray:
    """Bucket of each time gap: floor(log2(hours + 1)), clipped to [0, GAP_BUCKETS - 1] (negative = 0)."""
    hours = np.maximum(np.asarray(seconds, np.float64), 0.0) / 3600.0
    return np.clip(np.floor(np.log2(hours + 1.0)), 0, GAP_BUCKETS - 1).astype(np.int64)


def period_buckets(times: np.ndarray, end: float, period_days: float, periods: int) -> np.ndarray:
    """Calendar period of each time counted back from ``end``: ``periods - 1`` holds (end - period, end]
    and anything later (serving), 0 holds everything older than the other buckets."""
    back = np.floor((end - np.asarray(times, np.float64)) / (period_days * DAY))
    return np.clip(periods - 1 - np.maximum(back, 0), 0, periods - 1).astype(np.int64)


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
    time_features: str = setting("none", "none: order only (SASRec); gap: the time since the user's previous "
                                         "event also shapes the query; gap+period: and the calendar period "
                                         "of the predicted event (the catalogue's drift). Needs event times.",
                                 choices=TIME_FEATURES)
    period_days: float = setting(7.0, "Length of a calendar period for time_features='gap+period', in days.",
                                 gt=0)
    periods: int = setting(26, "Periods back from the end of training with their own vector; older events "
                                "share the first.", ge=1)
    item_bias: bool = setting(False, "A learned score offset per item, added to every user's scores.")
    target_threshold: float = setting(0.0, "Events whose weight is below this are read as history but never "
                                           "trained on as a next item (4.0 with 1-5 ratings as weights: learn "
                                           "what users go on to like, the relevance most benchmarks score).",
                                      ge=0)
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
        # time vectors start at zero: with them the model begins as plain SASRec and learns what time adds
        self.gap = nn.Embedding(GAP_BUCKETS, d) if config.time_features != "none" else None
        self.period = nn.Embedding(config.periods, d) if config.time_features == "gap+period" else None
        for table in (self.gap, self.period):
            if table is not None:
                nn.init.zeros_(table.weight)
        self.bias = nn.Parameter(torch.zeros(n_items)) if config.item_bias else None

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

    def with_time(self, h: torch.Tensor, gaps: torch.Tensor | None, periods: torch.Tensor | None) -> torch.Tensor:
        """``h`` plus the vectors of the time gap before, and the period of, the event each state predicts."""
        if self.gap is not None:
            if gaps is None:
                raise ValueError("this model reads time (time_features="
                                 f"{self.config.time_features!r}): pass the gap buckets")
            h = h + self.gap(gaps)
        if self.period is not None:
            if periods is None:
                raise ValueError("this model reads calendar periods: pass the period buckets")
            h = h + self.period(periods)
        return h

    def logits(self, h: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item for each state (the item bias included)."""
        items = self.item_vectors() if items is None else items
        out = h @ items.T
        return out + self.bias if self.bias is not None else out

    def forward(self, seqs: torch.Tensor, targets: torch.Tensor, gaps: torch.Tensor | None = None,
                periods: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of the next item at every non-padded position (targets 0 are skipped);
        ``gaps`` / ``periods`` are the buckets of each target's gap and period (time models only)."""
        items = self.item_vectors()
        h = self.with_time(self.encode(seqs, items), gaps, periods)
        keep = targets > 0
        return nn.functional.cross_entropy(self.logits(h[keep], items), targets[keep] - 1)

    def last_state(self, seqs: torch.Tensor, gaps: torch.Tensor | None = None,
                   periods: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, dim) state after each sequence's last item, for an event after ``gaps`` in period
        ``periods`` (one bucket per sequence; time models only): the user's query vector."""
        h = self.encode(seqs)[:, -1]
        return self.with_time(h, gaps, periods)
