"""How fit's data path scales: generated JPEGs and clips through the decode cache (on, off, over budget),
and recommendation at 10M generated events (warm start and fold-in against retraining, popularity beside).

Every measurement runs in its own process (``scale_jobs.py``): peak memory (VmRSS and RssAnon, the private
part), bytes written, seconds per epoch of fit's loader (shuffled batches through fit's collate, no model:
the data path alone, the part that grows with the data set). Offline; the data is generated here.
The images are also read as a streaming ``datasets`` imagefolder through fit's stream data path.
Writes ``benchmarks/results/scale.md``; ``--only`` runs some parts and writes ``scale_<parts>.md``.
    python benchmarks/scale.py [--images 10000 100000] [--clips 20000] [--events 10000000] --threads 1   # ~40 min
    python benchmarks/scale.py --only stream --threads 1   # the streaming rows alone
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchinfo  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
MB = 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchinfo.add_common_arguments(p, data="not used (the data is generated)", smoke="tiny sizes: checks the script runs")
    p.add_argument("--images", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--clips", type=int, default=20_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                   help="parts to run (default all): images (cache on/off/budget), stream (the same images as a "
                        "streaming datasets imagefolder), clips, recsys")
    p.add_argument("--work", help="folder for the generated data and caches (default: a temporary one, removed)")
    args = p.parse_args()
    if args.smoke:
        global IN_PROCESS
        args.images, args.clips, args.events, IN_PROCESS = [300, 1200], 200, 100_000, True
    threads = max(args.threads, 1)
    work = Path(args.work or tempfile.mkdtemp(prefix="tk-scale-"))
    load_before, t_start = benchinfo.load_average(), time.perf_counter()
    try:
        rows = run(args, work, threads)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    lines = report(args, rows, load_before, f"{threads} (--threads)", time.perf_counter() - t_start)
    name = "scale" if set(args.only) == set(PARTS) else "scale_" + "_".join(p for p in PARTS if p in args.only)
    benchinfo.write_results(args.results_dir, name, args.smoke, lines)
    print(f"RESULT {name} " + " ".join(result_values(args, rows)))


PARTS = ("images", "stream", "clips", "recsys")


def result_values(args, rows: dict) -> list[str]:
    img, big, small = rows["images"], max(args.images), min(args.images)
    out = []
    if "images" in args.only:
        slope = (img[(big, "on")]["peak_anon"] - img[(small, "on")]["peak_anon"]) / (big - small)
        out += [f"anon_slope_bytes_per_image={slope:.0f}", f"peak_anon_mb_{big}={img[(big, 'on')]['peak_anon'] / MB:.0f}",
                f"cache_within_budget={img[(big, 'budget')]['cache_bytes'] <= img[(big, 'budget')]['budget_bytes']}"]
    if "stream" in args.only:
        st = rows["stream"]
        out += [f"stream_anon_slope_bytes_per_image={(st[big]['peak_anon'] - st[small]['peak_anon']) / (big - small):.0f}",
                f"stream_peak_anon_mb_{big}={st[big]['peak_anon'] / MB:.0f}",
                f"stream_examples_{big}={st[big]['examples']}", f"stream_pass_s_{big}={st[big]['epoch_s'][0]:.2f}"]
    if "recsys" in args.only:
        out += [f"warm_start_s={rows['recsys']['warm_start']['seconds']:.4f}",
                f"retrain_s={rows['recsys']['retrain']['seconds']:.4f}"]
    return out


IN_PROCESS = False  # --smoke: jobs run in this process (no interpreter start per job; peaks are not per job)


def job(spec: dict, work: Path) -> dict:
    # Each job its own $TRANSFERKIT_CACHE: nothing (not even ImageSet's memo of checked files) carries over.
    home = work / f"home-{len(list(work.glob('home-*')))}"
    if IN_PROCESS:
        import scale_jobs

        os.environ["TRANSFERKIT_CACHE"] = str(home)
        out = scale_jobs.run_job(spec)
    else:
        env = {**os.environ, "TRANSFERKIT_CACHE": str(home)}
        proc = subprocess.run([sys.executable, str(HERE / "scale_jobs.py"), json.dumps(spec)], capture_output=True,
                              text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"job {spec} failed:\n{proc.stderr[-3000:]}")
        out = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("JOB "))[4:])
    shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({k: v for k, v in spec.items() if k not in ("root", "encoder", "tables")} | out), flush=True)
    return out


def run(args, work: Path, threads: int) -> dict:
    encoders = make_encoders(work)
    rows: dict = {"images": {}, "stream": {}, "clips": {}, "recsys": {}}
    for n in args.images if {"images", "stream"} & set(args.only) else ():
        root = write_jpegs(work / f"jpegs-{n}", n)
        if "stream" in args.only:
            # One pass: every pass decodes every file, as the cache-off rows.
            rows["stream"][n] = job({"kind": "stream", "root": str(root), "encoder": encoders["image"], "epochs": 1,
                                     "threads": threads}, work)
        for mode in ("on", "off", "budget") if "images" in args.only else ():
            cache = str(work / f"cache-img-{n}-{mode}") if mode != "off" else None
            # "budget": a third of what the "on" run stored: the training rows do not fit, so they are decoded per file.
            budget = int(rows["images"][(n, "on")]["cache_bytes"] / 3) if mode == "budget" else None
            out = job({"kind": "images", "root": str(root), "encoder": encoders["image"], "cache": cache,
                       "budget": budget, "epochs": 2 if mode == "on" else 1, "threads": threads}, work)
            rows["images"][(n, mode)] = out | {"budget_bytes": budget}
        shutil.rmtree(root, ignore_errors=True)
        for mode in ("on", "budget"):
            shutil.rmtree(work / f"cache-img-{n}-{mode}", ignore_errors=True)
    if "clips" in args.only:
        root = write_clips(work / "clips", args.clips)
        for mode in ("on", "off"):
            cache = str(work / f"cache-clips-{mode}") if mode == "on" else None
            rows["clips"][mode] = job({"kind": "clips", "root": str(root), "encoder": encoders["audio"], "cache": cache,
                                       "epochs": 2, "threads": threads}, work)
        shutil.rmtree(root, ignore_errors=True)
    base = {"kind": "recsys", "events": args.events, "tables": str(work / "tables-old"), "threads": threads,
            "iterations": 10, "warm_iterations": 2}
    for step in ("pretrain_old", "retrain", "warm_start", "fold_in", "popularity") if "recsys" in args.only else ():
        rows["recsys"][step] = job(base | {"step": step}, work)
    return rows


def make_encoders(work: Path) -> dict:
    """A tiny random ViT (16 px) and wav2vec2 (8 kHz): the data path is what is measured, not the model."""
    import torch
    from transformers import (
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    torch.manual_seed(0)
    image, audio = work / "vit", work / "w2v"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16,
                       patch_size=4), add_pooling_layer=False).save_pretrained(image)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(image)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16, 16), conv_kernel=(10, 4), conv_stride=(5, 4), num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=4, mask_time_prob=0.0)).save_pretrained(audio)
    Wav2Vec2FeatureExtractor(sampling_rate=8000, do_normalize=True, return_attention_mask=True).save_pretrained(audio)
    return {"image": str(image), "audio": str(audio)}


def write_jpegs(root: Path, n: int) -> Path:
    """``n`` small JPEG files (24-40 px a side, noisy colour fields) in 10 class folders: 500 distinct
    images encoded once, their bytes written round-robin (encoding 100K on 2 busy cores would take minutes)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(n)
    encoded = []
    for _ in range(500):
        h, w = rng.integers(24, 41, 2)
        arr = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=85)
        encoded.append(buf.getvalue())
    return _write_round_robin(root, encoded, n, ".jpg", "JPEGs")


