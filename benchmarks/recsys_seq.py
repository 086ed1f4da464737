"""The sequential rows of benchmarks/recsys_ml100k.py: SASRec-style self-attention over each user's
latest items, from scratch, from the history's ALS tables and from MiniLM title embeddings, on the
time split (a), the half-known protocol (h) and leave-last-out per user; beside the popularity
variants; plus speed and size on ml-100k and on generated events.

Every sequential model trains a fixed number of epochs with fixed settings (nothing is chosen on a
test split); the per-epoch test NDCG is recorded only to read how soon each start reaches a quality,
never to pick an epoch: the reported model is the last epoch's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

K = 10
SEQ = {"dim": 32, "layers": 2, "heads": 2, "max_len": 50, "dropout": 0.2, "train_windows": "all",
       "time_features": "gap+period", "period_days": 7.0, "periods": 26}
# the order-only model of the paper: no time, every event a target, each user's latest window
PLAIN = {**SEQ, "train_windows": "latest", "time_features": "none"}
LOOP = {"batch_size": 32, "lr": 3e-3, "weight_decay": 0.0, "warmup_ratio": 0.0, "save_checkpoints": False,
        "progress": False, "plot": False}
POP_HALF_LIVES = [7 * 86400.0, 14 * 86400.0, 30 * 86400.0, 60 * 86400.0, float("inf")]


def split_llo(ratings, events, binary) -> dict:
    """Leave-last-out: each user's latest rating is the test (ties by timestamp broken by event order)."""
    from transferkit.recsys import leave_k_out

    split = leave_k_out(events(ratings, rated=True), k=1, by_time=True)
    train = binary(split.train)
    return {"history": train, "train": train, "rated": split.train, "test": split.test, "threshold": 0.0,
            "serve_time": "last_event", "dev": leave_k_out(split.train, k=1, by_time=True), "split": split.info,
            "group": ("with training events", "none (cold)", set(split.train.user_ids))}


def popularity_rows(d: dict, scored, seed: int) -> list:
    """The popularity variants of the split, the last one's half-life and threshold chosen on dev."""
    from transferkit.recsys import dev_trials, popularity

    ev = {"k": K, "positive_threshold": d["threshold"], "filter_seen": True, "unknown": "cold_start"}
    rows = [("popularity (all training data)", scored(popularity(d["train"]), d, seed), "", "", "")]
    if "new" in d:
        rows.append(("popularity (new period's training events only)", scored(popularity(d["new"]), d, seed),
                     "", "", ""))
    pop = dev_trials(lambda **p: popularity(d["dev"].train, **p),
                     {"half_life": POP_HALF_LIVES, "min_weight": [0.0, 4.0]}, d["dev"], **ev)
    hl = pop.params["half_life"]
    rows.append(("popularity, decayed (dev-chosen)", scored(popularity(d["rated"], **pop.params), d, seed), "", "",
                 f"half-life {'none' if hl in (None, float('inf')) else f'{hl / 86400:g} d'}, "
                 f"min_weight {pop.params['min_weight']:g}"))
    return rows


def title_vectors(movies, encoder: str, cache: Path | None = None) -> tuple[dict, float]:
    """MiniLM vectors of every title and the seconds they took (read back from ``cache`` when it holds the
    same titles embedded by the same encoder; the seconds are then those of the run that wrote it)."""
    import hashlib

    from transferkit.recsys import embed_texts

    titles = movies.title.fillna("").tolist()
    key = hashlib.sha256("\n".join([str(encoder), *titles]).encode()).hexdigest()[:16]
    path = None if cache is None else cache / f"titles-{key}.npz"
    if path is not None and path.exists():
        stored = np.load(path)
        return dict(zip(movies.item.tolist(), stored["vectors"])), float(stored["seconds"])
    t0 = time.perf_counter()
    vectors = embed_texts(titles, encoder)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, vectors=vectors, seconds=seconds)
    return dict(zip(movies.item.tolist(), vectors)), seconds


