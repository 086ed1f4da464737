"""Image classification: fit, audit, evaluate, predict, export, push, curve."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from transferkit.common.cli import dataclass_from_args
from transferkit.common.cli_verbs import AuditArgs, FitArgs, add_classifier_verbs

from .transforms import AugmentConfig

_WEIGHTS_HELP = "Local weights file for a scheme spec (torchvision:<name>)."


@dataclass
class ImageFitArgs(FitArgs):
    weights: str | None = field(default=None, metadata={"help": _WEIGHTS_HELP})
    decode_cache: bool = field(default=True, metadata={"help": "Decode and resize each image file once, into memory-mapped "
                                                               "arrays under $TRANSFERKIT_CACHE/decoded."})


@dataclass
class ImageAuditArgs(AuditArgs):
    weights: str | None = field(default=None, metadata={"help": _WEIGHTS_HELP})


def _weights(args: argparse.Namespace) -> dict[str, Any]:
    return {"weights": args.weights} if getattr(args, "weights", None) else {}


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"augment": dataclass_from_args(AugmentConfig, args),
            "decode_cache": dataclass_from_args(ImageFitArgs, args).decode_cache}


def register(parser: argparse.ArgumentParser) -> None:
    from .classifier import ImageClassifier

    verbs = parser.add_subparsers(dest="verb", required=True)
    add_classifier_verbs(verbs, ImageClassifier, fit_args=ImageFitArgs, fit_configs=(AugmentConfig,),
                         encoder_options=_weights, fit_options=_fit_options, audit_args=ImageAuditArgs,
                         audit_options=_weights, noun="image",
                         fit_help="fine-tune an encoder on an image folder / CSV and export the model")