def write_clips(root: Path, n: int) -> Path:
    """``n`` one-second 8 kHz 16-bit WAV files (a tone per class plus noise) in 10 class folders."""
    import io

    import soundfile as sf

    rng = np.random.default_rng(1)
    t = np.arange(8000) / 8000
    encoded = []
    for i in range(200):  # 20 distinct clips per class, written round-robin
        wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * (i % 10)) * t) + 0.02 * rng.standard_normal(8000)
        buf = io.BytesIO()
        sf.write(buf, wave.astype(np.float32), 8000, subtype="PCM_16", format="WAV")
        encoded.append(buf.getvalue())
    return _write_round_robin(root, encoded, n, ".wav", "clips")


def _write_round_robin(root: Path, encoded: list[bytes], n: int, suffix: str, what: str) -> Path:
    """Write ``n`` files into class folders ``c0``..``c9`` (file ``i`` in ``c{i % 10}``), cycling through ``encoded``."""
    from tqdm.auto import tqdm

    for k in range(10):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(n), desc=f"writing {n} {what}", leave=False, mininterval=5):
        (root / f"c{i % 10}" / f"{i:06d}{suffix}").write_bytes(encoded[i % len(encoded)])
    return root


def _second(row: dict) -> str:
    """Epoch 2's seconds; one epoch only where every epoch does the same work (no cache to build first)."""
    return f"{row['epoch_s'][1]:.1f}" if len(row["epoch_s"]) > 1 else "(as epoch 1)"


