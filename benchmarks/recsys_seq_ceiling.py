"""How far popularity can go on split (a)'s users with history: the test period's own popularity, a ranking no
model can have (it counts the test events), set beside the dev-chosen decayed popularity of section (s).

For each test user with training events, items are ranked by how many *other* test users rated them relevantly
in the test period (ties by training popularity), seen items filtered, scored with the same NDCG@10 as every row
of ``benchmarks/results/recsys_ml100k.md``. If this ceiling is barely above the decayed popularity, no model that
beats popularity must do it by predicting what the test period as a whole liked.

    python benchmarks/recsys_seq_ceiling.py [--data ../shared/data/ml-100k]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from recsys_ml100k import K, load, split_a

from transferkit.recsys.metrics import ndcg_at_k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))
    args = p.parse_args()
    ratings, _ = load(Path(args.data), smoke=False)
    d = split_a(ratings)
    test = d["test"].to_frame()
    relevant = test[test.weight >= d["threshold"]]
    train = d["train"].to_frame()
    seen = train.groupby("user").item.apply(set).to_dict()
    train_pop = Counter(train.item)
    with_history = set(d["group"][2])
    per_user = relevant.groupby("user").item.apply(set).to_dict()
    period = Counter(relevant.item)
    recommended, wanted = [], []
    for user, items in per_user.items():
        if user not in with_history:
            continue
        counts = period.copy()
        counts.subtract(Counter(items))  # the user's own test events do not count
        ranked = sorted((i for i in set(period) | set(train_pop) if i not in seen.get(user, ())),
                        key=lambda i: (-counts[i], -train_pop[i]))
        recommended.append(ranked[:K])
        wanted.append(items)
    score = ndcg_at_k(recommended, wanted, K)
    print(f"(a) users with history and a relevant test event: {len(wanted)}; NDCG@{K} of the test period's own "
          f"popularity among the other test users: {score:.4f}")
    print(f"RESULT recsys_seq_ceiling ndcg={score:.4f} users={len(wanted)}")


if __name__ == "__main__":
    main()
