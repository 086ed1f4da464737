"""Recommendation: pretrain, warm-start, recommend, evaluate and push embedding tables."""

from __future__ import annotations

import argparse

from transferkit.common.cli import print_json


def _data_args(parser: argparse.ArgumentParser, flag: str = "--data", required: bool = True) -> None:
    parser.add_argument(flag, required=required, help="interactions: CSV or parquet, one event per row")
    parser.add_argument("--user", default="user", help="user id column")
    parser.add_argument("--item", default="item", help="item id column")
    parser.add_argument("--weight", help="weight column (counts, ratings); 1 per row when absent")
    parser.add_argument("--time", help="timestamp column")


def _load(args: argparse.Namespace, path: str):
    from .data import Interactions

    return Interactions.from_frame(path, user=args.user, item=args.item, weight=args.weight, time=args.time)


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", required=True)

    pre = verbs.add_parser("pretrain", help="factorise interactions with implicit and save the tables")
    _data_args(pre)
    pre.add_argument("--model", default="als", choices=["als", "bpr", "lmf"])
    pre.add_argument("--factors", type=int, default=64)
    pre.add_argument("--iterations", type=int, default=15)
    pre.add_argument("--regularization", type=float)
    pre.add_argument("--alpha", type=float, help="ALS confidence scale")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--threads", type=int, default=0, help="implicit threads (0 = all cores)")
    pre.add_argument("--out", required=True, help="folder for tables.safetensors, tables.json, README.md")
    pre.set_defaults(func=_pretrain)

    warm = verbs.add_parser("warm-start", help="continue pretrained tables on new-period interactions")
    warm.add_argument("--tables", required=True, help="folder written by pretrain")
    _data_args(warm)
    warm.add_argument("--iterations", type=int, default=5)
    warm.add_argument("--threads", type=int, default=0)
    warm.add_argument("--out", required=True)
    warm.set_defaults(func=_warm)

    rec = verbs.add_parser("recommend", help="top-N items for users, as JSON")
    rec.add_argument("--tables", required=True)
    rec.add_argument("--users", nargs="+", required=True, help="user ids (read as strings unless --int-ids)")
    rec.add_argument("--int-ids", action="store_true", help="user ids are integers")
    rec.add_argument("-n", "--n", type=int, default=10)
    _data_args(rec, "--history", required=False)
    rec.add_argument("--cold-start", action="store_true", help="fold in / popularity for unknown users")
    rec.set_defaults(func=_recommend)

    ev = verbs.add_parser("evaluate", help="NDCG, recall, precision, MAP, coverage @k on held-out events")
    ev.add_argument("--tables", required=True)
    _data_args(ev, "--train")
    ev.add_argument("--test", required=True, help="held-out events (same columns as --train)")
    ev.add_argument("--k", type=int, default=10)
    ev.add_argument("--positive-threshold", type=float, default=0.0, help="relevant when weight >= this")
    ev.add_argument("--no-filter-seen", action="store_true")
    ev.set_defaults(func=_evaluate)

    push = verbs.add_parser("push", help="upload a tables folder (with its model card) to the Hugging Face Hub")
    push.add_argument("--tables", required=True)
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=_push)

    demo = verbs.add_parser("demo", help="the four transfer modes on built-in synthetic data")
    demo.add_argument("--out", default="demo-output/recsys")
    demo.add_argument("--quick", action="store_true")
    demo.set_defaults(func=_demo)


def _pretrain(args: argparse.Namespace) -> int:
    from .pretrain import pretrain

    hp = {k: v for k, v in (("regularization", args.regularization), ("alpha", args.alpha)) if v is not None}
    tables = pretrain(_load(args, args.data), model=args.model, factors=args.factors, iterations=args.iterations,
                      seed=args.seed, num_threads=args.threads, show_progress=True, **hp)
    tables.save(args.out)
    tables.write_card(args.out)
    print_json({"tables": args.out, "users": len(tables.user_ids), "items": len(tables.item_ids)})
    return 0


def _warm(args: argparse.Namespace) -> int:
    from .tables import EmbeddingTables
    from .transfer import warm_start

    tables = warm_start(EmbeddingTables.load(args.tables), _load(args, args.data), iterations=args.iterations,
                        num_threads=args.threads)
    tables.save(args.out)
    tables.write_card(args.out)
    print_json({"tables": args.out, "users": len(tables.user_ids), "items": len(tables.item_ids)})
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from .tables import EmbeddingTables

    tables = EmbeddingTables.load(args.tables)
    users = [int(u) for u in args.users] if args.int_ids else args.users
    history = _load(args, args.history) if args.history else None
    ids, scores = tables.recommend(users, N=args.n, filter_seen=history is not None, history=history,
                                   unknown="cold_start" if args.cold_start else "error")
    print_json({str(u): [{"item": i, "score": float(s)} for i, s in zip(row, srow) if i is not None]
                for u, row, srow in zip(users, ids, scores)})
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate
    from .tables import EmbeddingTables

    result = evaluate(EmbeddingTables.load(args.tables), _load(args, args.train), _load(args, args.test),
                      k=args.k, positive_threshold=args.positive_threshold, filter_seen=not args.no_filter_seen,
                      unknown="cold_start", split={"split": "given (--train/--test)"})
    print_json(result)
    return 0


def _push(args: argparse.Namespace) -> int:
    from transferkit.common.hub import push_to_hub

    print_json({"url": push_to_hub(args.tables, args.repo_id, private=args.private)})
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    print(run_demo(args.out, quick=args.quick))
    return 0
