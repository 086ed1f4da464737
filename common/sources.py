"""One reader of labelled sources for every modality, used by training and by the data audit alike.

A labelled source is a folder with one sub-folder per label, a CSV/TSV manifest, a ``datasets.Dataset``
or in-memory items with their labels. :func:`read_labelled` turns any of them into a
:class:`LabelledSource`: the items (file paths, dataset rows or in-memory objects, never decoded here)
with one label each, and what the reader left out, counted by reason. The rules are the same whoever
reads, so an item the audit flags is exactly one that training would skip:

- folder: hidden files and folders are ignored; a file whose extension the modality does not decode
  is skipped, logged and counted (``not_<kind>``); an empty label folder is an error (its label would
  have no examples);
- manifest: the path column (``path``) is relative to the manifest's folder or absolute; the label
  column is the first of :data:`TARGET_COLUMNS` present unless named; a listed file that does not exist
  is skipped, logged and counted (``missing``);
- ``datasets.Dataset``: the label column as above; integer ``ClassLabel`` values become their names.

Decoding (and the skips it makes) belongs to the modality.

Example:
    >>> src = read_labelled((["x", "y"], [0, 1]), extensions=(".txt",), kind="text")
    >>> src.items, src.targets, src.origin
    (['x', 'y'], ['0', '1'], 'memory')
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: label columns a manifest or dataset may use, in order of preference
TARGET_COLUMNS = ("label", "transcript", "text", "sentence")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".tab")


@dataclass
class LabelledSource:
    """Items with one label each, as read (undecoded), and what the reader left out.

    Args:
        items: file paths (str), dataset rows' media values, or in-memory objects.
        targets: one label (or transcript) per item, as strings.
        origin: the folder or manifest read ("memory", "datasets.Dataset" otherwise).
        skipped: counts of items left out by reason (``not_<kind>``, ``missing``); a reason with
            nothing left out is kept at 0 so that readers report the same keys.
        examples: a few items left out per reason, for messages.
    """

    items: list[Any]
    targets: list[str]
    origin: str = "memory"
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.items) != len(self.targets):
            raise ValueError(f"got {len(self.items)} items but {len(self.targets)} labels")
        self.targets = [str(t) for t in self.targets]

    @property
    def files(self) -> bool:
        """Whether every item is a file path."""
        return all(isinstance(x, (str, os.PathLike)) for x in self.items)

    def notes(self) -> list[str]:
        """One line per reason something was left out, e.g. ``data/train: 2 file(s) not image left out``."""
        return [f"{self.origin}: {n} file(s) {why.replace('_', ' ')} left out by the reader, e.g. {self.examples[why][0]}"
                if self.examples.get(why) else f"{self.origin}: {n} file(s) {why.replace('_', ' ')} left out by the reader"
                for why, n in self.skipped.items() if n]

    def skip(self, reason: str, item: str, why: str) -> None:
        """Count ``item`` as left out for ``reason`` and log ``why``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(item)
        log.warning("skipping %s: %s", item, why)


def read_folder(root: str | os.PathLike, extensions: Sequence[str], kind: str) -> LabelledSource:
    """``root/<label>/<file>``: one sub-folder per label; files of other extensions are skipped and counted.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: ``root`` has no label sub-folders, or one of them holds no ``kind`` file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder {root} does not exist")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no label sub-folders; expected {root}/<label>/<{kind} files>")
    extensions = tuple(e.lower() for e in extensions)
    source = LabelledSource([], [], origin=str(root), skipped={f"not_{kind}": 0})
    for d in classes:
        files = sorted(f for f in d.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(d).parts))
        media = [str(f) for f in files if f.suffix.lower() in extensions]
        for f in files:
            if f.suffix.lower() not in extensions:
                source.skip(f"not_{kind}", str(f), f"extension {f.suffix!r} is not one of {', '.join(extensions)}")
        if not media:
            raise ValueError(f"class folder {d} contains no {kind} files ({', '.join(extensions)}); remove it or add files")
        source.items += media
        source.targets += [d.name] * len(media)
    return source


def read_manifest(path: str | os.PathLike, *, path_column: str = "path", target_column: str | None = None) -> LabelledSource:
    """A CSV (or, by its suffix, TSV) manifest with a header: ``path,label`` (or ``path,transcript``).

    Raises:
        ValueError: the path or label column is missing (the message lists the columns there are).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    columns = list(rows[0].keys()) if rows else []
    target_column = target_column or next((c for c in TARGET_COLUMNS if c in columns), None)
    for col in (path_column, target_column):
        if col is None or col not in columns:
            raise ValueError(f"{path}: a manifest needs a {col or '/'.join(TARGET_COLUMNS)!r} column; it has {columns}")
    source = LabelledSource([], [], origin=str(path), skipped={"missing": 0})
    for row in rows:
        file = row[path_column] if os.path.isabs(row[path_column]) else str(path.parent / row[path_column])
        if not os.path.exists(file):
            source.skip("missing", file, f"listed in {path} but missing")
            continue
        source.items.append(file)
        source.targets.append(str(row[target_column]))
    return source


def dataset_targets(dataset: Any, target_column: str | None = None) -> tuple[str, list[str]]:
    """The label column of a ``datasets.Dataset`` (named, or the first of :data:`TARGET_COLUMNS`) and its
    values as names (``ClassLabel`` integers become their names)."""
    column = target_column or next((c for c in TARGET_COLUMNS if c in dataset.column_names), None)
    if column is None or column not in dataset.column_names:
        raise ValueError(f"dataset has no {column or '/'.join(TARGET_COLUMNS)!r} column; it has {dataset.column_names}")
    names = getattr(dataset.features[column], "names", None)
    return column, [names[v] if names else str(v) for v in dataset[column]]


def is_dataset(data: Any) -> bool:
    """Whether ``data`` looks like a ``datasets.Dataset`` (without importing datasets)."""
    return hasattr(data, "column_names") and hasattr(data, "features")


def read_labelled(data: Any, *, extensions: Sequence[str], kind: str, media_column: str | None = None,
                  labels: Sequence[Any] | None = None) -> LabelledSource:
    """Any labelled source: a folder, a manifest, a ``datasets.Dataset`` (``media_column`` holds the
    items), ``(items, labels)``, or items with ``labels``.

    Raises:
        ValueError: a path that is neither a folder nor a manifest, or items and labels of different lengths.
    """
    if isinstance(data, LabelledSource):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            return read_folder(path, extensions, kind)
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return read_manifest(path)
        raise ValueError(f"{path}: expected a folder of label sub-folders or a .csv/.tsv manifest")
    if is_dataset(data):
        column, targets = dataset_targets(data)
        if media_column is None or media_column not in data.column_names:
            raise ValueError(f"dataset has no {media_column!r} column; it has {data.column_names}")
        return LabelledSource(list(data[media_column]), targets, origin="datasets.Dataset")
    if labels is None and isinstance(data, tuple) and len(data) == 2:
        data, labels = data
    if labels is None:
        raise TypeError(f"cannot read labelled {kind} data from {type(data).__name__}; pass a folder, a manifest, "
                        "a datasets.Dataset or (items, labels)")
    return LabelledSource(list(data), list(labels))
