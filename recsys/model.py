"""EmbeddingModel: PyTorch matrix factorisation / two-tower model, initialised from EmbeddingTables.

For users who want gradient fine-tuning (and an item content tower) on top of what implicit learned.
Training runs through the one loop of ``transferkit.common`` (Accelerate, schedule, checkpoints).
"""

from __future__ import annotations

import tempfile
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .data import Interactions
from .tables import EmbeddingTables

__all__ = ["EmbeddingModel"]

Loss = Literal["bpr", "softmax"]


class EmbeddingModel(nn.Module):
    """Scores ``user_vector . item_vector``; item vectors may add a content tower.

    Args:
        user_ids, item_ids: the id spaces (rows of the embedding tables).
        dim: embedding width.
        item_content: optional (n_items, content_dim) array: item vector = id embedding +
            MLP(content), so items with little data lean on their content (a two-tower item side).
        content_hidden: hidden width of the content MLP.
        seed: seed of the random initialisation.

    Example:
        >>> from transferkit.recsys import Interactions, pretrain
        >>> inter = Interactions.from_arrays(["a", "a", "b"], ["x", "y", "x"])
        >>> model = EmbeddingModel.from_tables(pretrain(inter, factors=2, num_threads=1))
        >>> model.to_tables().user_factors.shape
        (2, 2)
    """

    def __init__(self, user_ids: list, item_ids: list, dim: int = 32, item_content: np.ndarray | None = None,
                 content_hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.user_ids, self.item_ids = list(user_ids), list(item_ids)
        self.user = nn.Embedding(len(user_ids), dim)
        self.item = nn.Embedding(len(item_ids), dim)
        with torch.no_grad():
            self.user.weight.copy_(torch.randn(len(user_ids), dim, generator=gen) * 0.01)
            self.item.weight.copy_(torch.randn(len(item_ids), dim, generator=gen) * 0.01)
        self.content_tower = None
        if item_content is not None:
            content = torch.as_tensor(np.asarray(item_content), dtype=torch.float32)
            if content.shape[0] != len(item_ids) or not torch.isfinite(content).all():
                raise ValueError(
                    f"item_content must be finite with one row per item: got {tuple(content.shape)} "
                    f"for {len(item_ids)} items"
                )
            self.register_buffer("content", (content - content.mean(0)) / (content.std(0) + 1e-8))
            self.content_tower = nn.Sequential(nn.Linear(content.shape[1], content_hidden), nn.GELU(),
                                               nn.Linear(content_hidden, dim))
            # start the tower at zero so a model initialised from tables scores exactly like them
            nn.init.zeros_(self.content_tower[-1].weight)
            nn.init.zeros_(self.content_tower[-1].bias)
        self.source_model = None

    @classmethod
    def from_tables(cls, tables: EmbeddingTables, item_content: np.ndarray | None = None,
                    content_hidden: int = 64) -> EmbeddingModel:
        """Copy the tables' full rows (bias columns included, so scores are unchanged at start)."""
        model = cls(tables.user_ids, tables.item_ids, tables.user_factors.shape[1], item_content, content_hidden)
        with torch.no_grad():
            model.user.weight.copy_(torch.from_numpy(tables.user_factors))
            model.item.weight.copy_(torch.from_numpy(tables.item_factors))
        model.source_model = tables.model
        return model

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        idx = torch.arange(len(self.item_ids), device=self.item.weight.device) if items is None else items
        vec = self.item(idx)
        if self.content_tower is not None:
            vec = vec + self.content_tower(self.content[idx])
        return vec

    def forward(self, users: torch.Tensor, items: torch.Tensor, all_pairs: bool = False) -> torch.Tensor:
        """Scores of (user, item) index pairs, or with ``all_pairs`` the (len(users), len(items)) matrix."""
        u, v = self.user(users), self.item_vectors(items)
        return u @ v.T if all_pairs else (u * v).sum(-1)

    def to_tables(self, history: Interactions | None = None) -> EmbeddingTables:
        """Current weights as EmbeddingTables (model ``"torch"``: a plain dot product)."""
        with torch.no_grad():
            users = self.user.weight.detach().float().cpu().numpy()
            items = self.item_vectors().detach().float().cpu().numpy()
        counts = {}
        if history is not None:
            counts = {"user_counts": history.user_counts(), "item_counts": history.item_counts()}
        return EmbeddingTables(users, items, self.user_ids, self.item_ids, model="torch",
                               meta={"source_model": self.source_model}, history=history, **counts)

    # -- training ---------------------------------------------------------------------------------
    def fit(self, train: Interactions, config=None, loss: Loss = "bpr", test: Interactions | None = None,
            k: int = 10, freeze_items: bool = False):
        """Fine-tune on ``train`` through ``transferkit.common.Trainer``.

        Args:
            train: positive events, in this model's id spaces (rows = ``user_ids``).
            config: a ``TrainConfig`` (its loop settings: epochs, batch_size, lr, ...); default:
                5 epochs, batch 1024, lr 0.01, no weight decay or warmup, no progress bar.
            loss: ``"bpr"`` (one uniform negative per positive; Rendle et al. 2009) or
                ``"softmax"`` (in-batch sampled softmax with log-Q popularity correction,
                Yi et al. 2019).
            test: if given, NDCG@k on it is computed after every epoch and the best epoch is kept.
            freeze_items: train only the user table (e.g. adapt users to new behaviour while the
                item table stays the pretrained one).

        Returns:
            the Trainer's ``TrainResult``.
        """
        from transferkit.common import TrainConfig, Trainer

        from .metrics import evaluate

        if train.user_ids != self.user_ids or train.item_ids != self.item_ids:
            raise ValueError(
                "train must be in this model's id spaces: use transferkit.recsys.reindex(train, "
                "model.user_ids, model.item_ids)"
            )
        if loss not in ("bpr", "softmax"):
            raise ValueError(f"loss must be 'bpr' or 'softmax', got {loss!r}")
        from accelerate.utils import broadcast_object_list

        from transferkit.common.trainer import process_state

        procs = process_state()
        if config is None:
            # Under several processes they all write into the main process's temporary folder.
            out = [tempfile.mkdtemp(prefix="transferkit-mf-") if procs.is_main_process else None]
            if procs.num_processes > 1:
                broadcast_object_list(out)
            config = TrainConfig(output_dir=out[0], epochs=5, batch_size=1024, lr=0.01, weight_decay=0.0,
                                 warmup_ratio=0.0, progress=False)
        if test is not None:
            config = config.replace(metric_for_best=f"ndcg@{k}", greater_is_better=True)
        self.item.weight.requires_grad_(not freeze_items)
        dataset = torch.utils.data.TensorDataset(torch.as_tensor(train.users, dtype=torch.long),
                                                 torch.as_tensor(train.items, dtype=torch.long))
        log_q = torch.log(torch.as_tensor(np.maximum(train.item_counts(), 1) / len(train), dtype=torch.float32))
        n_items = len(self.item_ids)

        def compute_loss(model, batch):
            users, pos = batch
            if loss == "bpr":
                # Every process draws the negatives of the whole step and keeps its own slice: the
                # processes' negatives are independent, and N processes train as one with N x the batch.
                neg = torch.randint(0, n_items, (procs.num_processes * len(pos),), device=pos.device)
                neg = neg[procs.process_index * len(pos):(procs.process_index + 1) * len(pos)]
                return -F.logsigmoid(model(users, pos) - model(users, neg)).mean()
            # through forward(), so a DistributedDataParallel wrapper still synchronises gradients
            logits = model(users, pos, all_pairs=True) - log_q.to(pos.device)[pos][None, :]
            # the same item twice in a batch is not a negative for itself
            same = (pos[:, None] == pos[None, :]) & ~torch.eye(len(pos), dtype=torch.bool, device=pos.device)
            logits = logits.masked_fill(same, float("-inf"))
            return F.cross_entropy(logits, torch.arange(len(pos), device=pos.device))

        def evaluate_fn(model, _loader):
            tables = getattr(model, "module", model).to_tables(history=train)  # unwrap DDP
            return {f"ndcg@{k}": evaluate(tables, train, test, k=k, unknown="cold_start")[f"ndcg@{k}"]}

        # with no eval data the Trainer calls evaluate_fn(model, None) once per epoch: it ranks
        # against ``test`` directly and the best epoch is kept on ndcg@k
        trainer = Trainer(self, config, compute_loss=compute_loss,
                          evaluate=evaluate_fn if test is not None else None,
                          run_info={"recsys_loss": loss, "freeze_items": freeze_items})
        return trainer.fit(dataset)
