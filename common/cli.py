"""``transferkit <domain> <verb>``: thin shells over the Python API, generated from dataclasses.

Every option of every verb is a field of a dataclass (:class:`TrainConfig`, a strategy's settings,
a domain's config), so the command line and the API never drift apart. Domains add their verbs
through the ``transferkit.domains`` entry-point group and demos through ``transferkit.demos``;
this module imports none of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .hub import HubUnavailableError
from .registry import DEMOS_GROUP, DOMAINS_GROUP, plugins
from .search import SEARCH_FIELDS, SearchConfig
from .strategies import Strategy, get_strategy, list_strategies, pop_strategy_settings, strategy_classes
from .task import AUTO


def _arg_type(tp: Any) -> tuple[Any, dict]:
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _arg_type(args[0])
    if tp is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if origin is list or tp is list:
        return (args[0] if args else str), {"nargs": "+"}
    if origin is tuple:
        return args[0], {"nargs": len(args)}
    return tp, {}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = (), prefix: str = "",
                            title: str | None = None) -> None:
    """One ``--flag`` per dataclass field, with its help text and default.

    A field without a default is a required flag, or a positional argument when its metadata says
    ``positional``. With ``prefix`` the flags are ``--<prefix>-<field>`` (dest ``<prefix>_<field>``).
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, extra = _arg_type(hints[f.name])
        dest = f"{prefix}_{f.name}" if prefix else f.name
        kw: dict[str, Any] = {"help": f.metadata.get("help", "").replace("%", "%%"), **extra}
        if tp is not None:
            kw["type"] = tp
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if required and f.metadata.get("positional"):
            group.add_argument(dest, **kw)
            continue
        if required:
            kw["required"] = True
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            kw |= {"default": argparse.SUPPRESS, "help": f"{kw['help']} (default: {str(default).replace('%', '%%')})"}
        group.add_argument("--" + dest.replace("_", "-"), dest=dest, **kw)


def dataclass_from_args(cls: type, args: argparse.Namespace, *, prefix: str = "", **fixed: Any) -> Any:
    """Build ``cls`` from the flags the user gave; the rest keep the dataclass defaults."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        dest = f"{prefix}_{f.name}" if prefix else f.name
        if hasattr(args, dest):
            v = getattr(args, dest)
            values[f.name] = tuple(v) if isinstance(v, list) and typing.get_origin(hints[f.name]) is tuple else v
    return cls(**{**values, **fixed})


# Flags that were TrainConfig fields before each strategy had its own settings; still accepted.
_LEGACY_STRATEGY_FLAGS = {"probe_epochs": int, "top_k_blocks": int, "feature_cache": str}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The loop's flags (:class:`TrainConfig`), ``--strategy``, and every registered strategy's settings
    as ``--<strategy>-<field>`` (``--lora-r``, ``--llrd-decay``, ``--lp-ft-probe-epochs``)."""
    add_dataclass_arguments(parser, TrainConfig)
    group = parser.add_argument_group("strategy")
    group.add_argument("--strategy", default="finetune", choices=[*list_strategies(), AUTO],
                       help="What learns (default: finetune); auto searches the recipe (--time-budget ...).")
    for cls in strategy_classes():
        add_dataclass_arguments(parser, cls.config_class, prefix=cls.name, title=f"strategy {cls.name}")
    add_dataclass_arguments(parser, SearchConfig, title="strategy auto (recipe search)")
    for name, tp in _LEGACY_STRATEGY_FLAGS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=tp, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def train_from_args(args: argparse.Namespace) -> tuple[TrainConfig, Strategy | str, dict[str, Any]]:
    """What the training flags describe: the :class:`TrainConfig`, the configured strategy (or ``"auto"``)
    and, with ``auto``, the recipe search's settings as ``fit`` keywords."""
    config = dataclass_from_args(TrainConfig, args)
    if args.strategy == AUTO:
        return config, AUTO, {f: getattr(args, f) for f in SEARCH_FIELDS if hasattr(args, f)}
    strategy = get_strategy(args.strategy)
    prefixes = tuple(f"{c.name}_" for c in strategy_classes())
    options = {k: v for k, v in vars(args).items() if k.startswith(prefixes) or k in _LEGACY_STRATEGY_FLAGS}
    return config, get_strategy(strategy, **pop_strategy_settings(strategy, options)), {}