def build(start: str, train, tables, titles: dict, seed: int, threshold: float = 0.0):
    """A fresh SequentialRecommender for ``start``: plain, scratch, tables:<mode> or content:<mode>; the time
    models learn the events the split calls relevant (``threshold``) as next items."""
    from transferkit.recsys import SequentialConfig, SequentialRecommender

    kind, _, mode = start.partition(":")
    if kind.startswith("plain"):  # the paper's model: plain (scratch), plain-tables:<mode>, plain-content:<mode>
        kind = kind.removeprefix("plain").removeprefix("-") or "scratch"
        config = SequentialConfig(**PLAIN, seed=seed, item_training=mode or "finetune")
    else:
        config = SequentialConfig(**SEQ, seed=seed, item_training=mode or "finetune", target_threshold=threshold)
    if kind == "scratch":
        return SequentialRecommender(train.item_ids, config)
    if kind == "tables":
        return SequentialRecommender.from_tables(tables, item_ids=train.item_ids, config=config)
    content = np.stack([titles[i] for i in train.item_ids])
    return SequentialRecommender.from_content(train.item_ids, content, config)


def run_start(d: dict, start: str, tables, titles: dict, seed: int, epochs: int, scored, out: Path) -> dict:
    """Train one start for ``epochs``; the curve holds (cumulative train seconds, NDCG, NDCG on users with
    history) after each epoch; the result is the last epoch's."""
    from transferkit.common import Callback

    model = build(start, d["train"], tables, titles, seed, threshold=d["threshold"])
    model.serve_time = d.get("serve_time")  # None: requests come at the end of training (a global time cut)
    curve = []

    class Curve(Callback):
        def on_epoch_end(self, trainer, row):
            r = scored(model, d, seed)
            spent = (curve[-1][0] if curve else 0.0) + row["seconds"]
            curve.append((spent, r[f"ndcg@{K}"], r["group_in"][0]))

    model.fit(d["rated"], epochs=epochs, seed=seed, output_dir=str(out / f"{start}-{seed}"), callbacks=[Curve()],
              **LOOP)
    t0 = time.perf_counter()
    result = scored(model, d, seed)
    return {"result": result, "curve": curve, "train_s": curve[-1][0], "serve_s": time.perf_counter() - t0}


def mean_result(runs: list[dict]) -> dict:
    """Metric means over seeds, in the shape the benchmark's table() reads."""
    first = runs[0]["result"]
    out = {k: float(np.mean([r["result"][k] for r in runs])) for k, v in first.items() if isinstance(v, float)
           and k not in ("positive_threshold",)}
    out["n_users"] = first["n_users"]
    for key in ("group_in", "group_out"):
        out[key] = (float(np.mean([r["result"][key][0] for r in runs])), first[key][1])
    return out


STARTS = {"plain": "SASRec, order only (no time, every event a target), from scratch",
          "plain-tables:finetune": "SASRec, order only, from ALS tables, rows fine-tuned",
          "plain-content:finetune": "SASRec, order only, from MiniLM titles, rows fine-tuned", "scratch": "from scratch", "tables:finetune": "from ALS tables, rows fine-tuned",
          "tables:frozen": "from ALS tables, rows frozen", "tables:partial": "from ALS tables, rows frozen + residual",
          "content:finetune": "from MiniLM titles, rows fine-tuned"}


def sequential_rows(d: dict, tables, titles: dict, starts: list[str], seeds: list[int], epochs: int, scored,
                    out: Path) -> tuple[list, dict]:
    """Rows (name, mean result, epochs, mean train s, note) for each start, and the runs behind them."""
    rows, runs = [], {}
    for start in starts:
        runs[start] = [run_start(d, start, tables, titles, s, epochs, scored, out) for s in seeds]
        ins = [r["result"]["group_in"][0] for r in runs[start]]
        alls = [r["result"][f"ndcg@{K}"] for r in runs[start]]
        rows.append((f"sequential {STARTS[start]}", mean_result(runs[start]), epochs,
                     float(np.mean([r["train_s"] for r in runs[start]])),
                     f"mean of seeds {', '.join(map(str, seeds))}; with history: std {np.std(ins):.4f}, "
                     f"range {min(ins):.4f}-{max(ins):.4f}; all users: range {min(alls):.4f}-{max(alls):.4f}"))
    return rows, runs


