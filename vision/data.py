"""Image sources (folder, CSV manifest, ``datasets.Dataset``, in-memory) with safe decoding.

Every source becomes an :class:`ImageSet`: a sequence of (image, label name) pairs whose
images are decoded lazily. Files that are not images are skipped and counted; files that claim
to be images but cannot be decoded are reported by name, never passed on as a crash in torch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferkit.common.features import fingerprint
from transferkit.common.sources import LabelledSource, dataset_targets, read_folder, read_manifest
from transferkit.common.streams import undecoded

log = logging.getLogger(__name__)

# torchvision's ImageFolder list: GIFs are left out (animated, and often placeholders in scraped sets);
# pass extensions=(..., ".gif") to include them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Decoding an image larger than this is refused: a "decompression bomb" can exhaust memory.
MAX_PIXELS = 89_478_485  # Pillow's own default limit (~ 9459 x 9459)


class ImageDecodeError(ValueError):
    """An image file that cannot be used; the message names the file."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit grey is rescaled, transparency is composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB") if img.mode != "RGB" else img


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation tag says (a phone photo taken sideways), tag removed.

    ``datasets``' Image feature and ``transformers.image_utils.load_image`` (what an exported
    ``pipeline`` reads files with) apply the same ``ImageOps.exif_transpose``, so a model trained
    here sees the pixels its pipeline will see. Without a tag (or already turned) the image is
    returned as it is.
    """
    from PIL import ImageOps

    if img.getexif().get(0x0112, 1) in (None, 1):  # 0x0112: Orientation; 1 is "as stored"
        return img
    return ImageOps.exif_transpose(img)


def load_image(source: Any, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a path, bytes, array or PIL image into an upright (:func:`upright`) RGB PIL image, or
    raise :class:`ImageDecodeError`."""
    if isinstance(source, Image.Image):
        return to_rgb(upright(source))
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, dict):  # datasets' Image feature without decoding: {"bytes": ..., "path": ...}
        source = source.get("bytes") or source.get("path")
    if isinstance(source, bytes):
        import io

        name, fp = "<bytes>", io.BytesIO(source)
    else:
        name, fp = str(source), source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(f"{name}: {w}x{h} pixels exceeds the limit of {max_pixels} "
                                       "(possible decompression bomb); raise max_pixels if the file is trusted")
            img.load()  # full decode: a truncated file fails here, not inside a training step
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(f"{name}: not a readable image ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({err})") from err
    if img.size[0] < 1 or img.size[1] < 1:
        raise ImageDecodeError(f"{name}: image has no pixels")
    return to_rgb(upright(img))


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ImageDecodeError(f"array of shape {arr.shape} is not an image (expected HxW, HxWxC or CxHxW)")
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        scale = 255.0 if a.max() <= 1.0 else (65535.0 if a.max() > 255 else 255.0) / 255.0
        arr = np.clip(a * scale if a.max() <= 1.0 else a / scale, 0, 255).astype(np.uint8)
    return to_rgb(Image.fromarray(arr))


