"""On-disk cache of frozen-encoder features.

A linear probe only needs the encoder's outputs once: they are stored under a key made of the
encoder's weights, the data and the preprocessing, and every later epoch or run reads them back.
The folder stays within a size budget (:class:`~transferkit.common.cache_store.CacheFolder`),
least recently used features evicted first; features larger than the whole budget are computed
and used, not stored (one warning says so).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .memory_format import channels_last

log = logging.getLogger(__name__)

VERSION = 2  # part of every key: bump when what encoders are fed changes (2: images upright by EXIF)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts, bytes, numpy arrays or tensors."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        if hasattr(part, "tobytes") and hasattr(part, "dtype"):
            h.update(str((part.dtype, part.shape)).encode())
            h.update(part.tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


class FeatureCache:
    """Pooled encoder outputs of a dataset, stored as safetensors under ``root``.

    Example:
        >>> cache = FeatureCache("runs/features")  # doctest: +SKIP
        >>> feats, labels = cache.get_or_compute(encoder, dataset, collate_fn=collate,
        ...                                      key_parts=(encoder.fingerprint(), data_fp, prep_fp))  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike, *, budget: str | float | int | None = None) -> None:
        from .cache_store import CacheFolder

        self.root = Path(root)
        self.folder = CacheFolder(self.root, budget)

    def info(self) -> Any:
        """What the folder holds against its budget (:class:`~transferkit.common.cache_store.CacheInfo`)."""
        return self.folder.info()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get_or_compute(
        self,
        encoder: torch.nn.Module,
        dataset: Sequence,
        *,
        collate_fn: Callable,
        key_parts: Sequence[Any],
        batch_size: int = 64,
        device: torch.device | str | None = None,
        progress: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of ``dataset``: read from disk, or computed once and stored.

        ``collate_fn`` must return a dict of encoder inputs plus ``labels``.
        """
        from safetensors.torch import load_file

        key = fingerprint(VERSION, *key_parts)
        path = self.path(key)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from .trainer import process_state

            # Several processes: the main one encodes and writes the file, the others then read it.
            with process_state().main_process_first():
                if process_state().is_main_process and not path.exists():
                    self._compute(encoder, dataset, path, collate_fn, batch_size, device, progress)
            data = load_file(str(path))
            return data["features"], data["labels"]
        if path.exists():
            self.folder.touch([path])
            data = load_file(str(path))
            return data["features"], data["labels"]
        return self._compute(encoder, dataset, path, collate_fn, batch_size, device, progress)

    def _compute(self, encoder, dataset, path, collate_fn, batch_size, device, progress) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        was_training = encoder.training
        encoder.eval().to(device)
        feats, labels = [], []
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
        with torch.no_grad(), channels_last(encoder):
            for batch in tqdm(loader, desc="encoding features", disable=not progress, leave=False):
                labels.append(batch.pop("labels"))
                inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                feats.append(encoder(**inputs).float().cpu())
        encoder.train(was_training)
        features, labels_t = torch.cat(feats), torch.cat(labels)
        nbytes = features.nbytes + labels_t.nbytes
        if self.folder.make_room(nbytes, keep=[path.stem]) is None:
            from .cache_store import human

            log.warning("%d feature vectors (%s) exceed the feature cache's budget of %s at %s: used, not stored "
                        "(raise it with $TRANSFERKIT_CACHE_BUDGET)", len(features), human(nbytes),
                        human(self.folder.budget), self.root)
            return features, labels_t
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"features": features.contiguous(), "labels": labels_t.contiguous()}, str(tmp))
        os.replace(tmp, path)
        log.info("cached %d feature vectors at %s; %s", len(features), path, self.folder.info())
        return features, labels_t


#: feature vectors per shard file when a stream's features are written as it passes
SHARD_ROWS = 65536


class ShardedFeatures(torch.utils.data.Dataset):
    """Feature vectors in ``.npy`` shards under ``folder``, memory-mapped (rows are read on access), with
    their labels (held in memory); the loader fetches whole batches at once (``__getitems__``)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        import numpy as np

        files = sorted(Path(folder).glob("features-*.npy"))
        if not files:
            raise FileNotFoundError(f"{folder} holds no feature shards (features-*.npy)")
        self.shards = [np.load(f, mmap_mode="r") for f in files]
        self.labels = torch.from_numpy(np.concatenate([np.load(f.with_name("labels" + f.name[len("features"):]))
                                                       for f in files]))
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, idx: list[int]) -> dict:
        import numpy as np

        idx_a = np.asarray(idx)
        shard = np.searchsorted(self.offsets, idx_a, side="right") - 1
        rows = np.stack([self.shards[s][i - self.offsets[s]] for s, i in zip(shard, idx_a)])
        return {"features": torch.from_numpy(rows), "labels": self.labels[torch.as_tensor(idx_a)]}


def write_feature_shards(encoder: torch.nn.Module, examples: Any, folder: str | os.PathLike, *, collate_fn: Callable,
                         batch_size: int = 64, device: torch.device | str | None = None, progress: bool = True,
                         shard_rows: int | None = None) -> ShardedFeatures:
    """Encode ``examples`` (a stream, or any iterable) once, in order, writing the pooled features and labels
    in shards of ``shard_rows`` rows (default :data:`SHARD_ROWS`) as they pass: memory holds one shard,
    whatever the stream's length. The folder is written beside and swapped in when complete."""
    import shutil

    import numpy as np
    from tqdm.auto import tqdm

    from .streams import StreamReader

    shard_rows = shard_rows or SHARD_ROWS
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    was_training = encoder.training
    encoder.eval().to(device)
    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    n_shards = n_rows = 0

    def flush() -> None:
        nonlocal n_shards, feats, labels
        if feats:
            np.save(tmp / f"features-{n_shards:05d}.npy", np.concatenate(feats))
            np.save(tmp / f"labels-{n_shards:05d}.npy", np.concatenate(labels))
            n_shards, feats, labels = n_shards + 1, [], []

    reader = StreamReader(examples, batch_size, collate_fn)
    with torch.no_grad(), channels_last(encoder):
        for batch in tqdm(reader.batches(1), desc="encoding features", disable=not progress, leave=False):
            labels.append(batch.pop("labels").numpy())
            inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            feats.append(encoder(**inputs).float().cpu().numpy())
            n_rows += len(labels[-1])
            if sum(len(x) for x in labels) >= shard_rows:
                flush()
    flush()
    encoder.train(was_training)
    if n_rows == 0:
        raise ValueError("the stream yielded no example to encode")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    log.info("wrote %d feature vectors in %d shard(s) at %s", n_rows, n_shards, folder)
    return ShardedFeatures(folder)
