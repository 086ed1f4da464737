"""The command-line verbs of a classifier, written once over its modality adapter.

``add_classifier_verbs(verbs, ImageClassifier, ...)`` gives a domain ``fit``, ``audit``, ``evaluate``,
``predict``, ``export``, ``push`` and ``curve``; the domain names only the dataclasses of its own flags
and which of them go to the encoder (``from_pretrained``) and which to ``fit``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audit import AuditConfig
from .cli import add_model_verbs, add_verb, dataclass_from_args, print_json, train_from_args

__all__ = ["AuditArgs", "FitArgs", "add_classifier_verbs"]

Options = Callable[[argparse.Namespace], dict[str, Any]]


@dataclass
class FitArgs:
    model: str = field(metadata={"help": "The pretrained encoder: a Hub id, a local Hugging Face folder, "
                                         "or a scheme spec (packaged:<name>, torchvision:<name>, ...)."})
    train: str = field(metadata={"help": "Labelled data: a folder (one sub-folder per label) or a CSV/TSV manifest "
                                         "of path,label."})
    eval: str | None = field(default=None, metadata={"help": "Evaluation folder or manifest (selects the best epoch)."})
    labels: list[str] | None = field(default=None, metadata={"help": "Class names (default: those found in --train)."})


@dataclass
class AuditArgs:
    data: str = field(metadata={"help": "Labelled data: a folder (one sub-folder per label) or a CSV/TSV manifest "
                                        "of path,label; only read.", "positional": True})
    model: str = field(metadata={"help": "The encoder whose features the audit compares (as for fit --model)."})
    test: str | None = field(default=None, metadata={"help": "Test folder or manifest: training items copied from it are leakage."})
    out: str | None = field(default="audit", metadata={"help": "Folder for audit.md, audit.html, flagged.csv, audit-config.json."})
    write_clean: str | None = field(default=None, metadata={"help": "Write a path,label CSV of the items that stay (fit reads it)."})


def _none(args: argparse.Namespace) -> dict[str, Any]:
    return {}


def add_classifier_verbs(verbs: Any, task: type, *, fit_args: type = FitArgs, encoder_configs: Sequence[type] = (),
                         fit_configs: Sequence[type] = (), encoder_options: Options = _none, fit_options: Options = _none,
                         audit_args: type = AuditArgs, audit_configs: Sequence[type] = (), audit_options: Options = _none, task_for: Callable[[str], type] | None = None, fit_help: str | None = None,
                         noun: str = "file") -> dict[str, argparse.ArgumentParser]:
    """``fit``, ``audit``, ``evaluate``, ``predict``, ``export``, ``push`` and ``curve`` for the classifier ``task``
    (a :class:`~transferkit.common.classifier.TransferClassifier` with a ``modality``).

    Args:
        fit_args: the dataclass of fit's data flags (:class:`FitArgs` or one with more fields).
        encoder_configs, fit_configs: dataclasses of the domain's own fit flags.
        encoder_options: the parsed flags -> keywords of ``task.from_pretrained`` (``weights=...``).
        fit_options: the parsed flags -> keywords of ``task.fit`` (``augment=AugmentConfig(...)``).
        audit_args: the dataclass of the audit's data flags (:class:`AuditArgs` or one with more fields).
        audit_configs, audit_options: the audit's own flags and the keywords they give ``load_encoder``.
        task_for: an export or run folder -> the task class that loads it (default: ``task``).
        noun: what one item is called in help texts (``image``, ``audio file``).

    Returns:
        the verbs' parsers by name (a domain adds hidden legacy flags to them).
    """
    modality = task.modality
    task_for = task_for or (lambda folder: task)

    def fit(args: argparse.Namespace) -> int:
        from .trainer import process_state

        inputs = dataclass_from_args(fit_args, args)
        config, strategy, search = train_from_args(args)
        clf = task.from_pretrained(inputs.model, labels=inputs.labels or task.labels_of(inputs.train), strategy=strategy,
                                   **encoder_options(args))
        clf.fit(inputs.train, eval=inputs.eval, config=config, **fit_options(args), **search)
        if not process_state().is_main_process:  # under several processes the main one evaluates and exports
            return 0
        metrics = None
        if inputs.eval:
            result = clf.evaluate(inputs.eval, out_dir=config.output_dir)
            metrics = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
        folder = clf.save(Path(config.output_dir) / "model", metrics=metrics)
        skipped = {k: v for k, v in clf.train_info.items() if k.startswith("skipped")}
        print_json({"model": str(folder), "metrics": metrics, **skipped})
        return 0

    def audit(args: argparse.Namespace) -> int:
        from .audit import write_outputs
        from .audit_driver import audit_data

        a = dataclass_from_args(audit_args, args)
        checks = dataclass_from_args(modality.checks_class, args) if modality.checks_class else None
        encoder = modality.encoder_for(a.model, **audit_options(args))
        report = audit_data(modality(encoder, checks=checks), a.data, a.test, dataclass_from_args(AuditConfig, args))
        print_json(write_outputs(report, a.out, a.write_clean))
        return 0

    def new_classifier(model: str, train: str) -> Any:
        return task.from_pretrained(model, labels=task.labels_of(train))

    extra = (modality.checks_class,) if modality.checks_class else ()
    parsers = {
        "audit": add_verb(verbs, "audit", audit, f"flag unusable {noun}s, duplicates, train/test leakage, likely label "
                          "errors and outliers", audit_args, AuditConfig, *extra, *audit_configs),
        "fit": add_verb(verbs, "fit", fit, fit_help or f"fine-tune an encoder on labelled {noun}s and export the model",
                        fit_args, *encoder_configs, *fit_configs, train=True),
    }
    add_model_verbs(verbs, task_for, evaluate_help="accuracy, macro-F1, per-class report and confusion matrix",
                    predict_help=f"label and probabilities for each {noun}", file_key=modality.kind,
                    new_task=new_classifier)
    return parsers

