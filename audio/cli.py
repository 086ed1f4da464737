"""Audio classification and CTC speech recognition: fit, evaluate, predict, transcribe, pretrain, push."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transferkit.common.cli import (
    add_evaluate_verb,
    add_predict_verb,
    add_push_verb,
    add_train_arguments,
    dataclass_from_args,
    print_json,
    report_evaluation,
)
from transferkit.common.config import TrainConfig


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", required=True)

    fit = verbs.add_parser("fit", help="fine-tune a speech encoder on an audio folder / manifest and export it")
    fit.add_argument("--model", required=True, help="Hub id or local HF folder of a wav2vec2-family encoder")
    fit.add_argument("--train", required=True, help="audio folder (one sub-folder per label) or CSV/TSV of path,label")
    fit.add_argument("--eval", help="evaluation folder or manifest (selects the best epoch)")
    fit.add_argument("--labels", nargs="+", help="class names (default: those found in --train)")
    fit.add_argument("--layer-sum", action="store_true", help="pool a learned weighted sum of all layers (SUPERB)")
    fit.add_argument("--train-feature-encoder", action="store_true", help="let the CNN front end learn too")
    fit.add_argument("--max-seconds", type=float, help="random crop of longer training clips")
    add_train_arguments(fit)
    fit.set_defaults(func=_fit)

    asr = verbs.add_parser("fit-ctc", help="fine-tune a CTC speech recognizer on a path,transcript manifest")
    asr.add_argument("--model", required=True, help="Hub id or local HF folder of a wav2vec2-family encoder")
    asr.add_argument("--train", required=True, help="CSV/TSV manifest with path,transcript columns")
    asr.add_argument("--eval", help="evaluation manifest (selects the epoch with the lowest WER)")
    asr.add_argument("--chars-to-ignore", help="characters removed from transcripts before building the vocabulary")
    asr.add_argument("--mask-time-prob", type=float, default=0.05, help="SpecAugment time-mask probability")
    asr.add_argument("--layerdrop", type=float, default=0.0, help="probability of skipping a transformer layer")
    asr.add_argument("--min-seconds", type=float, help="drop (and count) shorter clips")
    asr.add_argument("--max-seconds", type=float, help="drop (and count) longer clips")
    asr.add_argument("--train-feature-encoder", action="store_true", help="let the CNN front end learn too")
    add_train_arguments(asr)
    asr.set_defaults(func=_fit_ctc)

    add_evaluate_verb(verbs, _evaluate, help="accuracy/macro-F1 (classifier) or WER/CER (recognizer)",
                      data_help="audio folder or manifest")

    add_predict_verb(verbs, _predict, help="label (classifier) or transcript (recognizer) for each audio file",
                     files_help="audio files")

    pt = verbs.add_parser("pretrain", help="continue wav2vec2 self-supervised pretraining on unlabelled audio")
    pt.add_argument("--model", required=True, help="Hub id or local HF folder of a wav2vec2 model")
    pt.add_argument("--train", required=True, help="audio folder or manifest (labels are ignored)")
    pt.add_argument("--eval", help="held-out unlabelled audio")
    add_train_arguments(pt)
    pt.set_defaults(func=_pretrain)

    add_push_verb(verbs)


def _is_recognizer(folder: str) -> bool:
    return (Path(folder) / "vocab.json").exists()


def _fit(args: argparse.Namespace) -> int:
    from .classifier import AudioClassifier
    from .data import as_audio_dataset

    train = as_audio_dataset(args.train)
    labels = args.labels or sorted({str(t) for t in train.targets})
    config = dataclass_from_args(TrainConfig, args)
    clf = AudioClassifier.from_pretrained(args.model, labels=labels, strategy=config.strategy, layer_sum=args.layer_sum,
                                          freeze_feature_encoder=not args.train_feature_encoder)
    clf.fit(train, eval=args.eval, config=config, max_seconds=args.max_seconds)
    metrics = None
    if args.eval:
        result = clf.evaluate(args.eval, out_dir=config.output_dir)
        metrics = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
    folder = clf.save(Path(config.output_dir) / "model", metrics=metrics)
    print_json({"model": str(folder), "metrics": metrics, "skipped": str(train.report)})
    return 0


def _fit_ctc(args: argparse.Namespace) -> int:
    from .data import as_audio_dataset
    from .recognizer import SpeechRecognizer
    from .vocab import DEFAULT_CHARS_TO_IGNORE

    train = as_audio_dataset(args.train)
    config = dataclass_from_args(TrainConfig, args, metric_for_best="wer", greater_is_better=False)
    asr = SpeechRecognizer.from_pretrained(
        args.model, transcripts=[str(t) for t in train.targets], strategy=config.strategy,
        chars_to_ignore=DEFAULT_CHARS_TO_IGNORE if args.chars_to_ignore is None else args.chars_to_ignore,
        mask_time_prob=args.mask_time_prob, layerdrop=args.layerdrop,
        freeze_feature_encoder=not args.train_feature_encoder)
    asr.fit(train, eval=args.eval, config=config, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    metrics = asr.evaluate(args.eval) if args.eval else None
    folder = asr.save(Path(config.output_dir) / "model", metrics=metrics)
    print_json({"model": str(folder), "metrics": metrics, "skipped": str(asr.skip_report)})
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if _is_recognizer(args.model):
        from .recognizer import SpeechRecognizer

        result = SpeechRecognizer.load(args.model).evaluate(args.data)
    else:
        from .classifier import AudioClassifier

        result = AudioClassifier.load(args.model).evaluate(args.data, out_dir=args.out)
    report_evaluation(result, args.out)
    return 0


def _predict(args: argparse.Namespace) -> int:
    if _is_recognizer(args.model):
        from .recognizer import SpeechRecognizer

        for path, text in zip(args.files, SpeechRecognizer.load(args.model).transcribe(args.files)):
            print(json.dumps({"file": path, "text": text}))
        return 0
    from .classifier import AudioClassifier

    for path, pred in zip(args.files, AudioClassifier.load(args.model).predict(args.files)):
        print(json.dumps({"file": path, "label": pred["label"], "score": round(pred["score"], 4)}))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from .pretrain import pretrain

    config = dataclass_from_args(TrainConfig, args)
    res = pretrain(args.train, args.model, output_dir=config.output_dir, eval_audio=args.eval, config=config)
    print_json({"encoder": res.folder, "final": res.final})
    return 0

