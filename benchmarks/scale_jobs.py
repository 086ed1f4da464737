"""The measured jobs of ``scale.py``, each run in its own process so that its peak memory is its own.

``python benchmarks/scale_jobs.py '<json>'`` runs one job and prints one JSON line: seconds per phase,
peak memory (sampled from /proc/self/status every 10 ms: VmRSS, and RssAnon, the private memory that an
out-of-memory kill counts; memory-mapped cache pages are file-backed, shared and reclaimable), and the
bytes the process wrote (/proc/self/io).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np


class PeakMemory:
    """Peak VmRSS and RssAnon of this process, sampled on a thread."""

    def __init__(self, every: float = 0.01) -> None:
        self.peak = {"VmRSS": 0, "RssAnon": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                self.peak[key] = max(self.peak[key], int(value.split()[0]) * 1024)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(every)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {"peak_rss": self.peak["VmRSS"], "peak_anon": self.peak["RssAnon"]}


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def folder_bytes(folder: str | None) -> int:
    if not folder or not Path(folder).exists():
        return 0
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def epochs(dataset, collate, n_epochs: int, batch_size: int = 256) -> list[float]:
    """Seconds per epoch of fit's loader over ``dataset`` (shuffled batches through its collate), no model."""
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(0))
    out = []
    for _ in range(n_epochs):
        t0 = time.perf_counter()
        for batch in loader:
            assert torch.isfinite(next(iter(v for v in batch.values() if v.is_floating_point()))).all()
        out.append(time.perf_counter() - t0)
    return out


def images(job: dict) -> dict:
    from transferkit.common import TrainConfig
    from transferkit.vision import ImageClassifier, ImageSet

    clf = ImageClassifier.from_pretrained(job["encoder"], labels=[f"c{k}" for k in range(10)], strategy="finetune")
    t0 = time.perf_counter()
    train = ImageSet.from_folder(job["root"])
    listed = time.perf_counter() - t0
    data = clf.training_data(train, None, TrainConfig(seed=0, progress=False),
                             decode_cache=job["cache"] if job["cache"] else False)
    seconds = epochs(data.train, data.collate, job["epochs"])
    return {"list_and_check_s": listed, "epoch_s": seconds, "examples": len(train)}


def stream(job: dict) -> dict:
    """The same JPEG folder read as a streaming ``datasets`` imagefolder through fit's stream data path: each
    image decoded and augmented as it passes (``StreamReader``: batch 256, fit's default shuffle buffer of
    1000, fit's stream collate), no model. *list + check* is ``load_dataset``'s listing of the files (a stream
    checks nothing ahead: an unreadable file is skipped, counted and logged as it passes)."""
    import datasets

    from transferkit.common import TrainConfig
    from transferkit.common.streams import StreamReader
    from transferkit.vision import ImageClassifier

    datasets.disable_progress_bars()
    config = TrainConfig(seed=0, progress=False)
    clf = ImageClassifier.from_pretrained(job["encoder"], labels=[f"c{k}" for k in range(10)], strategy="finetune")
    t0 = time.perf_counter()
    train = datasets.load_dataset("imagefolder", data_dir=job["root"], streaming=True)["train"]
    listed = time.perf_counter() - t0
    data = clf.training_data(train, None, config)
    reader = StreamReader(data.train, 256, data.collate, config.seed, config.shuffle_buffer)
    seconds, examples = [], 0
    for epoch in range(1, job["epochs"] + 1):
        t0, examples = time.perf_counter(), 0
        for batch in reader.batches(epoch):
            assert torch_finite(batch["pixel_values"])
            examples += len(batch["labels"])
        seconds.append(time.perf_counter() - t0)
    return {"list_and_check_s": listed, "epoch_s": seconds, "examples": examples, "skipped": data.train.skipped}


def torch_finite(x) -> bool:
    import torch

    return bool(torch.isfinite(x).all())


def clips(job: dict) -> dict:
    from transferkit.audio import AudioClassifier, AudioDataset
    from transferkit.common import TrainConfig

    clf = AudioClassifier.from_pretrained(job["encoder"], labels=[f"c{k}" for k in range(10)], strategy="finetune")
    t0 = time.perf_counter()
    train = AudioDataset.from_folder(job["root"], target_rate=clf.sampling_rate, cache=job["cache"] or False)
    listed = time.perf_counter() - t0
    data = clf.training_data(train, None, TrainConfig(seed=0, progress=False))
    seconds = epochs(data.train, data.collate, job["epochs"])
    return {"list_and_check_s": listed, "epoch_s": seconds, "examples": len(train)}


