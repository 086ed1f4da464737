"""ImageClassifier: a pretrained image encoder plus a new head, trained with a transfer strategy."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from transferkit.common import TrainConfig, TrainingData, TransferClassifier, load_encoder
from transferkit.common.features import fingerprint
from transferkit.common.memory_format import use_channels_last
from transferkit.common.streams import is_stream

from .data import ImageSet, as_image_set, decoded_images, decoded_pixels, load_image
from .modality import ImageModality, input_sizes
from .transforms import (
    AugmentConfig,
    batch_mixer,
    eval_transform,
    processor_geometry,
    resized_crops,
    train_transform,
)

MIN_STORE_SIDE = 256  # training images kept for random crops: shorter side at least this (see _store_side)


class _Encoded(torch.utils.data.Dataset):
    """(image, label) pairs -> {"pixel_values", "labels"}, transformed inside the data loader."""

    def __init__(self, images: ImageSet, transform: Any, label2id: dict[str, int]) -> None:
        self.images, self.transform, self.label2id = images, transform, label2id

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        img, label = self.images[i]
        return {"pixel_values": self.transform(img), "labels": self.label2id[label]}


class _Decoded(torch.utils.data.Dataset):
    """Images decoded once with their label ids: an ``(N, 3, H, W)`` uint8 array resized to the input, or
    a list of ``(3, h, w)`` arrays with their own aspect ratios (to crop from), built on the first read;
    the loader fetches whole batches at once (``__getitems__``)."""

    def __init__(self, build: Any, labels: Sequence[int]) -> None:
        self.build, self.labels, self._pixels = build, torch.tensor(list(labels), dtype=torch.long), None

    @property
    def pixels(self) -> np.ndarray | list[np.ndarray]:
        if self._pixels is None:
            self._pixels = self.build()
        return self._pixels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixels": torch.from_numpy(np.array(self.pixels[i])), "labels": self.labels[i]}

    def __getitems__(self, idx: list[int]) -> dict:
        if not isinstance(self.pixels, np.ndarray):  # images with their own sizes (or decoded per read)
            pixels: Any = [torch.from_numpy(np.array(self.pixels[i])) for i in idx]
        else:
            pixels = torch.from_numpy(np.ascontiguousarray(self.pixels[np.asarray(idx)]))
        return {"pixels": pixels, "labels": self.labels[torch.as_tensor(idx)]}


def _pixel_collate(mean: Sequence[float], std: Sequence[float], size: tuple[int, int] | None = None,
                   augment: AugmentConfig | None = None, mixer: Any = None):
    """uint8 batches -> normalised ``pixel_values`` (as the processor normalises), augmented per batch."""
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def collate(rows: Any) -> dict:
        if isinstance(rows, dict):
            pixels, labels = rows["pixels"], rows["labels"]
        else:
            pixels = [r["pixels"] for r in rows]  # images of their own sizes (to crop from) or input-sized
            labels = torch.stack([torch.as_tensor(r["labels"]) for r in rows])
        if augment is not None and augment.crop_scale != (1.0, 1.0):
            x = resized_crops(pixels, size, augment.crop_scale, hflip=augment.hflip)
        else:
            x = (torch.stack(pixels) if isinstance(pixels, list) else pixels).float()
            if augment is not None and augment.hflip:
                flip = torch.rand(len(x)) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        batch = {"pixel_values": (x * (1 / 255) - mean_t) / std_t, "labels": labels}
        if mixer is not None:
            batch["pixel_values"], batch["labels"] = mixer(batch["pixel_values"], batch["labels"])
        return batch

    return collate


def _store_side(size: tuple[int, int], augment: AugmentConfig) -> int | None:
    """The shorter side training images are stored at for random crops (None without crops: stored at
    the input size). Crops are drawn on each image's own geometry, as torchvision draws them on the file,
    from images kept at a shorter side of at least 256 px and twice the input. Stored as input-sized
    squares (up to commit 49b80a5), crops cost 0.05-0.07 accuracy against the per-image path
    (``benchmarks/decode_cache_check.py`` at that commit)."""
    if augment.crop_scale == (1.0, 1.0):
        return None
    return max(MIN_STORE_SIDE, 2 * max(size))


def _plain_resize(processor: Any) -> tuple[tuple[int, int], list, list, int] | None:
    """(size, mean, std, Pillow resample) when the processor only resizes to a fixed size, rescales by
    1/255 and normalises (what the decode cache reproduces), else None."""
    (h, w), mean, std = processor_geometry(processor)
    if processor is None:
        return (h, w), mean, std, 2
    d = processor.to_dict() if hasattr(processor, "to_dict") else None
    if not d or "height" not in (d.get("size") or {}) or d.get("do_center_crop") or not d.get("do_resize", True):
        return None
    if any(v for k, v in d.items() if k.startswith("do_") and k not in ("do_resize", "do_rescale", "do_normalize",
                                                                          "do_convert_rgb")):
        return None
    if not d.get("do_rescale", True) or abs(float(d.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        return None
    if not d.get("do_normalize", True):
        mean, std = [0.0] * 3, [1.0] * 3
    resample = int(d.get("resample", 2))
    return ((h, w), mean, std, resample) if resample in (2, 3) else None


def _collate(mixer: Any = None):
    def collate(rows: list[dict]) -> dict:
        batch = {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                 "labels": torch.tensor([r["labels"] for r in rows])}
        if mixer is not None:
            batch["pixel_values"], batch["labels"] = mixer(batch["pixel_values"], batch["labels"])
        return batch

    return collate


def _stream_collate(mixer: Any = None):
    """Rows ``{"example": pixel tensor, "labels"}`` of a stream -> a batch (mixed by ``mixer``)."""
    collate = _collate(mixer)

    def rename(rows: list[dict]) -> dict:
        return collate([{"pixel_values": r["example"], "labels": r["labels"]} for r in rows])

    return rename


class ImageClassifier(TransferClassifier):
    """Image classification by transfer from a pretrained encoder.

    Example:
        >>> clf = ImageClassifier.from_pretrained("google/vit-base-patch16-224-in21k",
        ...                                       labels=["ant", "bee"], strategy="lp_ft")  # doctest: +SKIP
        >>> clf.fit("data/train", eval="data/val", epochs=5)  # doctest: +SKIP
        >>> clf.evaluate("data/val")["accuracy"]  # doctest: +SKIP
        >>> clf.save("ants-vs-bees")  # loads with transformers.pipeline("image-classification")  # doctest: +SKIP
    """

    task = "image-classification"
    encoder_task = "image"
    modality = ImageModality

    @classmethod
    def from_pretrained(cls, spec: Any, labels: Sequence[str], strategy: Any = "finetune", **encoder_kwargs: Any) -> ImageClassifier:
        """Load the encoder (Hub id, local HF folder, ``torchvision:<name>``, ``timm:<name>``, ``packaged:<name>``,
        or nn.Module) and add a head for ``labels``."""
        return cls(load_encoder(spec, task="image", **encoder_kwargs), labels, strategy)

    def labelled(self, data: Any) -> tuple[Sequence[Any], Sequence[str]]:
        data = as_image_set(data)
        return data.items, data.targets or []

    def fit(self, train: Any, eval: Any = None, *, config: TrainConfig | None = None,
            augment: AugmentConfig | None = None, decode_cache: bool | str | os.PathLike = True, **options: Any) -> dict:
        """Train on ``train`` (folder, CSV, datasets.Dataset, ImageSet, or (images, labels)), keeping the best epoch on ``eval``.

        ``options`` set :class:`TrainConfig` fields (``epochs=5, lr=1e-4``) and the strategy's
        settings (``lora_r=8``). Returns each stage's :class:`~transferkit.common.TrainResult`. The
        linear-probe stage trains on cached features of un-augmented images.

        ``decode_cache``: each image is decoded and resized once, into uint8 arrays kept (for image
        files) under the decode cache's folder (``True``, the default: ``$TRANSFERKIT_CACHE/decoded``,
        ``~/.cache/transferkit/decoded``; or a folder), memory-mapped by every later epoch and run; random
        crops and flips are then cut from the stored arrays batch by batch, as torchvision cuts them from
        the file: with crops, training images are stored with their aspect ratio at a shorter side of
        at least 256 px and twice the input (0.8 MB a 4:3 photo at 224 px). ``False`` decodes and
        augments every file every epoch. The cache applies where the processor only resizes and
        normalises, without RandAugment.
        """
        return super().fit(train, eval, config=config, augment=augment, decode_cache=decode_cache, **options)

    def training_data(self, train: Any, eval: Any, config: TrainConfig, *, augment: AugmentConfig | None = None,
                      decode_cache: bool | str | os.PathLike = True) -> TrainingData:
        augment = augment or AugmentConfig()
        if is_stream(train) or is_stream(eval):
            # Decoded and augmented as each image passes (the decode cache needs a set it can index).
            train_tf = train_transform(self.encoder.processor, augment)
            return self.stream_data(train, eval, config, prepare=lambda item: train_tf(load_image(item)),
                                    collate=_stream_collate(batch_mixer(augment, len(self.labels))))
        train_set, eval_set = as_image_set(train), as_image_set(eval) if eval is not None else None
        self.check_labels(train_set.targets or [], "the training data")
        if eval_set is not None:
            self.check_labels(eval_set.targets or [], "the evaluation data")
        self.start_training(config)
        processor = self.encoder.processor
        prep_fp = fingerprint(processor_geometry(processor), type(processor).__name__,
                              processor.to_dict() if hasattr(processor, "to_dict") else None)
        fps = {"train": train_set.fingerprint(), "preprocess": prep_fp}
        if eval_set is not None:
            fps["eval"] = eval_set.fingerprint()
        info = {"train_examples": len(train_set), "eval_examples": len(eval_set) if eval_set else 0,
                "skipped_train_files": train_set.skipped, "augment": augment.__dict__}
        plain = _plain_resize(processor) if decode_cache is not False and not augment.randaugment else None
        if plain is not None and _matches_processor(processor, train_set, plain):
            return self._decoded_data(train_set, eval_set, augment, plain, decode_cache, fps, info)
        eval_tf = eval_transform(processor)
        return TrainingData(
            train=_Encoded(train_set, train_transform(processor, augment), self.label2id),
            eval=_Encoded(eval_set, eval_tf, self.label2id) if eval_set is not None else None,
            collate=_collate(batch_mixer(augment, len(self.labels))), eval_collate=_collate(),
            probe_train=_Encoded(train_set, eval_tf, self.label2id), fingerprints=fps, info=info,
            random_augment=augment.random)

    def _decoded_data(self, train_set: ImageSet, eval_set: ImageSet | None, augment: AugmentConfig, plain: tuple,
                      decode_cache: bool | str | os.PathLike, fps: dict, info: dict) -> TrainingData:
        """Datasets over uint8 arrays decoded once (see ``fit``'s ``decode_cache``)."""
        import functools

        from transferkit.common.decode_cache import DecodeCache

        (h, w), mean, std, resample = plain
        cache = DecodeCache(None if decode_cache is True else decode_cache)
        side = _store_side((h, w), augment)

        def ids(images: ImageSet) -> list[int]:
            return [self.label2id[t] for t in images.targets or []]

        def dataset(images: ImageSet, size: tuple[int, int]) -> _Decoded:
            return _Decoded(functools.partial(decoded_pixels, images, size, resample, cache), ids(images))

        train = (dataset(train_set, (h, w)) if side is None else
                 _Decoded(functools.partial(decoded_images, train_set, side, resample, cache), ids(train_set)))
        eval_collate = _pixel_collate(mean, std)
        return TrainingData(
            train=train, eval=dataset(eval_set, (h, w)) if eval_set is not None else None,
            collate=_pixel_collate(mean, std, (h, w), augment, batch_mixer(augment, len(self.labels))),
            eval_collate=eval_collate, probe_train=dataset(train_set, (h, w)), fingerprints=fps,
            info={**info, "decode_cache": str(cache.root)}, random_augment=augment.random)

    def search_defaults(self, strategy: str, config: TrainConfig) -> dict[str, Any]:
        """First trials: with augmentation; a small-input encoder (a CIFAR net on photos) at twice its
        input; a CNN body at CNN fine-tuning rates (ten times the transformer defaults) unless set."""
        sizes = input_sizes(self.encoder)
        out: dict[str, Any] = {"augment": True, **({"image_size": max(sizes)} if len(sizes) > 1 and min(sizes) <= 64 else {})}
        convolutional = sum(isinstance(m, torch.nn.Conv2d) for m in self.encoder.modules()) > 2  # not a patch embedding
        if convolutional and strategy != "linear_probe" and config.lr == TrainConfig.lr:
            out["lr"] = 10 * config.lr
        if convolutional and strategy != "linear_probe" and config.head_lr == TrainConfig.head_lr:
            out["head_lr"] = 5 * config.head_lr
        return out

    def inference_batch_size(self) -> int | None:
        """:data:`CPU_PREDICT_BATCH` for a convolutional network on photo-sized inputs (128 px or more) on a
        machine without an accelerator: its forward passes ran 3.1x faster in pairs than in batches of 32
        (MobileNetV2 at 224 px, channels-last, one thread: benchmarks/results/predict_speed.md); otherwise
        ``TrainConfig``'s default."""
        (h, w), _, _ = processor_geometry(self.encoder.processor)
        accelerated = torch.cuda.is_available() or torch.backends.mps.is_available()
        if accelerated or min(h, w) < 128 or not use_channels_last(self.model, None):
            return None
        return CPU_PREDICT_BATCH

    def predict(self, images: Any, *, batch_size: int | None = None, workers: int | None = None) -> list[dict]:
        """Label and class probabilities for each image (path, PIL image or array, or a list of them);
        ``workers`` threads decode the next batches while the model runs one (0: decode in this thread).

        ``batch_size`` defaults to :data:`CPU_PREDICT_BATCH` on a CPU and 64 on an accelerator: on a CPU a
        MobileNetV2 at 224 px ran 19.4 photos/s one at a time and 7.0/s in batches of 32 (one thread; the
        batch's activations outgrow the caches), so large batches only pay where the device is wide."""
        if batch_size is None:
            batch_size = CPU_PREDICT_BATCH if next(self.model.parameters()).device.type == "cpu" else 64
        if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            images = [images]  # one image; a single path is wrapped by the base predict
        return super().predict(images, batch_size=batch_size, workers=workers)


CPU_PREDICT_BATCH = 2  # photos per forward pass when predicting on a CPU (see ImageClassifier.predict)


def _matches_processor(processor: Any, images: ImageSet, plain: tuple, tolerance: float = 1e-3) -> bool:
    """Whether the decode cache's pixels for the first image equal the processor's own (an export
    predicts through the processor: training must have seen the same inputs)."""
    if processor is None or not len(images):
        return processor is None
    from .data import decode_resized

    (h, w), mean, std, resample = plain
    mine = _pixel_collate(mean, std)([{"pixels": torch.from_numpy(decode_resized(images.items[0], (h, w), resample)),
                                       "labels": 0}])["pixel_values"][0]
    theirs = eval_transform(processor)(load_image(images.items[0]))
    return tuple(theirs.shape) == tuple(mine.shape) and float((theirs - mine).abs().max()) <= tolerance
