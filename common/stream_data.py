"""A classifier's training data when it is given a stream (see :mod:`transferkit.common.streams`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .features import ShardedFeatures, write_feature_shards
from .modality import DecodedItems, decodable, labelled_collate
from .streams import MappedStream, StreamLabelError, is_stream, row_pair, undecoded
from .task import TrainingData


def stream_training_data(clf: Any, train: Any, eval: Any, *, prepare: Callable | None = None,
                         collate: Callable | None = None) -> TrainingData:
    """The :class:`TrainingData` of classifier ``clf`` (a ``TransferClassifier``) for a stream ``train`` and a
    stream or map-style ``eval``: each example decoded as it passes (``prepare``: item -> training example,
    default the modality's decode; ``collate``: default the modality's, augmented). An example that does not
    decode is skipped, counted and logged; a label ``clf`` does not know is an error."""
    m = clf.adapter()

    def stream(source: Any, fn: Callable) -> MappedStream:
        source = undecoded(source, m.kind)
        pair = row_pair(source, m.kind)

        def example(row: Any) -> dict:
            item, target = pair(row)
            if target not in clf.label2id:
                raise StreamLabelError(f"a stream example has label {target!r}, which the classifier does not know "
                                       f"(it knows {clf.labels}); add it to labels= before training")
            return {"example": fn(item), "labels": clf.label2id[target]}

        return MappedStream(source, example, skip=(m.decode_error,))

    def mapped(source: Any) -> DecodedItems:
        kept = decodable(m, m.read(source))
        clf.check_labels(kept.targets, "the evaluation data")
        return DecodedItems(m, kept.items, [clf.label2id[t] for t in kept.targets])

    if not is_stream(train):
        raise TypeError("a stream for eval needs a stream for train too; or pass both as map-style sets")
    eval_set = None if eval is None else stream(eval, m.decode) if is_stream(eval) else mapped(eval)
    info = {"train_examples": "stream", "eval_examples": "stream" if is_stream(eval) else len(eval_set or ()),
            "stream": True}
    return TrainingData(stream(train, prepare or m.decode), eval_set, collate or labelled_collate(m, augment=True),
                        labelled_collate(m), probe_train=stream(train, m.decode), info=info)


def streamed_features(encoder: Any, data: TrainingData, config: TrainConfig,
                      root: Path) -> tuple[ShardedFeatures, ShardedFeatures | None]:
    """The probe's features of a stream (and of the eval data), written in shards under ``root`` as the stream
    passes once through the encoder, un-augmented; memory-mapped by the probe's epochs. Not reused by another
    run: a stream has no fingerprint to key a cache with."""
    kw = {"collate_fn": data.eval_collate, "batch_size": config.effective_eval_batch_size, "progress": config.progress}
    train = write_feature_shards(encoder, data.probe_train, root / "train", **kw)
    evals = write_feature_shards(encoder, data.eval, root / "eval", **kw) if data.eval is not None else None
    return train, evals