def goal_lines(label: str, seq_rows: list, pop_rows: list, runs: dict) -> list[str]:
    """The issue's two goals, read from this split's rows."""
    best_pop = max(pop_rows, key=lambda r: r[1]["group_in"][0])
    best_seq = max(seq_rows, key=lambda r: r[1]["group_in"][0])  # the plain row is a sequential model too
    gap = best_seq[1]["group_in"][0] - best_pop[1]["group_in"][0]
    lines = [f"- {label}, users with history: best sequential row ({best_seq[0]}) "
             f"{best_seq[1]['group_in'][0]:.4f} vs best popularity variant ({best_pop[0]}) "
             f"{best_pop[1]['group_in'][0]:.4f}: {gap:+.4f} (goal >= +0.03: "
             f"{'met' if gap >= 0.03 else f'missed by {0.03 - gap:.4f}'})."]
    best_all = max(seq_rows, key=lambda r: r[1][f"ndcg@{K}"])
    pop_all = max(pop_rows, key=lambda r: r[1][f"ndcg@{K}"])
    lines.append(f"- {label}, every test user: best sequential row {best_all[1][f'ndcg@{K}']:.4f} vs best popularity "
                 f"variant {pop_all[1][f'ndcg@{K}']:.4f} ({best_all[1][f'ndcg@{K}'] - pop_all[1][f'ndcg@{K}']:+.4f}).")
    for start, start_runs in runs.items():
        base = "plain" if start.startswith("plain") else "scratch"  # each family against its own scratch row
        if start in ("scratch", "plain") or base not in runs:
            continue
        scratch = runs[base]
        s_in = [r["result"]["group_in"][0] for r in scratch]
        s_final, s_time = float(np.mean(s_in)), float(np.mean([r["train_s"] for r in scratch]))
        t_in = [r["result"]["group_in"][0] for r in start_runs]
        spread = max(max(s_in) - min(s_in), max(t_in) - min(t_in))
        diff = float(np.mean(t_in)) - s_final
        curve = np.mean([[c[2] for c in r["curve"]] for r in start_runs], axis=0)
        secs = np.mean([[c[0] for c in r["curve"]] for r in start_runs], axis=0)
        reach = next((i for i, v in enumerate(curve) if v >= s_final), None)
        when = (f"reaches scratch's final {s_final:.4f} after epoch {reach + 1} ({secs[reach]:.1f} s, "
                f"{secs[reach] / s_time:.2f}x scratch's {s_time:.1f} s)" if reach is not None
                else f"never reaches scratch's final {s_final:.4f} (best epoch mean {curve.max():.4f})")
        met = diff > spread or (reach is not None and secs[reach] <= s_time / 3)
        lines.append(f"- {label}, {STARTS[start]}: {diff:+.4f} vs {STARTS[base]} on users with history (seed ranges up to "
                     f"{spread:.4f}); {when}. Goal (beat scratch by more than the seed range, or reach it in "
                     f"<= 1/3 of its time): {'met' if met else 'missed'}.")
    return lines


