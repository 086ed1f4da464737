"""ImageClassifier: a pretrained image encoder plus a new head, trained with a transfer strategy."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.common import (
    ClassificationModel,
    ConfusionMatrix,
    TrainConfig,
    load_encoder,
    merge_lora,
    per_class_report,
    train_classifier,
)
from transferkit.common.encoders import Encoder
from transferkit.common.features import fingerprint
from transferkit.common.hub import push_to_hub, write_model_card
from transferkit.common.report import plot_confusion
from transferkit.common.strategies import has_lora

from .data import ImageSet, as_image_set, load_image
from .transforms import AugmentConfig, batch_mixer, eval_transform, processor_geometry, train_transform

log = logging.getLogger(__name__)


class _Encoded(torch.utils.data.Dataset):
    """(image, label) pairs -> {"pixel_values", "labels"} with a transform applied in the loader."""

    def __init__(self, images: ImageSet, transform: Any, label2id: dict[str, int]) -> None:
        self.images, self.transform, self.label2id = images, transform, label2id

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        img, label = self.images[i]
        return {"pixel_values": self.transform(img), "labels": self.label2id[label]}


class ImageClassifier:
    """Image classification by transfer from a pretrained encoder.

    Example:
        >>> clf = ImageClassifier.from_pretrained("google/vit-base-patch16-224-in21k",
        ...                                       labels=["ant", "bee"], strategy="lp_ft")  # doctest: +SKIP
        >>> clf.fit("data/train", eval="data/val", epochs=5)  # doctest: +SKIP
        >>> clf.evaluate("data/val")["accuracy"]  # doctest: +SKIP
        >>> clf.save("ants-vs-bees")  # loads with transformers.pipeline("image-classification")  # doctest: +SKIP
    """

    def __init__(self, encoder: Encoder, labels: Sequence[str], strategy: str = "finetune") -> None:
        labels = [str(x) for x in labels]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        self.labels = labels
        self.label2id = {name: i for i, name in enumerate(labels)}
        self.model = ClassificationModel(encoder, len(labels))
        self.strategy = strategy
        self.results: dict = {}
        self.train_info: dict[str, Any] = {}

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    @classmethod
    def from_pretrained(cls, spec: Any, labels: Sequence[str], strategy: str = "finetune", **encoder_kwargs: Any) -> ImageClassifier:
        """Load the encoder (Hub id, local HF folder, ``torchvision:<name>``, or nn.Module) and add a head for ``labels``."""
        return cls(load_encoder(spec, task="image", **encoder_kwargs), labels, strategy)

    # -- data ---------------------------------------------------------------------------------
    def _check_labels(self, data: ImageSet, what: str) -> None:
        unknown = sorted(set(data.targets or []) - set(self.label2id))
        if unknown:
            raise ValueError(f"{what} has label(s) {unknown} that the classifier does not know "
                             f"(it knows {self.labels}); add them to labels= before training")

    def _collate(self, mixer: Any = None):
        def collate(rows: list[dict]) -> dict:
            batch = {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                     "labels": torch.tensor([r["labels"] for r in rows])}
            if mixer is not None:
                batch["pixel_values"], batch["labels"] = mixer(batch["pixel_values"], batch["labels"])
            return batch

        return collate

    # -- training -----------------------------------------------------------------------------
    def fit(self, train: Any, eval: Any = None, *, config: TrainConfig | None = None,
            augment: AugmentConfig | None = None, **overrides: Any) -> dict:
        """Train on ``train`` (folder, CSV, datasets.Dataset, ImageSet), selecting the best epoch on ``eval``.

        ``overrides`` set :class:`TrainConfig` fields (``epochs=5, lr=1e-4``). Returns each stage's
        :class:`~transferkit.common.TrainResult`.
        """
        config = (config or TrainConfig()).replace(strategy=self.strategy, **overrides)
        augment = augment or AugmentConfig()
        train_set, eval_set = as_image_set(train), as_image_set(eval) if eval is not None else None
        self._check_labels(train_set, "the training data")
        if eval_set is not None:
            self._check_labels(eval_set, "the evaluation data")
        processor = self.encoder.processor
        fit_tf, eval_tf = train_transform(processor, augment), eval_transform(processor)
        mixer = batch_mixer(augment, len(self.labels))
        prep_fp = fingerprint(processor_geometry(processor), type(processor).__name__,
                              processor.to_dict() if hasattr(processor, "to_dict") else None)
        fps = {"train": train_set.fingerprint(), "preprocess": prep_fp}
        if eval_set is not None:
            fps["eval"] = eval_set.fingerprint()
        self.train_info = {"base_model": self.encoder.spec, "strategy": self.strategy,
                           "train_examples": len(train_set), "eval_examples": len(eval_set) if eval_set else 0,
                           "skipped_train_files": train_set.skipped, "augment": augment.__dict__}
        self.results = train_classifier(
            self.model, config,
            _Encoded(train_set, fit_tf, self.label2id),
            _Encoded(eval_set, eval_tf, self.label2id) if eval_set is not None else None,
            train_collate=self._collate(mixer), eval_collate=self._collate(), fingerprints=fps,
            run_info={"labels": self.labels, "base_model": self.encoder.spec},
        )
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        last_stage = out / list(self.results)[-1] if len(self.results) > 1 else out
        (out / "transferkit-run.json").write_text(json.dumps(
            {"base_model": str(self.encoder.spec), "labels": self.labels, "strategy": self.strategy,
             "final_stage_dir": str(last_stage.resolve()), "config": config.to_dict(), **self.train_info},
            indent=2, default=str) + "\n")
        return self.results

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike) -> ImageClassifier:
        """Rebuild the classifier of a ``fit`` run from its best (or last) checkpoint."""
        from safetensors.torch import load_model

        from transferkit.common import TrainConfig, get_strategy

        meta_path = Path(run_dir) / "transferkit-run.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{run_dir} is not a transferkit run folder (no transferkit-run.json)")
        meta = json.loads(meta_path.read_text())
        clf = cls.from_pretrained(meta["base_model"], labels=meta["labels"], strategy=meta["strategy"])
        if meta["strategy"] == "lora":  # the checkpoint holds adapter weights: put adapters in place first
            get_strategy("lora").param_groups(clf.encoder, clf.model.head, TrainConfig.from_dict(meta["config"]))
        stage = Path(meta["final_stage_dir"])
        for ckpt in (stage / "checkpoints" / "best.safetensors", stage / "checkpoints" / "last" / "model.safetensors"):
            if ckpt.exists():
                load_model(clf.model, str(ckpt))
                break
        else:
            raise FileNotFoundError(f"no checkpoint in {stage / 'checkpoints'}")
        clf.train_info = {k: meta[k] for k in ("train_examples", "eval_examples") if k in meta}
        return clf

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, images: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
        tf = eval_transform(self.encoder.processor)
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(images), batch_size):
            chunk = [tf(load_image(x)) for x in images[start:start + batch_size]]
            out.append(self.model(pixel_values=torch.stack(chunk).to(device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))

    def predict(self, images: Any, *, batch_size: int = 64) -> list[dict]:
        """Label and class probabilities for each image (path, PIL image or array)."""
        if isinstance(images, (str, os.PathLike, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        probs = self._logits(list(images), batch_size).softmax(-1)
        return [{"label": self.labels[int(p.argmax())], "score": float(p.max()),
                 "scores": {name: float(v) for name, v in zip(self.labels, p)}} for p in probs]

    def evaluate(self, data: Any, *, out_dir: str | os.PathLike | None = None, batch_size: int = 64) -> dict:
        """Accuracy, macro-F1, a per-class report and the confusion matrix (PNG written to ``out_dir``)."""
        data = as_image_set(data)
        self._check_labels(data, "the evaluation data")
        cm = ConfusionMatrix(len(self.labels))
        for start in range(0, len(data), batch_size):
            idx = range(start, min(start + batch_size, len(data)))
            logits = self._logits([data.items[i] for i in idx], batch_size)
            cm.update(torch.tensor([self.label2id[data.targets[i]] for i in idx]), logits.argmax(-1))
        result = {**cm.metrics(), "per_class": per_class_report(cm.counts, self.labels),
                  "confusion_matrix": cm.counts.tolist(), "examples": len(data)}
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            plot_confusion(cm.counts, self.labels, Path(out_dir) / "confusion_matrix.png",
                           title=f"accuracy {result['accuracy']:.3f}")
        return result

    # -- export -------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, *, metrics: dict | None = None) -> Path:
        """Export: a Hugging Face folder (config, safetensors, processor, label maps, model card)
        that ``transformers.pipeline("image-classification")`` loads; LoRA adapters are merged."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if has_lora(self.encoder):
            merge_lora(self.encoder)
        hf = self.encoder.hf_model
        info = {"labels": self.labels, "strategy": self.strategy, **self.train_info}
        if hf is not None:
            _save_hf(hf, self.model.head, self.labels, folder)
            if self.encoder.processor is not None:
                self.encoder.processor.save_pretrained(folder)
        else:
            from safetensors.torch import save_model

            save_model(self.model, str(folder / "model.safetensors"))
            info["encoder_spec"] = self.encoder.spec
            info["feature_dim"] = self.encoder.feature_dim
        (folder / "transferkit.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        write_model_card(folder, task="image-classification", base_model=str(self.encoder.spec), strategy=self.strategy,
                         data={k: v for k, v in self.train_info.items() if k.endswith("examples")} | {"labels": ", ".join(self.labels)},
                         metrics=metrics, pipeline_tag="image-classification" if hf is not None else None,
                         library_name="transformers" if hf is not None else "transferkit")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, encoder: nn.Module | None = None) -> ImageClassifier:
        """Load an export written by :meth:`save` (pass ``encoder=`` for a custom nn.Module encoder)."""
        folder = Path(folder)
        info = json.loads((folder / "transferkit.json").read_text()) if (folder / "transferkit.json").exists() else {}
        if (folder / "config.json").exists():
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(folder)
            labels = [config.id2label[i] for i in range(config.num_labels)]
            enc = load_encoder(str(folder), task="image")
            clf = cls(enc, labels, info.get("strategy", "finetune"))
            head_w = _head_weights(folder, getattr(config, "transferkit_head", "classifier"))
            clf.model.head.load_state_dict(head_w)
        else:
            spec = encoder if encoder is not None else info["encoder_spec"]
            enc = load_encoder(spec, task="image", feature_dim=info.get("feature_dim"))
            clf = cls(enc, info["labels"], info.get("strategy", "finetune"))
            from safetensors.torch import load_model

            load_model(clf.model, str(folder / "model.safetensors"))
        clf.train_info = {k: v for k, v in info.items() if k not in ("labels",)}
        return clf

    def push_to_hub(self, repo_id: str, *, folder: str | os.PathLike | None = None, token: str | None = None,
                    private: bool = False) -> str:
        """Export (to ``folder`` or a temporary folder) and upload to the Hub."""
        import tempfile

        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="transferkit-export-"))
        self.save(folder)
        return push_to_hub(folder, repo_id, token=token, private=private)


def _save_hf(hf: nn.Module, head: nn.Linear, labels: list[str], folder: Path) -> None:
    """Put the trained head where transformers expects its classifier, save, then take it out again."""
    path = hf.config.transferkit_head
    parent = hf
    *parents, last = path.split(".")
    for p in parents:
        parent = getattr(parent, p)
    identity = parent[int(last)] if last.isdigit() else getattr(parent, last)
    _set(parent, last, head)
    hf.config.num_labels = len(labels)
    hf.config.id2label = dict(enumerate(labels))
    hf.config.label2id = {name: i for i, name in enumerate(labels)}
    try:
        hf.save_pretrained(folder, safe_serialization=True)
    finally:
        _set(parent, last, identity)


def _set(parent: nn.Module, name: str, module: nn.Module) -> None:
    if name.isdigit():
        parent[int(name)] = module
    else:
        setattr(parent, name, module)


def _head_weights(folder: Path, head_path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    prefix = head_path + "."
    head = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if set(head) != {"weight", "bias"}:
        raise ValueError(f"{folder} has no classifier weights under {head_path!r}")
    return head
