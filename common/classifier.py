"""TransferClassifier: the user-facing classifier shared by the image and audio packages.

It owns everything that does not depend on the kind of data: labels, training through a
strategy's stages, prediction and evaluation in batches, export to a folder that
``transformers.pipeline`` loads, reloading, run recovery and Hub upload. A domain subclass says
how to read its data and how to turn raw examples into model inputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .classification import ClassificationModel, train_classifier
from .config import TrainConfig
from .encoders import Encoder, load_encoder, quiet_transformers
from .hub import PushToHubMixin, write_model_card
from .metrics import ConfusionMatrix, per_class_report
from .strategies import get_strategy, has_lora, merge_lora

RUN_FILE = "transferkit-run.json"
INFO_FILE = "transferkit.json"


class TransferClassifier(PushToHubMixin):
    """Base class: a pretrained encoder plus a linear head for ``labels``.

    Subclasses set ``task`` (the pipeline tag) and ``encoder_task`` (``"image"``/``"audio"``) and
    implement :meth:`_inputs` (raw examples -> a batch of model inputs) and :meth:`_labelled`
    (a data source -> examples and their label names).
    """

    task: ClassVar[str] = ""
    encoder_task: ClassVar[str] = ""

    def __init__(self, encoder: Encoder, labels: Sequence[str], strategy: str = "finetune") -> None:
        labels = [str(x) for x in labels]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        get_strategy(strategy)  # fail now, not after loading data
        self.labels = labels
        self.label2id = {name: i for i, name in enumerate(labels)}
        self.model = ClassificationModel(encoder, len(labels))
        self.strategy = strategy
        self.results: dict = {}
        self.train_info: dict[str, Any] = {}

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    # -- hooks for the domain ------------------------------------------------------------------
    def _inputs(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _labelled(self, data: Any) -> tuple[Sequence[Any], Sequence[str]]:
        raise NotImplementedError

    def _card_data(self) -> dict[str, Any]:
        return {k: v for k, v in self.train_info.items() if k.endswith("examples")} | {"labels": ", ".join(self.labels)}

    @classmethod
    def _from_encoder(cls, encoder: Encoder, labels: list[str], info: dict) -> TransferClassifier:
        return cls(encoder, labels, info.get("strategy", "finetune"))

    # -- shared behaviour ----------------------------------------------------------------------
    def check_labels(self, targets: Sequence[Any], what: str) -> None:
        """Raise if ``targets`` holds a label this classifier was not built for."""
        unknown = sorted(set(map(str, targets)) - set(self.label2id))
        if unknown:
            raise ValueError(f"{what} has label(s) {unknown} that the classifier does not know "
                             f"(it knows {self.labels}); add them to labels= before training")

    def _train(self, config: TrainConfig, train: Sequence, eval: Sequence | None, *, train_collate: Callable,
               eval_collate: Callable, fingerprints: dict[str, str], lengths: Sequence[int] | None = None,
               probe_train: Sequence | None = None) -> dict:
        """Run the strategy's stages and record how to rebuild the run (``from_run``)."""
        self.results = train_classifier(self.model, config, train, eval, train_collate=train_collate,
                                        eval_collate=eval_collate, fingerprints=fingerprints, lengths=lengths,
                                        probe_train=probe_train,
                                        run_info={"labels": self.labels, "base_model": self.encoder.spec})
        out = Path(config.output_dir)
        final = out / list(self.results)[-1] if len(self.results) > 1 else out
        (out / RUN_FILE).write_text(json.dumps(
            {"base_model": str(self.encoder.spec), "labels": self.labels, "strategy": self.strategy,
             "final_stage_dir": str(final.resolve()), "config": config.to_dict(), **self.train_info},
            indent=2, default=str) + "\n")
        return self.results

    @torch.no_grad()
    def logits(self, examples: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
        """Raw class scores of prepared examples, computed in batches in eval mode."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(examples), batch_size):
            batch = self._inputs(examples[start:start + batch_size])
            out.append(self.model(**{k: v.to(device) for k, v in batch.items()}).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))

    def _predict(self, examples: Sequence[Any], batch_size: int) -> list[dict]:
        probs = self.logits(examples, batch_size).softmax(-1)
        return [{"label": self.labels[int(p.argmax())], "score": float(p.max()),
                 "scores": {name: float(v) for name, v in zip(self.labels, p)}} for p in probs]

    def evaluate(self, data: Any, *, out_dir: str | os.PathLike | None = None, batch_size: int = 64) -> dict:
        """Accuracy, macro-F1, a per-class report and the confusion matrix (PNG written to ``out_dir``)."""
        from .report import plot_confusion

        examples, targets = self._labelled(data)
        self.check_labels(targets, "the evaluation data")
        cm = ConfusionMatrix(len(self.labels))
        for start in range(0, len(examples), batch_size):
            chunk = range(start, min(start + batch_size, len(examples)))
            logits = self.logits([examples[i] for i in chunk], batch_size)
            cm.update(torch.tensor([self.label2id[str(targets[i])] for i in chunk]), logits.argmax(-1))
        result = {**cm.metrics(), "per_class": per_class_report(cm.counts, self.labels),
                  "confusion_matrix": cm.counts.tolist(), "examples": len(examples)}
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            plot_confusion(cm.counts, self.labels, Path(out_dir) / "confusion_matrix.png",
                           title=f"accuracy {result['accuracy']:.3f}")
        return result

    # -- export --------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, *, metrics: dict | None = None) -> Path:
        """Export: a Hugging Face folder (config, safetensors, processor, label maps, model card)
        that ``transformers.pipeline(task)`` loads; LoRA adapters are merged into the weights.
        A plain ``nn.Module`` encoder is saved as ``model.safetensors`` plus ``transferkit.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if has_lora(self.encoder):
            merge_lora(self.encoder)
        hf = self.encoder.hf_model
        info = {"labels": self.labels, "strategy": self.strategy, **self.train_info}
        if hf is not None:
            save_hf_classifier(hf, self.model.head, self.labels, folder)
            if self.encoder.processor is not None:
                self.encoder.processor.save_pretrained(folder)
        else:
            from safetensors.torch import save_model

            save_model(self.model, str(folder / "model.safetensors"))
            info |= {"encoder_spec": self.encoder.spec, "feature_dim": self.encoder.feature_dim}
        (folder / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        write_model_card(folder, task=self.task, base_model=str(self.encoder.spec), strategy=self.strategy,
                         data=self._card_data(), metrics=metrics, pipeline_tag=self.task if hf is not None else None,
                         library_name="transformers" if hf is not None else "transferkit")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, encoder: nn.Module | None = None) -> TransferClassifier:
        """Load an export written by :meth:`save` (pass ``encoder=`` for a custom nn.Module encoder)."""
        folder = Path(folder)
        info = json.loads((folder / INFO_FILE).read_text()) if (folder / INFO_FILE).exists() else {}
        if (folder / "config.json").exists():
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(folder)
            labels = [config.id2label[i] for i in range(config.num_labels)]
            clf = cls._from_encoder(load_encoder(str(folder), task=cls.encoder_task), labels, info)
            clf.model.head.load_state_dict(hf_head_weights(folder, getattr(config, "transferkit_head", "classifier")))
        else:
            from safetensors.torch import load_model

            if "encoder_spec" not in info:
                raise FileNotFoundError(f"{folder} is not a transferkit export (no config.json or {INFO_FILE})")
            spec = encoder if encoder is not None else info["encoder_spec"]
            enc = load_encoder(spec, task=cls.encoder_task, feature_dim=info.get("feature_dim"))
            clf = cls._from_encoder(enc, info["labels"], info)
            load_model(clf.model, str(folder / "model.safetensors"))
        clf.model.head_trained = True
        clf.train_info = {k: v for k, v in info.items() if k != "labels"}
        return clf

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike) -> TransferClassifier:
        """Rebuild the classifier of a ``fit`` run from its best (or else last) checkpoint."""
        from safetensors.torch import load_model

        meta_path = Path(run_dir) / RUN_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"{run_dir} is not a transferkit run folder (no {RUN_FILE})")
        meta = json.loads(meta_path.read_text())
        clf = cls._from_encoder(load_encoder(meta["base_model"], task=cls.encoder_task), meta["labels"], meta)
        if meta["strategy"] == "lora":  # the checkpoint holds adapter weights: put adapters in place first
            get_strategy("lora").param_groups(clf.encoder, clf.model.head, TrainConfig.from_dict(meta["config"]))
        stage = Path(meta["final_stage_dir"])
        for ckpt in (stage / "checkpoints" / "best.safetensors", stage / "checkpoints" / "last" / "model.safetensors"):
            if ckpt.exists():
                load_model(clf.model, str(ckpt))
                break
        else:
            raise FileNotFoundError(f"no checkpoint in {stage / 'checkpoints'}")
        clf.model.head_trained = True
        clf.train_info = {k: v for k, v in meta.items() if k.endswith("examples")}
        return clf


def save_hf_classifier(hf: nn.Module, head: nn.Linear, labels: list[str], folder: Path) -> None:
    """Put the trained head where transformers expects its classifier, save, then take it out again."""
    *parents, last = hf.config.transferkit_head.split(".")
    parent = hf
    for p in parents:
        parent = getattr(parent, p)
    identity = parent[int(last)] if last.isdigit() else getattr(parent, last)
    _set_child(parent, last, head)
    hf.config.num_labels = len(labels)
    hf.config.id2label = dict(enumerate(labels))
    hf.config.label2id = {name: i for i, name in enumerate(labels)}
    try:
        with quiet_transformers():
            hf.save_pretrained(folder, safe_serialization=True)
    finally:
        _set_child(parent, last, identity)


def _set_child(parent: nn.Module, name: str, module: nn.Module) -> None:
    if name.isdigit():
        parent[int(name)] = module
    else:
        setattr(parent, name, module)


def hf_head_weights(folder: Path, head_path: str) -> dict[str, torch.Tensor]:
    """The classifier's weight and bias from an exported Hugging Face folder."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    prefix = head_path + "."
    head = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if set(head) != {"weight", "bias"}:
        raise ValueError(f"{folder} has no classifier weights under {head_path!r}")
    return head