def head_commit() -> str | None:
    """HEAD from git (benchinfo reads .git as a folder; in a git worktree it is a file)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


HEAD_AT_START = head_commit()  # read when the benchmark starts: the code that ran


def with_commit(lines: list[str]) -> list[str]:
    """The commit line with HEAD at the start of the run when benchinfo could not read it."""
    head = HEAD_AT_START
    if head is None:
        return lines
    return [f"- Commit: `{head}` (HEAD when the run started, from git rev-parse; uncommitted changes are not detected)"
            if line.startswith("- Commit: `unknown") else line for line in lines]


# -- speed and size --------------------------------------------------------------------------------------
def generated_events(n_events: int, n_items: int, per_user: int = 50, seed: int = 0):
    """``n_events`` distinct (user, item) pairs: users walk a catalogue, half the steps to the next item,
    half to a popular one (probability ~ 1 / (rank + 10)); repeats are summed, then users are added until
    there are ``n_events`` pairs."""
    from transferkit.recsys import Interactions

    rng = np.random.default_rng(seed)
    n_users = int(n_events / per_user * 1.1) + 1
    p = 1.0 / (np.arange(n_items) + 10.0)
    popular = rng.choice(n_items, size=(n_users, per_user), p=p / p.sum())
    items = np.empty((n_users, per_user), np.int64)
    items[:, 0] = popular[:, 0]
    step = rng.random((n_users, per_user)) < 0.5
    for t in range(1, per_user):
        items[:, t] = np.where(step[:, t], (items[:, t - 1] + 1) % n_items, popular[:, t])
    users = np.repeat(np.arange(n_users), per_user)
    times = np.tile(np.arange(per_user, dtype=np.float64), n_users)
    inter = Interactions.from_arrays(users, items.ravel(), times=times)
    if len(inter) < n_events:
        raise ValueError(f"generated only {len(inter)} distinct pairs for {n_events}: raise per_user's margin")
    return inter.subset(np.arange(len(inter)) < n_events)


def measure(source: str, data: str, epochs: int, threads: int, out: str) -> dict:
    """Train and serve one scratch model; run in its own process so the peak memory is its own."""
    import torch

    from transferkit.recsys import Interactions, SequentialConfig, SequentialRecommender

    torch.set_num_threads(threads)
    if source == "ml-100k":
        import pandas as pd

        frame = pd.read_csv(Path(data) / "u.data", sep="\t", names=["user", "item", "rating", "time"])
        inter = Interactions.from_frame(frame, time="time")
    else:
        inter = generated_events(int(source), n_items=2000)
    model = SequentialRecommender(inter.item_ids, SequentialConfig(**SEQ))
    t0 = time.perf_counter()
    model.fit(inter, epochs=epochs, output_dir=out, **LOOP)
    train_s = time.perf_counter() - t0
    users = [u for u, n in zip(inter.user_ids, inter.user_counts()) if n]
    t0 = time.perf_counter()
    model.recommend(users, N=K)
    serve_s = time.perf_counter() - t0
    folder = model.save(Path(out) / "model")
    disk = sum(f.stat().st_size for f in folder.iterdir())
    return {"events": len(inter), "users": len(users), "items": inter.n_items, "epochs": epochs,
            "train_s": train_s, "serve_s": serve_s, "served_users": len(users),
            "params": sum(p.numel() for p in model.net.parameters()), "disk_mb": disk / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def speed_lines(script: Path, data: Path, threads: int, scale_events: int, out: Path,
                skip_ml100k: bool = False) -> list[str]:
    rows, names = [], []
    sources = ([] if skip_ml100k else [("ml-100k", "MovieLens 100K (every rating)")]) + [
        (str(scale_events), "generated (walks + Zipf popularity)")]
    for source, name in sources:
        names.append(name)
        cmd = [sys.executable, str(script), "--measure", source, "--data", str(data), "--threads", str(threads),
               "--out", str(out / f"measure-{source}")]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    lines = ["| data | events | users | items | epochs | train s | train s per 1k events per epoch | serve s "
             "(every user, top 10, seen filtered) | parameters | on disk MB | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for source, r in zip(names, rows):
        lines.append(f"| {source} | {r['events']} | {r['users']} | {r['items']} | {r['epochs']} | {r['train_s']:.1f} | "
                     f"{1000 * r['train_s'] / r['events'] / r['epochs']:.3f} | {r['serve_s']:.1f} | {r['params']} | "
                     f"{r['disk_mb']:.1f} | {r['peak_rss_mb']:.0f} |")
    return lines


def section(splits: dict, titles: dict, encode_s: float, starts: dict, seeds: list[int], epochs: int, scored, table,
            out: Path) -> tuple[list[str], dict]:
    """The markdown of the sequential section over ``splits`` {label: (d, tables)}; ``starts`` {label: [start]}."""
    lines, info = [], {}
    for label, (d, tables) in splits.items():
        pops = popularity_rows(d, scored, seeds[0])
        rows, runs = sequential_rows(d, tables, titles, starts[label], seeds, epochs, scored, out / label)
        lines += [f"### {label}", "", *table(pops + rows, d["group"]), "", *goal_lines(label, rows, pops, runs), ""]
        out.mkdir(parents=True, exist_ok=True)
        (out / "partial.md").write_text("\n".join(lines) + "\n")  # what is done so far, should a run be cut short
        info[label] = {r[0]: round(r[1]["group_in"][0], 4) for r in pops + rows}
    lines.append(f"Title embeddings for the content start: {encode_s:.1f} s once for the whole catalogue "
                 "(not in any row's train seconds).")
    return lines, info
