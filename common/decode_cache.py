"""Decoded examples stored once as arrays: an image file is decoded and resized, a clip decoded and
resampled, the first time a run reads it; every later epoch and run reads the array back.

Decoding a JPEG or a WAV and resizing or resampling it costs as much per example as a small
encoder's training step on 2 CPU cores, and a run repeats it every epoch. The arrays live under
``root`` as ``.npy`` files named by a hash of what made them (the data's fingerprint, the
preprocessing, the code's version), like :class:`~transferkit.common.FeatureCache`, and are read
back memory-mapped: pages come in as batches touch them, and processes share them.

Files are written to a temporary name and renamed, so an interrupted build leaves no half file;
rows are written as they are decoded, so building holds a chunk of them in memory, not the data set.
The default ``root`` is ``$TRANSFERKIT_CACHE/decoded`` (``~/.cache/transferkit/decoded``). The folder
stays within a size budget (:class:`~transferkit.common.cache_store.CacheFolder`: the ``budget``
argument, ``$TRANSFERKIT_CACHE_BUDGET``, or a quarter of the free disk), least recently used data
sets evicted first; a data set larger than the whole budget is not stored: its examples are
decoded per file on every read instead (one warning says so). ``transferkit cache info`` shows
what the folder holds, ``transferkit cache clear`` empties it.

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

from .cache_store import CacheFolder, human
from .features import fingerprint

log = logging.getLogger(__name__)

CHUNK = 256  # rows decoded (on threads) and written at a time while a cache file is built
_warned: set[str] = set()  # data sets this process already warned about (one warning each)

VERSION = 2  # part of every key: bump when what a decoder stores changes (2: images upright by EXIF)


def default_cache_root() -> Path:
    """``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``."""
    return Path(os.environ.get("TRANSFERKIT_CACHE") or Path.home() / ".cache" / "transferkit")


class DecodeCache:
    """Arrays of decoded examples under ``root`` (default :func:`default_cache_root` ``/ "decoded"``);
    ``memory=True`` keeps them in this process only (for in-memory data, nothing to read back later).

    :attr:`decoded` counts the examples this object decoded (zero when everything came from disk).
    ``budget`` bounds the folder (bytes, ``"20GB"``, or a fraction of the free disk; see
    :class:`~transferkit.common.cache_store.CacheFolder`).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, memory: bool = False,
                 budget: str | float | int | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root() / "decoded"
        self.memory = memory
        self.decoded = 0
        self.folder = CacheFolder(self.root, budget)

    def info(self) -> Any:
        """What the folder holds against its budget (:class:`~transferkit.common.cache_store.CacheInfo`)."""
        return self.folder.info()

    def _room_for(self, path: Path, nbytes: int, what: str) -> bool:
        """Make room for ``nbytes`` more (evicting least recently used entries), or warn once that it cannot fit."""
        if self.folder.make_room(nbytes, keep=[path.stem.split(".")[0]]) is not None:
            return True
        if path.name not in _warned:
            _warned.add(path.name)
            log.warning("%s (%s) exceed the decode cache's budget of %s at %s: decoding them from their files on "
                        "every read instead (slower; raise the budget with $TRANSFERKIT_CACHE_BUDGET, e.g. 200GB)",
                        what, human(nbytes), human(self.folder.budget), self.root)
        return False

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
            self.folder.touch([path])
            return np.load(path, mmap_mode="r")
        if self.memory:
            out = np.empty((n, *shape), dtype=dtype)
        elif self._room_for(path, n * int(np.prod(shape)) * np.dtype(dtype).itemsize, f"{n} decoded examples"):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npy")
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, *shape))
        else:
            return DecodedRows(n, decode, shape)
        for start in _progress(range(0, n, CHUNK), n, "decoding into the cache"):
            rows = self.decode_all(min(CHUNK, n - start), lambda j, s=start: decode(s + j), threads)
            for j, row in enumerate(rows):
                if tuple(row.shape) != tuple(shape):
                    raise ValueError(f"decoder returned shape {tuple(row.shape)} for example {start + j}, "
                                     f"expected {tuple(shape)}")
                out[start + j] = row
        self.decoded += n
        if self.memory:
            return out
        out.flush()
        del out
        os.replace(tmp, path)
        log.info("cached %d decoded examples at %s (%s); %s", n, path, human(path.stat().st_size), self.folder.info())
        return np.load(path, mmap_mode="r")

    def rows(self, key_parts: Sequence[Any], n: int, decode: Callable[[int], np.ndarray], *,
             threads: int | None = None, sample: int = 16) -> Sequence[np.ndarray]:
        """Row ``i`` is ``decode(i)``, arrays of one dtype but any shape: stored as one flat file (written
        chunk by chunk as rows are decoded) plus their shapes and offsets, read back as memory-mapped views.

        The size is estimated from the first ``sample`` rows; a data set whose estimate exceeds the budget
        is decoded per row on every read instead (:class:`DecodedRows`).
        """
        path = self._path(key_parts, ".bin")
        meta_path = path.with_suffix(".json")
        if not self.memory and path.exists() and meta_path.exists():
            self.folder.touch([path, meta_path])
            return _views(path, json.loads(meta_path.read_text()))
        first = self.decode_all(min(sample, n), decode, threads)
        if self.memory:
            arrays = first + self.decode_all(n - len(first), lambda j: decode(len(first) + j), threads)
            self.decoded += n
            return arrays
        estimate = int(sum(a.nbytes for a in first) / max(len(first), 1) * n)
        if not self._room_for(path, estimate, f"{n} decoded examples (about)"):
            return DecodedRows(n, decode, None)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.bin")
        shapes, offsets, dtype = [], [0], first[0].dtype.str if first else "|u1"
        with open(tmp, "wb") as f:
            for start in _progress(range(0, n, CHUNK), n, "decoding into the cache"):
                stop = min(start + CHUNK, n)
                chunk = [first[i] if i < len(first) else None for i in range(start, stop)]
                todo = [i for i, a in zip(range(start, stop), chunk) if a is None]
                decoded = dict(zip(todo, self.decode_all(len(todo), lambda j, t=todo: decode(t[j]), threads)))
                for i, a in zip(range(start, stop), chunk):
                    a = np.ascontiguousarray(a if a is not None else decoded[i], dtype=dtype)
                    f.write(a.tobytes())
                    shapes.append(list(a.shape))
                    offsets.append(offsets[-1] + a.size)
        self.decoded += n
        tmp_meta = meta_path.with_name(meta_path.stem + f".{os.getpid()}.tmp.json")
        tmp_meta.write_text(json.dumps({"dtype": dtype, "shapes": shapes, "offsets": offsets}))
        os.replace(tmp, path)
        os.replace(tmp_meta, meta_path)
        log.info("cached %d decoded examples at %s (%s); %s", n, path, human(path.stat().st_size), self.folder.info())
        return _views(path, json.loads(meta_path.read_text()))

    def ragged(self, key_parts: Sequence[Any], build: Callable[[], tuple[list[np.ndarray], dict]],
               ) -> tuple[list[np.ndarray], dict]:
        """Variable-length 1-D arrays (and JSON facts about them) that ``build()`` returns: stored as one
        flat array plus offsets, handed back as views into the memory-mapped file."""
        path = self._path(key_parts, ".npy")
        meta_path = path.with_suffix(".json")
        if not self.memory and path.exists() and meta_path.exists():
            self.folder.touch([path, meta_path])
        else:
            arrays, meta = build()
            self.decoded += len(arrays)
            if self.memory or not self._room_for(path, sum(a.nbytes for a in arrays), f"{len(arrays)} decoded examples"):
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
        log.info("cached %d decoded examples at %s (%s); %s", len(array), path, human(array.nbytes), self.folder.info())