def report(args, rows: dict, load_before: str, threads: str, total: float) -> list[str]:
    img, stream, clips, rec = rows["images"], rows["stream"], rows["clips"], rows["recsys"]
    small, big = min(args.images), max(args.images)

    def mb(x: float) -> str:
        return f"{x / MB:,.0f}"

    def slope(part: dict, key: str, mode: str | None = None) -> float:
        at = (lambda n: part[(n, mode)]) if mode else (lambda n: part[n])
        return (at(big)[key] - at(small)[key]) / (big - small)

    def image_row(n: int, mode: str, r: dict) -> str:
        return (f"| {n:,} | {mode} | {mb(r['peak_anon'])} | {mb(r['peak_rss'])} | {mb(r['cache_bytes'])} | "
                f"{'-' if r.get('budget_bytes') is None else mb(r['budget_bytes'])} | {mb(r['written'])} | "
                f"{r['list_and_check_s']:.1f} | {r['epoch_s'][0]:.1f} | {_second(r)} |")

    image_rows = [image_row(n, mode, r) for (n, mode), r in img.items()]
    image_rows += [image_row(n, "stream (imagefolder)", r) for n, r in stream.items()]
    clip_rows = [f"| {args.clips:,} | {mode} | {mb(r['peak_anon'])} | {mb(r['peak_rss'])} | {mb(r['cache_bytes'])} | "
                 f"{mb(r['written'])} | {r['list_and_check_s']:.1f} | {r['epoch_s'][0]:.1f} | {r['epoch_s'][1]:.1f} |"
                 for mode, r in clips.items()]
    names = {"retrain": "retrain on old + new (ALS, 10 iterations)", "warm_start": "warm start on the new period "
             "(2 iterations)", "fold_in": "fold in the held-out users (no training)", "popularity": "popularity (reference)"}
    rec_rows = [f"| {names[s]} | {rec[s]['events']:,} | {rec[s]['seconds']:.1f} | {mb(rec[s]['peak_anon'])} | "
                f"{rec[s]['recall_at_10']:.3f} |" for s in names if rec]
    slopes = []
    if img:
        slopes.append(f"Slope of peak private memory from {small:,} to {big:,} images: {slope(img, 'peak_anon', 'on'):,.0f} "
                      f"bytes per image with the cache, {slope(img, 'peak_anon', 'off'):,.0f} without (the file list, labels "
                      "and loader indices grow with the data set; decoded pixels do not stay in private memory). *budget*: "
                      "`TRANSFERKIT_CACHE_BUDGET` set to a third of what the cached run stored: the training images do not "
                      "fit, so they are decoded from their files every epoch (one warning) and the cache stays within its "
                      "budget.")
    if stream:
        slopes.append(f"*stream (imagefolder)*: the same files read as `load_dataset(\"imagefolder\", data_dir=..., "
                      "streaming=True)[\"train\"]` through fit's stream data path (`StreamReader`, batch 256, fit's "
                      "default shuffle buffer of 1000 examples, each image decoded and augmented as it passes, no model); "
                      "*list + check* is `load_dataset` listing the files (a stream checks nothing ahead). One pass: "
                      f"every pass decodes every file. Slope of peak private memory from {small:,} to {big:,} images: "
                      f"{slope(stream, 'peak_anon'):,.0f} bytes per image.")
    sections = [["## Images (generated JPEGs, 24-40 px; 16-px tiny ViT processor; MB = 10^6 bytes)", "",
                 "| images | decode cache | anon MB | RSS MB | cache MB | budget MB | written MB | list + check s | "
                 "epoch 1 s | epoch 2 s |", "|---|---|---|---|---|---|---|---|---|---|", *image_rows,
                 *(x for t in slopes for x in ("", t)), ""] if image_rows else []]
    sections.append([
        "## Clips (generated 1-s 8 kHz WAV, 10 tones; tiny wav2vec2 at 8 kHz)",
        "",
        "| clips | decode cache | anon MB | RSS MB | cache MB | written MB | list + check s | epoch 1 s | epoch 2 s |",
        "|---|---|---|---|---|---|---|---|---|",
        *clip_rows,
        "",
        "An `AudioDataset` holds its clips: in private memory without the cache, memory-mapped from the cache file "
        "with it (after a build that holds them once in memory). Training clips are cropped to 20 s by default.",
        "",
    ] if clips else [])
    sections.append([
        f"## Recommendation ({args.events:,} generated events: old period 90%, new period 10% with new users)",
        "",
        f"ALS, 32 factors, {threads} thread(s). Pretraining the old period took {rec['pretrain_old']['seconds']:.1f} s "
        f"(peak private memory {mb(rec['pretrain_old']['peak_anon'])} MB). Quality: recall@10 on the last new-period "
        f"event of {rec['retrain']['test_users']:,} new users (held out of every model's training data; their earlier "
        "new-period events are the history a model folds them in from; seen items not filtered).",
        "",
        "| model | events trained on | seconds | peak anon MB | recall@10 |",
        "|---|---|---|---|---|",
        *rec_rows,
        "",
    ] if rec else [])
    return [
        "# Scale: fit's data path at 10K and 100K images, 20K clips; recommendation at 10M events",
        "",
        *(["**SMOKE RUN** (tiny sizes; not a result)", ""] if args.smoke else []),
        *([f"Parts run: {', '.join(args.only)} (`--only`)", ""] if set(args.only) != set(PARTS) else []),
        *benchinfo.machine_lines(load_before, benchinfo.load_average(), "fp32 (no model step is measured)", threads),
        f"- Total wall time: {total:.0f} s",
        "",
        "Each row is one process (`benchmarks/scale_jobs.py`). *anon*: peak private memory (RssAnon, what an "
        "out-of-memory kill counts); *RSS*: peak VmRSS, which also counts the memory-mapped cache pages an epoch "
        "touched (file-backed, shared between processes, dropped by the kernel under pressure). *written*: bytes the "
        "process wrote (/proc/self/io). Epoch: fit's loader over the training set with shuffling, batch 256, through "
        "fit's collate (random resized crops and flips for images, the feature extractor's padding for clips), no "
        "model step: the cost that grows with the data. Epoch 1 of a cached run builds the cache. *list + check*: "
        "listing the folder and decoding every file once to drop unreadable ones (ImageSet.from_folder; for clips the "
        "decode, resampling check and, when on, the cache build happen here).",
        "",
        *(x for sec in sections for x in sec),
        "",
    ]


if __name__ == "__main__":
    main()
