"""Caches: what the decode and feature caches hold against their budget (info), and emptying them (clear).

``transferkit cache info`` prints one line per folder: entries, bytes, budget. Without ``--folder`` it
looks at the decode cache (``$TRANSFERKIT_CACHE/decoded``); feature caches live in each run's
``features/`` folder (or where ``feature_cache=`` put them): pass those with ``--folder``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cache_store import CacheFolder, human
from .decode_cache import default_cache_root


def _folders(args: argparse.Namespace) -> list[CacheFolder]:
    roots = args.folder or [default_cache_root() / "decoded"]
    return [CacheFolder(Path(r), args.budget) for r in roots]


def _info(args: argparse.Namespace) -> int:
    infos = [f.info() for f in _folders(args)]
    if args.json:
        json.dump([vars(i) for i in infos], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for info in infos:
            print(info)
    return 0


def _clear(args: argparse.Namespace) -> int:
    for folder in _folders(args):
        print(f"{folder.root}: freed {human(folder.clear())}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """The ``cache`` verbs (``info``, ``clear``) on ``parser``."""
    verbs = parser.add_subparsers(dest="verb", required=True)
    for name, func, text in (("info", _info, "entries and bytes held, against the budget"),
                             ("clear", _clear, "delete every cached entry")):
        verb = verbs.add_parser(name, help=text, description=text)
        verb.add_argument("--folder", nargs="+", help="cache folders (default: the decode cache, "
                          "$TRANSFERKIT_CACHE/decoded; a run's feature cache is <run>/features)")
        verb.add_argument("--budget", default=None, help="budget to report against: bytes ('20GB') or a fraction "
                          "of the free disk (default: $TRANSFERKIT_CACHE_BUDGET or 0.25)")
        if name == "info":
            verb.add_argument("--json", action="store_true", help="print JSON instead of one line per folder")
        verb.set_defaults(func=func)
