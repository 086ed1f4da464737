"""``transferkit audio fit-whisper``: fine-tune a Whisper on a path,transcript manifest and export it.

The zero-shot model is scored on ``--eval`` first, with the same decoding and normaliser, so the
printed result always carries its baseline.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferkit.common.cli import add_verb, dataclass_from_args, print_json, train_from_args

from .whisper import WhisperConfig


@dataclass
class WhisperFitArgs:
    model: str = field(metadata={"help": "packaged:whisper_tiny_en, packaged:whisper_base, or a Hugging Face Whisper folder."})
    train: str = field(metadata={"help": "CSV/TSV manifest with path,transcript columns."})
    eval: str | None = field(default=None, metadata={"help": "Evaluation manifest (scored zero-shot first; selects the "
                                                             "epoch with the lowest normalised WER)."})


def add_whisper_verbs(verbs: Any) -> None:
    """Register ``fit-whisper`` on the audio domain's sub-parsers."""
    add_verb(verbs, "fit-whisper", _fit_whisper, "fine-tune a Whisper speech recognizer on a path,transcript manifest",
             WhisperFitArgs, WhisperConfig, train=True)


def _fit_whisper(args: argparse.Namespace) -> int:
    from transferkit.common.trainer import process_state

    from .whisper import WhisperRecognizer

    inputs = dataclass_from_args(WhisperFitArgs, args)
    config, strategy, _ = train_from_args(args)
    if not {"metric_for_best", "greater_is_better"} & set(vars(args)):
        config = config.replace(metric_for_best="wer", greater_is_better=False)
    asr = WhisperRecognizer.from_pretrained(inputs.model, strategy=strategy, config=dataclass_from_args(WhisperConfig, args))
    zero_shot = asr.evaluate(inputs.eval) if inputs.eval else None
    asr.fit(inputs.train, eval=inputs.eval, config=config)
    if not process_state().is_main_process:
        return 0
    metrics = asr.evaluate(inputs.eval) if inputs.eval else None
    card = {f"{k} (zero-shot)": v for k, v in (zero_shot or {}).items() if k in ("wer", "cer", "orthographic_wer")}
    folder = asr.save(Path(config.output_dir) / "model", metrics={**card, **(metrics or {})} or None)
    print_json({"model": str(folder), "zero_shot": zero_shot, "metrics": metrics, "skipped": str(asr.skip_report)})
    return 0
