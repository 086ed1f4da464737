"""``transferkit <domain> <verb>``: thin shells over the Python API.

Each domain package registers its verbs from its own ``cli`` module; training options are
generated from :class:`TrainConfig`, so the command line and the API never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
import typing
from collections.abc import Sequence
from typing import Any

from .config import TrainConfig

DOMAINS = ("vision", "audio", "recsys")


def _arg_type(tp: Any) -> tuple[Any, dict]:
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _arg_type(args[0])
    if tp is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if origin is list or tp is list:
        return (args[0] if args else str), {"nargs": "+"}
    if origin is tuple:
        return args[0], {"nargs": len(args)}
    return tp, {}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per dataclass field, with its help text and default."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, extra = _arg_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kw = {"default": argparse.SUPPRESS, "help": f"{f.metadata.get('help', '')} (default: {default})", **extra}
        if tp is not None:
            kw["type"] = tp
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kw)


def dataclass_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """Build ``cls`` from the flags the user gave; the rest keep the dataclass defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    for k, v in values.items():
        if isinstance(v, list) and typing.get_origin(typing.get_type_hints(cls)[k]) is tuple:
            values[k] = tuple(v)
    return cls(**{**values, **fixed})


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, TrainConfig)


def add_evaluate_verb(verbs: Any, func: Any, *, help: str, data_help: str) -> None:
    """``evaluate --model FOLDER --data PATH [--out DIR]`` for an exported model."""
    ev = verbs.add_parser("evaluate", help=help)
    ev.add_argument("--model", required=True, help="exported model folder")
    ev.add_argument("--data", required=True, help=data_help)
    ev.add_argument("--out", help="folder for confusion_matrix.png and metrics.json")
    ev.set_defaults(func=func)


def add_predict_verb(verbs: Any, func: Any, *, help: str, files_help: str) -> None:
    """``predict --model FOLDER FILE...`` for an exported model."""
    pr = verbs.add_parser("predict", help=help)
    pr.add_argument("--model", required=True, help="exported model folder")
    pr.add_argument("files", nargs="+", help=files_help)
    pr.set_defaults(func=func)


def report_evaluation(result: dict, out: str | None) -> None:
    """Print the metrics (without the raw confusion matrix) and keep them all in ``out/metrics.json``."""
    if out:
        from pathlib import Path

        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    print_json({k: v for k, v in result.items() if k != "confusion_matrix"})


def add_push_verb(verbs: Any) -> None:
    """``push --model FOLDER --repo-id ID [--private]``: upload an exported folder to the Hub."""
    push = verbs.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    push.add_argument("--model", required=True, help="exported model folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=_push)


def _push(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    print(push_to_hub(args.model, args.repo_id, private=args.private))
    return 0


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _domain_module(domain: str, name: str) -> Any:
    """``transferkit.<domain>.<name>``, or None when that domain does not provide it."""
    try:
        return importlib.import_module(f"transferkit.{domain}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"transferkit.{domain}.{name}":
            raise  # the module exists but something it imports is missing: say so
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferkit", description="Transfer learning for images, speech and recommendation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    sub = parser.add_subparsers(dest="domain", required=True)
    demo = sub.add_parser("demo", help="run the offline demo on built-in data and write a report")
    demo.add_argument("--out", default="demo-output", help="folder for report.md, plots and models")
    demo.add_argument("--only", nargs="+", choices=DOMAINS, default=list(DOMAINS), help="run only these parts")
    demo.set_defaults(func=_run_demo)
    for domain in DOMAINS:
        module = _domain_module(domain, "cli")
        if module is not None:
            module.register(sub.add_parser(domain, help=module.__doc__.strip().splitlines()[0]))
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for domain in args.only:
        demo = _domain_module(domain, "demo")
        if demo is None:
            continue
        print(f"\n=== {domain} ===", flush=True)
        section = demo.run_demo(out / domain)
        print(section, flush=True)
        sections.append(section)
    report = "# transferkit demo\n\n" + "\n\n".join(sections) + "\n"
    (out / "report.md").write_text(report)
    print(f"\nreport written to {out / 'report.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