class DecodedRows(Sequence):
    """The fallback when a data set does not fit the cache: row ``i`` is ``decode(i)``, decoded on every read.

    Indexing with an array of indices stacks the rows (rows of one ``shape``) or lists them.
    """

    def __init__(self, n: int, decode: Callable[[int], np.ndarray], shape: Sequence[int] | None) -> None:
        self.n, self.decode, self.shape = n, decode, tuple(shape) if shape is not None else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:  # type: ignore[override]
        if isinstance(i, (int, np.integer)):
            if not -self.n <= i < self.n:
                raise IndexError(f"row {i} of {self.n}")
            return self.decode(int(i) % self.n)
        rows = [self.decode(int(j)) for j in np.arange(self.n)[i]]
        return np.stack(rows) if self.shape is not None else rows


def _views(path: Path, meta: dict) -> list[np.ndarray]:
    offsets, shapes = meta["offsets"], meta["shapes"]
    if offsets[-1] == 0:  # np.memmap cannot map an empty file
        return [np.zeros(s, meta["dtype"]) for s in shapes]
    flat = np.memmap(path, dtype=meta["dtype"], mode="r")
    return [flat[a:b].reshape(s) for a, b, s in zip(offsets[:-1], offsets[1:], shapes)]


def _progress(chunks: range, n: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(chunks, desc=desc, unit="chunk", leave=False, disable=n < 2000)
