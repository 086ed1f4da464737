"""Every verb's options come from dataclasses: the flags in ``--help`` are exactly the dataclasses' fields."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from transferkit.audio.audit import ClipChecks
from transferkit.audio.cli import AudioAuditArgs, AudioFitArgs, CTCFitArgs, PretrainArgs
from transferkit.audio.config import AudioModelConfig, ClipCrop, ClipFilter, CTCConfig, PretrainConfig
from transferkit.audio.whisper import WhisperConfig
from transferkit.audio.whisper_cli import WhisperFitArgs
from transferkit.common import TrainConfig
from transferkit.common.audit import AuditConfig
from transferkit.common.cli import CurveArgs, EvaluateArgs, ExportArgs, PredictArgs, PushArgs, build_parser
from transferkit.common.search import SearchConfig
from transferkit.common.strategies import strategy_classes
from transferkit.vision.cli import ImageAuditArgs, ImageFitArgs
from transferkit.vision.transforms import AugmentConfig


def _flags(cls: type, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            continue
        name = (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")
        out.add(f"--{name}")
        if f.type in (bool, "bool", "bool | None"):
            out.add(f"--no-{name}")
    return out


TRAIN = _flags(TrainConfig) | {"--strategy"} | _flags(SearchConfig) | set().union(
    *(_flags(c.config_class, c.name.replace("_", "-")) for c in strategy_classes()))

VERBS = {
    ("vision", "fit"): _flags(ImageFitArgs) | _flags(AugmentConfig) | TRAIN,
    ("vision", "audit"): _flags(ImageAuditArgs) | _flags(AuditConfig),
    ("vision", "evaluate"): _flags(EvaluateArgs),
    ("vision", "predict"): _flags(PredictArgs),
    ("vision", "export"): _flags(ExportArgs),
    ("vision", "push"): _flags(PushArgs),
    ("vision", "curve"): _flags(CurveArgs) | _flags(TrainConfig),
    ("audio", "fit"): _flags(AudioFitArgs) | _flags(AudioModelConfig) | _flags(ClipCrop) | TRAIN,
    ("audio", "audit"): _flags(AudioAuditArgs) | _flags(AuditConfig) | _flags(ClipChecks),
    ("audio", "fit-ctc"): _flags(CTCFitArgs) | _flags(CTCConfig) | _flags(ClipFilter) | TRAIN,
    ("audio", "fit-whisper"): _flags(WhisperFitArgs) | _flags(WhisperConfig) | TRAIN,
    ("audio", "evaluate"): _flags(EvaluateArgs),
    ("audio", "predict"): _flags(PredictArgs),
    ("audio", "export"): _flags(ExportArgs),
    ("audio", "pretrain"): _flags(PretrainArgs) | _flags(PretrainConfig) | _flags(TrainConfig),
    ("audio", "push"): _flags(PushArgs),
    ("audio", "curve"): _flags(CurveArgs) | _flags(TrainConfig),
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_domain_verb_is_covered():
    domains = _subparsers(build_parser())
    listed = {(d, v) for d in ("vision", "audio") for v in _subparsers(domains[d])}
    assert listed == set(VERBS)


@pytest.mark.parametrize(("domain", "verb"), sorted(VERBS))
def test_help_lists_exactly_the_dataclass_fields(domain, verb):
    help_text = _subparsers(_subparsers(build_parser())[domain])[verb].format_help()
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text)) - {"--help"}
    assert shown == VERBS[(domain, verb)], (sorted(shown - VERBS[(domain, verb)]), sorted(VERBS[(domain, verb)] - shown))


def test_required_fields_are_required_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["vision", "fit", "--train", "x"])
    assert "--model" in capsys.readouterr().err


def test_strategy_flags_reach_the_strategy_and_old_flag_names_still_work():
    from transferkit.common.cli import train_from_args

    args = build_parser().parse_args(["vision", "fit", "--model", "m", "--train", "t", "--strategy", "lora",
                                      "--lora-r", "4", "--epochs", "2"])
    config, strategy, _ = train_from_args(args)
    assert (config.epochs, strategy.name, strategy.config.r) == (2, "lora", 4)
    args = build_parser().parse_args(["vision", "fit", "--model", "m", "--train", "t", "--strategy", "lp_ft",
                                      "--probe-epochs", "9"])
    assert train_from_args(args)[1].config.probe_epochs == 9


def test_auto_strategy_flags_become_search_settings():
    from transferkit.common.cli import train_from_args

    args = build_parser().parse_args(["vision", "fit", "--model", "m", "--train", "t", "--strategy", "auto",
                                      "--time-budget", "60", "--search-strategies", "linear_probe", "lp_ft"])
    _, strategy, search = train_from_args(args)
    assert strategy == "auto" and search == {"time_budget": 60.0, "search_strategies": ["linear_probe", "lp_ft"]}