class ImageSet(Sequence):
    """Images (paths or in-memory) with label names; decoded on access.

    Example:
        >>> ds = ImageSet.from_arrays(np.zeros((4, 8, 8), np.uint8), ["a", "b", "a", "b"])
        >>> ds.labels, len(ds)
        (['a', 'b'], 4)
    """

    def __init__(self, items: Sequence[Any], targets: Sequence[str] | None, *, max_pixels: int = MAX_PIXELS,
                 skipped: dict[str, int] | None = None, origin: str = "memory") -> None:
        if targets is not None and len(items) != len(targets):
            raise ValueError(f"got {len(items)} images but {len(targets)} labels")
        self.items, self.max_pixels, self.origin = list(items), max_pixels, origin
        self.targets = [str(t) for t in targets] if targets is not None else None
        self.skipped = dict(skipped or {})

    @property
    def labels(self) -> list[str]:
        """Sorted distinct label names."""
        return sorted(set(self.targets or []))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Image.Image, str | None]:  # type: ignore[override]
        return load_image(self.items[i], max_pixels=self.max_pixels), (self.targets[i] if self.targets else None)

    def fingerprint(self) -> str:
        """Changes whenever a file, its content or a label changes."""
        parts = []
        for item in self.items:
            if isinstance(item, (str, os.PathLike)):
                st = os.stat(item)
                parts.append((str(item), st.st_size, st.st_mtime_ns))
            elif isinstance(item, Image.Image):
                parts.append(fingerprint(np.asarray(item)))
            elif isinstance(item, np.ndarray):
                parts.append(fingerprint(item))
            else:
                parts.append(fingerprint(item))
        return fingerprint(parts, self.targets)

    def validate(self) -> ImageSet:
        """Decode every image once; undecodable ones are dropped, counted and logged by name.

        For files, the verdicts are remembered under the decode cache's folder (keyed by the files'
        names, sizes and times): checking the same files again reads them back instead of decoding.
        """
        import json

        from tqdm.auto import tqdm

        from transferkit.common.decode_cache import default_cache_root

        memo = None
        if self.items and all(isinstance(x, (str, os.PathLike)) for x in self.items):
            memo = default_cache_root() / "decoded" / f"checked-{fingerprint(self.fingerprint(), self.max_pixels)}.json"
        failed: dict[int, str] = {}
        if memo is not None and memo.exists():
            failed = {int(k): v for k, v in json.loads(memo.read_text()).items()}
        else:
            # Only long scans get a bar: a few hundred files decode in about a second.
            for i, item in enumerate(tqdm(self.items, desc="checking images", leave=False, disable=len(self.items) < 2000)):
                try:
                    load_image(item, max_pixels=self.max_pixels)
                except ImageDecodeError as err:
                    failed[i] = str(err)
            if memo is not None:
                memo.parent.mkdir(parents=True, exist_ok=True)
                tmp = memo.with_name(memo.name + f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(failed))
                os.replace(tmp, memo)
        keep_items, keep_targets, bad = [], [], list(failed.values())
        for i, item in enumerate(self.items):
            if i in failed:
                continue
            keep_items.append(item)
            if self.targets:
                keep_targets.append(self.targets[i])
        for msg in bad:
            log.warning("skipping %s", msg)
        skipped = {**self.skipped, "undecodable": self.skipped.get("undecodable", 0) + len(bad)}
        return ImageSet(keep_items, keep_targets if self.targets else None, max_pixels=self.max_pixels,
                        skipped=skipped, origin=self.origin)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, root: str | os.PathLike, *, validate: bool = True, max_pixels: int = MAX_PIXELS,
                    extensions: Sequence[str] = IMAGE_EXTENSIONS) -> ImageSet:
        """``root/<label>/<image>``: one sub-folder per class, read by
        :func:`~transferkit.common.sources.read_folder` (files with other extensions are skipped and counted)."""
        return cls.from_source(read_folder(root, extensions, "image"), validate=validate, max_pixels=max_pixels)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, path_column: str = "path", label_column: str | None = None,
                 validate: bool = True, max_pixels: int = MAX_PIXELS) -> ImageSet:
        """A CSV (or TSV) with a path column (relative to the manifest's folder or absolute) and a label
        column (default: the first of label, transcript, text, sentence), read by
        :func:`~transferkit.common.sources.read_manifest`; missing files are skipped and counted."""
        source = read_manifest(path, path_column=path_column, target_column=label_column)
        return cls.from_source(source, validate=validate, max_pixels=max_pixels)

    from_manifest = from_csv  # the name AudioDataset's reader has

    @classmethod
    def from_source(cls, source: LabelledSource, *, validate: bool = True, max_pixels: int = MAX_PIXELS) -> ImageSet:
        """The items of a :class:`~transferkit.common.sources.LabelledSource`, with its skips."""
        ds = cls(source.items, source.targets, max_pixels=max_pixels, skipped=source.skipped, origin=source.origin)
        return ds.validate() if validate else ds

    @classmethod
    def from_hf(cls, dataset: Any, *, image_column: str = "image", label_column: str | None = None,
                validate: bool = True) -> ImageSet:
        """A ``datasets.Dataset``; ClassLabel integers become their names. Columns are only read, never dropped.
        With ``validate``, images that do not decode are dropped, counted and logged, as from a folder."""
        if image_column not in dataset.column_names:
            raise ValueError(f"dataset has no column {image_column!r}; it has {dataset.column_names}")
        _, targets = dataset_targets(dataset, label_column)
        # Read undecoded ({"bytes", "path"}): decoded by datasets, one broken file would raise while the rows are
        # read, and every photo would be held decoded in memory; here each decodes when used, and a broken one is
        # skipped and counted like a broken file in a folder.
        ds = cls(_HFColumn(undecoded(dataset, image_column), image_column), targets, origin="datasets.Dataset")
        return ds.validate() if validate else ds

    @classmethod
    def from_arrays(cls, images: Sequence[Any], labels: Sequence[Any] | None = None) -> ImageSet:
        """In-memory PIL images or numpy arrays (HxW, HxWxC or CxHxW; uint8, 16-bit or floats in [0, 1])."""
        return cls(list(images), labels)