# -- verbs every classifier domain has ----------------------------------------------------------
@dataclass
class EvaluateArgs:
    model: str = field(metadata={"help": "Exported model folder."})
    data: str = field(metadata={"help": "Labelled data: a folder of class sub-folders or a manifest."})
    out: str | None = field(default=None, metadata={"help": "Folder for confusion_matrix.png and metrics.json."})


@dataclass
class PredictArgs:
    model: str = field(metadata={"help": "Exported model folder."})
    files: list[str] = field(metadata={"help": "Files to label.", "positional": True})


@dataclass
class ExportArgs:
    run: str = field(metadata={"help": "The output_dir of `fit` (finished or interrupted)."})
    out: str = field(metadata={"help": "Export folder."})


@dataclass
class PushArgs:
    model: str = field(metadata={"help": "Exported model folder."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. me/my-model."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})


def add_verb(verbs: Any, name: str, func: Callable[[argparse.Namespace], int], help: str, *configs: type,
             train: bool = False) -> argparse.ArgumentParser:
    """A verb whose options are the fields of ``configs`` (plus the training flags with ``train``)."""
    parser = verbs.add_parser(name, help=help, description=help)
    for cls in configs:
        add_dataclass_arguments(parser, cls)
    if train:
        add_train_arguments(parser)
    parser.set_defaults(func=func)
    return parser


@dataclass
class CurveArgs:
    model: str = field(metadata={"help": "The pretrained encoder (as for fit --model)."})
    train: str = field(metadata={"help": "Labelled training data; each point trains on a subset of it."})
    test: str = field(metadata={"help": "Labelled test data every point is scored on."})
    out: str = field(metadata={"help": "Folder for curve.md, curve.png, curve.csv and the runs."})
    budgets: list[str] = field(default_factory=lambda: ["1", "2", "5", "10", "20", "all"],
                               metadata={"help": "Labelled examples per class ('all': every one)."})
    strategies: list[str] = field(default_factory=lambda: ["linear_probe", "lp_ft"], metadata={"help": "Strategies to draw."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of the subsets and the runs."})
    reference: bool = field(default=True, metadata={"help": "Draw the simple reference (logistic regression) too."})


def add_curve_verb(verbs: Any, new_task: Callable[[str, str], Any]) -> None:
    """``curve``: accuracy against labels per class for strategies and the reference (``new_task(model, train)``
    builds the untrained classifier)."""

    def curve(args: argparse.Namespace) -> int:
        from .curve import label_curve, summarise

        a = dataclass_from_args(CurveArgs, args)
        budgets = [None if b == "all" else int(b) for b in a.budgets]
        points = label_curve(new_task(a.model, a.train), a.train, a.test, out_dir=a.out, budgets=budgets,
                             strategies=a.strategies, seeds=a.seeds, reference=a.reference,
                             config=dataclass_from_args(TrainConfig, args))
        print_json({"curve": summarise(points), "plot": str(Path(a.out) / "curve.png")})
        return 0

    add_verb(verbs, "curve", curve, "accuracy against labelled examples per class, per strategy and the reference",
             CurveArgs, TrainConfig)


def add_model_verbs(verbs: Any, task_for: Callable[[str], type], *, evaluate_help: str, predict_help: str,
                    file_key: str = "file", new_task: Callable[[str, str], Any] | None = None) -> None:
    """``evaluate``, ``predict``, ``export`` and ``push`` for a domain's tasks (and ``curve`` with ``new_task``).

    ``task_for(folder)`` names the :class:`~transferkit.common.task.TransferTask` class of an export or
    run folder; each verb calls its ``load(...).evaluate``, ``load(...).predict``, ``from_run(...).save``.
    """

    def evaluate(args: argparse.Namespace) -> int:
        a = dataclass_from_args(EvaluateArgs, args)
        report_evaluation(task_for(a.model).load(a.model).evaluate(a.data, out_dir=a.out), a.out)
        return 0

    def predict(args: argparse.Namespace) -> int:
        a = dataclass_from_args(PredictArgs, args)
        for path, pred in zip(a.files, task_for(a.model).load(a.model).predict(a.files)):
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in pred.items() if k != "scores"}
            print(json.dumps({file_key: path, **shown}))
        return 0

    def export(args: argparse.Namespace) -> int:
        a = dataclass_from_args(ExportArgs, args)
        print_json({"model": str(task_for(a.run).from_run(a.run).save(a.out))})
        return 0

    add_verb(verbs, "evaluate", evaluate, evaluate_help, EvaluateArgs)
    add_verb(verbs, "predict", predict, predict_help, PredictArgs)
    add_verb(verbs, "export", export, "export the best checkpoint of a training run", ExportArgs)
    add_verb(verbs, "push", _push, "upload an exported folder to the Hugging Face Hub", PushArgs)
    if new_task is not None:
        add_curve_verb(verbs, new_task)


def _push(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    args = dataclass_from_args(PushArgs, args)
    print(push_to_hub(args.model, args.repo_id, private=args.private))
    return 0


def report_evaluation(result: dict, out: str | None) -> None:
    """Print the metrics (without the raw confusion matrix) and keep them all in ``out/metrics.json``."""
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    print_json({k: v for k, v in result.items() if k != "confusion_matrix"})


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# -- the program ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferkit", description="Transfer learning for images, speech and recommendation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    sub = parser.add_subparsers(dest="domain", required=True)
    demos = plugins(DEMOS_GROUP)
    demo = sub.add_parser("demo", help="run the offline demo on built-in data and write a report")
    demo.add_argument("--out", default="demo-output", help="folder for report.md, plots and models")
    demo.add_argument("--only", nargs="+", choices=sorted(demos), default=sorted(demos), help="run only these parts")
    demo.add_argument("--seed", type=int, default=0, help="seed of every part")
    demo.add_argument("--quick", action="store_true", help="toy sizes: seconds instead of minutes")
    demo.set_defaults(func=lambda args: _run_demo(args, demos))
    for domain, register in plugins(DOMAINS_GROUP).items():
        doc = (sys.modules[register.__module__].__doc__ or domain).strip().splitlines()[0]
        register(sub.add_parser(domain, help=doc, description=doc))
    return parser


def _run_demo(args: argparse.Namespace, demos: dict[str, Callable]) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for name in dict.fromkeys(args.only):  # in the order given
        print(f"\n=== {name} ===", flush=True)
        section = demos[name](out / name, seed=args.seed, quick=args.quick)
        print(section, flush=True)
        sections.append(section)
    (out / "report.md").write_text("# transferkit demo\n\n" + "\n\n".join(sections) + "\n")
    print(f"\nreport written to {out / 'report.md'}")
    return 0


# A user's mistake or environment rather than a bug: bad input (ValueError, and the domains' decode errors
# derive from it), a missing file or model and an unreachable Hub (OSError: FileNotFoundError,
# EncoderNotFoundError), a missing optional package (ImportError), the Hub refusing an upload.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, HubUnavailableError)
USAGE_ERROR = 2  # the exit status of an expected error, as argparse exits on a bad flag


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. An expected error prints one ``error: ...`` line (its message says the fix) and exits
    with status 2; ``--verbose`` prints the traceback above it."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as err:
        if args.verbose:
            import traceback

            traceback.print_exc()
        message = " ".join(str(err).split()) or type(err).__name__
        hint = "" if args.verbose else " (run with --verbose for the traceback)"
        print(f"error: {message}{hint}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
