"""Image classification: fit, evaluate, predict, export, push."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.common.cli import (
    EvaluateArgs,
    ExportArgs,
    PredictArgs,
    add_push_verb,
    add_verb,
    dataclass_from_args,
    print_json,
    report_evaluation,
    train_from_args,
)

from .transforms import AugmentConfig


@dataclass
class ImageFitArgs:
    model: str = field(metadata={"help": "Hub id, local Hugging Face folder, or torchvision:<name> (with --weights)."})
    train: str = field(metadata={"help": "Image folder (one sub-folder per class) or CSV of path,label."})
    eval: str | None = field(default=None, metadata={"help": "Evaluation folder or CSV (selects the best epoch)."})
    labels: list[str] | None = field(default=None, metadata={"help": "Class names (default: those found in --train)."})
    weights: str | None = field(default=None, metadata={"help": "Local weights file for a scheme spec (torchvision:<name>)."})


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", required=True)
    add_verb(verbs, "fit", _fit, "fine-tune an encoder on an image folder / CSV and export the model",
             ImageFitArgs, AugmentConfig, train=True)
    add_verb(verbs, "evaluate", _evaluate, "accuracy, macro-F1, per-class report and confusion matrix", EvaluateArgs)
    add_verb(verbs, "predict", _predict, "label and probabilities for each image", PredictArgs)
    add_verb(verbs, "export", _export, "export the best checkpoint of a training run", ExportArgs)
    add_push_verb(verbs)


def _fit(args: argparse.Namespace) -> int:
    from .classifier import ImageClassifier
    from .data import as_image_set

    inputs = dataclass_from_args(ImageFitArgs, args)
    train = as_image_set(inputs.train)
    config, strategy = train_from_args(args)
    clf = ImageClassifier.from_pretrained(inputs.model, labels=inputs.labels or train.labels, strategy=strategy,
                                          **({"weights": inputs.weights} if inputs.weights else {}))
    clf.fit(train, eval=inputs.eval, config=config, augment=dataclass_from_args(AugmentConfig, args))
    metrics = None
    if inputs.eval:
        result = clf.evaluate(inputs.eval, out_dir=config.output_dir)
        metrics = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
    folder = clf.save(Path(config.output_dir) / "model", metrics=metrics)
    print_json({"model": str(folder), "metrics": metrics})
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    args = dataclass_from_args(EvaluateArgs, args)
    from .classifier import ImageClassifier

    report_evaluation(ImageClassifier.load(args.model).evaluate(args.data, out_dir=args.out), args.out)
    return 0


def _predict(args: argparse.Namespace) -> int:
    args = dataclass_from_args(PredictArgs, args)
    from .classifier import ImageClassifier

    clf = ImageClassifier.load(args.model)
    for path, pred in zip(args.files, clf.predict(args.files)):
        print(json.dumps({"image": path, "label": pred["label"], "score": round(pred["score"], 4)}))
    return 0


def _export(args: argparse.Namespace) -> int:
    args = dataclass_from_args(ExportArgs, args)
    from .classifier import ImageClassifier

    clf = ImageClassifier.from_run(args.run)
    print_json({"model": str(clf.save(args.out))})
    return 0
