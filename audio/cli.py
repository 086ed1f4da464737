"""Audio classification and CTC speech recognition: fit, fit-ctc, evaluate, predict, export, pretrain, push."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.common import TrainConfig
from transferkit.common.audit import AuditConfig
from transferkit.common.cli import add_model_verbs, add_verb, dataclass_from_args, print_json, train_from_args

from .config import AudioModelConfig, ClipCrop, ClipFilter, CTCConfig, PretrainConfig
from .whisper_cli import add_whisper_verbs

_MODEL_HELP = "Hub id or local Hugging Face folder of a wav2vec2-family encoder."


@dataclass
class AudioFitArgs:
    model: str = field(metadata={"help": _MODEL_HELP})
    train: str = field(metadata={"help": "Audio folder (one sub-folder per label) or CSV/TSV of path,label."})
    eval: str | None = field(default=None, metadata={"help": "Evaluation folder or manifest (selects the best epoch)."})
    labels: list[str] | None = field(default=None, metadata={"help": "Class names (default: those found in --train)."})


@dataclass
class CTCFitArgs:
    model: str = field(metadata={"help": _MODEL_HELP})
    train: str = field(metadata={"help": "CSV/TSV manifest with path,transcript columns."})
    eval: str | None = field(default=None, metadata={"help": "Evaluation manifest (selects the epoch with the lowest WER)."})


@dataclass
class PretrainArgs:
    model: str = field(metadata={"help": "Hub id or local Hugging Face folder of a wav2vec2 model."})
    train: str = field(metadata={"help": "Audio folder or manifest (labels are ignored)."})
    eval: str | None = field(default=None, metadata={"help": "Held-out unlabelled audio."})


@dataclass
class AudioAuditArgs:
    data: str = field(metadata={"help": "Audio folder (one sub-folder per label) or CSV/TSV of path,label; only read.",
                                "positional": True})
    model: str = field(metadata={"help": "The encoder whose features the audit compares (as for fit --model)."})
    test: str | None = field(default=None, metadata={"help": "Test folder or manifest: training clips copied from it are leakage."})
    out: str | None = field(default="audit", metadata={"help": "Folder for audit.md, audit.html, flagged.csv, audit-config.json."})
    write_clean: str | None = field(default=None, metadata={"help": "Write a path,label CSV of the clips that stay (fit reads it)."})


def register(parser: argparse.ArgumentParser) -> None:
    from .audit import ClipChecks

    verbs = parser.add_subparsers(dest="verb", required=True)
    add_verb(verbs, "audit", _audit, "flag unreadable, silent or clipped clips, duplicates, leakage, label errors, outliers",
             AudioAuditArgs, AuditConfig, ClipChecks)
    for verb in (add_verb(verbs, "fit", _fit, "fine-tune a speech encoder on an audio folder / manifest and export it",
                          AudioFitArgs, AudioModelConfig, ClipCrop, train=True),
                 add_verb(verbs, "fit-ctc", _fit_ctc, "fine-tune a CTC speech recognizer on a path,transcript manifest",
                          CTCFitArgs, CTCConfig, ClipFilter, train=True)):
        # the flag before the front-end setting became a config field; still accepted
        verb.add_argument("--train-feature-encoder", dest="freeze_feature_encoder", action="store_false",
                          default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_whisper_verbs(verbs)  # fit-whisper (audio/whisper_cli.py)
    add_verb(verbs, "pretrain", _pretrain, "continue wav2vec2 self-supervised pretraining on unlabelled audio",
             PretrainArgs, PretrainConfig, TrainConfig)
    add_model_verbs(verbs, _task, evaluate_help="accuracy/macro-F1 (classifier) or WER/CER (recognizer)",
                    predict_help="label (classifier) or transcript (recognizer) for each audio file",
                    new_task=_new_classifier)


def _new_classifier(model: str, train: str):
    from .classifier import AudioClassifier
    from .data import as_audio_dataset

    return AudioClassifier.from_pretrained(model, labels=sorted({str(t) for t in as_audio_dataset(train).targets}))


def _is_recognizer(folder: str) -> bool:
    path = Path(folder)
    if (path / "transferkit-run.json").exists():
        return json.loads((path / "transferkit-run.json").read_text()).get("task") == "SpeechRecognizer"
    return (path / "vocab.json").exists()


def _audit(args: argparse.Namespace) -> int:
    from transferkit.common.audit import write_outputs

    from .audit import ClipChecks, audit

    a = dataclass_from_args(AudioAuditArgs, args)
    report = audit(a.data, a.model, test=a.test, config=dataclass_from_args(AuditConfig, args),
                   checks=dataclass_from_args(ClipChecks, args))
    print_json(write_outputs(report, a.out, a.write_clean))
    return 0


def _fit(args: argparse.Namespace) -> int:
    from transferkit.common.trainer import process_state

    from .classifier import AudioClassifier
    from .data import as_audio_dataset

    inputs = dataclass_from_args(AudioFitArgs, args)
    train = as_audio_dataset(inputs.train)
    config, strategy, search = train_from_args(args)
    clf = AudioClassifier.from_pretrained(inputs.model, labels=inputs.labels or sorted({str(t) for t in train.targets}),
                                          strategy=strategy, config=dataclass_from_args(AudioModelConfig, args))
    clf.fit(train, eval=inputs.eval, config=config, max_seconds=dataclass_from_args(ClipCrop, args).max_seconds, **search)
    if not process_state().is_main_process:  # under several processes the main one evaluates and exports
        return 0
    metrics = None
    if inputs.eval:
        result = clf.evaluate(inputs.eval, out_dir=config.output_dir)
        metrics = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
    folder = clf.save(Path(config.output_dir) / "model", metrics=metrics)
    print_json({"model": str(folder), "metrics": metrics, "skipped": str(train.report)})
    return 0


def _fit_ctc(args: argparse.Namespace) -> int:
    from transferkit.common.trainer import process_state

    from .data import as_audio_dataset
    from .recognizer import SpeechRecognizer

    inputs = dataclass_from_args(CTCFitArgs, args)
    train = as_audio_dataset(inputs.train)
    config, strategy, _ = train_from_args(args)  # the recognizer has no recipe search
    if not {"metric_for_best", "greater_is_better"} & set(vars(args)):
        config = config.replace(metric_for_best="wer", greater_is_better=False)
    asr = SpeechRecognizer.from_pretrained(inputs.model, transcripts=[str(t) for t in train.targets], strategy=strategy,
                                           config=dataclass_from_args(CTCConfig, args))
    clips = dataclass_from_args(ClipFilter, args)
    asr.fit(train, eval=inputs.eval, config=config, min_seconds=clips.min_seconds, max_seconds=clips.max_seconds)
    if not process_state().is_main_process:  # under several processes the main one evaluates and exports
        return 0
    metrics = asr.evaluate(inputs.eval) if inputs.eval else None
    folder = asr.save(Path(config.output_dir) / "model", metrics=metrics)
    print_json({"model": str(folder), "metrics": metrics, "skipped": str(asr.skip_report)})
    return 0


def _task(folder: str) -> type:
    from .classifier import AudioClassifier
    from .recognizer import SpeechRecognizer

    return SpeechRecognizer if _is_recognizer(folder) else AudioClassifier


def _pretrain(args: argparse.Namespace) -> int:
    from .pretrain import pretrain

    inputs = dataclass_from_args(PretrainArgs, args)
    config = dataclass_from_args(TrainConfig, args)
    if "metric_for_best" not in vars(args):  # pretraining has no accuracy: keep the lowest held-out loss
        config = config.replace(metric_for_best="eval_loss", greater_is_better=False)
    res = pretrain(inputs.train, inputs.model, output_dir=config.output_dir, eval_audio=inputs.eval, config=config,
                   pretrain_config=dataclass_from_args(PretrainConfig, args))
    print_json({"encoder": res.folder, "final": res.final})
    return 0
