"""Image classification: fit, evaluate, predict, export, push."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.common.audit import AuditConfig
from transferkit.common.cli import add_model_verbs, add_verb, dataclass_from_args, print_json, train_from_args

from .transforms import AugmentConfig


@dataclass
class ImageFitArgs:
    model: str = field(metadata={"help": "Hub id, local Hugging Face folder, or torchvision:<name> (with --weights)."})
    train: str = field(metadata={"help": "Image folder (one sub-folder per class) or CSV of path,label."})
    eval: str | None = field(default=None, metadata={"help": "Evaluation folder or CSV (selects the best epoch)."})
    labels: list[str] | None = field(default=None, metadata={"help": "Class names (default: those found in --train)."})
    weights: str | None = field(default=None, metadata={"help": "Local weights file for a scheme spec (torchvision:<name>)."})
    decode_cache: bool = field(default=True, metadata={"help": "Decode and resize each image file once, into memory-mapped "
                                                               "arrays under $TRANSFERKIT_CACHE/decoded."})


@dataclass
class ImageAuditArgs:
    data: str = field(metadata={"help": "Image folder (one sub-folder per class) or CSV of path,label; only read.",
                                "positional": True})
    model: str = field(metadata={"help": "The encoder whose features the audit compares (as for fit --model)."})
    test: str | None = field(default=None, metadata={"help": "Test folder or CSV: training items copied from it are leakage."})
    out: str | None = field(default="audit", metadata={"help": "Folder for audit.md, audit.html, flagged.csv, audit-config.json."})
    write_clean: str | None = field(default=None, metadata={"help": "Write a path,label CSV of the items that stay (fit reads it)."})
    weights: str | None = field(default=None, metadata={"help": "Local weights file for a scheme spec (torchvision:<name>)."})


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", required=True)
    add_verb(verbs, "audit", _audit, "flag unreadable images, duplicates, train/test leakage, likely label errors and outliers",
             ImageAuditArgs, AuditConfig)
    add_verb(verbs, "fit", _fit, "fine-tune an encoder on an image folder / CSV and export the model",
             ImageFitArgs, AugmentConfig, train=True)
    add_model_verbs(verbs, _task, evaluate_help="accuracy, macro-F1, per-class report and confusion matrix",
                    predict_help="label and probabilities for each image", file_key="image",
                    new_task=_new_classifier)


def _new_classifier(model: str, train: str):
    from .classifier import ImageClassifier
    from .data import as_image_set

    return ImageClassifier.from_pretrained(model, labels=as_image_set(train).labels)


def _task(folder: str) -> type:
    from .classifier import ImageClassifier

    return ImageClassifier


def _audit(args: argparse.Namespace) -> int:
    from transferkit.common.audit import write_outputs

    from .audit import audit

    a = dataclass_from_args(ImageAuditArgs, args)
    report = audit(a.data, a.model, test=a.test, config=dataclass_from_args(AuditConfig, args), weights=a.weights)
    print_json(write_outputs(report, a.out, a.write_clean))
    return 0


def _fit(args: argparse.Namespace) -> int:
    from transferkit.common.trainer import process_state

    from .classifier import ImageClassifier
    from .data import as_image_set

    inputs = dataclass_from_args(ImageFitArgs, args)
    train = as_image_set(inputs.train)
    config, strategy, search = train_from_args(args)
    clf = ImageClassifier.from_pretrained(inputs.model, labels=inputs.labels or train.labels, strategy=strategy,
                                          **({"weights": inputs.weights} if inputs.weights else {}))
    clf.fit(train, eval=inputs.eval, config=config, augment=dataclass_from_args(AugmentConfig, args),
            decode_cache=inputs.decode_cache, **search)
    if not process_state().is_main_process:  # under several processes the main one evaluates and exports
        return 0
    metrics = None
    if inputs.eval:
        result = clf.evaluate(inputs.eval, out_dir=config.output_dir)
        metrics = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
    folder = clf.save(Path(config.output_dir) / "model", metrics=metrics)
    print_json({"model": str(folder), "metrics": metrics})
    return 0
