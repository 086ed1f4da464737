"""throughput.py's user-path section: training from image and audio files, decoding and augmentation included.

Three sides train the same model (the same encoder spec plus a linear head, the same initial weights),
batch, epochs, optimizer settings and augmentation, each in its own process:

- transferkit: ``ImageClassifier.fit(folder)`` / ``AudioClassifier.fit(manifest)``, as a user calls it,
  with a cold decode cache (a fresh cache folder per run);
- Hugging Face ``Trainer`` fed as its image/audio classification examples feed it: a ``datasets.Dataset`` of
  file paths, transforms applied by ``set_transform`` when rows are read (torchvision's
  RandomResizedCrop + flip + ToTensor + Normalize per PIL image; for audio, decoding + resampling per clip,
  as the ``Audio(sampling_rate=16000)`` column does, then the feature extractor), the data collator padding;
- a plain PyTorch loop on tensors decoded before its clock starts (images as the decode cache keeps them: shorter side 448 px,
  clips at 16 kHz), with torchvision's tensor transforms per image: no decoding inside the loop.

Images: the first 64 hymenoptera training photos of each class, ``packaged:mobilenet_v2`` fine-tuned at 224 px, RandomResizedCrop
(scale 0.25-1) + horizontal flip. Audio: FSDD clips of the four training speakers (takes 0-9),
``packaged:speech_embedding`` fine-tuned, no augmentation.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

# 64 photos per class: MobileNetV2 trains at a few images/s on 2 shared cores, and three sides must fit in minutes.
IMAGE = {"spec": "packaged:mobilenet_v2", "epochs": 2, "batch": 32, "lr": 1e-3, "scale": (0.25, 1.0), "per_class": 64}
AUDIO = {"spec": "packaged:speech_embedding", "epochs": 2, "batch": 32, "lr": 1e-4, "takes": 10}
TRAIN_SPEAKERS = ("george", "jackson", "lucas", "nicolas")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


# -- inputs, listed once by the parent ----------------------------------------------------------
def prepare_user(work: Path, data: Path, smoke: bool) -> dict:
    """The image folder to train from (a linked subset when smoke) and the FSDD manifest."""
    from transferkit.vision import ImageSet

    # The first photos of each class (8 when smoke), linked into a folder of the same layout.
    images = ImageSet.from_folder(data / "hymenoptera" / "train")
    root, per_class = work / "photos", 8 if smoke else IMAGE["per_class"]
    seen: dict[str, int] = {}
    for path, label in zip(images.items, images.targets):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= per_class:
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / Path(path).name).symlink_to(path)
    rows = []
    for f in sorted((data / "fsdd" / "recordings").glob("*.wav")):
        digit, speaker, take = f.stem.split("_")
        if speaker in TRAIN_SPEAKERS and int(take) < (1 if smoke else AUDIO["takes"]):
            rows.append((str(f), DIGITS[int(digit)]))
    if smoke:
        rows = rows[:20]
    manifest = work / "fsdd.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    return {"image_folder": str(root), "manifest": str(manifest), "n_clips": len(rows)}


def _files(prep: dict, kind: str) -> tuple[list[str], list[int], list[str]]:
    """(paths, label ids, label names) exactly as transferkit reads them (the same files on every side)."""
    if kind == "image":
        from transferkit.vision import ImageSet

        ds = ImageSet.from_folder(prep["image_folder"])
        labels = ds.labels
        return list(ds.items), [labels.index(t) for t in ds.targets], labels
    lines = Path(prep["manifest"]).read_text().splitlines()[1:]
    paths, names = zip(*(line.split(",") for line in lines))
    return list(paths), [DIGITS.index(n) for n in names], DIGITS


def _model(kind: str, labels: list[str]):
    """The encoder + linear head every side trains (transferkit's ClassificationModel, head seeded)."""
    from transferkit.common import ClassificationModel, load_encoder

    if kind == "image":
        import transferkit.vision  # noqa: F401  (registers packaged:mobilenet_v2)
    else:
        import transferkit.audio  # noqa: F401

    return ClassificationModel(load_encoder(IMAGE["spec"] if kind == "image" else AUDIO["spec"],
                                            task=kind), len(labels))


class _WithLoss(torch.nn.Module):
    """What ``transformers.Trainer`` trains: the same model, returning its loss."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, labels=None, pixel_values=None, input_values=None, attention_mask=None):
        # Named inputs only: given **kwargs, Trainer would also pass its loss keywords (num_items_in_batch).
        given = {"pixel_values": pixel_values, "input_values": input_values, "attention_mask": attention_mask}
        logits = self.model(**{k: v for k, v in given.items() if v is not None})
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def _schedule(optimizer, total: int):
    from transferkit.common.trainer import warmup_cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, int(0.1 * total)))


# -- the three sides ----------------------------------------------------------------------------
def user_tk(kind: str, prep: dict, work: Path, precision: str) -> dict:
    os.environ["TRANSFERKIT_CACHE"] = str(work / f"cache-{os.getpid()}")  # a cold decode cache
    s = IMAGE if kind == "image" else AUDIO
    paths, ids, labels = _files(prep, kind)
    if kind == "image":
        from transferkit.vision import AugmentConfig, ImageClassifier

        clf = ImageClassifier.from_pretrained(s["spec"], labels=labels, strategy="finetune")
        extra = {"augment": AugmentConfig(crop_scale=s["scale"], hflip=True)}  # the decode cache is on by default
        source = prep["image_folder"]
    else:
        from transferkit.audio import AudioClassifier

        clf = AudioClassifier.from_pretrained(s["spec"], labels=labels, strategy="finetune")
        extra, source = {}, prep["manifest"]
    t0 = time.perf_counter()
    result = clf.fit(source, epochs=s["epochs"], batch_size=s["batch"], lr=s["lr"], head_lr=s["lr"], weight_decay=0.01,
                     warmup_ratio=0.1, max_grad_norm=1.0, mixed_precision=precision, seed=0, num_workers=0,
                     save_checkpoints=False, progress=False, output_dir=str(work / f"tk-user-{kind}-{os.getpid()}"),
                     **extra)["finetune"]
    return {"seconds": time.perf_counter() - t0, "n": len(paths), "epochs": s["epochs"],
            "epoch_seconds": [h["seconds"] for h in result.history], "final_loss": result.history[-1]["train_loss"]}


def user_hf(kind: str, prep: dict, work: Path, precision: str) -> dict:
    import benchinfo
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    s = IMAGE if kind == "image" else AUDIO
    paths, ids, labels = _files(prep, kind)
    model = _WithLoss(_model(kind, labels))
    torch.manual_seed(0)

    t0 = time.perf_counter()
    if kind == "image":
        from datasets import Image
        from torchvision.transforms import (
            Compose,
            Normalize,
            RandomHorizontalFlip,
            RandomResizedCrop,
            ToTensor,
        )

        processor = model.model.encoder.processor
        tf = Compose([RandomResizedCrop(224, scale=s["scale"]), RandomHorizontalFlip(), ToTensor(),
                      Normalize(processor.image_mean, processor.image_std)])
        ds = Dataset.from_dict({"image": paths, "labels": ids}).cast_column("image", Image())

        def transform(batch):  # run_image_classification's train_transforms
            return {"pixel_values": [tf(img.convert("RGB")) for img in batch["image"]], "labels": batch["labels"]}

        def collate(rows):
            return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                    "labels": torch.tensor([r["labels"] for r in rows])}
    else:
        from transformers import DataCollatorWithPadding

        from transferkit.audio.data import load_audio

        extractor = model.model.encoder.processor
        ds = Dataset.from_dict({"path": paths, "labels": ids})

        def transform(batch):  # the Audio(sampling_rate=16000) column's decode + resample, then the extractor
            waves = [load_audio(p, 16_000) for p in batch["path"]]
            out = extractor(waves, sampling_rate=16_000)
            return {"input_values": out["input_values"], "attention_mask": out["attention_mask"], "labels": batch["labels"]}

        collate = DataCollatorWithPadding(extractor)
    ds.set_transform(transform)
    steps = math.ceil(len(paths) / s["batch"]) * s["epochs"]
    targs = TrainingArguments(
        output_dir=str(work / f"hf-user-{kind}-{os.getpid()}"), per_device_train_batch_size=s["batch"],
        num_train_epochs=s["epochs"], learning_rate=s["lr"], weight_decay=0.01, lr_scheduler_type="cosine",
        warmup_steps=int(0.1 * steps), max_grad_norm=1.0, bf16=precision == "bf16", use_cpu=True, seed=0,
        dataloader_num_workers=0, save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, remove_unused_columns=False)
    clock = benchinfo.epoch_clock()
    trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=collate, callbacks=[clock])
    out = trainer.train()
    return {"seconds": time.perf_counter() - t0, "n": len(paths), "epochs": s["epochs"], "epoch_seconds": clock.seconds,
            "final_loss": float(out.training_loss)}


def user_plain(kind: str, prep: dict, work: Path, precision: str) -> dict:
    from torchvision.transforms import v2

    s = IMAGE if kind == "image" else AUDIO
    paths, ids, labels = _files(prep, kind)
    model = _model(kind, labels)
    if kind == "image":
        from transferkit.vision.data import decode_shorter

        processor = model.encoder.processor
        data = [torch.from_numpy(decode_shorter(p, 448)) for p in paths]  # before the clock, as the cache stores them
        tf = v2.Compose([v2.RandomResizedCrop(224, scale=s["scale"], antialias=True), v2.RandomHorizontalFlip(),
                         v2.ToDtype(torch.float32, scale=True), v2.Normalize(processor.image_mean, processor.image_std)])

        def batch_of(idx):
            return {"pixel_values": torch.stack([tf(data[i]) for i in idx])}
    else:
        from transferkit.audio.data import load_audio

        data = [torch.from_numpy(load_audio(p, 16_000)) for p in paths]

        def batch_of(idx):
            width = max(len(data[i]) for i in idx)
            x, mask = torch.zeros(len(idx), width), torch.zeros(len(idx), width, dtype=torch.long)
            for row, i in enumerate(idx):
                x[row, :len(data[i])], mask[row, :len(data[i])] = data[i], 1
            return {"input_values": x, "attention_mask": mask}
    y = torch.tensor(ids)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=0.01)
    scheduler = _schedule(optimizer, math.ceil(len(paths) / s["batch"]) * s["epochs"])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    t0, epoch_seconds = time.perf_counter(), []
    model.train()
    for _ in range(s["epochs"]):
        t_epoch, losses = time.perf_counter(), []
        for idx in torch.randperm(len(paths)).split(s["batch"]):
            with autocast:
                logits = model(**batch_of(idx.tolist()))
            loss = torch.nn.functional.cross_entropy(logits.float(), y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        epoch_seconds.append(time.perf_counter() - t_epoch)
    return {"seconds": time.perf_counter() - t0, "n": len(paths), "epochs": s["epochs"], "epoch_seconds": epoch_seconds,
            "final_loss": float(np.mean(losses))}


def run_user(name: str, work: Path, prep: dict, precision: str) -> dict:
    """``user_<side>_<kind>``: one side on one kind of data."""
    _, side, kind = name.split("_")
    return {"tk": user_tk, "hf": user_hf, "plain": user_plain}[side](kind, prep, work, precision)
