"""Recommendation: audit events, pretrain, warm-start, recommend, evaluate and push embedding tables.

Every option is a dataclass field: the files a verb reads and writes (``PretrainArgs`` ...), and its
settings from :mod:`transferkit.recsys.config` (``InteractionColumns``, ``ConfidenceConfig``, the
model configs - implicit's factorisations and the item-item models - ``WarmStartConfig``,
``RecommendConfig``, ``EvaluateConfig``, ``EventAuditConfig``), so the command line and the Python API never drift apart.
``push`` is the common verb: ``--model`` names the tables folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.common.cli import add_dataclass_arguments, add_verb, dataclass_from_args, print_json

from .audit import audit
from .base import Recommender
from .config import (
    ITEM_ITEM_CONFIGS,
    MODEL_CONFIGS,
    ConfidenceConfig,
    EvaluateConfig,
    EventAuditConfig,
    FactorizationConfig,
    InteractionColumns,
    RecommendConfig,
    WarmStartConfig,
)
from .data import Interactions, confidence
from .metrics import evaluate
from .neighbors import EASE, ItemKNN, load_item_item
from .pretrain import pretrain
from .tables import EmbeddingTables
from .transfer import warm_start

ALL_MODELS = {**MODEL_CONFIGS, **ITEM_ITEM_CONFIGS}

DATA_HELP = "Interactions: CSV or parquet, one event per row."
TABLES_HELP = "Folder written by pretrain or warm-start (tables, or an item-item model)."


# -- what each verb reads and writes (its settings are the configs of transferkit.recsys.config) ----
@dataclass
class PretrainArgs:
    data: str = field(metadata={"help": DATA_HELP})
    out: str = field(metadata={"help": "Folder for the model files (tables or neighbors), config.json, README.md."})
    model: str = field(default="als", metadata={
        "help": f"Which model: {', '.join(MODEL_CONFIGS)} (implicit's factorisations, saved as tables) or "
                f"{', '.join(ITEM_ITEM_CONFIGS)} (item-item)."})

    def __post_init__(self) -> None:
        if self.model not in ALL_MODELS:
            raise ValueError(f"model must be one of {', '.join(ALL_MODELS)}, got {self.model!r}")


@dataclass
class WarmStartArgs:
    tables: str = field(metadata={"help": "Folder written by pretrain."})
    data: str = field(metadata={"help": "New-period interactions: CSV or parquet, one event per row."})
    out: str = field(metadata={"help": "Folder for the new tables."})
    history: str | None = field(default=None, metadata={
        "help": "Old-period interactions (same columns), trained on at --old-weight (needed when it is > 0)."})


@dataclass
class RecommendArgs:
    tables: str = field(metadata={"help": TABLES_HELP})
    users: list[str] = field(metadata={"help": "User ids (read as strings unless --int-ids)."})
    history: str | None = field(default=None, metadata={
        "help": "The users' events (same columns as at pretraining), for filtering and cold start."})
    int_ids: bool = field(default=False, metadata={"help": "User ids are integers."})


@dataclass
class PushTablesArgs:
    tables: str = field(metadata={"help": TABLES_HELP})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. me/my-tables."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})


@dataclass
class EvaluateArgs:
    tables: str = field(metadata={"help": TABLES_HELP})
    train: str = field(metadata={"help": "The events the tables were trained on (filtered, folded in for cold users)."})
    test: str = field(metadata={"help": "Held-out events (same columns as --train)."})


@dataclass
class AuditArgs:
    events: str = field(metadata={"help": "Events to audit: CSV or parquet, one event per row (read, never modified).",
                                  "positional": True})
    items: str | None = field(default=None, metadata={
        "help": "Item content table (CSV or parquet, one row per item): items without a row, or with an empty one, "
                "are flagged no_content."})
    items_id: str | None = field(default=None, metadata={"help": "Item id column of --items; None: the --item column's name."})
    out: str | None = field(default=None, metadata={"help": "Folder for audit.md, flagged.csv and config.json."})
    write_clean: str | None = field(default=None, metadata={
        "help": "Write a cleaned copy of the events here (CSV): the --drop reasons' rows dropped, ids in one spelling."})


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", required=True)
    add_verb(verbs, "audit", _audit, "flag duplicate events, bots, bad timestamps, id variants and items without content",
             AuditArgs, InteractionColumns, EventAuditConfig)
    pre = add_verb(verbs, "pretrain", _pretrain, "fit a model (implicit's factorisations, item-item, EASE) and save it",
                   PretrainArgs, InteractionColumns, ConfidenceConfig)
    _add_model_arguments(pre)
    warm = add_verb(verbs, "warm-start", _warm, "continue pretrained tables on new-period interactions",
                    WarmStartArgs, InteractionColumns, WarmStartConfig)
    for verb in (pre, warm):  # the flag's name before it became the num_threads field; still accepted
        verb.add_argument("--threads", dest="num_threads", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    rec = add_verb(verbs, "recommend", _recommend, "top-N items for users, as JSON",
                   RecommendArgs, InteractionColumns, RecommendConfig)
    rec.add_argument("-n", dest="n", type=int, default=argparse.SUPPRESS, help="Same as --n.")
    add_verb(verbs, "evaluate", _evaluate, "NDCG, recall, precision, MAP, coverage @k on held-out events",
             EvaluateArgs, InteractionColumns, EvaluateConfig)
    add_verb(verbs, "push", _push, "upload a tables folder (with its model card) to the Hugging Face Hub", PushTablesArgs)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The shared fields once, then each model's own; a field several models have (regularization)
    is one flag, and a flag not given takes the chosen model's default (listed below the options)."""
    add_dataclass_arguments(parser, FactorizationConfig)
    shared = set(_field_names(FactorizationConfig))
    seen = set(shared)
    for cls in ALL_MODELS.values():
        add_dataclass_arguments(parser, cls, skip=seen)
        seen.update(_field_names(cls))
    lines = [f"  {model}: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cls()).items() if k not in shared)
             for model, cls in ALL_MODELS.items()]
    parser.epilog = "defaults of the model settings, per --model:\n" + "\n".join(lines)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _model_config(args: argparse.Namespace):
    model = dataclass_from_args(PretrainArgs, args).model
    cls = ALL_MODELS[model]
    stray = [name for other in (FactorizationConfig, *ALL_MODELS.values()) for name in _field_names(other)
             if name in vars(args) and name not in _field_names(cls)]
    if stray:
        flags = ", ".join(sorted({"--" + name.replace("_", "-") for name in stray}))
        raise ValueError(f"{flags}: not a setting of --model {model} (its settings: {_field_names(cls)})")
    return dataclass_from_args(cls, args)


