"""The recsys part of ``transferkit demo``: four transfer modes against from-scratch and popularity references.

On the built-in synthetic world (:mod:`transferkit.demos.recsys_world`): warm start into a new
period, cross-domain transfer to a sparse second domain, cold-start items from content, and fold-in
of new users at serving time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from transferkit.demos.recsys_world import make_world
from transferkit.recsys import (
    ContentMapper,
    Interactions,
    align,
    cross_domain,
    evaluate,
    fold_in_users,
    leave_k_out,
    popularity,
    pretrain,
    random_tables,
    split_by_time,
    warm_start,
)

__all__ = ["run_demo"]

K = 10
ALS = {"factors": 32, "regularization": 0.1, "alpha": 10.0}


def _row(mode, method, result, iters="", seconds="", note=""):
    return {"mode": mode, "method": method, "ndcg": result[f"ndcg@{K}"], "recall": result[f"recall@{K}"],
            "iters": iters, "seconds": seconds, "note": note, "users": result["n_users"]}


def run_demo(out_dir: str | Path, *, seed: int = 0, quick: bool = False, n_users: int | None = None,
             n_items: int | None = None, iterations: int = 15, num_threads: int = 2) -> str:
    """Run the four transfer modes on the built-in generator and return the markdown section.

    ``quick=True`` uses a 4x smaller world (seconds); ``n_users`` / ``n_items`` override either size.
    ``num_threads`` caps the BLAS and ``implicit`` threads.

    Writes into ``out_dir``: ``report.md`` (the section), ``recsys_results.json`` (every number
    with split, seed, threshold, filtering, and the per-iteration curves), ``recsys_warm_start.png``
    (NDCG@10 per ALS iteration, warm start vs scratch) and ``tables-warm-start/`` (the warm-started
    tables with their model card, loadable with ``EmbeddingTables.load``).
    """
    n_users = n_users or (1500 if quick else 6000)
    n_items = n_items or (750 if quick else 3000)
    from threadpoolctl import threadpool_limits

    # BLAS threads beyond the cores we are given only contend (implicit warns about exactly this)
    with threadpool_limits(limits=num_threads):
        return _run(Path(out_dir), seed, n_users, n_items, iterations, num_threads)


def _run(out: Path, seed: int, n_users: int, n_items: int, iterations: int, num_threads: int) -> str:
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    world = make_world(n_users=n_users, n_items=n_items, seed=seed)
    common = {"num_threads": num_threads, "seed": seed, **ALS}
    rows = []

    # period 2 split by time: its first 60% is new training data, its last 40% the test
    p2 = split_by_time(world.period2, test_fraction=0.4)
    cold = set(world.new_items[: len(world.new_items) // 2])  # never seen in training: content only
    p2_train = p2.train.subset(np.array([p2.train.item_ids[i] not in cold for i in p2.train.items]))
    history = Interactions.concat([world.period1, p2_train])
    split = {"split": "time (period 2: last 40% test)", "seed": seed}
    ev = {"k": K, "positive_threshold": 0.0, "filter_seen": True, "unknown": "cold_start", "split": split}

    base = pretrain(world.period1, iterations=iterations, **common)  # last period's model

    # 1) warm start vs from scratch on the same data (period 1 + new period so far)
    curves = {"scratch": [], "warm start": []}

    def tracker(name):
        def cb(it, seconds, tables):
            curves[name].append((it, seconds, evaluate(tables, history, p2.test, **ev)[f"ndcg@{K}"]))
        return cb

    scratch = pretrain(history, iterations=iterations, callback=tracker("scratch"), **common)
    warm = warm_start(base, history, iterations=iterations, callback=tracker("warm start"), **common)
    target_ndcg = curves["scratch"][-1][2]
    reached = next(((it, s) for it, s, v in curves["warm start"] if v >= target_ndcg), None)
    # when does scratch itself get within 1% of its final quality? (ALS converges fast, say so)
    own = next(it for it, _, v in curves["scratch"] if v >= 0.99 * target_ndcg)
    r_scratch = evaluate(scratch, history, p2.test, **ev)
    r_warm = evaluate(warm, history, p2.test, **ev)
    fold0, _ = align(base, history)  # period-1 tables resized, new rows folded in, no training
    r_fold0 = evaluate(fold0, history, p2.test, **ev)
    curves["warm start"].insert(0, (0, 0.0, r_fold0[f"ndcg@{K}"]))  # where training starts from
    mode = "warm start (new period)"
    rows.append(_row(mode, "ALS from scratch", r_scratch, iterations, f"{curves['scratch'][-1][1]:.2f}",
                     f"within 1% of its final NDCG at iteration {own}"))
    rows.append(_row(mode, "old tables + fold-in, no training", r_fold0, 0, "0"))
    fold_s = warm.meta.get("align_seconds", 0.0)
    note = (f"reached scratch's final NDCG at iteration {reached[0]} ({reached[1]:.2f} s + {fold_s:.2f} s fold-in)"
            if reached else "did not reach scratch's final NDCG")
    rows.append(_row(mode, "warm start from period-1 tables", r_warm, iterations,
                     f"{curves['warm start'][-1][1]:.2f}", note))
    rows.append(_row(mode, "popularity (all history)", evaluate(popularity(history), history, p2.test, **ev)))
    rows.append(_row(mode, "popularity (new period only)",
                     evaluate(popularity(history, since=1.0), history, p2.test, **ev)))

    # 2) cross-domain: sparse target domain sharing users with period 1; latest 2 events per user held out
    tsplit = leave_k_out(world.target, k=2, by_time=True)
    tev = {**ev, "split": tsplit.info}
    mode = "cross-domain (shared users)"
    t0 = time.perf_counter()
    t_scratch = pretrain(tsplit.train, iterations=iterations, **common)
    s_scratch = time.perf_counter() - t0
    t0 = time.perf_counter()
    t_cross = cross_domain(base, tsplit.train, iterations=0)
    s_cross = time.perf_counter() - t0
    t_cross_ft = cross_domain(base, tsplit.train, iterations=3, **common)
    rows.append(_row(mode, "ALS on target only (scratch)", evaluate(t_scratch, tsplit.train, tsplit.test, **tev),
                     iterations, f"{s_scratch:.2f}"))
    rows.append(_row(mode, "source user factors, items by least squares",
                     evaluate(t_cross, tsplit.train, tsplit.test, **tev), 0, f"{s_cross:.2f}"))
    rows.append(_row(mode, "  + 3 ALS iterations on target", evaluate(t_cross_ft, tsplit.train, tsplit.test, **tev),
                     3, f"{t_cross_ft.meta['train_seconds']:.2f}",
                     "ALS re-solves users from the sparse target alone"))
    rows.append(_row(mode, "popularity (target)", evaluate(popularity(tsplit.train), tsplit.train, tsplit.test, **tev)))
    t_recent = float(np.quantile(tsplit.train.times, 0.5))
    rows.append(_row(mode, "popularity (target, recent half)",
                     evaluate(popularity(tsplit.train, since=t_recent), tsplit.train, tsplit.test, **tev)))

    # 3) cold-start items: rank only the items nobody interacted with in training
    mode = "cold-start items (content)"
    cold_ids = sorted(cold, key=lambda s: int(s[1:]))
    content = dict(zip(world.content_ids, world.content))
    known = [i for i in warm.item_ids if i in content]
    cev = {**ev, "items": cold_ids}
    for kind in ("ridge", "mlp"):
        mapper = ContentMapper(kind=kind, min_count=5, seed=seed)  # penalty chosen on training items
        mapper.fit(warm, known, np.stack([content[i] for i in known]))
        tables = mapper.add_items(warm, cold_ids, np.stack([content[i] for i in cold_ids]))
        rows.append(_row(mode, f"ContentMapper ({kind}) on warm tables",
                         evaluate(tables, history, p2.test, **cev), note=f"trained on {mapper.n_train_} items, alpha {mapper.alpha_:g}"))
    rnd = random_tables(warm.user_ids, warm.item_ids + cold_ids, seed=seed)
    rows.append(_row(mode, "random (popularity is undefined: 0 events)", evaluate(rnd, history, p2.test, **cev)))

    # 4) fold-in of new users at serving time vs a full refit that includes them
    mode = "fold-in of new users"
    new_users = set(world.new_users)
    new_test = p2.test.subset(np.array([p2.test.user_ids[u] in new_users for u in p2.test.users]))
    new_hist = p2_train.subset(np.array([p2_train.user_ids[u] in new_users for u in p2_train.users]))
    nev = {**ev, "unknown": "cold_start"}
    t0 = time.perf_counter()
    folded = fold_in_users(base, new_hist)
    s_fold = time.perf_counter() - t0
    rows.append(_row(mode, "full refit (ALS from scratch)", evaluate(scratch, history, new_test, **nev),
                     iterations, f"{curves['scratch'][-1][1]:.2f}"))
    rows.append(_row(mode, "fold-in into period-1 tables", evaluate(folded, history, new_test, **nev), 0,
                     f"{s_fold:.2f}"))
    rows.append(_row(mode, "popularity (all history)", evaluate(popularity(history), history, new_test, **nev)))
    rows.append(_row(mode, "popularity (new period only)",
                     evaluate(popularity(history, since=1.0), history, new_test, **nev)))

    warm.save(out / "tables-warm-start")
    warm.write_card(out / "tables-warm-start", metrics={k: v for k, v in r_warm.items() if "@" in k},
                    data={"split": split["split"], "seed": seed, "filter_seen": True, "positive_threshold": 0.0})
    total = time.perf_counter() - t_start
    table = _markdown(rows, seed, world, total, f"{out.name}/recsys_warm_start.png")
    (out / "report.md").write_text(table + "\n")
    (out / "recsys_results.json").write_text(json.dumps(
        {"rows": rows, "seed": seed, "k": K, "positive_threshold": 0.0, "filter_seen": True, "als": ALS,
         "splits": {"new period": split, "cross-domain": tsplit.info}, "curves": curves,
         "world": {k: v for k, v in world.info.items() if isinstance(v, (int, float))},
         "seconds": round(total, 1)}, indent=1, default=str))
    (out / "recsys_table.md").write_text(table)
    _plot(curves, out / "recsys_warm_start.png")
    return table


def _markdown(rows, seed, world, total, plot) -> str:
    lines = [
        "## Recommendation: transfer of embedding tables",
        "",
        f"| mode | method | NDCG@{K} | recall@{K} | iterations | train s | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['method']} | {r['ndcg']:.4f} | {r['recall']:.4f} | {r['iters']} | "
                     f"{r['seconds']} | {r['note']} |")
    p1 = world.period1
    lines.append("")
    lines.append(
        f"Synthetic world (seed {seed}): period 1 {p1.n_users} users x {p1.n_items} items, {len(p1)} events; "
        f"ALS {ALS['factors']} factors, regularization {ALS['regularization']}, alpha {ALS['alpha']}. "
        f"Split: new period by time (last 40% test), target domain latest 2 events per user held out. "
        f"Relevant = any held-out event (positive threshold 0), items seen in training filtered, unknown "
        f"users cold-started (fold-in, else popularity). Total {total:.0f} s."
    )
    lines += ["", f"Plot: `{plot}` (NDCG@{K} per ALS iteration, warm start vs scratch)."]
    return "\n".join(lines)


def _plot(curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, points in curves.items():
        if points:
            ax.plot([p[0] for p in points], [p[2] for p in points], marker="o", ms=3, label=name)
    ax.set_xlabel("ALS iteration (0: pretrained tables + fold-in)")
    ax.set_ylabel(f"NDCG@{K}, new period")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

