"""Image classification: fit, evaluate, predict, export, push."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transferkit.common.cli import (
    add_dataclass_arguments,
    add_evaluate_verb,
    add_predict_verb,
    add_push_verb,
    add_train_arguments,
    dataclass_from_args,
    print_json,
    report_evaluation,
)
from transferkit.common.config import TrainConfig

from .transforms import AugmentConfig


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", required=True)

    fit = verbs.add_parser("fit", help="fine-tune an encoder on an image folder / CSV and export the model")
    fit.add_argument("--model", required=True, help="Hub id, local HF folder, or torchvision:<name> (with --weights)")
    fit.add_argument("--weights", help="local weights file for torchvision:<name>")
    fit.add_argument("--train", required=True, help="image folder (one sub-folder per class) or CSV of path,label")
    fit.add_argument("--eval", help="evaluation folder or CSV (selects the best epoch)")
    fit.add_argument("--labels", nargs="+", help="class names (default: those found in --train)")
    add_train_arguments(fit)
    add_dataclass_arguments(fit, AugmentConfig)
    fit.set_defaults(func=_fit)

    add_evaluate_verb(verbs, _evaluate, help="accuracy, macro-F1, per-class report and confusion matrix",
                      data_help="image folder or CSV")

    add_predict_verb(verbs, _predict, help="label and probabilities for each image", files_help="image files")

    ex = verbs.add_parser("export", help="export the best checkpoint of a training run")
    ex.add_argument("--run", required=True, help="the output_dir of `fit`")
    ex.add_argument("--out", required=True, help="export folder")
    ex.set_defaults(func=_export)

    add_push_verb(verbs)


def _fit(args: argparse.Namespace) -> int:
    from .classifier import ImageClassifier
    from .data import as_image_set

    train = as_image_set(args.train)
    labels = args.labels or train.labels
    config = dataclass_from_args(TrainConfig, args)
    clf = ImageClassifier.from_pretrained(args.model, labels=labels, strategy=config.strategy,
                                          **({"weights": args.weights} if args.weights else {}))
    clf.fit(train, eval=args.eval, config=config, augment=dataclass_from_args(AugmentConfig, args))
    metrics = None
    if args.eval:
        result = clf.evaluate(args.eval, out_dir=config.output_dir)
        metrics = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
    folder = clf.save(Path(config.output_dir) / "model", metrics=metrics)
    print_json({"model": str(folder), "metrics": metrics})
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .classifier import ImageClassifier

    report_evaluation(ImageClassifier.load(args.model).evaluate(args.data, out_dir=args.out), args.out)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .classifier import ImageClassifier

    clf = ImageClassifier.load(args.model)
    for path, pred in zip(args.files, clf.predict(args.files)):
        print(json.dumps({"image": path, "label": pred["label"], "score": round(pred["score"], 4)}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .classifier import ImageClassifier

    clf = ImageClassifier.from_run(args.run)
    print_json({"model": str(clf.save(args.out))})
    return 0