def _read(path: str, args: argparse.Namespace) -> Interactions:
    return Interactions.from_frame(path, **dataclasses.asdict(dataclass_from_args(InteractionColumns, args)))


def _load(folder: str) -> Recommender:
    """Tables or an item-item model, whichever ``folder`` holds."""
    return load_item_item(folder) if (Path(folder) / "neighbors.json").exists() else EmbeddingTables.load(folder)


def _save(model: Recommender, io: PretrainArgs | WarmStartArgs, args: argparse.Namespace, config,
          weighting: ConfidenceConfig | None = None) -> None:
    """The model, its card (tables) and the resolved settings (``config.json``) in ``io.out``."""
    model.save(io.out)
    if isinstance(model, EmbeddingTables):
        model.write_card(io.out)
    resolved = {"config": type(config).__name__, **dataclasses.asdict(config),
                **(dataclasses.asdict(weighting) if weighting else {}),
                "columns": dataclasses.asdict(dataclass_from_args(InteractionColumns, args)), **dataclasses.asdict(io)}
    (Path(io.out) / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    print_json({"tables": io.out, "users": len(model.user_ids), "items": len(model.item_ids)})


def _pretrain(args: argparse.Namespace) -> int:
    io, config = dataclass_from_args(PretrainArgs, args), _model_config(args)
    weighting = dataclass_from_args(ConfidenceConfig, args)
    inter = _read(io.data, args)
    if weighting.confidence != "none" or weighting.half_life is not None:
        inter = confidence(inter, weighting.confidence, half_life=weighting.half_life)
    if io.model in ITEM_ITEM_CONFIGS:
        model = (EASE if io.model == "ease" else ItemKNN)(config).fit(inter)
    else:
        model = pretrain(inter, config=config, show_progress=True)
    _save(model, io, args, config, weighting)
    return 0


def _warm(args: argparse.Namespace) -> int:
    io, config = dataclass_from_args(WarmStartArgs, args), dataclass_from_args(WarmStartConfig, args)
    if config.old_weight > 0 and io.history is None:
        raise ValueError("--old-weight > 0 trains on the old period's events: pass them with --history")
    history = _read(io.history, args) if io.history else None
    tables = warm_start(EmbeddingTables.load(io.tables), _read(io.data, args), history=history, config=config)
    _save(tables, io, args, config)
    return 0


def _recommend(args: argparse.Namespace) -> int:
    io, config = dataclass_from_args(RecommendArgs, args), dataclass_from_args(RecommendConfig, args)
    users = [int(u) for u in io.users] if io.int_ids else io.users
    history = _read(io.history, args) if io.history else None
    ids, scores = _load(io.tables).recommend(
        users, N=config.n, filter_seen=config.filter_seen and history is not None, history=history,
        unknown="cold_start" if config.cold_start else "error",
    )
    print_json({str(u): [{"item": i, "score": float(s)} for i, s in zip(row, srow) if i is not None]
                for u, row, srow in zip(users, ids, scores)})
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    io, config = dataclass_from_args(EvaluateArgs, args), dataclass_from_args(EvaluateConfig, args)
    result = evaluate(_load(io.tables), _read(io.train, args), _read(io.test, args),
                      **dataclasses.asdict(config), unknown="cold_start", split={"split": "given (--train/--test)"})
    print_json(result)
    return 0


def _audit(args: argparse.Namespace) -> int:
    io, columns = dataclass_from_args(AuditArgs, args), dataclass_from_args(InteractionColumns, args)
    found = audit(io.events, io.items, items_id=io.items_id, config=dataclass_from_args(EventAuditConfig, args),
                  **dataclasses.asdict(columns))
    result = {"events": io.events, **found.summary()}
    if io.out:
        result["audit"] = str(found.write(io.out) / "audit.md")
    if io.write_clean:
        result["clean"] = str(found.write_clean(io.write_clean))
    print_json(result)
    return 0


def _push(args: argparse.Namespace) -> int:
    from transferkit.common.hub import push_to_hub

    io = dataclass_from_args(PushTablesArgs, args)
    print_json({"url": push_to_hub(io.tables, io.repo_id, private=io.private)})
    return 0
