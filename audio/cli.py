"""Audio classification and CTC speech recognition: fit, fit-ctc, evaluate, predict, export, pretrain, push."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferkit.common import TrainConfig
from transferkit.common.cli import add_verb, dataclass_from_args, print_json, train_from_args
from transferkit.common.cli_verbs import AuditArgs, FitArgs, add_classifier_verbs

from .config import AudioModelConfig, ClipCrop, ClipFilter, CTCConfig, PretrainConfig
from .whisper_cli import add_whisper_verbs

_MODEL_HELP = "Hub id or local Hugging Face folder of a wav2vec2-family encoder."


AudioFitArgs = FitArgs  # the classifier's fit flags (the name kept for imports)
AudioAuditArgs = AuditArgs


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


def _encoder_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"config": dataclass_from_args(AudioModelConfig, args)}


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_seconds": dataclass_from_args(ClipCrop, args).max_seconds}


def register(parser: argparse.ArgumentParser) -> None:
    from .classifier import AudioClassifier

    verbs = parser.add_subparsers(dest="verb", required=True)
    parsers = add_classifier_verbs(verbs, AudioClassifier, encoder_configs=(AudioModelConfig,), fit_configs=(ClipCrop,),
                                   encoder_options=_encoder_options, fit_options=_fit_options, task_for=_task,
                                   noun="audio file", fit_help="fine-tune a speech encoder on an audio folder / "
                                                               "manifest and export it")
    ctc = add_verb(verbs, "fit-ctc", _fit_ctc, "fine-tune a CTC speech recognizer on a path,transcript manifest",
                   CTCFitArgs, CTCConfig, ClipFilter, train=True)
    for verb in (parsers["fit"], ctc):
        # the flag before the front-end setting became a config field; still accepted
        verb.add_argument("--train-feature-encoder", dest="freeze_feature_encoder", action="store_false",
                          default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_whisper_verbs(verbs)  # fit-whisper (audio/whisper_cli.py)
    add_verb(verbs, "pretrain", _pretrain, "continue wav2vec2 self-supervised pretraining on unlabelled audio",
             PretrainArgs, PretrainConfig, TrainConfig)


def _is_recognizer(folder: str) -> bool:
    path = Path(folder)
    if (path / "transferkit-run.json").exists():
        return json.loads((path / "transferkit-run.json").read_text()).get("task") == "SpeechRecognizer"
    return (path / "vocab.json").exists()


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


def _is_whisper(folder: str) -> bool:
    """A WhisperRecognizer run (its run file) or export (``whisper_config`` in transferkit.json, or a bare
    Hugging Face sequence-to-sequence Whisper folder)."""
    path = Path(folder)
    if (path / "transferkit-run.json").exists():
        return json.loads((path / "transferkit-run.json").read_text()).get("task") == "WhisperRecognizer"
    if (path / "transferkit.json").exists():
        return "whisper_config" in json.loads((path / "transferkit.json").read_text())
    config = path / "config.json"
    return config.exists() and "WhisperForConditionalGeneration" in json.loads(config.read_text()).get("architectures", [])


def _task(folder: str) -> type:
    from .classifier import AudioClassifier
    from .recognizer import SpeechRecognizer

    if _is_whisper(folder):
        from .whisper import WhisperRecognizer

        return WhisperRecognizer
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
