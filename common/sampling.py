"""Samplers whose order depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A shuffled (or sequential) order of ``n`` indices, re-drawn from ``seed + epoch``."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class LengthGroupedSampler(EpochSampler):
    """Shuffled order in which neighbours have similar lengths, so padding stays small.

    Indices are shuffled, cut into mega-batches of ``50 * batch_size`` and sorted by length inside
    each, longest first (a too-long batch then fails on the first step, not after an hour).
    Lengths are given up front, e.g. from audio headers: the dataset is never iterated for them.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0) -> None:
        super().__init__(len(lengths), seed)
        self.lengths = list(lengths)
        self.mega = 50 * batch_size

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        out: list[int] = []
        for start in range(0, len(order), self.mega):
            chunk = order[start:start + self.mega]
            out += sorted(chunk, key=lambda i: -self.lengths[i])
        return iter(out)
