"""Where ``recsys.pretrain``'s time goes beside implicit's own ALS fit on MovieLens 100K: back-to-back timings of both
paths, then a cProfile of one ``pretrain`` call (implicit's fit against transferkit's code around it).

    python benchmarks/als_overhead_profile.py [--data ../shared/data/ml-100k]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path


def main() -> None:
    import implicit
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from transferkit.recsys import Interactions, pretrain

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))
    args = p.parse_args()
    r = pd.read_csv(Path(args.data) / "u.data", sep="\t", names=["user", "item", "rating", "time"])
    inter = Interactions.from_arrays(r.user.to_numpy(), r.item.to_numpy(), weights=r.rating.to_numpy())
    matrix = inter.matrix
    hp = {"factors": 64, "iterations": 15, "regularization": 0.01, "alpha": 1.0}

    def ours() -> None:
        pretrain(inter, model="als", seed=0, num_threads=2, use_gpu=False, **hp)

    def theirs() -> None:
        with threadpool_limits(limits=1, user_api="blas"):
            implicit.cpu.als.AlternatingLeastSquares(random_state=0, num_threads=2, **hp).fit(matrix, show_progress=False)

    ours(), theirs()  # warm-up
    for _ in range(3):
        for name, fn in (("transferkit pretrain", ours), ("implicit fit", theirs)):
            t0 = time.perf_counter()
            fn()
            print(f"{name}: {time.perf_counter() - t0:.4f} s")
    prof = cProfile.Profile()
    prof.enable()
    ours()
    prof.disable()
    pstats.Stats(prof).sort_stats("cumtime").print_stats(12)


if __name__ == "__main__":
    main()
