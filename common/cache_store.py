"""A folder of cache entries kept under a size budget, least recently used entries evicted first.

An entry is every file of the folder whose name starts with the same key (``<key>.npy`` and
``<key>.json``). Reading an entry touches its files, so their modification time is the last use;
storing one first evicts the entries used longest ago until it fits. Files being written (``.tmp``
in their name) are never counted or evicted. Processes share a folder safely: a memory-mapped
file that another process evicts stays readable by whoever has it open (POSIX unlink semantics).

The budget is, in order: the ``budget`` argument, ``$TRANSFERKIT_CACHE_BUDGET``, or
:data:`DEFAULT_FRACTION` of the disk space the folder could use (its free space plus what it
holds). A budget is a number of bytes (``"20GB"``, ``"500 MB"``, ``10000000``) or, at most 1, a
fraction of that space (``"0.1"``).

Example:
    >>> parse_budget("1.5GB"), parse_budget("512"), parse_budget(0.5, space=1000)
    (1500000000, 512, 500)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUDGET_ENV = "TRANSFERKIT_CACHE_BUDGET"
DEFAULT_FRACTION = 0.25  # of the free disk (plus what the cache already holds)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_budget(value: str | float | int, *, space: int | None = None) -> int:
    """Bytes from ``"20GB"``/``"500MiB"``/``1e9``, or from a fraction (<= 1) of ``space`` bytes."""
    text = str(value).strip().upper().replace(" ", "")
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:E[0-9]+)?)([KMGT]?I?B?)", text)
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"cache budget {value!r} is not a size: give bytes ('20GB', '500MB', '1e9') "
                         f"or a fraction of the free disk ('0.1'), e.g. {BUDGET_ENV}=20GB")
    number, unit = float(match.group(1)), match.group(2)
    if not unit and number <= 1:
        if space is None:
            raise ValueError(f"cache budget {value!r} is a fraction, but no disk size was given")
        return int(number * space)
    return int(number * _UNITS[unit])


@dataclass
class CacheInfo:
    """What a cache folder holds: ``entries`` keys, ``bytes`` on disk, against ``budget`` bytes."""

    root: str
    entries: int
    bytes: int
    budget: int

    def __str__(self) -> str:
        return (f"{self.root}: {self.entries} entries, {human(self.bytes)} of a {human(self.budget)} budget "
                f"({self.bytes / max(self.budget, 1):.0%})")


def human(n: float) -> str:
    """``1234567`` -> ``'1.2 MB'``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _key(path: Path) -> str:
    return path.name.split(".", 1)[0]


def entries(root: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """``{key: (bytes, last use in ns)}`` of the finished entries under ``root``."""
    out: dict[str, tuple[int, int]] = {}
    root = Path(root)
    if not root.is_dir():
        return out
    for f in root.iterdir():
        if not f.is_file() or ".tmp" in f.name:
            continue
        try:
            st = f.stat()
        except FileNotFoundError:  # evicted by another process meanwhile
            continue
        size, used = out.get(_key(f), (0, 0))
        out[_key(f)] = (size + st.st_size, max(used, st.st_mtime_ns))
    return out


class CacheFolder:
    """The budget and the LRU bookkeeping of one cache folder.

    Args:
        root: the folder (created when the first entry is stored).
        budget: bytes, a size string or a fraction (see the module's docs); None: ``$TRANSFERKIT_CACHE_BUDGET``
            or :data:`DEFAULT_FRACTION` of the space the folder could use.
    """

    def __init__(self, root: str | os.PathLike, budget: str | float | int | None = None) -> None:
        self.root = Path(root)
        self._budget = budget

    @property
    def budget(self) -> int:
        return self._budget_with(self.used())

    def _budget_with(self, used: int) -> int:
        """The budget in bytes, given the bytes the folder holds now (a fraction counts them as usable space)."""
        spec = self._budget if self._budget is not None else os.environ.get(BUDGET_ENV) or DEFAULT_FRACTION
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return parse_budget(spec, space=shutil.disk_usage(probe).free + used)

    def used(self) -> int:
        return sum(size for size, _ in entries(self.root).values())

    def info(self) -> CacheInfo:
        held = entries(self.root)
        used = sum(s for s, _ in held.values())
        return CacheInfo(str(self.root), len(held), used, self._budget_with(used))

    def touch(self, paths: Iterable[Path]) -> None:
        """Mark an entry as used now (its files' modification time)."""
        now = time.time_ns()
        for p in paths:
            try:
                os.utime(p, ns=(now, now))
            except FileNotFoundError:
                pass

    def make_room(self, nbytes: int, keep: Iterable[str] = ()) -> list[str] | None:
        """Evict least recently used entries (never those in ``keep``) until ``nbytes`` more fit the budget;
        returns the evicted keys, or None (evicting nothing) when ``nbytes`` exceed the whole budget."""
        keep = set(keep)
        held = entries(self.root)
        used = sum(s for s, _ in held.values())
        budget = self._budget_with(used)
        if nbytes > budget:
            return None
        evicted = []
        for key, (size, _) in sorted(held.items(), key=lambda kv: kv[1][1]):
            if used + nbytes <= budget:
                break
            if key in keep:
                continue
            self.remove(key)
            used -= size
            evicted.append(key)
        if evicted:
            log.info("cache %s: evicted %d least recently used entries to stay within %s", self.root, len(evicted),
                     human(budget))
        return evicted

    def remove(self, key: str) -> None:
        for f in self.root.glob(f"{key}.*"):
            if ".tmp" not in f.name:
                f.unlink(missing_ok=True)

    def clear(self) -> int:
        """Delete every finished entry; returns the bytes freed."""
        held = entries(self.root)
        for key in held:
            self.remove(key)
        return sum(s for s, _ in held.values())