def events(n: int, seed: int = 0):
    """``n`` generated events: users in 200 taste clusters, each event from the user's cluster's Zipf-ranked items
    80% of the time, else from global Zipf popularity. The last tenth by time is the new period, in which every
    tenth user appears under a new id (a new user). Held out: the last new-period event of up to 2,000 new users
    with at least two. Returns (old, new without the held-out events, held out)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_users, n_items, clusters = max(n // 40, 100), max(n // 200, 200), 200
    user = rng.integers(0, n_users, n)
    popular = np.minimum(rng.zipf(1.2, n) - 1, n_items - 1)
    width = n_items // clusters
    own = (user % clusters) * width + np.minimum(rng.zipf(1.5, n) - 1, width - 1)
    item = np.where(rng.random(n) < 0.8, own, popular)
    frame = pd.DataFrame({"user": user, "item": item, "w": np.ones(n, np.float32), "t": np.sort(rng.random(n))})
    cut = int(0.9 * n)
    old, new = frame.iloc[:cut], frame.iloc[cut:].copy()
    new.loc[new["user"] % 10 == 0, "user"] += n_users
    fresh = new[new["user"] >= n_users]
    counts = fresh["user"].value_counts()
    chosen = counts[counts >= 2].index.to_series().sample(n=min(2000, int((counts >= 2).sum())), random_state=0)
    last = fresh[fresh["user"].isin(chosen)].groupby("user").tail(1)
    return old, new.drop(index=last.index), last


def recsys(job: dict) -> dict:
    import pandas as pd

    from transferkit.recsys import (
        EmbeddingTables,
        Interactions,
        evaluate,
        fold_in_users,
        pretrain,
        warm_start,
    )
    from transferkit.recsys.baselines import popularity

    def inter(frame):
        return Interactions.from_frame(frame, user="user", item="item", weight="w", time="t")

    old_f, new_f, test_f = events(job["events"])
    kw = {"factors": 32, "num_threads": job["threads"]}
    t0 = time.perf_counter()
    if job["step"] == "pretrain_old":
        pretrain(inter(old_f), iterations=job["iterations"], **kw).save(job["tables"])
        return {"seconds": time.perf_counter() - t0, "events": len(old_f)}
    tables = EmbeddingTables.load(job["tables"]) if job["step"] in ("warm_start", "fold_in") else None
    t0 = time.perf_counter()
    if job["step"] == "retrain":
        model, seen = pretrain(inter(pd.concat([old_f, new_f])), iterations=job["iterations"], **kw), len(old_f) + len(new_f)
    elif job["step"] == "warm_start":
        model, seen = warm_start(tables, inter(new_f), iterations=job["warm_iterations"], num_threads=job["threads"]), len(new_f)
    elif job["step"] == "fold_in":
        model, seen = fold_in_users(tables, inter(new_f[new_f["user"].isin(test_f["user"])])), int(new_f["user"].isin(test_f["user"]).sum())
    else:
        model, seen = popularity(inter(pd.concat([old_f, new_f]))), len(old_f) + len(new_f)
    seconds = time.perf_counter() - t0
    history = inter(new_f[new_f["user"].isin(test_f["user"])])
    recall = evaluate(model, history, inter(test_f), k=10, filter_seen=False, unknown="cold_start")["recall@10"]
    return {"seconds": seconds, "events": seen, "test_users": len(test_f), "recall_at_10": float(recall)}


def run_job(job: dict) -> dict:
    """Run one job in this process and measure it (peaks are this process's since it started)."""
    import torch

    torch.set_num_threads(job.get("threads", 1) or 1)
    if job.get("budget"):
        os.environ["TRANSFERKIT_CACHE_BUDGET"] = str(job["budget"])
    else:
        os.environ.pop("TRANSFERKIT_CACHE_BUDGET", None)
    meter, before = PeakMemory(), written_bytes()
    out = {"images": images, "stream": stream, "clips": clips, "recsys": recsys}[job["kind"]](job)
    return out | meter.stop() | {"written": written_bytes() - before, "cache_bytes": folder_bytes(job.get("cache"))}


def main() -> None:
    print("JOB " + json.dumps(run_job(json.loads(sys.argv[1]))), flush=True)


if __name__ == "__main__":
    main()
