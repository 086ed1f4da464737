"""Training on streams: iterables of examples whose length is unknown (``datasets.IterableDataset``).

The :class:`~transferkit.common.Trainer` reads a stream through :class:`StreamReader`, one pass at a
time, for ``TrainConfig.max_steps`` optimizer steps:

- shuffling goes through a seeded buffer of ``TrainConfig.shuffle_buffer`` examples, reseeded each
  pass (``datasets``' own ``.shuffle(seed, buffer_size)`` and ``.set_epoch`` where the source has them);
- the reader knows where it is in the pass (:meth:`StreamReader.position`) for a step checkpoint, and
  a resumed run continues there exactly: through the source's ``state_dict()`` / ``load_state_dict()``
  when the source is read unshuffled, otherwise by reading the pass again from its start and dropping
  the examples already trained on (exact for a source that yields the same order again; it costs one
  more read of those examples). A one-shot iterator (a generator) cannot be read again.

Example:
    >>> reader = StreamReader(MappedStream(range(10), lambda x: x * 10), batch_size=4, collate=list)
    >>> [b for b in reader.batches(epoch=1)]
    [[0, 10, 20, 30], [40, 50, 60, 70], [80, 90]]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)


def is_stream(data: Any) -> bool:
    """Whether ``data`` is an iterable of examples without a length (``datasets.IterableDataset``,
    ``torch.utils.data.IterableDataset``, a generator), as opposed to a map-style set or a path."""
    if data is None or isinstance(data, (str, bytes, os.PathLike, dict, tuple)):
        return False
    return hasattr(data, "__iter__") and not hasattr(data, "__len__")


class MappedStream:
    """``fn`` applied to each example of ``source`` as it passes; an example on which ``fn`` raises one of
    ``skip`` is left out, counted (:attr:`skipped`) and logged. Forwards the source's ``shuffle``,
    ``set_epoch``, ``state_dict`` and ``load_state_dict``, so that they act on the raw examples."""

    def __init__(self, source: Iterable, fn: Callable[[Any], Any], skip: tuple[type[Exception], ...] = ()) -> None:
        self.source, self.fn, self.skip, self.skipped = source, fn, skip, 0

    def __iter__(self) -> Iterator:
        return self.iter_from(iter(self.source))

    def iter_from(self, examples: Iterator) -> Iterator:
        """``fn`` over already-opened ``examples`` (the reader opens the source itself)."""
        for raw in examples:
            try:
                yield self.fn(raw)
            except self.skip as err:
                self.skipped += 1
                log.warning("skipping a stream example (%d so far): %s", self.skipped, err)


class StreamReader:
    """Batches of a stream, pass by pass, with the position a step checkpoint saves.

    Args:
        stream: the examples (a :class:`MappedStream` keeps the raw source, which is what is shuffled
            and positioned; any other iterable is read as it is).
        batch_size: examples per batch (the last batch of a pass may be smaller).
        collate: a list of examples -> a batch (default: torch's ``default_collate``).
        seed: seeds the shuffle buffer (with the pass number).
        shuffle_buffer: examples held to shuffle from; 0 reads in order.
    """

    def __init__(self, stream: Iterable, batch_size: int, collate: Callable | None = None, seed: int = 0,
                 shuffle_buffer: int = 0) -> None:
        from torch.utils.data import default_collate

        self.stream, self.batch_size, self.collate = stream, batch_size, collate or default_collate
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.source = stream.source if isinstance(stream, MappedStream) else stream
        self.consumed = 0  # raw examples drawn in this pass
        self._opened: Any = None
        self._resume: dict | None = None
        self._told = False

    @property
    def native_shuffle(self) -> bool:
        """Whether the source shuffles itself (``datasets.IterableDataset.shuffle``)."""
        return callable(getattr(self.source, "shuffle", None)) and callable(getattr(self.source, "set_epoch", None))

    @property
    def restores_state(self) -> bool:
        """Whether a resume sets the source's position (``load_state_dict``) instead of reading the pass again."""
        return (self.shuffle_buffer == 0 and callable(getattr(self.source, "state_dict", None))
                and callable(getattr(self.source, "load_state_dict", None)))

    def position(self) -> dict:
        """Where this pass is, as JSON: examples drawn, and the source's own state where it restores it."""
        pos = {"consumed": self.consumed}
        if self.restores_state and self._opened is not None:
            pos["source_state"] = self._opened.state_dict()
        return pos

    def resume_at(self, position: dict) -> None:
        """The next pass continues from ``position`` (from :meth:`position`) instead of its start."""
        self._resume = position
        if not self._told:
            self._told = True
            if self.restores_state and "source_state" in position:
                log.info("resuming the stream at its saved position (the source's state_dict)")
            else:
                log.info("resuming the stream by reading this pass again from its start and dropping the %d examples "
                         "already trained on: exact when the source yields the same order again (a datasets "
                         "IterableDataset, a list); a one-shot iterator cannot be resumed", position["consumed"])

    def _open(self, epoch: int) -> Iterator:
        source = self.source
        if self.shuffle_buffer and self.native_shuffle:
            source = source.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            source.set_epoch(epoch)
        elif callable(getattr(source, "set_epoch", None)):
            source.set_epoch(epoch)
        self._opened = source
        resume, self._resume = self._resume, None
        self.consumed = 0
        if resume and self.restores_state and "source_state" in resume:
            source.load_state_dict(resume["source_state"])
            self.consumed = resume["consumed"]
            examples = iter(source)
        else:
            examples = iter(source)
            if self.shuffle_buffer and not self.native_shuffle:
                examples = _buffer_shuffle(examples, self.shuffle_buffer, random.Random(self.seed * 1_000_003 + epoch))
            if resume:
                for _ in range(resume["consumed"]):
                    if next(examples, _END) is _END:
                        break
                self.consumed = resume["consumed"]
        return self._counted(examples)

    def _counted(self, examples: Iterator) -> Iterator:
        for x in examples:
            self.consumed += 1
            yield x

    def batches(self, epoch: int) -> Iterator:
        """The batches of pass ``epoch`` (1-based), from a saved position if :meth:`resume_at` set one."""
        raw = self._open(epoch)
        examples = self.stream.iter_from(raw) if isinstance(self.stream, MappedStream) else raw
        batch: list = []
        for x in examples:
            batch.append(x)
            if len(batch) == self.batch_size:
                yield self.collate(batch)
                batch = []
        if batch:
            yield self.collate(batch)


_END = object()


class StreamPass:
    """One pass of a :class:`StreamReader`, its batches moved to ``device`` (an evaluation reads pass 1)."""

    def __init__(self, reader: StreamReader, device: Any, epoch: int = 1) -> None:
        self.reader, self.device, self.epoch = reader, device, epoch

    def __iter__(self) -> Iterator:
        from accelerate.utils import send_to_device

        for batch in self.reader.batches(self.epoch):
            yield send_to_device(batch, self.device)


class StreamLabelError(Exception):
    """A stream example whose label the task does not know (never skipped: the labels must be fixed)."""


def _buffer_shuffle(examples: Iterator, size: int, rng: random.Random) -> Iterator:
    """A buffer of ``size`` examples; each next example replaces one drawn at random (as ``datasets`` does)."""
    buffer: list = []
    for x in examples:
        if len(buffer) < size:
            buffer.append(x)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = x
    rng.shuffle(buffer)
    yield from buffer


def undecoded(source: Any, column: str) -> Any:
    """``source`` with its media ``column`` left undecoded where ``datasets`` would decode it while iterating: a
    broken file then raises inside the dataset's iterator, past any per-example skip. Undecoded, the
    modality decodes each value itself (``{"bytes", "path"}``), and skips and counts what does not decode."""
    feature = (getattr(source, "features", None) or {}).get(column)
    if getattr(feature, "decode", False) and hasattr(source, "cast_column") and dataclasses.is_dataclass(feature):
        return source.cast_column(column, dataclasses.replace(feature, decode=False))
    return source


def row_pair(source: Iterable, media_column: str, target_column: str | None = None) -> Callable[[Any], tuple[Any, str]]:
    """A function of a stream row -> ``(item, label name)``, for rows that are dicts (``datasets``: ``media_column``
    and the label column; integer ``ClassLabel`` values become their names) or ``(item, label)`` pairs."""
    from .sources import TARGET_COLUMNS

    features = getattr(source, "features", None) or {}

    def pair(row: Any) -> tuple[Any, str]:
        if isinstance(row, dict):
            column = target_column or next((c for c in TARGET_COLUMNS if c in row), None)
            if media_column not in row or column is None:
                raise ValueError(f"a stream row needs a {media_column!r} and a {'/'.join(TARGET_COLUMNS)!r} column; "
                                 f"it has {sorted(row)}")
            names = getattr(features.get(column), "names", None)
            value = row[column]
            return row[media_column], names[value] if names and isinstance(value, int) else str(value)
        if isinstance(row, (tuple, list)) and len(row) == 2:
            return row[0], str(row[1])
        raise TypeError(f"a stream row must be a dict with {media_column!r} and a label, or an (item, label) pair; "
                        f"got {type(row).__name__}")

    return pair