class _HFColumn(Sequence):
    """Lazy view of one column of a datasets.Dataset (decoding happens row by row)."""

    def __init__(self, dataset: Any, column: str) -> None:
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):  # type: ignore[override]
        return self.dataset[int(i)][self.column]


def as_image_set(data: Any, labels: Sequence[Any] | None = None) -> ImageSet:
    """Accept any supported source: ImageSet, folder path, CSV path, datasets.Dataset, or images + labels."""
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if p.is_dir():
            return ImageSet.from_folder(p)
        if p.suffix.lower() in (".csv", ".tsv"):
            return ImageSet.from_csv(p)
        raise ValueError(f"{p} is neither an image folder nor a CSV manifest")
    if hasattr(data, "column_names") and hasattr(data, "features"):
        return ImageSet.from_hf(data)
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        return ImageSet.from_arrays(*data)
    return ImageSet.from_arrays(list(data), labels)


# Pillow's resampling filters -> torchvision's (the ones Hugging Face image processors use).
_INTERPOLATIONS = {2: "BILINEAR", 3: "BICUBIC"}


def decode_resized(item: Any, size: tuple[int, int], resample: int = 2, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image -> a ``(3, height, width)`` uint8 array, resized as Hugging Face's image processors
    resize (torchvision, antialiased, on uint8): normalising it gives the processor's own output."""
    return _decode(item, lambda h, w: list(size), resample, max_pixels)


def decode_shorter(item: Any, shorter: int, resample: int = 2, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image -> a ``(3, height, width)`` uint8 array with its aspect ratio, its shorter side resized
    to ``shorter`` (as :func:`decode_resized` resizes) when it is longer; smaller images keep their size."""
    def size(h: int, w: int) -> list[int] | None:
        if min(h, w) <= shorter:
            return None
        return [shorter, round(w * shorter / h)] if h <= w else [round(h * shorter / w), shorter]

    return _decode(item, size, resample, max_pixels)


def _decode(item: Any, size: Any, resample: int, max_pixels: int) -> np.ndarray:
    """Decode ``item`` to ``(3, h, w)`` uint8 and resize it (antialiased) to ``size(h, w)``, or not when None."""
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if resample not in _INTERPOLATIONS:
        raise ValueError(f"resample must be one of {sorted(_INTERPOLATIONS)} (Pillow's bilinear, bicubic), got {resample}")
    pixels = torch.from_numpy(np.array(load_image(item, max_pixels=max_pixels), dtype=np.uint8)).permute(2, 0, 1)
    target = size(*pixels.shape[1:])
    if target is None:
        return pixels.numpy()
    mode = getattr(InterpolationMode, _INTERPOLATIONS[resample])
    return F.resize(pixels, target, interpolation=mode, antialias=True).numpy()


def decoded_pixels(images: ImageSet, size: tuple[int, int], resample: int = 2, cache: Any = None) -> np.ndarray:
    """Every image of ``images`` decoded and resized once: an ``(N, 3, height, width)`` uint8 array.

    ``cache`` is a :class:`~transferkit.common.decode_cache.DecodeCache`; images read from files are
    stored under its folder (keyed by the files' names, sizes and times and the resize) and
    memory-mapped on every later call; in-memory images are decoded in memory.
    """
    cache = _cache_for(images, cache)
    h, w = size
    key = ("image", images.fingerprint(), (h, w), resample, images.max_pixels)
    return cache.fixed(key, len(images), lambda i: decode_resized(images.items[i], (h, w), resample,
                                                                  max_pixels=images.max_pixels), (3, h, w))


def decoded_images(images: ImageSet, shorter: int, resample: int = 2, cache: Any = None) -> Sequence[np.ndarray]:
    """Every image of ``images`` decoded once with its own aspect ratio (:func:`decode_shorter`): a sequence
    of ``(3, h, w)`` uint8 arrays, for random crops drawn on each image's own geometry. Stored and
    memory-mapped like :func:`decoded_pixels`."""
    cache = _cache_for(images, cache)
    key = ("image-aspect", images.fingerprint(), shorter, resample, images.max_pixels)
    return cache.rows(key, len(images), lambda i: decode_shorter(images.items[i], shorter, resample,
                                                                 max_pixels=images.max_pixels))


def _cache_for(images: ImageSet, cache: Any) -> Any:
    """``cache`` for image files; a process-memory cache for in-memory images (nothing to read back later)."""
    from transferkit.common.decode_cache import DecodeCache

    on_disk = all(isinstance(x, (str, os.PathLike)) for x in images.items)
    if cache is None or (not on_disk and not cache.memory):
        cache = DecodeCache(cache.root if cache is not None else None, memory=not on_disk)
    return cache
