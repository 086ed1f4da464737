"""Decoded examples stored once as arrays: an image file is decoded and resized, a clip decoded and
resampled, the first time a run reads it; every later epoch and run reads the array back.

Decoding a JPEG or a WAV and resizing or resampling it costs as much per example as a small
encoder's training step on 2 CPU cores, and a run repeats it every epoch. The arrays live under
``root`` as ``.npy`` files named by a hash of what made them (the data's fingerprint, the
preprocessing, the code's version), like :class:`~transferkit.common.FeatureCache`, and are read
back memory-mapped: pages come in as batches touch them, and processes share them.

Files are written to a temporary name and renamed, so an interrupted build leaves no half file.
The default ``root`` is ``$TRANSFERKIT_CACHE/decoded`` (``~/.cache/transferkit/decoded``); delete
the folder to reclaim the space.

Example:
    >>> import tempfile
    >>> cache = DecodeCache(tempfile.mkdtemp())
    >>> arr = cache.fixed(("squares", 3), 3, lambda i: np.full((2, 2), i, np.uint8), (2, 2))
    >>> arr[2].tolist(), cache.decoded
    ([[2, 2], [2, 2]], 3)
    >>> _ = DecodeCache(cache.root).fixed(("squares", 3), 3, lambda i: 1 / 0, (2, 2))  # read back, nothing decoded
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .features import fingerprint

log = logging.getLogger(__name__)

VERSION = 2  # part of every key: bump when what a decoder stores changes (2: images upright by EXIF)


def default_cache_root() -> Path:
    """``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``."""
    return Path(os.environ.get("TRANSFERKIT_CACHE") or Path.home() / ".cache" / "transferkit")


class DecodeCache:
    """Arrays of decoded examples under ``root`` (default :func:`default_cache_root` ``/ "decoded"``);
    ``memory=True`` keeps them in this process only (for in-memory data, nothing to read back later).

    :attr:`decoded` counts the examples this object decoded (zero when everything came from disk).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, memory: bool = False) -> None:
        self.root = Path(root) if root is not None else default_cache_root() / "decoded"
        self.memory = memory
        self.decoded = 0

    def _path(self, key_parts: Sequence[Any], suffix: str) -> Path:
        return self.root / f"{fingerprint(VERSION, *key_parts)}{suffix}"

    @staticmethod
    def decode_all(n: int, decode: Callable[[int], Any], threads: int | None = None) -> list:
        """``[decode(i) for i in range(n)]`` on threads: decoders (Pillow, soundfile, torch resampling)
        release the GIL, so threads use every core."""
        threads = threads or min(8, os.cpu_count() or 1)
        if threads <= 1 or n < 16:
            return [decode(i) for i in range(n)]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(decode, range(n)))

    def fixed(self, key_parts: Sequence[Any], n: int, decode: Callable[[int], np.ndarray], shape: Sequence[int],
              dtype: Any = np.uint8, *, threads: int | None = None) -> np.ndarray:
        """An ``(n, *shape)`` array whose row ``i`` is ``decode(i)``: memory-mapped from disk, or built once."""
        path = self._path([*key_parts, list(shape), np.dtype(dtype).str], ".npy")
        if not self.memory and path.exists():
            return np.load(path, mmap_mode="r")
        rows = self.decode_all(n, decode, threads)
        self.decoded += n
        out = np.empty((n, *shape), dtype=dtype)
        for i, row in enumerate(rows):
            if tuple(row.shape) != tuple(shape):
                raise ValueError(f"decoder returned shape {tuple(row.shape)} for example {i}, expected {tuple(shape)}")
            out[i] = row
        if self.memory:
            return out
        self._save(path, out)
        return np.load(path, mmap_mode="r")

    def ragged(self, key_parts: Sequence[Any], build: Callable[[], tuple[list[np.ndarray], dict]],
               ) -> tuple[list[np.ndarray], dict]:
        """Variable-length 1-D arrays (and JSON facts about them) that ``build()`` returns: stored as one
        flat array plus offsets, handed back as views into the memory-mapped file."""
        path = self._path(key_parts, ".npy")
        meta_path = path.with_suffix(".json")
        if self.memory or not (path.exists() and meta_path.exists()):
            arrays, meta = build()
            self.decoded += len(arrays)
            if self.memory:
                return arrays, meta
            flat = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
            offsets = np.cumsum([0, *(len(a) for a in arrays)]).tolist()
            self._save(path, flat)
            tmp = meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"offsets": offsets, "meta": meta}))
            os.replace(tmp, meta_path)
        flat = np.load(path, mmap_mode="r")
        stored = json.loads(meta_path.read_text())
        offsets = stored["offsets"]
        return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])], stored["meta"]

    def _save(self, path: Path, array: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npy")
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
        log.info("cached %d decoded examples at %s (%.1f MB)", len(array), path, array.nbytes / 2**20)
